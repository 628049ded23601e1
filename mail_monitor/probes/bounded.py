"""Reading from a server that may be hostile: bounded lines, literals and responses, and a deadline.

imaplib and smtplib trust the server: imaplib reads a literal of any announced size
into memory, stores every untagged response until asked, and, like smtplib, waits for
the end of a line as long as bytes keep trickling in. Their sockets are read here
instead, through one reader per connection that enforces a byte and line budget per
response (per IMAP command, per SMTP reply) and never reads past the run's deadline.
A server that breaks a limit ends the step with ``ServerMisbehaved``, whose message
names what it did.
"""

from __future__ import annotations

import imaplib
import math
import smtplib
import socket
import ssl
import time
from typing import Any

from imapclient import IMAPClient
from imapclient.imap4 import IMAP4WithTimeout
from imapclient.tls import IMAP4_TLS

from mail_monitor.deadline import Deadline, DeadlineExceeded

MIB = 1024 * 1024
IMAP_MAX_LINE = 1 * MIB  # imaplib's own _MAXLINE is 1,000,000
IMAP_MAX_LITERAL = 1 * MIB  # the monitor fetches headers and 64 KiB of a bounce, no more
IMAP_MAX_RESPONSE_BYTES = 8 * MIB  # everything the server sends in answer to one command
IMAP_MAX_RESPONSE_LINES = 100_000
IMAP_MAX_STORED = 100_000  # untagged responses imaplib keeps between commands
IMAP_MAX_STORED_BYTES = 8 * MIB
SMTP_MAX_LINE = 8192  # smtplib's _MAXLINE; RFC 5321 allows 512
SMTP_MAX_REPLY_LINES = 256  # an EHLO reply has a dozen
SMTP_MAX_REPLY_BYTES = 256 * 1024
_CHUNK = 65536
_PER_COMMAND = "in answer to one command"


class ServerMisbehaved(Exception):
    """The server broke a protocol limit; the message says which, in one line."""


def _size(count: int) -> str:
    if count >= MIB and count % MIB == 0:
        return f"{count // MIB} MiB"
    if count >= 1_000_000:
        return f"{count / 1_000_000:g} MB"
    return f"{count:,} bytes"


class BoundedReader:
    """A buffered reader over one socket with per-response budgets and the run's deadline.

    It offers the two calls imaplib and smtplib make on their ``file``: ``readline`` and
    ``read``. Data already received stays buffered when a non-blocking read finds no
    more (imapclient's IDLE polls that way).
    """

    def __init__(self, sock: socket.socket, deadline: Deadline, protocol: str, *, max_line: int,
                 max_literal: int = 0) -> None:
        self.sock = sock
        self.deadline = deadline
        self.protocol = protocol
        self.max_line = max_line
        self.max_literal = max_literal
        self._buffer = bytearray()
        self._partial_since: float | None = None  # when the unfinished line began
        self._max_bytes = math.inf
        self._max_lines = math.inf
        self._unit = ""
        self._bytes = 0
        self._lines = 0

    def begin(self, max_bytes: float, max_lines: float, unit: str) -> None:
        """A new response (``unit``: "in answer to one command", "in one reply") starts."""
        self._max_bytes, self._max_lines, self._unit = max_bytes, max_lines, unit
        self._bytes = self._lines = 0

    def readline(self, limit: int = -1) -> bytes:
        limit = self.max_line if limit < 0 else min(limit, self.max_line)
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end >= 0 and end < limit:
                return self._take(end + 1, lines=1)
            if len(self._buffer) >= limit:
                if limit < self.max_line:
                    return self._take(limit, lines=1)  # the caller's limit: let it judge the line
                raise ServerMisbehaved(f"{self.protocol} server sent a line longer than {_size(limit)}")
            start = len(self._buffer)
            if not self._fill():
                return self._take(len(self._buffer), lines=1)  # end of stream

    def read(self, size: int) -> bytes:
        if self.max_literal and size > self.max_literal:
            raise ServerMisbehaved(
                f"{self.protocol} server sent a {_size(size)} literal (limit {_size(self.max_literal)})")
        self._count(size, 0)
        while len(self._buffer) < size:
            if not self._fill():
                break
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def close(self) -> None:
        """smtplib closes its ``file``; the socket is its own to close."""
        self._buffer.clear()

    def _take(self, count: int, lines: int) -> bytes:
        self._count(count, lines)
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        self._partial_since = time.monotonic() if self._buffer else None
        return data

    def _count(self, count: int, lines: int) -> None:
        self._bytes += count
        self._lines += lines
        if self._lines > self._max_lines:
            raise ServerMisbehaved(f"{self.protocol} server sent more than {self._max_lines:,.0f} lines "
                                   f"{self._unit}")
        if self._bytes > self._max_bytes:
            raise ServerMisbehaved(f"{self.protocol} server sent more than {_size(int(self._max_bytes))} "
                                   f"{self._unit}")

    def _fill(self) -> bool:
        """Receive more; False at the end of the stream."""
        left = self.deadline.remaining()
        if left <= 0:
            self._raise_unfinished("the run deadline")
            raise DeadlineExceeded(f"run deadline of {self.deadline.seconds:g}s reached")
        timeout = self.sock.gettimeout()
        if timeout != 0.0 and (timeout is None or timeout > left):
            self.sock.settimeout(left)  # never wait past the deadline (0.0: non-blocking, leave it)
        try:
            data = self.sock.recv(_CHUNK)
        except TimeoutError:
            self._raise_unfinished("the run deadline" if self.deadline.remaining() <= 0.01 else "the timeout")
            raise
        if data and self._partial_since is None:
            self._partial_since = time.monotonic()
        self._buffer += data
        return bool(data)

    def _raise_unfinished(self, what: str) -> None:
        if self._buffer and self._partial_since is not None:
            waited = time.monotonic() - self._partial_since
            raise ServerMisbehaved(
                f"{self.protocol} server left a line unfinished ({len(self._buffer):,} bytes in {waited:.1f}s) "
                f"until {what}")


class _BoundedIMAP4Mixin:
    """imaplib.IMAP4 reading through a BoundedReader; the budget restarts with each command."""

    sock: socket.socket
    untagged_responses: dict[str, list[Any]]
    _deadline: Deadline
    _reader: BoundedReader | None

    def _bounded(self) -> BoundedReader:
        if self._reader is None or self._reader.sock is not self.sock:  # new after STARTTLS
            self._reader = BoundedReader(self.sock, self._deadline, "IMAP", max_line=IMAP_MAX_LINE,
                                         max_literal=IMAP_MAX_LITERAL)
            self._reader.begin(IMAP_MAX_RESPONSE_BYTES, IMAP_MAX_RESPONSE_LINES, _PER_COMMAND)
        return self._reader

    def readline(self) -> bytes:
        return self._bounded().readline()

    def read(self, size: int) -> bytes:
        return self._bounded().read(size)

    def _command(self, name: str, *args: Any) -> Any:
        stored = sum(len(v) for v in self.untagged_responses.values())
        if stored > IMAP_MAX_STORED or _stored_bytes(self.untagged_responses) > IMAP_MAX_STORED_BYTES:
            raise ServerMisbehaved(f"IMAP server sent more unsolicited responses than the monitor keeps "
                                   f"({stored:,}; limit {IMAP_MAX_STORED:,} or {_size(IMAP_MAX_STORED_BYTES)})")
        self._bounded().begin(IMAP_MAX_RESPONSE_BYTES, IMAP_MAX_RESPONSE_LINES, _PER_COMMAND)
        return super()._command(name, *args)  # type: ignore[misc]


def _stored_bytes(store: dict[str, list[Any]]) -> int:
    total = 0
    for values in store.values():
        for value in values:
            if isinstance(value, tuple):
                total += sum(len(v) for v in value if isinstance(v, bytes))
            elif isinstance(value, bytes):
                total += len(value)
    return total


class _BoundedIMAP4(_BoundedIMAP4Mixin, IMAP4WithTimeout):  # type: ignore[misc]
    def __init__(self, deadline: Deadline, host: str, port: int, timeout: float | None) -> None:
        self._deadline, self._reader = deadline, None
        super().__init__(host, port, timeout)


class _BoundedIMAP4TLS(_BoundedIMAP4Mixin, IMAP4_TLS):  # type: ignore[misc]
    def __init__(self, deadline: Deadline, host: str, port: int, context: ssl.SSLContext | None,
                 timeout: float | None) -> None:
        self._deadline, self._reader = deadline, None
        super().__init__(host, port, context, timeout)


class BoundedIMAPClient(IMAPClient):  # type: ignore[misc]
    """IMAPClient whose imaplib connection reads through a BoundedReader under ``deadline``."""

    def __init__(self, host: str, *, deadline: Deadline, **kwargs: Any) -> None:
        self._deadline = deadline
        super().__init__(host, **kwargs)

    def _create_IMAP4(self) -> imaplib.IMAP4:
        # Mirrors IMAPClient._create_IMAP4 (imapclient 3.x), minus the stream mode we never use.
        connect_timeout = getattr(self._timeout, "connect", None)
        if self.ssl:
            return _BoundedIMAP4TLS(self._deadline, self.host, self.port, self.ssl_context, connect_timeout)
        return _BoundedIMAP4(self._deadline, self.host, self.port, connect_timeout)


class _BoundedSMTPMixin:
    """smtplib.SMTP whose replies are read through a BoundedReader, a budget per reply."""

    sock: socket.socket | None
    file: Any
    _deadline: Deadline

    def getreply(self) -> tuple[int, bytes]:
        if self.file is None and self.sock is not None:
            self.file = BoundedReader(self.sock, self._deadline, "SMTP", max_line=SMTP_MAX_LINE + 1)
        if isinstance(self.file, BoundedReader):
            self.file.begin(SMTP_MAX_REPLY_BYTES, SMTP_MAX_REPLY_LINES, "in one reply")
        return super().getreply()  # type: ignore[misc, no-any-return]


class BoundedSMTP(_BoundedSMTPMixin, smtplib.SMTP):
    def __init__(self, *args: Any, deadline: Deadline, **kwargs: Any) -> None:
        self._deadline = deadline
        super().__init__(*args, **kwargs)


class BoundedSMTP_SSL(_BoundedSMTPMixin, smtplib.SMTP_SSL):
    def __init__(self, *args: Any, deadline: Deadline, **kwargs: Any) -> None:
        self._deadline = deadline
        super().__init__(*args, **kwargs)
