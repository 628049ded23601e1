"""Shared fixtures: the real mail stack, config files, and running the real CLI."""

from __future__ import annotations

import imaplib
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from mailstack import MailStack  # noqa: E402

PASSWORDS = {
    "monitor": "correct horse battery staple 1",
    "other": "other-account-secret-2",
    "junkuser": "junk-account-secret-3",
    "cleanup": "cleanup-account-secret-4",
}


@dataclass
class Cli:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Cli:
    """Run the real command in a fresh process, as systemd or a user would."""
    full_env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    full_env.update(env or {})
    done = subprocess.run(
        [sys.executable, "-m", "mail_monitor", *args],
        capture_output=True, text=True, timeout=timeout, env=full_env, cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    return Cli(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="session")
def stack() -> Iterator[MailStack]:
    for tool in ("postfix", "dovecot"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            pytest.fail(f"{tool} is not installed: run .ci/run (it installs Debian's packages)")
    root = Path(tempfile.mkdtemp(prefix="mailstack-test-"))
    mail_stack = MailStack(root)
    for user, password in PASSWORDS.items():
        mail_stack.add_user(user, password)
    mail_stack.start()
    try:
        yield mail_stack
    finally:
        mail_stack.destroy()


@pytest.fixture(scope="session")
def secrets_dir(stack: MailStack) -> Path:
    directory = stack.root / "secrets"
    directory.mkdir(exist_ok=True)
    for user, password in PASSWORDS.items():
        path = directory / user
        path.write_text(password + "\n")
        path.chmod(0o600)
    (directory / "wrong").write_text("not-the-password\n")
    return directory


def account_toml(stack: MailStack, name: str, user: str, secrets_dir: Path, *, address: str | None = None,
                 password: str | None = None, smtp_port: int | None = None, smtp_tls: str = "starttls",
                 imap_port: int | None = None, imap_tls: str = "implicit", imap_host: str | None = None,
                 smtp_host: str | None = None, ca_file: Path | None = None,
                 extra_folders: tuple[str, ...] = ("Junk",)) -> str:
    ca = ca_file or stack.ca.ca_file
    folders = ", ".join(f'"{f}"' for f in extra_folders)
    return (
        f"[accounts.{name}]\n"
        f'address = "{address or stack.accounts[user].address}"\n'
        f'username = "{stack.accounts[user].address}"\n'
        f'password_file = "{secrets_dir / (password or user)}"\n'
        f'smtp = {{ host = "{smtp_host or stack.host}", port = {smtp_port or stack.submission_port}, '
        f'tls = "{smtp_tls}", ca_file = "{ca}" }}\n'
        f'imap = {{ host = "{imap_host or stack.host}", port = {imap_port or stack.imaps_port}, '
        f'tls = "{imap_tls}", ca_file = "{ca}", extra_folders = [{folders}] }}\n\n'
    )


def route_toml(name: str, sender: str, recipient: str, receive_timeout: str = "20s", **extra: str) -> str:
    lines = [f'name = "{name}"', f'from = "{sender}"', f'to = "{recipient}"',
             f'receive_timeout = "{receive_timeout}"']
    lines += [f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}" for k, v in extra.items()]
    return "[[routes]]\n" + "\n".join(lines) + "\n\n"


def monitor_toml(state_file: Path | None = None, deadline: str = "60s", **extra: object) -> str:
    lines = [f'deadline = "{deadline}"']
    if state_file is not None:
        lines.append(f'state_file = "{state_file}"')
    for key, value in extra.items():
        lines.append(f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {str(value).lower()}")
    return "[monitor]\n" + "\n".join(lines) + "\n\n"


@pytest.fixture
def write_config(tmp_path: Path):  # type: ignore[no-untyped-def]
    def write(text: str, name: str = "config.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


def imap_login(stack: MailStack, user: str) -> imaplib.IMAP4_SSL:
    context = ssl.create_default_context(cafile=str(stack.ca.ca_file))
    client = imaplib.IMAP4_SSL("localhost", stack.imaps_port, ssl_context=context, timeout=10)
    client.login(stack.accounts[user].address, PASSWORDS[user])
    return client


def subjects(stack: MailStack, user: str, folder: str = "INBOX") -> list[str]:
    """Subjects of every message in a folder, read independently of mail-monitor."""
    client = imap_login(stack, user)
    try:
        client.select(folder, readonly=True)
        _, data = client.search(None, "ALL")
        ids = data[0].split()
        out = []
        for msg_id in ids:
            _, fetched = client.fetch(msg_id, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            raw = fetched[0][1] if fetched and isinstance(fetched[0], tuple) else b""
            out.append(raw.decode().replace("Subject:", "").strip())
        return out
    finally:
        client.logout()


# --- the DNS world (scripts/dnsstack.py): a second mail stack with Knot, OpenDKIM,
# OpenDMARC, policyd-spf and nginx, for deliverability tests. Started once per session.

from dnsstack import DnsWorld, missing_tools, start_world  # noqa: E402


@pytest.fixture(scope="session")
def dns_world() -> Iterator[DnsWorld]:
    """The world as started: break it only through ``world``, which heals it afterwards."""
    missing = missing_tools()
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: run .ci/run (it installs Debian's packages)")
    root = Path(tempfile.mkdtemp(prefix="dnsworld-test-"))
    mail_stack, world = start_world(root, PASSWORDS)
    try:
        yield world
    finally:
        mail_stack.stop()
        world.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def world(dns_world: DnsWorld) -> Iterator[DnsWorld]:
    """The session's DNS world, healthy again (``reset()``) after the test."""
    try:
        yield dns_world
    finally:
        dns_world.reset()


@pytest.fixture(scope="session")
def world_secrets_dir(dns_world: DnsWorld) -> Path:
    """Password files for the accounts of the world's mail stack (``dns_world.stack``)."""
    assert dns_world.stack is not None
    directory = dns_world.stack.root / "secrets"
    directory.mkdir(exist_ok=True)
    for user, password in PASSWORDS.items():
        path = directory / user
        path.write_text(password + "\n")
        path.chmod(0o600)
    return directory
