"""The DNS seam: every deliverability check asks its questions through a :class:`Resolver`.

:class:`DnspythonResolver` is the real one (dnspython, optionally pinned to one server, as
``[monitor] resolver = "127.0.0.1:5353"`` asks); :class:`StaticResolver` answers from a dict,
for tests and for dry runs. Lookups return the records or raise :class:`DnsError` with one of
three kinds, the distinction SPF's void-lookup limit, DKIM's temperror and every message need.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

DEFAULT_TIMEOUT = 5.0  # seconds for one query, retries included
MAX_RECORDS = 100  # more records than this in one answer are cut off: no check needs them


class DnsErrorKind(enum.StrEnum):
    NXDOMAIN = "nxdomain"  # the name does not exist
    NODATA = "nodata"  # the name exists, but has no record of this type
    TEMPFAIL = "tempfail"  # timeout, SERVFAIL, REFUSED, no server reachable: try again later


class DnsError(Exception):
    def __init__(self, kind: DnsErrorKind, name: str, rdtype: str, reason: str = "") -> None:
        self.kind = kind
        self.name = name
        self.rdtype = rdtype
        self.reason = reason
        super().__init__(self.describe())

    def describe(self) -> str:
        what = {
            DnsErrorKind.NXDOMAIN: "name does not exist",
            DnsErrorKind.NODATA: f"no {self.rdtype} record",
            DnsErrorKind.TEMPFAIL: "DNS lookup failed temporarily",
        }[self.kind]
        return f"{self.name} {self.rdtype}: {what}" + (f" ({self.reason})" if self.reason else "")

    @property
    def void(self) -> bool:
        """An answer with no records (RFC 7208 section 4.6.4 counts these)."""
        return self.kind is not DnsErrorKind.TEMPFAIL


@dataclass(frozen=True)
class MxRecord:
    preference: int
    exchange: str  # lower case, no trailing dot; "" for a null MX (RFC 7505)


class Resolver(Protocol):
    """Answers for one name and type; raises :class:`DnsError` when there are none."""

    def txt(self, name: str) -> tuple[bytes, ...]:
        """Each TXT record's character-strings joined (RFC 7208 section 3.3)."""

    def mx(self, name: str) -> tuple[MxRecord, ...]: ...

    def a(self, name: str) -> tuple[str, ...]: ...

    def aaaa(self, name: str) -> tuple[str, ...]: ...

    def ptr(self, name: str) -> tuple[str, ...]:
        """PTR targets of a reverse name (see :func:`reverse_name`)."""


def reverse_name(ip: str) -> str:
    """``203.0.113.7`` -> ``7.113.0.203.in-addr.arpa``; IPv6 as nibbles under ``ip6.arpa``."""
    return ipaddress.ip_address(ip).reverse_pointer


def addresses(resolver: Resolver, name: str) -> tuple[str, ...]:
    """A and AAAA of a host; raises the A error when there are neither."""
    found: list[str] = []
    errors: list[DnsError] = []
    for lookup in (resolver.a, resolver.aaaa):
        try:
            found.extend(lookup(name))
        except DnsError as error:
            errors.append(error)
    if found:
        return tuple(found)
    temporary = [e for e in errors if e.kind is DnsErrorKind.TEMPFAIL]
    raise temporary[0] if temporary else errors[0]


def parse_server(text: str) -> tuple[str, int]:
    """``"127.0.0.1:5353"``, ``"[::1]:5353"``, ``"::1"`` or ``"192.0.2.1"`` -> (address, port)."""
    text = text.strip()
    host, port = text, 53
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"expected [IPv6]:port, got {text!r}")
        if rest:
            port = _port(rest[1:], text)
    elif text.count(":") == 1:
        host, _, rest = text.partition(":")
        port = _port(rest, text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"expected an IP address with an optional :port, got {text!r}") from None
    return host, port


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"expected a port from 1 to 65535 in {whole!r}")
    return int(text)


def _name(text: str) -> str:
    return text.rstrip(".").lower()


class DnspythonResolver:
    """The system's resolver, or one server (``host:port``) when given; no caching between calls.

    ``timeout`` bounds one query including dnspython's retries (its ``lifetime``).
    """

    def __init__(
        self, server: str | None = None, *, timeout: float = DEFAULT_TIMEOUT, resolv_conf: str = "/etc/resolv.conf"
    ) -> None:
        import dns.resolver

        self._problem = ""
        if server is None:
            try:
                self._resolver = dns.resolver.Resolver(resolv_conf, configure=True)
            except dns.resolver.NoResolverConfiguration as error:  # no /etc/resolv.conf: every query fails
                self._resolver = dns.resolver.Resolver(configure=False)
                self._problem = f"no DNS resolver configured ({error})"
        else:
            address, port = parse_server(server)
            self._resolver = dns.resolver.Resolver(configure=False)
            self._resolver.nameservers = [address]
            self._resolver.port = port
        self._resolver.timeout = timeout
        self._resolver.lifetime = timeout
        self._resolver.cache = None

    def _query(self, name: str, rdtype: str) -> list[Any]:
        import dns.exception
        import dns.name
        import dns.resolver

        if self._problem:
            raise DnsError(DnsErrorKind.TEMPFAIL, name, rdtype, self._problem)
        try:
            answer = self._resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            raise DnsError(DnsErrorKind.NXDOMAIN, name, rdtype) from None
        except dns.resolver.NoAnswer:
            raise DnsError(DnsErrorKind.NODATA, name, rdtype) from None
        except (dns.name.EmptyLabel, dns.name.LabelTooLong, dns.name.NameTooLong) as error:
            raise DnsError(DnsErrorKind.NXDOMAIN, name, rdtype, f"not a valid name: {error}") from None
        except dns.exception.Timeout:
            raise DnsError(DnsErrorKind.TEMPFAIL, name, rdtype, "timed out") from None
        except dns.exception.DNSException as error:  # SERVFAIL, REFUSED, no nameservers, ...
            raise DnsError(DnsErrorKind.TEMPFAIL, name, rdtype, str(error)) from None
        return list(answer)[:MAX_RECORDS]

    def txt(self, name: str) -> tuple[bytes, ...]:
        return tuple(b"".join(r.strings) for r in self._query(name, "TXT"))

    def mx(self, name: str) -> tuple[MxRecord, ...]:
        return tuple(MxRecord(r.preference, _name(r.exchange.to_text())) for r in self._query(name, "MX"))

    def a(self, name: str) -> tuple[str, ...]:
        return tuple(r.address for r in self._query(name, "A"))

    def aaaa(self, name: str) -> tuple[str, ...]:
        return tuple(r.address for r in self._query(name, "AAAA"))

    def ptr(self, name: str) -> tuple[str, ...]:
        return tuple(_name(r.target.to_text()) for r in self._query(name, "PTR"))


class CachingResolver:
    """Answers each question once: checks of one run that ask the same (MX for ``mx`` and
    ``mta_sts``, the SPF record for every sending IP) share the answer. Make one per run; it
    keeps no TTLs. Errors are remembered too, a TEMPFAIL included: a run does not retry."""

    def __init__(self, inner: Resolver) -> None:
        self._inner = inner
        self._memo: dict[tuple[str, str], tuple[Any, ...] | DnsError] = {}

    def _ask(self, rdtype: str, name: str, lookup: Callable[[str], tuple[Any, ...]]) -> tuple[Any, ...]:
        key = (_name(name), rdtype)
        if key not in self._memo:
            try:
                self._memo[key] = lookup(name)
            except DnsError as error:
                self._memo[key] = error
        answer = self._memo[key]
        if isinstance(answer, DnsError):
            raise DnsError(answer.kind, answer.name, answer.rdtype, answer.reason)  # a fresh traceback each time
        return answer

    def txt(self, name: str) -> tuple[bytes, ...]:
        return self._ask("TXT", name, self._inner.txt)

    def mx(self, name: str) -> tuple[MxRecord, ...]:
        return self._ask("MX", name, self._inner.mx)

    def a(self, name: str) -> tuple[str, ...]:
        return self._ask("A", name, self._inner.a)

    def aaaa(self, name: str) -> tuple[str, ...]:
        return self._ask("AAAA", name, self._inner.aaaa)

    def ptr(self, name: str) -> tuple[str, ...]:
        return self._ask("PTR", name, self._inner.ptr)


@dataclass
class StaticResolver:
    """A zone in a dict: ``{("example.org", "TXT"): ["v=spf1 -all"], ...}``.

    A name with no entry at all is NXDOMAIN, a name with entries of other types is NODATA, names
    in ``tempfail`` fail temporarily. MX values are ``(preference, exchange)``. Every question is
    appended to ``queries``, so tests can count lookups.
    """

    records: Mapping[tuple[str, str], Iterable[object]] = field(default_factory=dict)
    tempfail: frozenset[str] = frozenset()
    queries: list[tuple[str, str]] = field(default_factory=list)

    def _query(self, name: str, rdtype: str) -> list[object]:
        key = _name(name)
        self.queries.append((key, rdtype))
        if key in self.tempfail:
            raise DnsError(DnsErrorKind.TEMPFAIL, key, rdtype, "timed out")
        values = [v for (n, t), vs in self.records.items() if _name(n) == key and t == rdtype for v in vs]
        if values:
            return values[:MAX_RECORDS]
        exists = any(_name(n) == key or _name(n).endswith("." + key) for n, _ in self.records)
        raise DnsError(DnsErrorKind.NODATA if exists else DnsErrorKind.NXDOMAIN, key, rdtype)

    def txt(self, name: str) -> tuple[bytes, ...]:
        return tuple(v if isinstance(v, bytes) else str(v).encode() for v in self._query(name, "TXT"))

    def mx(self, name: str) -> tuple[MxRecord, ...]:
        out = []
        for value in self._query(name, "MX"):
            preference, exchange = cast(tuple[int, str], value)
            out.append(MxRecord(int(preference), _name(str(exchange))))
        return tuple(out)

    def a(self, name: str) -> tuple[str, ...]:
        return tuple(str(v) for v in self._query(name, "A"))

    def aaaa(self, name: str) -> tuple[str, ...]:
        return tuple(str(v) for v in self._query(name, "AAAA"))

    def ptr(self, name: str) -> tuple[str, ...]:
        return tuple(_name(str(v)) for v in self._query(name, "PTR"))
