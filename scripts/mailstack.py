#!/usr/bin/env python3
"""A throw-away Postfix + Dovecot on loopback, for tests, benchmarks and demos.

Everything lives in one temporary directory: a private CA, server certificates,
Dovecot (IMAP with STARTTLS and implicit TLS, LMTP, SASL for Postfix, passwd-file
users, Maildir) and Postfix (submission with STARTTLS and with implicit TLS, SMTP
AUTH through Dovecot, delivery over LMTP). Nothing touches /etc.

Run ``scripts/mailstack start`` for a demo stack that stays up until Ctrl-C and
prints a ready-to-use mail-monitor configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import grp
import importlib.metadata
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

DOMAIN = "example.test"
MAIL_USER = "mail"  # Dovecot refuses to deliver as root; Debian's "mail" user has no login.


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.02)


def read_pid_file(path: Path, timeout: float = 0.0) -> int | None:
    """The PID in a daemon's pid file, waiting up to `timeout` for it to appear.

    Daemons create the file and write the number in two steps, so an empty or
    half-written file means "not yet", not "broken".
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for_signal() -> None:
    """Block until SIGTERM or SIGINT: how the command-line stacks stay up until told to stop."""
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop:
        time.sleep(0.2)


def wait_for_exit(pids: list[int], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids):
        if time.monotonic() > deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.02)


def stop_process_group(pgid: int, timeout: float = 10.0) -> None:
    """SIGTERM every process in the group, SIGKILL what is left after `timeout`, wait till none is.

    While a group has members its number cannot be given to a new process, so this reaches
    exactly the processes that were in the group when called, and whatever they forked.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    killed = False
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            if killed:
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            killed, deadline = True, time.monotonic() + timeout
        time.sleep(0.02)


# --------------------------------------------------------------------------- CA


@dataclass
class CertificateAuthority:
    """A private CA that signs server certificates with chosen names and dates."""

    directory: Path
    name: str = "mailstack test CA"

    def __post_init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self._x509, self._hashes, self._ec = x509, hashes, ec
        self._serialization, self._oid = serialization, NameOID
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca_file = self.directory / f"{self.name.replace(' ', '-')}.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        stem: str,
        names: tuple[str, ...] = ("localhost",),
        ips: tuple[str, ...] = ("127.0.0.1",),
        valid_from: dt.datetime | None = None,
        valid_until: dt.datetime | None = None,
    ) -> tuple[Path, Path]:
        """Write ``stem.crt`` (leaf + CA) and ``stem.key``; return their paths."""
        import ipaddress

        x509, ser = self._x509, self._serialization
        now = dt.datetime.now(dt.UTC)
        key = self._ec.generate_private_key(self._ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(self._oid.COMMON_NAME, names[0])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid_from or now - dt.timedelta(days=1))
            .not_valid_after(valid_until or now + dt.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, self._hashes.SHA256())
        )
        cert_path = self.directory / f"{stem}.crt"
        key_path = self.directory / f"{stem}.key"
        cert_path.write_bytes(
            cert.public_bytes(ser.Encoding.PEM) + self.cert.public_bytes(ser.Encoding.PEM)
        )
        key_path.write_bytes(
            key.private_bytes(
                ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()
            )
        )
        key_path.chmod(0o640)
        return cert_path, key_path


# ----------------------------------------------------------------------- config

DOVECOT_CONF = """\
instance_name = mailstack-{tag}
base_dir = {root}/dovecot-run
state_dir = {root}/dovecot-state
log_path = {root}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
first_valid_uid = 1
mail_uid = {mail_uid}
mail_gid = {mail_gid}
mail_location = maildir:~/Maildir
mail_home = {root}/mail/%n
disable_plaintext_auth = no
auth_mechanisms = {auth_mechanisms}
auth_failure_delay = 0
# Dovecot's own default (10 per user and IP) is what real servers run with.
mail_max_userip_connections = {max_userip}
default_client_limit = 2000
recipient_delimiter = +
lmtp_save_to_detail_mailbox = yes
lda_mailbox_autocreate = yes
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
login_greeting = mailstack ready
log_timestamp = "%Y-%m-%d %H:%M:%S "
{oauth2_passdb}passdb {{
  driver = passwd-file
{passwd_mechanisms}  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid={mail_uid} gid={mail_gid}
}}
namespace inbox {{
  inbox = yes
  mailbox Junk {{
    auto = create
    special_use = \\Junk
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
  process_min_avail = 2
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
service auth {{
  unix_listener {root}/dovecot-auth {{
    mode = 0666
  }}
}}
protocol lmtp {{
  auth_username_format = %n@%d
}}
"""

POSTFIX_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/postfix-queue
data_directory = {root}/postfix-data
mail_owner = postfix
setgid_group = postdrop
myhostname = mail.{domain}
mydomain = {domain}
myorigin = {domain}
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = {root}/postfix.log
maillog_file_prefixes = {root}
alias_maps =
alias_database =
local_recipient_maps =
biff = no
append_dot_mydomain = no
smtputf8_enable = no
service_throttle_time = 1s
virtual_mailbox_domains = {domain}
virtual_transport = lmtp:inet:127.0.0.1:{lmtp_port}
# Per-domain next hops that tests add with route_domain() (e.g. a relay that defers).
transport_maps = texthash:{root}/postfix/transport
smtpd_reject_unlisted_recipient = no
# Test mails of routes named "held-..." wait in the hold queue until release_held():
# delivery held back for longer than a run, for the async route tests.
header_checks = regexp:{root}/postfix/header_checks
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = {root}/dovecot-auth
smtpd_sasl_auth_enable = yes
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
lmtp_tls_security_level = none
# Deliver many test mails at once (Postfix otherwise starts at 5 parallel deliveries).
lmtp_initial_destination_concurrency = 50
lmtp_destination_concurrency_limit = 100
"""

# Every service runs unchrooted (column 5 = n) so the temp dir paths work as they are.
POSTFIX_MASTER_CF = """\
127.0.0.1:{submission_port} inet n - n - - smtpd
  -o smtpd_tls_security_level=encrypt
127.0.0.1:{submissions_port} inet n - n - - smtpd
  -o smtpd_tls_wrappermode=yes
127.0.0.1:{plain_port} inet n - n - - smtpd
  -o smtpd_tls_security_level=none
  -o smtpd_tls_auth_only=no
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


@dataclass
class Account:
    address: str
    password: str


@dataclass
class MailStack:
    """Real Postfix + Dovecot on loopback high ports; ``start()``/``stop()`` them."""

    root: Path
    lmtp_target_port: int | None = None  # Postfix delivers here (a relay for benches)
    max_userip_connections: int = 10
    imap_port: int = field(default_factory=free_port)
    imaps_port: int = field(default_factory=free_port)
    lmtp_port: int = field(default_factory=free_port)
    submission_port: int = field(default_factory=free_port)
    submissions_port: int = field(default_factory=free_port)
    plain_port: int = field(default_factory=free_port)  # submission without TLS, for tls = "none"
    accounts: dict[str, Account] = field(default_factory=dict)
    # Appended to main.cf / master.cf: milters and listeners of scripts/dnsstack.py.
    postfix_main_extra: str = ""
    postfix_master_extra: str = ""
    # XOAUTH2 logins, their tokens checked by this RFC 7662 introspection URL (POST token=...),
    # which answers {"active": true, "username": "<address>"} for a good one.
    oauth2_introspection_url: str | None = None

    host = "localhost"

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # Postfix and the mail user must traverse every directory to the stack's files.
        for parent in [self.root, *self.root.parents]:
            if parent.stat().st_mode & 0o005 != 0o005:
                parent.chmod(parent.stat().st_mode | 0o005)
        self.ca = CertificateAuthority(self.root / "tls")
        self.cert, self.key = self.ca.issue("server", names=("localhost", f"mail.{DOMAIN}"))
        self.key.chmod(0o644)  # read by postfix smtpd as well as dovecot
        self.tag = self.root.name.replace("_", "-").lower()[-20:]
        self._dovecot_pid: int | None = None

    # -- users ---------------------------------------------------------------

    def add_user(self, local: str, password: str) -> Account:
        account = Account(f"{local}@{DOMAIN}", password)
        self.accounts[local] = account
        self._write_users()
        return account

    def _write_users(self) -> None:
        lines = [f"{a.address}:{{PLAIN}}{a.password}\n" for a in self.accounts.values()]
        users = self.root / "users"
        tmp = users.with_suffix(".tmp")
        tmp.write_text("".join(lines))
        tmp.chmod(0o644)
        tmp.replace(users)

    def maildir(self, local: str) -> Path:
        return self.root / "mail" / local / "Maildir"

    # -- daemons -------------------------------------------------------------

    def _mail_ids(self) -> tuple[int, int]:
        return pwd.getpwnam(MAIL_USER).pw_uid, grp.getgrnam(MAIL_USER).gr_gid

    def write_config(self, cert: Path | None = None, key: Path | None = None) -> None:
        uid, gid = self._mail_ids()
        params = {
            "root": self.root,
            "tag": self.tag,
            "domain": DOMAIN,
            "mail_uid": uid,
            "mail_gid": gid,
            "cert": cert or self.cert,
            "key": key or self.key,
            "imap_port": self.imap_port,
            "imaps_port": self.imaps_port,
            "lmtp_port": self.lmtp_port,
            "submission_port": self.submission_port,
            "submissions_port": self.submissions_port,
            "plain_port": self.plain_port,
            "max_userip": self.max_userip_connections,
            "auth_mechanisms": "plain login xoauth2" if self.oauth2_introspection_url else "plain login",
            "oauth2_passdb": self._oauth2_passdb(),
            # With XOAUTH2 on, a token is never taken for a password ("none": the lookups of LMTP).
            "passwd_mechanisms": "  mechanisms = plain login none\n" if self.oauth2_introspection_url else "",
        }
        for name in ("dovecot-run", "dovecot-state", "postfix", "postfix-data", "postfix-queue"):
            (self.root / name).mkdir(exist_ok=True)
        postfix_uid = pwd.getpwnam("postfix").pw_uid
        os.chown(self.root / "postfix-data", postfix_uid, -1)
        mail = self.root / "mail"
        mail.mkdir(exist_ok=True)
        os.chown(mail, uid, gid)
        (self.root / "dovecot.conf").write_text(DOVECOT_CONF.format(**params))
        postfix = dict(params, lmtp_port=self.lmtp_target_port or self.lmtp_port)
        (self.root / "postfix" / "main.cf").write_text(
            POSTFIX_MAIN_CF.format(**postfix) + self.postfix_main_extra
        )
        (self.root / "postfix" / "master.cf").write_text(
            POSTFIX_MASTER_CF.format(**postfix) + self.postfix_master_extra
        )
        (self.root / "postfix" / "header_checks").write_text("/^Subject: \\[mail-monitor\\] held-/ HOLD\n")
        (self.root / "postfix" / "transport").touch()
        if not (self.root / "users").exists():
            self._write_users()

    def _oauth2_passdb(self) -> str:
        if self.oauth2_introspection_url is None:
            return ""
        settings = self.root / "dovecot-oauth2.conf.ext"
        settings.write_text(
            "introspection_mode = post\n"
            f"introspection_url = {self.oauth2_introspection_url}\n"
            "force_introspection = yes\n"
            "username_attribute = username\n"
            "active_attribute = active\n"
            "active_value = true\n"
        )
        return f"passdb {{\n  driver = oauth2\n  mechanisms = xoauth2\n  args = {settings}\n}}\n"

    def start(self) -> MailStack:
        self.write_config()
        try:
            self.start_dovecot()
            self.start_postfix()
        except BaseException:
            self.stop()
            raise
        return self

    def start_dovecot(self) -> None:
        # Dovecot's master keeps the caller's stderr open: never pipe it.
        with open(self.root / "dovecot.start.log", "ab") as log:
            subprocess.run(
                ["dovecot", "-c", str(self.root / "dovecot.conf")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, check=True,
            )
        pid = read_pid_file(self.root / "dovecot-run" / "master.pid", timeout=15)
        if pid is None:
            raise RuntimeError(f"dovecot did not start:\n{self.log_tail()}")
        self._dovecot_pid = pid
        for port in (self.imap_port, self.imaps_port, self.lmtp_port):
            wait_for_port("127.0.0.1", port)

    def stop_dovecot(self) -> None:
        """Stop this stack's Dovecot and nothing else: the master's process group.

        Dovecot's master starts its own session; every auth, login and imap process it
        forks stays in that group, even one that outlives the master.
        """
        pid_file = self.root / "dovecot-run" / "master.pid"
        master = read_pid_file(pid_file) or self._dovecot_pid
        if master is not None and self._is_our_dovecot_group(master):
            stop_process_group(master)
        pid_file.unlink(missing_ok=True)
        self._dovecot_pid = None

    def _is_our_dovecot_group(self, master: int) -> bool:
        """False if `master` is now another process: ours exited and its number was reused."""
        try:
            argv = Path(f"/proc/{master}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            return True  # the master is gone; what is left in its group are its children
        if argv == [b""]:
            return True  # a zombie, not yet reaped: still our master's number
        return str(self.root / "dovecot.conf").encode() in argv

    def _postfix(self, command: str) -> subprocess.CompletedProcess[str]:
        # postfix-script reports startup problems only to a terminal or syslog: give it a pty.
        return subprocess.run(
            ["script", "-qec", f"postfix -c {self.root / 'postfix'} {command}", "/dev/null"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        )

    def start_postfix(self) -> None:
        done = self._postfix("start")
        if done.returncode != 0:
            log = (self.root / "postfix.log").read_text() if (self.root / "postfix.log").exists() else ""
            raise RuntimeError(f"postfix start failed: {done.stdout}{done.stderr}\n{log[-2000:]}")
        for port in (self.submission_port, self.submissions_port):
            wait_for_port("127.0.0.1", port)

    def stop_postfix(self) -> None:
        pid_file = self.root / "postfix-queue" / "pid" / "master.pid"
        pid = read_pid_file(pid_file, timeout=1) if pid_file.exists() else None
        if pid is None:
            return
        self._postfix("stop")
        wait_for_exit([pid])
        # Wait for the listeners to go away too.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.submission_port), timeout=0.2).close()
            except OSError:
                break
            time.sleep(0.05)

    def stop(self) -> None:
        self.stop_postfix()
        self.stop_dovecot()

    def use_certificate(self, cert: Path, key: Path) -> None:
        """Restart Dovecot and Postfix serving another certificate."""
        key.chmod(0o644)
        self.stop()
        self.write_config(cert, key)
        self.start_dovecot()
        self.start_postfix()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- helpers for tests -----------------------------------------------------

    def release_held(self) -> None:
        """Release the mails the header checks put on hold, and deliver them now."""
        config = ["-c", str(self.root / "postfix")]
        subprocess.run(["postsuper", *config, "-H", "ALL"], check=True, capture_output=True)
        subprocess.run(["postqueue", *config, "-f"], check=True, capture_output=True)

    def held(self) -> int:
        """How many mails wait in the hold queue."""
        hold = self.root / "postfix-queue" / "hold"
        return sum(1 for path in hold.rglob("*") if path.is_file()) if hold.exists() else 0

    def route_domain(self, domain: str, nexthop: str) -> None:
        """Send mail for ``domain`` to a Postfix next hop such as ``smtp:[127.0.0.1]:2525``."""
        transport = self.root / "postfix" / "transport"
        transport.write_text(transport.read_text() + f"{domain} {nexthop}\n")
        done = self._postfix("reload")
        if done.returncode != 0:
            raise RuntimeError(f"postfix reload failed: {done.stdout}{done.stderr}")

    def config_toml(self, local: str, password_file: Path, **route: str) -> str:
        """A mail-monitor configuration for one account that mails itself."""
        account = self.accounts[local]
        extra = "".join(f'{k} = "{v}"\n' for k, v in route.items())
        return (
            "[monitor]\n"
            f'state_file = "{self.root}/state.json"\n'
            'deadline = "60s"\n\n'
            "[accounts.self]\n"
            f'address = "{account.address}"\n'
            f'password_file = "{password_file}"\n'
            f'smtp = {{ host = "{self.host}", port = {self.submission_port}, tls = "starttls", '
            f'ca_file = "{self.ca.ca_file}" }}\n'
            f'imap = {{ host = "{self.host}", port = {self.imaps_port}, tls = "implicit", '
            f'ca_file = "{self.ca.ca_file}", extra_folders = ["Junk"] }}\n\n'
            '[[routes]]\nname = "self"\nfrom = "self"\nto = "self"\nreceive_timeout = "30s"\n'
            + extra
        )

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for name in ("dovecot.log", "postfix.log"):
            path = self.root / name
            if path.exists():
                out.append(f"--- {name}\n" + "\n".join(path.read_text().splitlines()[-lines:]))
        return "\n".join(out)


def run_demo(fmt: str) -> int:
    """One real check against a fresh local stack: the quickest way to see what a run does."""
    root = Path(tempfile.mkdtemp(prefix="mailstack-demo-"))
    stack = MailStack(root)
    stack.add_user("monitor", "demo-password")
    password_file = root / "monitor.password"
    password_file.write_text("demo-password\n")
    password_file.chmod(0o600)
    print(f"starting Postfix + Dovecot in {root} ...", file=sys.stderr)
    stack.start()
    try:
        config_path = root / "mail-monitor.toml"
        config_path.write_text(stack.config_toml("monitor", password_file))
        print(f"$ mail-monitor run --config {config_path} --no-state", file=sys.stderr)
        done = subprocess.run(
            [sys.executable, "-m", "mail_monitor", "run", "--config", str(config_path), "--no-state",
             "--format", fmt],
            cwd=Path(__file__).resolve().parent.parent,
        )
        return done.returncode
    finally:
        stack.destroy()


def setup_problem(command: str) -> str | None:
    """What this Python lacks for `command`; None if nothing."""
    if importlib.util.find_spec("cryptography") is None:
        return "the package cryptography (the stack's private CA) is missing"
    if command == "demo":
        try:
            importlib.metadata.distribution("mail-monitor")
        except importlib.metadata.PackageNotFoundError:
            return "mail-monitor is not installed"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start a demo stack and keep it running until Ctrl-C")
    start.add_argument("--dir", type=Path, help="directory for the stack (default: a new temp dir)")
    start.add_argument("--config-out", type=Path, help="also write the mail-monitor config here")
    start.add_argument("--ready-file", type=Path, help="touch this file once the stack is up")
    demo = sub.add_parser("demo", help="start a stack, run one real mail-monitor check against it, stop")
    demo.add_argument("--format", default="text", choices=("text", "json", "influx"))
    args = parser.parse_args(argv)
    problem = setup_problem(args.command)
    if problem is not None:
        print(f"mailstack: {problem} for {sys.executable}; `bash .ci/run` installs everything "
              "into .venv, which scripts/mailstack uses", file=sys.stderr)
        return 3
    if args.command == "demo":
        return run_demo(args.format)

    root = args.dir or Path(tempfile.mkdtemp(prefix="mailstack-"))
    stack = MailStack(root)
    stack.add_user("monitor", "demo-password")
    password_file = root / "monitor.password"
    password_file.write_text("demo-password\n")
    password_file.chmod(0o600)
    stack.start()
    config = stack.config_toml("monitor", password_file)
    config_path = args.config_out or root / "mail-monitor.toml"
    config_path.write_text(config)
    print(f"mail stack up in {root}", file=sys.stderr)
    print(f"  IMAP STARTTLS 127.0.0.1:{stack.imap_port}, IMAPS {stack.imaps_port}", file=sys.stderr)
    print(f"  submission STARTTLS {stack.submission_port}, submissions {stack.submissions_port}",
          file=sys.stderr)
    print(f"  account monitor@{DOMAIN}, password in {password_file}", file=sys.stderr)
    print(f"  config: {config_path}", file=sys.stderr)
    installed = Path(sys.executable).parent / "mail-monitor"  # in .venv, not on PATH
    command = installed if installed.exists() else "mail-monitor"
    print(f"try:  {command} run --config {config_path} --no-state", file=sys.stderr)
    if args.ready_file:
        args.ready_file.touch()
    try:
        wait_for_signal()
    finally:
        stack.destroy() if args.dir is None else stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
