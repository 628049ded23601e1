"""Servers that misbehave on purpose: memory stays bounded and the session ends by its deadline.

Each client runs in a child process so that its peak RSS is its own (os.wait4); the
hand-written servers run here, on loopback. No timing assertions: the child's deadline
is what ends a hang, the subprocess timeout only guards the test suite.
"""

from __future__ import annotations

import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEADROOM_MIB = 50  # the promise: healthy + 50 MiB, whatever the server does

Behaviour = Callable[[socket.socket], None]


def _lines(sock: socket.socket) -> Iterator[bytes]:
    buffer = b""
    while True:
        while b"\r\n" not in buffer:
            chunk = sock.recv(4096)
            if not chunk:
                return
            buffer += chunk
        line, buffer = buffer.split(b"\r\n", 1)
        yield line


def _send_forever(sock: socket.socket, chunk: bytes, limit: int = 200 * 1024 * 1024) -> None:
    """Until the client hangs up (or far past any sane limit)."""
    sent = 0
    while sent < limit:
        sock.sendall(chunk)
        sent += len(chunk)


def healthy_imap(sock: socket.socket) -> None:
    sock.sendall(b"* OK [CAPABILITY IMAP4rev1 IDLE UIDPLUS] ready\r\n")
    for line in _lines(sock):
        tag, _, rest = line.partition(b" ")
        command = rest.split(b" ", 1)[0].upper()
        if command == b"SELECT":
            sock.sendall(b"* 3 EXISTS\r\n* OK [UIDNEXT 4] next\r\n" + tag + b" OK [READ-WRITE] selected\r\n")
        elif command == b"UID":  # the FETCH of the guard's headers: a small literal
            header = b"Subject: Lunch\r\n\r\n"
            sock.sendall(b"* 1 FETCH (UID 1 BODY[HEADER.FIELDS (SUBJECT)] {%d}\r\n%s)\r\n" % (len(header), header)
                         + tag + b" OK fetched\r\n")
        elif command == b"LOGOUT":
            sock.sendall(b"* BYE bye\r\n" + tag + b" OK done\r\n")
            return
        else:
            sock.sendall(tag + b" OK done\r\n")


def huge_literal(sock: socket.socket) -> None:
    sock.sendall(b"* OK ready\r\n")
    for _ in _lines(sock):
        sock.sendall(b"* 1 FETCH (BODY[] {100000000}\r\n")
        _send_forever(sock, b"x" * 65536, limit=100_000_000)
        return


def untagged_flood(sock: socket.socket) -> None:
    sock.sendall(b"* OK ready\r\n")
    for _ in _lines(sock):
        _send_forever(sock, b"* 1 EXISTS\r\n" * 5000)
        return


def distinct_flood(sock: socket.socket) -> None:
    """Lines that are all different, so nothing is shared in memory."""
    sock.sendall(b"* OK ready\r\n")
    for _ in _lines(sock):
        for n in range(10_000_000):
            sock.sendall(b"".join(b"* OK [ALERT] %09d %s\r\n" % (n * 100 + i, b"x" * 200) for i in range(100)))
        return


def endless_line(sock: socket.socket) -> None:
    sock.sendall(b"* OK ready\r\n")
    for _ in _lines(sock):
        sock.sendall(b"* OK ")
        _send_forever(sock, b"A" * 65536)
        return


def trickle(greeting: bytes) -> Behaviour:
    def behave(sock: socket.socket) -> None:
        for byte in greeting:
            sock.sendall(bytes([byte]))
            time.sleep(1.0)
        time.sleep(60)

    return behave


# The header of a 16 KiB TLS handshake record, whose body then never comes but byte by byte.
_HANDSHAKE_RECORD = b"\x16\x03\x03\x40\x00"


def trickled_handshake(sock: socket.socket) -> None:
    trickle(_HANDSHAKE_RECORD + b"\x02" * 64)(sock)


def trickled_starttls(sock: socket.socket) -> None:
    sock.sendall(b"220 fake ESMTP\r\n")
    for line in _lines(sock):
        if line.upper().startswith(b"EHLO"):
            sock.sendall(b"250-fake\r\n250 STARTTLS\r\n")
        elif line.upper().startswith(b"STARTTLS"):
            sock.sendall(b"220 go ahead\r\n")
            trickled_handshake(sock)
            return


def healthy_smtp(sock: socket.socket) -> None:
    sock.sendall(b"220 fake ESMTP\r\n")
    for line in _lines(sock):
        if line.upper().startswith(b"EHLO"):
            sock.sendall(b"250-fake\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n")
        elif line.upper().startswith(b"AUTH"):
            sock.sendall(b"235 ok\r\n")
        elif line.upper().startswith(b"QUIT"):
            sock.sendall(b"221 bye\r\n")
            return
        else:
            sock.sendall(b"250 ok\r\n")


def smtp_continuation_flood(sock: socket.socket) -> None:
    _send_forever(sock, b"220-and there is more\r\n" * 2000)


@pytest.fixture
def serve() -> Iterator[Callable[[Behaviour], int]]:
    servers: list[socketserver.ThreadingTCPServer] = []

    def start(behaviour: Behaviour) -> int:
        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                try:
                    behaviour(self.request)
                except OSError:
                    pass  # the client hung up: that is the point

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return int(server.server_address[1])

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


CLIENT = """
import resource
import sys
from mail_monitor.config import Endpoint, ImapEndpoint, Secret
from mail_monitor.deadline import Deadline
from mail_monitor.probes.tls import describe_error

protocol, port, seconds, tls = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
deadline = Deadline(seconds, step_timeout=30)
try:
    if protocol == "imap":
        from mail_monitor.probes.imap import ImapSession
        session = ImapSession(ImapEndpoint("127.0.0.1", port, tls), deadline)
        session.login("user", Secret("pw"))
        session.prepare([])
        session.client.noop()
        session.delete_own("INBOX", [1], "[mail-monitor]")
    else:
        from mail_monitor.probes.smtp import SmtpSession
        session = SmtpSession(Endpoint("127.0.0.1", port, tls), deadline, "client.test")
        session.login("user", Secret("pw"))
    session.close()
    print("ok")
except Exception as exc:
    print(describe_error(exc))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # peak RSS, MiB
"""


def run_client(protocol: str, port: int, deadline: float = 20.0, tls: str = "none") -> tuple[str, float]:
    """The client's one line of output and its peak RSS in MiB."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", CLIENT, protocol, str(port), str(deadline), tls],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    try:
        out, err = child.communicate(timeout=deadline + 60)  # a guard for the suite, not a measurement
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        pytest.fail("the client outlived its deadline by a minute")
    assert child.returncode == 0, err.decode()
    lines = out.decode().strip().splitlines()
    assert len(lines) >= 2, (out, err)
    return lines[-2], float(lines[-1])


@pytest.fixture(scope="module")
def healthy_peak() -> dict[str, float]:
    return {}


def baseline(serve: Callable[[Behaviour], int], protocol: str, cache: dict[str, float]) -> float:
    if protocol not in cache:
        message, peak = run_client(protocol, serve(healthy_imap if protocol == "imap" else healthy_smtp))
        assert message == "ok"
        cache[protocol] = peak
    return cache[protocol]


@pytest.mark.parametrize(("protocol", "behaviour", "expected"), [
    ("imap", huge_literal, "IMAP server sent a 100 MB literal (limit 1 MiB)"),
    ("imap", untagged_flood, "IMAP server sent more than 100,000 lines in answer to one command"),
    ("imap", distinct_flood, "IMAP server sent more than 8 MiB in answer to one command"),
    ("imap", endless_line, "IMAP server sent a line longer than 1 MiB"),
    ("smtp", smtp_continuation_flood, "SMTP server sent more than 256 lines in one reply"),
], ids=["imap-huge-literal", "imap-untagged-flood", "imap-distinct-flood", "imap-endless-line",
        "smtp-continuation-flood"])
def test_memory_stays_bounded_and_the_message_names_the_misbehaviour(serve, healthy_peak, protocol, behaviour,
                                                                     expected):
    healthy = baseline(serve, protocol, healthy_peak)
    message, peak = run_client(protocol, serve(behaviour))
    print(f"{protocol} {behaviour.__name__}: peak {peak:.1f} MiB, healthy {healthy:.1f} MiB")
    assert message == expected
    assert peak <= healthy + HEADROOM_MIB, f"peak {peak:.0f} MiB against {healthy:.0f} MiB healthy"


@pytest.mark.parametrize(("protocol", "greeting"), [("imap", b"* OK ready\r\n"), ("smtp", b"220 ready\r\n")])
def test_a_server_trickling_a_line_cannot_outlast_the_deadline(serve, protocol, greeting):
    message, _ = run_client(protocol, serve(trickle(greeting)), deadline=3.0)
    assert message.startswith(f"{protocol.upper()} server left a line unfinished ("), message
    assert message.endswith("until the run deadline"), message


@pytest.mark.parametrize(("protocol", "tls", "behaviour"), [
    ("imap", "implicit", trickled_handshake),
    ("smtp", "implicit", trickled_handshake),
    ("smtp", "starttls", trickled_starttls),
])
def test_a_server_trickling_its_tls_handshake_cannot_outlast_the_deadline(serve, protocol, tls, behaviour):
    # The ssl module times the whole handshake against the socket's timeout, which the
    # sessions never set past the deadline: without that, this would take hours.
    message, _ = run_client(protocol, serve(behaviour), deadline=3.0, tls=tls)
    assert message == "timed out"
