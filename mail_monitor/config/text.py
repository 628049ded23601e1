"""Echo user input in one-line messages: control characters escaped, long values shortened."""

from __future__ import annotations

import datetime
import math
import re

MAX_SHOWN = 60
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}
_AUTHORITY = re.compile(r"[^/?#]*")


def escape(text: str) -> str:
    """Backslash-escape everything that is not printable (newlines, ESC, bidi controls...)."""
    out = []
    for char in text:
        if char in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x100:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return "".join(out)


def shorten(text: str, limit: int = MAX_SHOWN) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown_name(name: str) -> str:
    """A user-chosen name (a TOML key, an account) as it appears in a key path."""
    return shorten(escape(name))


def shown_value(value: object) -> str:
    """A TOML value as it appears after "got": short, one line, never raising."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + shorten(escape(value)) + '"'
    if isinstance(value, int):
        # str() of an int with thousands of digits raises ValueError since Python 3.11.
        return str(value) if abs(value) < 10**30 else ("a huge negative integer" if value < 0 else "a huge integer")
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return "a date/time"
    return f"a {type(value).__name__}"


def split_url(url: str) -> tuple[str, str]:
    """``scheme://host[:port]`` and the rest of ``url`` (path, query, fragment). Never raises.

    A capability URL (a healthchecks.io ping URL, an Uptime Kuma push URL) keeps its
    secret in the rest, so only the first part may be shown. User info is dropped.
    """
    scheme, sep, after = url.partition("://")
    if not sep:
        return "", url
    authority = _AUTHORITY.match(after)
    assert authority is not None  # it matches the empty string at least
    return f"{scheme}{sep}{authority.group(0).rpartition('@')[2]}", after[authority.end():]
