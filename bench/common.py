"""Shared pieces of the benchmarks: a delaying LMTP relay, the mail stack, statistics."""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from mailstack import MailStack  # noqa: E402


@dataclass
class LmtpDelayRelay:
    """TCP relay between Postfix and Dovecot's LMTP that holds back the end of each message.

    Everything is forwarded at once except the ``CRLF.CRLF`` that ends DATA: that is held
    for ``delay`` seconds, so Dovecot stores (and shows) the mail exactly that much later.
    ``deliveries`` records (Unix time) when Dovecot's reply to it came back: the moment
    the mail became visible, within a millisecond.
    """

    target_port: int
    delay: float = 0.0
    deliveries: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.port = int(self.server.getsockname()[1])
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            waiting = threading.Event()  # set while the end of a message is on its way
            threading.Thread(target=self._upstream, args=(client, upstream, waiting), daemon=True).start()
            threading.Thread(target=self._downstream, args=(upstream, client, waiting), daemon=True).start()

    def _upstream(self, source: socket.socket, sink: socket.socket, waiting: threading.Event) -> None:
        in_data = False
        tail = b""
        try:
            while chunk := source.recv(65536):
                if not in_data:
                    seen = (tail + chunk).upper()
                    in_data = b"\r\nDATA\r\n" in seen or seen.startswith(b"DATA\r\n")
                    sink.sendall(chunk)
                    tail = (tail + chunk)[-8:]
                    continue
                data = tail + chunk
                end = data.find(b"\r\n.\r\n")
                if end < 0:
                    sink.sendall(chunk)
                    tail = data[-8:]
                    continue
                cut = max(0, end - len(tail))  # offset in chunk where the terminator starts
                sink.sendall(chunk[:cut])
                time.sleep(self.delay)
                waiting.set()
                sink.sendall(chunk[cut:])
                in_data, tail = False, b""
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _downstream(self, source: socket.socket, sink: socket.socket, waiting: threading.Event) -> None:
        try:
            while chunk := source.recv(65536):
                if waiting.is_set() and chunk.startswith(b"250"):
                    self.deliveries.append(time.time())
                    waiting.clear()
                sink.sendall(chunk)
        except OSError:
            pass

    def close(self) -> None:
        self._stop = True
        self.server.close()


@contextmanager
def mail_stack(users: Sequence[str] = ("monitor",), relay_delay: float | None = None,
               max_userip_connections: int = 10) -> Iterator[tuple[MailStack, LmtpDelayRelay | None]]:
    # Not "mailstack-...": a test stack in a directory named "stack" stops every Dovecot whose
    # title starts "mailstack-stack" (issue 10), and that is what a root of "mailstack-bench-*" gives.
    root = Path(tempfile.mkdtemp(prefix="mmbench-"))
    stack = MailStack(root, max_userip_connections=max_userip_connections)
    relay = None
    if relay_delay is not None:
        relay = LmtpDelayRelay(stack.lmtp_port, relay_delay)
        stack.lmtp_target_port = relay.port
    for user in users:
        stack.add_user(user, f"pw-{user}")
        (root / f"{user}.password").write_text(f"pw-{user}\n")
    stack.start()
    try:
        yield stack, relay
    finally:
        stack.destroy()
        if relay is not None:
            relay.close()


def account_block(stack: MailStack, name: str, user: str) -> str:
    return (
        f"[accounts.{name}]\n"
        f'address = "{user}@example.test"\n'
        f'password_file = "{stack.root / (user + ".password")}"\n'
        f'smtp = {{ host = "localhost", port = {stack.submission_port}, tls = "starttls", '
        f'ca_file = "{stack.ca.ca_file}" }}\n'
        f'imap = {{ host = "localhost", port = {stack.imaps_port}, tls = "implicit", '
        f'ca_file = "{stack.ca.ca_file}" }}\n\n'
    )


def write_config(stack: MailStack, routes: int = 1, *, delete: bool = True, extra_monitor: str = "",
                 extra: str = "", name: str = "bench.toml", deadline: float = 60.0,
                 receive_timeout: float = 30.0) -> Path:
    text = (f'[monitor]\ndeadline = "{deadline:g}s"\ndelete_test_mail = {"true" if delete else "false"}\n'
            f'{extra_monitor}\n')
    text += extra
    users = sorted(stack.accounts)
    for index in range(routes):
        user = users[index % len(users)]
        if f"[accounts.{user}]" not in text:
            text += account_block(stack, user, user)
    for index in range(routes):
        user = users[index % len(users)]
        text += (f'[[routes]]\nname = "r{index}"\nfrom = "{user}"\nto = "{user}"\n'
                 f'receive_timeout = "{receive_timeout:g}s"\n\n')
    path = stack.root / name
    path.write_text(text)
    return path


def run_monitor(config: Path, *extra: str, timeout: float = 120) -> dict:  # type: ignore[type-arg]
    done = subprocess.run([sys.executable, "-m", "mail_monitor", "run", "-c", str(config), "--no-state",
                           "--format", "json", *extra], capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    if not done.stdout:
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def bench_arguments(doc: str | None, *, repeat: int, delay: bool = True) -> argparse.ArgumentParser:
    """``--repeat`` (and ``--delay`` of the relay); each script adds what it varies."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=repeat)
    if delay:
        parser.add_argument("--delay", type=float, default=1.0)
    return parser


def byte_compile(tree: Path = ROOT) -> None:
    """Byte-compile the package, as any real installation (pip, Nix) has it.

    This sandbox sets PYTHONDONTWRITEBYTECODE, which would otherwise make every timed
    run compile mail_monitor from source.
    """
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "mail_monitor")], check=True)


def summary(values: Sequence[float], scale: float = 1.0, digits: int = 0) -> str:
    if not values:
        return "n/a"
    fmt = f"{{:.{digits}f}}"
    low, mid, high = min(values), statistics.median(values), max(values)
    return " / ".join(fmt.format(v * scale) for v in (low, mid, high))


def environment_line() -> str:
    return f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}"
