"""Value kinds of the configuration: how a TOML value is checked, what is expected, how it prints.

Each kind parses a raw TOML value into its typed form or raises :class:`Invalid`;
``expected`` is the phrase used both in error messages and in the documentation's
key table, so the two cannot drift apart.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mail_monitor.config.durations import format_duration, parse_duration

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LABEL = r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")
_DOMAIN = re.compile(rf"(?=.{{4,254}}$)(?:{_LABEL}\.)+{_LABEL}\.?")
_EHLO_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_ADDRESS = re.compile(r"[^\s@<>\"(),;:\\\[\]]{1,64}@[A-Za-z0-9._-]{1,253}")
_URL = re.compile(r"https?://[^/\s?#@]+(?:[/?#]\S*)?")


class Invalid(ValueError):
    """The raw value does not fit; the key's ``expected`` text says what would."""


def _has_control(text: str) -> bool:
    return any(not c.isprintable() for c in text)


@dataclass(frozen=True)
class Kind:
    """Base: subclasses set ``expected`` and implement ``parse``.

    A kind without parameters of its own is a plain subclass: ``@dataclass`` would only
    generate again the six methods it inherits, at ~1 ms of every start each
    (docs/performance.md).
    """

    def parse(self, raw: object) -> Any:
        raise NotImplementedError

    @property
    def expected(self) -> str:
        raise NotImplementedError

    def render(self, value: Any) -> Any:
        """The value as check-config prints it (a TOML value the loader reads back)."""
        return value


@dataclass(frozen=True)
class Duration(Kind):
    """Seconds, written "90s", "5m", "1h", "1d", "250ms" or a plain number; bounded both ways."""

    low: float
    high: float
    zero_means: str | None = None  # "0" is also allowed and means this ("never", "every run")

    @property
    def expected(self) -> str:
        bounds = f"a duration from {format_duration(self.low)} to {format_duration(self.high)}"
        return f'{bounds}, or "0" ({self.zero_means})' if self.zero_means else bounds

    def parse(self, raw: object) -> float:
        try:
            seconds = parse_duration(raw)
        except ValueError:
            raise Invalid from None
        if seconds == 0 and self.zero_means:
            return 0.0
        if not self.low <= seconds <= self.high:
            raise Invalid
        return seconds

    def render(self, value: Any) -> Any:
        return "0" if value == 0 and self.zero_means else format_duration(value)


@dataclass(frozen=True)
class Integer(Kind):
    low: int
    high: int

    @property
    def expected(self) -> str:
        return f"an integer from {self.low} to {self.high}"

    def parse(self, raw: object) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int) or not self.low <= raw <= self.high:
            raise Invalid
        return raw

    def render(self, value: Any) -> Any:
        return int(value)


class Fraction(Kind):
    @property
    def expected(self) -> str:
        return "a number from 0 to 1"

    def parse(self, raw: object) -> float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise Invalid
        if isinstance(raw, int) and raw not in (0, 1):
            raise Invalid
        value = float(raw)
        if not math.isfinite(value) or not 0 <= value <= 1:
            raise Invalid
        return value


class Boolean(Kind):
    @property
    def expected(self) -> str:
        return "true or false"

    def parse(self, raw: object) -> bool:
        if not isinstance(raw, bool):
            raise Invalid
        return raw


@dataclass(frozen=True)
class Text(Kind):
    """A one-line string: never empty, no control characters, bounded length, optional pattern."""

    what: str = "a non-empty string"
    max_length: int = 256
    pattern: re.Pattern[str] | None = None
    ascii_only: bool = False
    lower: bool = False

    @property
    def expected(self) -> str:
        return f"{self.what} (at most {self.max_length} characters)" if self.pattern is None else self.what

    def parse(self, raw: object) -> str:
        if not isinstance(raw, str) or not raw.strip() or len(raw) > self.max_length or _has_control(raw):
            raise Invalid
        if self.ascii_only and not raw.isascii():
            raise Invalid
        if self.pattern is not None and not self.pattern.fullmatch(raw):
            raise Invalid
        return raw.lower() if self.lower else raw


def hostname(what: str = "a host name or IP address") -> Text:
    return Text(what, 253, re.compile(rf"{_HOSTNAME.pattern}|[0-9A-Fa-f:.]+"), ascii_only=True)


class DomainName(Text):
    """A DNS name with at least two labels, lower-cased, without the root's trailing dot."""

    def parse(self, raw: object) -> str:
        return super().parse(raw).rstrip(".")


def domain_name(what: str = "a domain name such as example.org (ASCII; IDNs in xn-- form)") -> DomainName:
    return DomainName(what, 254, _DOMAIN, ascii_only=True, lower=True)


EHLO_NAME = Text("a host name of ASCII letters, digits, '-' and '.' (it is sent as the SMTP EHLO name)",
                 253, _EHLO_NAME, ascii_only=True)
ADDRESS = Text("an e-mail address such as monitor@example.org", 254, _ADDRESS, ascii_only=True)
URL = Text("an http:// or https:// URL", 2048, _URL, ascii_only=True)
NAME = Text("1-64 letters, digits and _ . @ + -", 64, re.compile(r"[A-Za-z0-9_.@+-]{1,64}"))
FOLDER = Text("a folder name", 200)


@dataclass(frozen=True)
class Choice(Kind):
    options: tuple[str, ...]

    @property
    def expected(self) -> str:
        return "one of " + ", ".join(f'"{o}"' for o in self.options)

    def parse(self, raw: object) -> str:
        if not isinstance(raw, str) or raw not in self.options:
            raise Invalid
        return raw


@dataclass(frozen=True)
class FilePath(Kind):
    """A file name; ``~`` is expanded. ``suffix`` is enforced when given."""

    what: str = "a file name"
    suffix: str | None = None

    @property
    def expected(self) -> str:
        return f'{self.what} ending in "{self.suffix}"' if self.suffix else self.what

    def parse(self, raw: object) -> Path:
        if not isinstance(raw, str) or not raw.strip() or len(raw) > 4096 or _has_control(raw):
            raise Invalid
        path = Path(os.path.expanduser(raw))
        if self.suffix and not path.name.endswith(self.suffix):
            raise Invalid
        return path

    def render(self, value: Any) -> Any:
        return str(value)


class SecretFile(Kind):
    """The name of a file holding a secret; kept as written so ``$CREDENTIALS_DIRECTORY`` expands late."""

    @property
    def expected(self) -> str:
        return 'a file name (may start with "$CREDENTIALS_DIRECTORY/")'

    def parse(self, raw: object) -> str:
        if not isinstance(raw, str) or not raw.strip() or len(raw) > 4096 or _has_control(raw):
            raise Invalid
        return raw


@dataclass(frozen=True)
class ListOf(Kind):
    """An array of items of one kind; duplicates refused, length bounded."""

    item: Kind
    max_items: int = 64
    min_items: int = 0

    @property
    def expected(self) -> str:
        least = "" if self.min_items == 0 else f"at least {self.min_items}, "
        return f"an array ({least}at most {self.max_items}, no duplicates) of: {self.item.expected}"

    def parse(self, raw: object) -> tuple[Any, ...]:
        if not isinstance(raw, list) or not self.min_items <= len(raw) <= self.max_items:
            raise Invalid
        items = tuple(self.item.parse(value) for value in raw)
        if len(set(items)) != len(items):
            raise Invalid
        return items

    def render(self, value: Any) -> Any:
        return [self.item.render(v) for v in value]


class IpAddressKind(Kind):
    @property
    def expected(self) -> str:
        return "an IPv4 or IPv6 address"

    def parse(self, raw: object) -> IpAddress:
        if not isinstance(raw, str) or len(raw) > 64:
            raise Invalid
        try:
            return ipaddress.ip_address(raw)
        except ValueError:
            raise Invalid from None

    def render(self, value: Any) -> Any:
        return str(value)


class DnsServerKind(Kind):
    """ "IP" or "IP:PORT" ("[IPv6]:PORT"): where every DNS query goes."""

    @property
    def expected(self) -> str:
        return 'an IP address with an optional port: "127.0.0.1:5353", "[::1]:53", "192.0.2.1"'

    def parse(self, raw: object) -> tuple[str, int]:
        if not isinstance(raw, str) or len(raw) > 64:
            raise Invalid
        match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d{1,5}))?|([0-9.]+)(?::(\d{1,5}))?|([0-9A-Fa-f:.]+)", raw)
        if not match:
            raise Invalid
        host = match.group(1) or match.group(3) or match.group(5)
        port = int(match.group(2) or match.group(4) or 53)
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise Invalid from None
        if not 1 <= port <= 65535:
            raise Invalid
        return str(address), port

    def render(self, value: Any) -> Any:
        host, port = (value.address, value.port) if hasattr(value, "address") else value
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Command(Kind):
    """argv of a program run without a shell."""

    @property
    def expected(self) -> str:
        return 'an array of strings: a program and its arguments, e.g. ["oauth2-token", "--account", "me"]'

    def parse(self, raw: object) -> tuple[str, ...]:
        if not isinstance(raw, list) or not 1 <= len(raw) <= 64:
            raise Invalid
        if not all(isinstance(a, str) and len(a) <= 4096 and "\0" not in a for a in raw) or not raw[0].strip():
            raise Invalid
        return tuple(raw)

    def render(self, value: Any) -> Any:
        return list(value)


@dataclass(frozen=True)
class UrlTemplate(Kind):
    """A URL with ``{placeholders}`` filled in per ping; only the listed names are allowed."""

    names: tuple[str, ...]

    @property
    def expected(self) -> str:
        return "an http(s) URL using only the placeholders " + ", ".join(f"{{{n}}}" for n in self.names)

    def parse(self, raw: object) -> str:
        URL.parse(raw)
        assert isinstance(raw, str)
        try:
            fields = list(string.Formatter().parse(raw))
        except ValueError:
            raise Invalid from None
        for _, name, spec, conversion in fields:
            if name is not None and (name not in self.names or spec or conversion):
                raise Invalid
        return raw


class AccountRef(Kind):
    """The name of an ``[accounts.NAME]`` table; resolved to the Account by the loader."""

    @property
    def expected(self) -> str:
        return "the name of an [accounts.NAME] table"

    def parse(self, raw: object) -> str:
        if not isinstance(raw, str) or not raw or len(raw) > 1024:
            raise Invalid
        return raw

    def render(self, value: Any) -> Any:
        return getattr(value, "name", value)


@dataclass(frozen=True)
class Table(Kind):
    """A sub-table read by its own section (``smtp``, ``imap``)."""

    section: str

    @property
    def expected(self) -> str:
        return f"a table (see [{self.section}])"

    def parse(self, raw: object) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise Invalid
        return raw
