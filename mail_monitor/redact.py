"""Remove every configured secret, and the forms it takes on the wire, from any text.

A server may echo a login back in its error (``NO [AUTHENTICATIONFAILED] LOGIN user
"password"``, ``535 ... AHVzZXIAcGFzcw==``); whatever text goes to output, logs, state,
metrics or alerts passes through a :class:`Scrubber` first, whoever produced it.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

from mail_monitor.config.secrets import Secret
from mail_monitor.config.text import escape

REDACTED = "<redacted>"
Credential = tuple[str | None, "Secret | str"]  # (the user name it is sent with, the secret)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def _lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), text)


def wire_forms(secret: str, username: str | None = None) -> tuple[set[str], set[str]]:
    """The plain forms of ``secret`` and its base64 forms (without padding).

    Plain: as is; IMAP quoted-string (``\\`` and ``"`` escaped); URL-encoded (both
    hex cases, ``+`` for space or not); JSON and Python string escapes; our message
    escape. Base64: AUTH LOGIN (the secret alone); AUTH PLAIN with and without the
    user as authorisation id; XOAUTH2; HTTP basic auth.
    """
    plain = {
        secret,
        secret.replace("\\", "\\\\").replace('"', '\\"'),
        quote(secret, safe=""),
        quote_plus(secret, safe=""),
        _lower_hex(quote(secret, safe="")),
        _lower_hex(quote_plus(secret, safe="")),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
        repr(secret.encode("utf-8"))[2:-1],
        escape(secret),
    }
    encoded = {_b64(secret)}
    if username is not None:
        encoded |= {
            _b64(f"\0{username}\0{secret}"),
            _b64(f"{username}\0{username}\0{secret}"),
            _b64(f"user={username}\x01auth=Bearer {secret}\x01\x01"),
            _b64(f"{username}:{secret}"),
        }
    return {form for form in plain if form}, {form for form in encoded if form}


class Scrubber:
    """Replaces each secret and its wire forms with ``<redacted>``; cheap to call, safe to share.

    ``add`` teaches it a secret obtained later (a token a command printed during the
    run); the pattern is rebuilt and swapped in one assignment, so threads scrubbing
    at the same time see the old or the new pattern, never a broken one.
    """

    def __init__(self, credentials: Iterable[Credential] = ()) -> None:
        self._lock = threading.Lock()
        self._credentials: tuple[tuple[str | None, str], ...] = ()
        self._pattern: re.Pattern[str] | None = None
        self.add(credentials)

    def add(self, credentials: Iterable[Credential]) -> None:
        more = tuple((user, secret.reveal() if isinstance(secret, Secret) else secret) for user, secret in credentials)
        with self._lock:
            self._credentials += more
            self._pattern = self._compile(self._credentials)

    @staticmethod
    def _compile(credentials: Iterable[tuple[str | None, str]]) -> re.Pattern[str] | None:
        plain: set[str] = set()
        encoded: set[str] = set()
        for user, secret in credentials:
            if secret:
                more_plain, more_encoded = wire_forms(secret, user)
                plain |= more_plain
                encoded |= more_encoded
        # Longest first: an alternation takes the first branch that matches, not the longest.
        branches = sorted([(len(f), re.escape(f)) for f in plain]
                          + [(len(f), re.escape(f) + "=*") for f in encoded], reverse=True)
        return re.compile("|".join(b for _, b in branches)) if branches else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def scrub(self, text: str) -> str:
        pattern = self._pattern
        return text if pattern is None else pattern.sub(REDACTED, text)

    __call__ = scrub

    def scrub_data(self, value: Any) -> Any:
        """Every string inside JSON-like data (dicts, lists, tuples), keys included."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {self.scrub_data(k): self.scrub_data(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.scrub_data(v) for v in value)
        return value


class ScrubbingFilter(logging.Filter):
    """A handler filter: the formatted message, the traceback and the stack of each record, scrubbed.

    Put it on the handler (``handler.addFilter``), not on a logger: handler filters
    also see records propagated from child loggers such as ``imapclient``.
    """

    def __init__(self, scrubber: Scrubber) -> None:
        super().__init__()
        self.scrubber = scrubber

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.scrubber:
            return True
        record.msg = self.scrubber.scrub(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrubber.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrubber.scrub(record.stack_info)
        return True


def scrub_handlers(scrubber: Scrubber, logger: logging.Logger | None = None) -> None:
    """Add a :class:`ScrubbingFilter` to every handler of ``logger`` (default: the root logger)."""
    for handler in (logger or logging.getLogger()).handlers:
        handler.addFilter(ScrubbingFilter(scrubber))
