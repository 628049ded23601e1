#!/usr/bin/env python3
"""The DNS world of the test mail stack: what deliverability tests check and break.

Real daemons from Debian's packages, on loopback, in one directory, started and
stopped by pid:

- Knot DNS, authoritative for ``example.test`` (MX, A, SPF with an include, DKIM,
  DMARC, MTA-STS, TLS-RPT), the loopback reverse zone ``127.in-addr.arpa`` (PTR of
  127.0.0.1) and a test DNSBL ``bl.test``, on 127.0.0.1 at a high port: point the
  monitor there (``DnsWorld.resolver``, ``[monitor] resolver``). Every record has
  TTL 0, so no resolver caches and a change shows on the next query.
- OpenDKIM, one milter that signs what Postfix's submission services accept
  (milter macro ``{daemon_name}`` = ORIGINATING) and verifies what the stack's MX
  listener receives. Its libunbound resolver gets stub zones pointing at Knot.
- postfix-policyd-spf-python on the MX listener, started through a launcher that
  points dnspython's default resolver at Knot; it writes SPF Authentication-Results.
- OpenDMARC on the MX listener. libresolv and libspf2 ask only the servers of
  /etc/resolv.conf, on port 53, so it runs on an island: its own network and mount
  namespaces (``unshare``, needs root) where a second Knot serves the same zone
  files on 127.0.0.1:53 and a resolv.conf naming it is bind-mounted over
  /etc/resolv.conf. Postfix reaches it through a unix socket. Where namespaces are
  not allowed (``DnsWorld.dmarc_enabled`` is False) OpenDMARC is left out.
- nginx serving ``https://mta-sts.example.test:PORT/.well-known/mta-sts.txt`` with a
  certificate from the mail stack's CA.

Mail flow with the world attached (``DnsWorld.attach``): submission -> OpenDKIM signs
-> Postfix's ``content_filter`` relays the message over SMTP to the MX listener on
127.0.0.1 -> policyd-spf, OpenDKIM (verify) and OpenDMARC add Authentication-Results
with authserv-id ``mx.example.test`` -> LMTP to Dovecot. The MX listener sees the
client 127.0.0.1, which the healthy SPF record authorises; no daemon treats
127.0.0.1 as internal (each skip list names only 192.0.2.255).

Tests break the world through the methods of ``DnsWorld`` and heal it with ``reset()``.

How a test uses it (fixtures in tests/conftest.py):

- ``world`` (function scope) is the session's ``DnsWorld``, reset after the test;
  ``dns_world`` is the same object without the reset; ``world.stack`` is its own
  ``MailStack`` (not the plain ``stack`` fixture), ``world_secrets_dir`` holds the
  password files of its accounts (``conftest.PASSWORDS``).
- DNS: ``world.resolver`` ("127.0.0.1:PORT") for ``[monitor] resolver``; dnspython:
  ``Resolver(configure=False)`` with ``nameservers=["127.0.0.1"]``, ``port=world.dns_port``.
- MTA-STS: resolve ``mta-sts.example.test`` through that resolver (127.0.0.1) and
  connect to ``world.https_port`` with SNI ``mta-sts.example.test``, trusting
  ``world.stack.ca.ca_file``; ``world.mta_sts_url`` spells it as a URL.
- Receiver verdicts: Authentication-Results with authserv-id ``AUTHSERV_ID``.
- Breaking: ``set_records``/``remove_records``, ``set_spf``, ``set_dmarc``/``remove_dmarc``,
  ``rotate_dkim_key`` (DNS keeps the old key), ``publish_dkim_key``,
  ``set_mta_sts_policy(mx=...)``, ``list_ip``/``unlist_ip``, ``forge_header``,
  ``stop_daemon``/``start_daemon``.

The directory must be short: unix sockets live in it (``UNIX_SOCKET_PATH_MAX``).
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from mailstack import (
    DOMAIN,
    CertificateAuthority,
    MailStack,
    free_port,
    wait_for_exit,
    wait_for_port,
    wait_for_signal,
)

AUTHSERV_ID = f"mx.{DOMAIN}"
MAIL_HOST = f"mail.{DOMAIN}"
MTA_STS_HOST = f"mta-sts.{DOMAIN}"
DKIM_SELECTOR = "mail"
BLOCKLIST_ZONE = "bl.test"
REVERSE_ZONE = "127.in-addr.arpa"
SPF_INCLUDE = f"_spf.{DOMAIN}"
# The one address every skip list names, so that no daemon skips loopback clients.
NOBODY_IP = "192.0.2.255"
STOP_GRACE_SECONDS = 1.0
UNIX_SOCKET_PATH_MAX = 107  # sun_path on Linux, less the terminating NUL

HEALTHY_SPF = f"v=spf1 include:{SPF_INCLUDE} mx -all"
HEALTHY_SPF_INCLUDE = "v=spf1 ip4:127.0.0.1 -all"
HEALTHY_DMARC = f"v=DMARC1; p=reject; rua=mailto:dmarc-reports@{DOMAIN}"
HEALTHY_TLS_RPT = f"v=TLSRPTv1; rua=mailto:tls-reports@{DOMAIN}"

# One configuration per Knot instance (directory {run}); both serve the same zone files.
KNOT_CONF = """\
server:
    rundir: "{run}"
    pidfile: "{run}/knot.pid"
    listen: 127.0.0.1@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "{run}/db"
control:
    listen: "{run}/knot.sock"
log:
  - target: "{run}/knot.log"
    any: info
template:
  - id: default
    storage: "{zones}"
    file: "%s.zone"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    semantic-checks: off
zone:
"""

UNBOUND_CONF = """\
server:
    do-not-query-localhost: no
    module-config: "iterator"
    local-zone: "test." nodefault
    local-zone: "127.in-addr.arpa." nodefault
{stubs}"""

OPENDKIM_CONF = """\
Syslog                  no
Background              no
PidFile                 {root}/opendkim/opendkim.pid
Socket                  inet:{port}@127.0.0.1
Mode                    sv
MTA                     ORIGINATING
InternalHosts           {root}/opendkim/internal-hosts
Domain                  {domain}
Selector                {selector}
KeyFile                 {root}/opendkim/{selector}.private
RequireSafeKeys         no
Canonicalization        relaxed/simple
AuthservID              {authserv_id}
AlwaysAddARHeader       yes
ResolverConfiguration   {root}/opendkim/unbound.conf
"""

OPENDMARC_CONF = """\
Syslog                  false
Background              false
PidFile                 {root}/opendmarc/opendmarc.pid
Socket                  local:{root}/opendmarc/opendmarc.sock
UMask                   0000
AuthservID              {authserv_id}
TrustedAuthservIDs      {authserv_id}
IgnoreHosts             {root}/opendmarc/ignore-hosts
SPFSelfValidate         true
RejectFailures          false
FailureReports          false
"""

POLICYD_SPF_CONF = """\
debugLevel = 1
TestOnly = 1
HELO_reject = False
Mail_From_reject = False
PermError_reject = False
TempError_Defer = False
skip_addresses = {nobody}/32
Header_Type = AR
Authserv_Id = {authserv_id}
"""

# Runs Debian's policyd-spf with pyspf's resolver pointed at Knot: pyspf uses dnspython
# when it is installed, else pydns (python3-dns, what Debian's python3-spf pulls in).
POLICYD_SPF_LAUNCHER = """\
#!/usr/bin/python3
import runpy
import sys

import spf

if spf.DNSLookup is spf.DNSLookup_dnspython:
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = {port}
    dns.resolver.default_resolver = resolver
else:
    import DNS

    DNS.defaults["server"] = ["127.0.0.1"]
    DNS.defaults["port"] = {port}
sys.argv = ["/usr/bin/policyd-spf", "{conf}"]
runpy.run_path("/usr/bin/policyd-spf", run_name="__main__")
"""

NGINX_CONF = """\
daemon off;
worker_processes 1;
pid {root}/nginx/nginx.pid;
error_log {root}/nginx/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {root}/nginx/access.log;
    client_body_temp_path {root}/nginx/tmp/body;
    proxy_temp_path {root}/nginx/tmp/proxy;
    fastcgi_temp_path {root}/nginx/tmp/fastcgi;
    uwsgi_temp_path {root}/nginx/tmp/uwsgi;
    scgi_temp_path {root}/nginx/tmp/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name {host};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {root}/www;
        location = /.well-known/mta-sts.txt {{
            default_type text/plain;
        }}
        location / {{
            return 404;
        }}
    }}
}}
"""

# Appended to the mail stack's main.cf and master.cf by ``DnsWorld.attach``.
POSTFIX_MAIN_EXTRA = """\
# --- dnsstack: sign on submission, relay to the MX listener, verify there
milter_default_action = accept
milter_macro_daemon_name = ORIGINATING
smtpd_milters = inet:127.0.0.1:{dkim_port}
non_smtpd_milters = $smtpd_milters
content_filter = smtp:[127.0.0.1]:{mx_port}
mx_milters = {mx_milters}
mx_relay_restrictions = reject_unauth_destination
mx_recipient_restrictions = check_policy_service unix:private/policyd-spf
policyd-spf_time_limit = 3600
# The sending hop adds headers here on request (DnsWorld.forge_header): forgeries upstream.
smtp_header_checks = regexp:{forge_file}
"""

POSTFIX_MASTER_EXTRA = """\
127.0.0.1:{mx_port} inet n - n - - smtpd
  -o content_filter=
  -o smtpd_tls_security_level=none
  -o smtpd_sasl_auth_enable=no
  -o smtpd_relay_restrictions=$mx_relay_restrictions
  -o smtpd_recipient_restrictions=$mx_recipient_restrictions
  -o smtpd_milters=$mx_milters
  -o milter_macro_daemon_name=MX
policyd-spf unix - n n - 0 spawn
  user=nobody argv={launcher}
"""


def _can_unshare() -> bool:
    """Whether this process may make network and mount namespaces (root, not in a locked-down container)."""
    try:
        done = subprocess.run(["unshare", "--net", "--mount", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _txt(text: str) -> str:
    """Zone-file rdata for one TXT record: quoted strings of at most 255 bytes."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    chunks = [escaped[i:i + 250] for i in range(0, len(escaped), 250)] or [""]
    return " ".join(f'"{chunk}"' for chunk in chunks)


def dnsbl_name(ip: str, zone: str = BLOCKLIST_ZONE) -> str:
    """The name a DNSBL lists an IPv4 address under: 127.0.0.2 -> 2.0.0.127.bl.test."""
    return ".".join(reversed(str(ipaddress.IPv4Address(ip)).split("."))) + f".{zone}"


@dataclass
class Zone:
    """Records of one zone as (owner, type) -> rdata strings in zone-file syntax."""

    origin: str
    records: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def text(self, serial: int) -> str:
        lines = [
            f"$ORIGIN {self.origin}.",
            "$TTL 0",  # no resolver may cache: a change shows on the next query
            f"@ SOA ns.{DOMAIN}. hostmaster.{DOMAIN}. {serial} 3600 600 86400 0",
            f"@ NS ns.{DOMAIN}.",
        ]
        for (owner, rtype), values in sorted(self.records.items()):
            lines += [f"{owner}. {rtype} {value}" for value in values]
        return "\n".join(lines) + "\n"


def _absolute(name: str) -> str:
    return name.rstrip(".").lower()


@dataclass
class DkimKey:
    """An RSA key pair as OpenDKIM reads it and as DNS publishes it."""

    private_pem: bytes
    public_b64: str

    @classmethod
    def generate(cls, bits: int = 2048) -> DkimKey:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(private, base64.b64encode(public).decode())

    @property
    def record(self) -> str:
        return f"v=DKIM1; k=rsa; p={self.public_b64}"


@dataclass
class DnsWorld:
    """Knot, OpenDKIM, OpenDMARC, policyd-spf and nginx for one mail stack.

    ``attach(stack)`` before ``stack.start()`` wires the milters into Postfix;
    ``start()`` starts the world's own daemons; ``stop()`` stops them by pid.
    """

    root: Path
    ca: CertificateAuthority
    dns_port: int = field(default_factory=free_port)
    https_port: int = field(default_factory=free_port)
    dkim_port: int = field(default_factory=free_port)
    mx_port: int = field(default_factory=free_port)
    selector: str = DKIM_SELECTOR
    stack: MailStack | None = None  # set by ``attach``

    def __post_init__(self) -> None:
        # OpenDMARC only asks port 53 of /etc/resolv.conf: without namespaces it cannot run here.
        self.dmarc_enabled = _can_unshare()
        longest_socket = self.root / "knot-island" / "knot.sock"
        if len(bytes(longest_socket)) > UNIX_SOCKET_PATH_MAX:
            raise ValueError(f"{self.root} is too long for unix socket paths in it: use a shorter directory")
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        self._serial = int(time.time())
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.dkim_key = DkimKey.generate()
        self.signing_key = self.dkim_key
        self.zones: dict[str, Zone] = {}
        self.mta_sts_policy = ""
        self._healthy_records()

    # -- addresses tests use ----------------------------------------------------

    @property
    def resolver(self) -> str:
        """``host:port`` of the authoritative server, as ``[monitor] resolver`` takes it."""
        return f"127.0.0.1:{self.dns_port}"

    @property
    def mta_sts_url(self) -> str:
        return f"https://{MTA_STS_HOST}:{self.https_port}/.well-known/mta-sts.txt"

    # -- the healthy world --------------------------------------------------------

    def _healthy_records(self) -> None:
        d = DOMAIN
        self.zones = {
            DOMAIN: Zone(DOMAIN, {
                (f"ns.{d}", "A"): ["127.0.0.1"],
                (d, "MX"): [f"10 {MAIL_HOST}."],
                (MAIL_HOST, "A"): ["127.0.0.1"],
                (MTA_STS_HOST, "A"): ["127.0.0.1"],
                (d, "TXT"): [_txt(HEALTHY_SPF)],
                (SPF_INCLUDE, "TXT"): [_txt(HEALTHY_SPF_INCLUDE)],
                (f"{self.selector}._domainkey.{d}", "TXT"): [_txt(self.dkim_key.record)],
                (f"_dmarc.{d}", "TXT"): [_txt(HEALTHY_DMARC)],
                (f"_mta-sts.{d}", "TXT"): [_txt(f"v=STSv1; id={self._serial}")],
                (f"_smtp._tls.{d}", "TXT"): [_txt(HEALTHY_TLS_RPT)],
            }),
            REVERSE_ZONE: Zone(REVERSE_ZONE, {
                (f"1.0.0.{REVERSE_ZONE}", "PTR"): [f"{MAIL_HOST}."],
            }),
            BLOCKLIST_ZONE: Zone(BLOCKLIST_ZONE, {
                # RFC 5782's test point: every DNSBL lists 127.0.0.2.
                (dnsbl_name("127.0.0.2"), "A"): ["127.0.0.2"],
                (dnsbl_name("127.0.0.2"), "TXT"): [_txt("127.0.0.2 is the RFC 5782 test entry")],
            }),
        }
        self.mta_sts_policy = self._policy_text("enforce", (MAIL_HOST,))

    @staticmethod
    def _policy_text(mode: str, mx: tuple[str, ...], max_age: int = 86400) -> str:
        lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), f"max_age: {max_age}"]
        return "\r\n".join(lines) + "\r\n"

    # -- records -----------------------------------------------------------------

    def _zone_of(self, name: str) -> Zone:
        name = _absolute(name)
        for origin in sorted(self.zones, key=len, reverse=True):
            if name == origin or name.endswith("." + origin):
                return self.zones[origin]
        raise ValueError(f"{name} is in none of the world's zones {sorted(self.zones)}")

    def set_records(self, name: str, rtype: str, *values: str, reload: bool = True) -> None:
        """Replace every ``rtype`` record at ``name`` (TXT values are plain text)."""
        rtype = rtype.upper()
        rdata = [_txt(v) if rtype == "TXT" else v for v in values]
        zone = self._zone_of(name)
        if rdata:
            zone.records[(_absolute(name), rtype)] = rdata
        else:
            zone.records.pop((_absolute(name), rtype), None)
        if reload:
            self.reload(zone.origin)

    def remove_records(self, name: str, rtype: str, reload: bool = True) -> None:
        self.set_records(name, rtype, reload=reload)

    def set_spf(self, record: str) -> None:
        self.set_records(DOMAIN, "TXT", record)

    def set_dmarc(self, record: str | None) -> None:
        """Publish another DMARC record, or none at all."""
        self.set_records(f"_dmarc.{DOMAIN}", "TXT", *([record] if record else []))

    def remove_dmarc(self) -> None:
        self.set_dmarc(None)

    def list_ip(self, ip: str, reason: str = "listed by the test world", code: str = "127.0.0.2") -> None:
        """List an IPv4 address in ``bl.test`` with a return code and a TXT reason."""
        name = dnsbl_name(ip)
        self.set_records(name, "A", code, reload=False)
        self.set_records(name, "TXT", reason)

    def unlist_ip(self, ip: str) -> None:
        name = dnsbl_name(ip)
        self.remove_records(name, "A", reload=False)
        self.remove_records(name, "TXT")

    def set_mta_sts_policy(self, mode: str = "enforce", mx: tuple[str, ...] = (MAIL_HOST,),
                           max_age: int = 86400, text: str | None = None) -> None:
        """Serve another policy (``text`` verbatim if given) and announce it with a new id."""
        self.mta_sts_policy = text if text is not None else self._policy_text(mode, mx, max_age)
        self._write_policy()
        self._serial += 1
        self.set_records(f"_mta-sts.{DOMAIN}", "TXT", f"v=STSv1; id={self._serial}")

    def rotate_dkim_key(self, publish: bool = False) -> None:
        """OpenDKIM signs with a new key; DNS keeps the old one unless ``publish``."""
        self.signing_key = DkimKey.generate()
        self._write_signing_key()
        self._reload_opendkim()
        if publish:
            self.publish_dkim_key()

    def _reload_opendkim(self) -> None:
        """Restart OpenDKIM on the new key file.

        SIGUSR1 would reload it too, but only at some later connection, which a test
        cannot observe; a restart is done when it returns.
        """
        if self._running("opendkim"):
            self._stop("opendkim")
            self._start_opendkim()

    def publish_dkim_key(self) -> None:
        """Publish the key OpenDKIM signs with."""
        self.dkim_key = self.signing_key
        self.set_records(f"{self.selector}._domainkey.{DOMAIN}", "TXT", self.dkim_key.record)

    @property
    def _forge_file(self) -> Path:
        return self.root / "postfix-forge.regexp"

    def forge_header(self, line: str | None) -> None:
        """Make the sending hop add a header line, as a forger upstream would; None: stop.

        E.g. ``forge_header("Authentication-Results: evil.test; dkim=pass")``.
        """
        self._write_forgeries(f"/^From:/ PREPEND {line}\n" if line else "")
        if self.stack is not None:
            # Postfix reads regexp tables when a process starts: have it start new ones.
            # If Postfix is down (a fault test), its next start reads the file anyway.
            subprocess.run(["postfix", "-c", str(self.stack.root / "postfix"), "reload"],
                           capture_output=True, timeout=30, stdin=subprocess.DEVNULL)

    def _write_forgeries(self, rules: str) -> None:
        tmp = self._forge_file.with_suffix(".tmp")
        tmp.write_text(rules)
        tmp.chmod(0o644)
        tmp.replace(self._forge_file)

    def reset(self) -> None:
        """Back to the healthy world: daemons up, records, policy, DNS matching the signing key."""
        for name in self.daemons:
            if not self._running(name):
                self.start_daemon(name)
        self.dkim_key = self.signing_key
        self._healthy_records()
        self._write_policy()
        if self._forge_file.exists() and self._forge_file.stat().st_size:
            self.forge_header(None)
        for origin in self.zones:
            self.reload(origin)

    def reload(self, origin: str) -> None:
        """Write the zone with a new serial and wait until Knot serves it."""
        self._serial += 1
        self._write_zone(self.zones[origin])
        if self._running("knot"):
            self._knotc("zone-reload", f"{origin}.")
        if self._running("opendmarc"):
            self._knotc("zone-reload", f"{origin}.", instance="knot-island")

    # -- files ---------------------------------------------------------------------

    def _write_zone(self, zone: Zone) -> None:
        path = self.root / "knot" / "zones" / f"{zone.origin}.zone"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(zone.text(self._serial))
        tmp.replace(path)

    def _write_policy(self) -> None:
        path = self.root / "www" / ".well-known" / "mta-sts.txt"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.mta_sts_policy)
        tmp.chmod(0o644)
        tmp.replace(path)

    def _write_signing_key(self) -> None:
        path = self.root / "opendkim" / f"{self.selector}.private"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(self.signing_key.private_pem)
        tmp.chmod(0o600)
        tmp.replace(path)

    def write_config(self) -> None:
        r = self.root
        for sub in ("knot/zones", "knot/db", "opendkim", "opendmarc", "spf", "nginx/tmp", "www/.well-known"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("spf", "www", "www/.well-known"):
            (r / sub).chmod(0o755)
        zones = "".join(f"  - domain: {origin}.\n" for origin in self.zones)
        for instance, port in (("knot", self.dns_port), ("knot-island", 53)):
            (r / instance / "db").mkdir(parents=True, exist_ok=True)
            (r / instance / "knot.conf").write_text(
                KNOT_CONF.format(run=r / instance, port=port, zones=r / "knot" / "zones") + zones
            )
        for zone in self.zones.values():
            self._write_zone(zone)
        stubs = "".join(
            f'stub-zone:\n    name: "{origin}."\n    stub-addr: 127.0.0.1@{self.dns_port}\n'
            for origin in self.zones
        )
        (r / "opendkim" / "unbound.conf").write_text(UNBOUND_CONF.format(stubs=stubs))
        (r / "opendkim" / "internal-hosts").write_text(f"{NOBODY_IP}\n")
        (r / "opendkim" / "opendkim.conf").write_text(OPENDKIM_CONF.format(
            root=r, port=self.dkim_port, domain=DOMAIN, selector=self.selector, authserv_id=AUTHSERV_ID,
        ))
        self._write_signing_key()
        (r / "opendmarc" / "ignore-hosts").write_text(f"{NOBODY_IP}\n")
        (r / "opendmarc" / "opendmarc.conf").write_text(OPENDMARC_CONF.format(
            root=r, authserv_id=AUTHSERV_ID,
        ))
        # OpenDMARC's /etc/resolv.conf in its namespaces: the island's own Knot.
        (r / "opendmarc" / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:2 attempts:2\n")
        conf = r / "spf" / "policyd-spf.conf"
        conf.write_text(POLICYD_SPF_CONF.format(nobody=NOBODY_IP, authserv_id=AUTHSERV_ID))
        conf.chmod(0o644)
        launcher = r / "spf" / "policyd-spf"
        launcher.write_text(POLICYD_SPF_LAUNCHER.format(port=self.dns_port, conf=conf))
        launcher.chmod(0o755)
        self.https_cert, self.https_key = self.ca.issue("mta-sts", names=(MTA_STS_HOST,))
        (r / "nginx" / "nginx.conf").write_text(NGINX_CONF.format(
            root=r, port=self.https_port, host=MTA_STS_HOST, cert=self.https_cert, key=self.https_key,
        ))
        self._write_policy()
        self._write_forgeries("")

    def attach(self, stack: MailStack) -> None:
        """Wire signing, the MX listener and its milters into the stack's Postfix."""
        milters = [f"inet:127.0.0.1:{self.dkim_port}"]
        if self.dmarc_enabled:
            milters.append(f"unix:{self.root}/opendmarc/opendmarc.sock")
        params = {"dkim_port": self.dkim_port, "mx_milters": ", ".join(milters), "mx_port": self.mx_port,
                  "launcher": self.root / "spf" / "policyd-spf", "forge_file": self._forge_file}
        self.stack = stack
        stack.postfix_main_extra = POSTFIX_MAIN_EXTRA.format(**params)
        stack.postfix_master_extra = POSTFIX_MASTER_EXTRA.format(**params)

    # -- daemons -------------------------------------------------------------------

    def start(self) -> DnsWorld:
        self.write_config()
        try:
            self._start_knot()
            self._start_opendkim()
            if self.dmarc_enabled:
                self._start_opendmarc()
            self._start_nginx()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.root / f"{name}.out", "ab")  # noqa: SIM115 - the child keeps it
        with log:
            self._procs[name] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )

    def _running(self, name: str) -> bool:
        proc = self._procs.get(name)
        return proc is not None and proc.poll() is None

    def _wait_port(self, name: str, port: int) -> None:
        try:
            wait_for_port("127.0.0.1", port, timeout=15)
        except RuntimeError:
            raise RuntimeError(f"{name} did not start:\n{self.log_tail(name)}") from None

    def _start_knot(self) -> None:
        self._spawn("knot", ["knotd", "-c", str(self.root / "knot" / "knot.conf")])
        self._wait_port("knot", self.dns_port)
        self._knotc("zone-status")  # waits for the control socket: zones are loaded

    def _knotc(self, *args: str, instance: str = "knot") -> str:
        deadline = time.monotonic() + 15
        while True:
            done = subprocess.run(
                ["knotc", "-s", str(self.root / instance / "knot.sock"), "-b", "-t", "10", *args],
                capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
            )
            if done.returncode == 0:
                return done.stdout
            # The island's Knot lives and dies with OpenDMARC's namespaces.
            owner = "knot" if instance == "knot" else "opendmarc"
            if time.monotonic() > deadline or not self._running(owner):
                raise RuntimeError(f"knotc {' '.join(args)} failed: {done.stdout}{done.stderr}\n"
                                   f"{self.log_tail(instance)}")
            time.sleep(0.05)

    def _start_opendkim(self) -> None:
        self._spawn("opendkim", ["opendkim", "-f", "-x", str(self.root / "opendkim" / "opendkim.conf")])
        self._wait_port("opendkim", self.dkim_port)

    def _start_opendmarc(self) -> None:
        """OpenDMARC on an island: own network and mount namespaces with their own Knot.

        libresolv (DMARC records) and libspf2 (its SPF check) ask only the servers in
        /etc/resolv.conf, on port 53. On the island a second Knot serves the same zone
        files on 127.0.0.1:53 and a resolv.conf naming it is bind-mounted over
        /etc/resolv.conf; nothing of the host changes. Postfix reaches the milter
        through its unix socket, Knot's control socket is a file too.
        """
        island = self.root / "knot-island"
        script = (
            'ip link set lo up && mount --bind "$1" /etc/resolv.conf && '
            '{ knotd -c "$2" & } && exec opendmarc -f -c "$3"'
        )
        self._spawn("opendmarc", [
            "unshare", "--net", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
            str(self.root / "opendmarc" / "resolv.conf"), str(island / "knot.conf"),
            str(self.root / "opendmarc" / "opendmarc.conf"),
        ])
        self._knotc("zone-status", instance="knot-island")
        self._wait_unix_socket("opendmarc", self.root / "opendmarc" / "opendmarc.sock")

    def _wait_unix_socket(self, name: str, path: Path, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with socket.socket(socket.AF_UNIX) as sock:
                try:
                    sock.connect(str(path))
                    return
                except OSError:
                    if time.monotonic() > deadline or not self._running(name):
                        raise RuntimeError(f"{name} did not start:\n{self.log_tail(name)}") from None
            time.sleep(0.02)

    def _start_nginx(self) -> None:
        self._spawn("nginx", ["nginx", "-e", str(self.root / "nginx" / "error.log"),
                              "-p", str(self.root / "nginx"), "-c", str(self.root / "nginx" / "nginx.conf")])
        self._wait_port("nginx", self.https_port)

    def _stop(self, *names: str) -> None:
        """SIGTERM each daemon's process group, SIGKILL what is left after a grace period.

        libmilter notices SIGTERM only at its next 5 s poll; the milters keep no state
        worth that wait, so the grace period is short.
        """
        procs = [p for p in (self._procs.pop(n, None) for n in names) if p is not None and p.poll() is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        stragglers = [pid for proc in procs for pid in self._group_members(proc.pid)]
        for pid in stragglers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_for_exit(stragglers)

    @staticmethod
    def _group_members(pgid: int) -> list[int]:
        members = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    stat = (entry / "stat").read_text()
                    if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:
                        members.append(int(entry.name))
        return members

    @property
    def daemons(self) -> tuple[str, ...]:
        return ("knot", "opendkim", *(("opendmarc",) if self.dmarc_enabled else ()), "nginx")

    def pids(self) -> list[int]:
        """Every live process of the world (daemons and their children)."""
        return [pid for proc in self._procs.values() for pid in self._group_members(proc.pid)]

    def stop_daemon(self, name: str) -> None:
        """Stop one of knot, opendkim, opendmarc, nginx (a fault test); ``start_daemon`` brings it back."""
        self._stop(name)

    def start_daemon(self, name: str) -> None:
        {"knot": self._start_knot, "opendkim": self._start_opendkim,
         "opendmarc": self._start_opendmarc, "nginx": self._start_nginx}[name]()

    def stop(self) -> None:
        self._stop(*self._procs)

    def log_tail(self, name: str, lines: int = 30) -> str:
        """The end of a daemon's output and of the logs in its directory."""
        directory = self.root / name
        paths = [self.root / f"{name}.out", *(sorted(directory.glob("*.log")) if directory.is_dir() else [])]
        out = []
        for path in paths:
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {path.relative_to(self.root)}\n" + "\n".join(text))
        return "\n".join(out)


def start_world(stack_root: Path, users: dict[str, str]) -> tuple[MailStack, DnsWorld]:
    """A mail stack with the DNS world attached, both started; stop the stack first."""
    stack = MailStack(stack_root)
    for user, password in users.items():
        stack.add_user(user, password)
    world = DnsWorld(stack_root / "world", stack.ca)
    world.attach(stack)
    world.start()
    try:
        stack.start()
    except BaseException:
        world.stop()
        raise
    return stack, world


def missing_tools() -> list[str]:
    """Executables the world needs that are not installed."""
    tools = ("knotd", "knotc", "opendkim", "opendmarc", "nginx", "unshare", "ip", "/usr/bin/policyd-spf")
    return [t for t in tools if shutil.which(t) is None and not Path(t).exists()]


def main() -> int:
    """``scripts/dnsstack.py``: a mail stack with its DNS world, up until Ctrl-C."""
    root = Path(tempfile.mkdtemp(prefix="dnsworld-"))
    stack, world = start_world(root, {"monitor": "demo-password"})
    password_file = root / "monitor.password"
    password_file.write_text("demo-password\n")
    password_file.chmod(0o600)
    config = root / "mail-monitor.toml"
    config.write_text(stack.config_toml("monitor", password_file))
    print(f"mail stack with DNS world in {root}", file=sys.stderr)
    print(f"  DNS (Knot) {world.resolver} ([monitor] resolver): "
          f"kdig @127.0.0.1 -p {world.dns_port} {DOMAIN} TXT", file=sys.stderr)
    print(f"  submission 127.0.0.1:{stack.submission_port}, MX listener {world.mx_port}, "
          f"IMAPS {stack.imaps_port}", file=sys.stderr)
    print(f"  MTA-STS {world.mta_sts_url} (resolve {MTA_STS_HOST} to 127.0.0.1, CA {stack.ca.ca_file})",
          file=sys.stderr)
    print(f"  config: {config}", file=sys.stderr)
    try:
        wait_for_signal()
    finally:
        stack.stop()
        world.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
