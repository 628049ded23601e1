"""SPF: evaluate check_host() for an IP with pyspf, and count a record's DNS lookups.

Why pyspf: it is the reference implementation of RFC 7208 that Debian's policyd-spf and
the authheaders library build on, and it implements what a hand-written evaluator gets wrong:
macros (``exists:%{i}._spf.%{d}``), include/redirect semantics (an include's fail is "no
match", redirect is ignored when ``all`` is present), the limits of section 4.6.4 (10
DNS-querying terms, 10 MX or PTR names each, 2 void lookups) and ptr validation. checkdmarc
was the other candidate: it parses and counts but does not evaluate an IP, pulls in a dozen
dependencies and cannot be pointed at an injected resolver. pyspf asks DNS through one method,
``query.dns``; :class:`_ResolverQuery` overrides it to go through our :class:`Resolver`, so
tests and ``[monitor] resolver`` steer SPF like every other check.

pyspf stops at the first matching term, so the lookups it counted depend on the IP. The
posture check wants the worst case, so :func:`lookup_count` walks the record itself through
include and redirect and counts every DNS-querying term (RFC 7208 section 4.6.4).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

from mail_monitor.deliverability.dns import DnsError, DnsErrorKind, Resolver
from mail_monitor.deliverability.model import Verdict

LOOKUP_LIMIT = 10  # RFC 7208 section 4.6.4: DNS-querying terms per check_host()
VOID_LOOKUP_LIMIT = 2  # RFC 7208 section 4.6.4: answers with no records
EVALUATION_TIMEOUT = 20.0  # seconds for one check_host(), RFC 7208 section 4.6.4 suggests 20
_DNS_MECHANISMS = frozenset({"include", "a", "mx", "ptr", "exists"})
_MAX_RECORDS_WALKED = 40  # bounds lookup_count() on include loops and absurd trees


@dataclass(frozen=True)
class SpfResult:
    """check_host() of one IP for one domain."""

    ip: str
    domain: str
    verdict: Verdict
    explanation: str  # pyspf's reason, e.g. "SPF Permanent Error: Too many DNS lookups"
    mechanism: str = ""  # the term that matched, when one did


@dataclass(frozen=True)
class LookupCount:
    """The worst-case number of DNS-querying terms of a domain's SPF record, and what is broken."""

    domain: str
    count: int
    terms: tuple[str, ...]  # the counted terms, "include:_spf.example.net" style, outermost first
    problems: tuple[str, ...]  # e.g. "include:gone.example has no SPF record"


def records(domain: str, resolver: Resolver) -> tuple[str, ...]:
    """The ``v=spf1`` TXT records of a domain (RFC 7208 section 4.5); none is an empty tuple.

    Raises :class:`DnsError` only for TEMPFAIL.
    """
    try:
        txts = resolver.txt(domain)
    except DnsError as error:
        if error.kind is DnsErrorKind.TEMPFAIL:
            raise
        return ()
    found = []
    for txt in txts:
        text = txt.decode("ascii", "replace")
        if text.lower() == "v=spf1" or text.lower().startswith("v=spf1 "):
            found.append(" ".join(text.split()))
    return tuple(found)


def check_host(
    ip: str, sender: str, resolver: Resolver, *, helo: str = "", timeout: float = EVALUATION_TIMEOUT
) -> SpfResult:
    """RFC 7208 check_host() for ``ip`` sending as ``sender`` (an address or a bare domain).

    With an empty sender the HELO identity is checked, as receivers do for bounces.
    """
    import spf as pyspf

    if sender and "@" not in sender:
        sender = f"postmaster@{sender}"
    query = _query_class()(
        i=ip, s=sender, h=helo or (sender.rpartition("@")[2] if sender else ""), strict=True, querytime=timeout
    )
    query.resolver = resolver
    query.deadline = time.monotonic() + timeout
    try:
        word, _code, explanation = query.check()
    except (pyspf.AmbiguityWarning, ValueError) as error:  # pyspf lets a few odd inputs escape
        word, explanation = "permerror", str(error)
    verdict = Verdict.from_word(word) or Verdict.PERMERROR
    if verdict is Verdict.NONE and not explanation:
        explanation = f"{query.d} publishes no SPF record"
    return SpfResult(
        ip=ip,
        domain=str(query.d),
        verdict=verdict,
        explanation=str(explanation),
        mechanism=str(query.mechanism or "") if verdict is not Verdict.PERMERROR else "",
    )


@functools.cache
def _query_class() -> Any:
    """pyspf's query with its one DNS method sent through our Resolver (pyspf is imported late)."""
    import spf as pyspf

    class _ResolverQuery(pyspf.query):  # type: ignore[misc]
        resolver: Resolver
        deadline: float

        def dns(self, name: str, qtype: str, cnames: object = None, ignore_void: bool = False) -> list[Any]:
            name = str(name).rstrip(".").lower()
            if not name or not all(0 < len(label) < 64 for label in name.split(".")):
                return []  # pyspf's own rule: an invalid name has no records
            key = (name, qtype)
            if key in self.cache:
                result: list[Any] = self.cache[key]
            else:
                if time.monotonic() > self.deadline:
                    raise pyspf.TempError("SPF evaluation ran out of time")
                result = self._lookup(name, qtype)
                self.cache[key] = result
            if not result and not ignore_void:
                self.void_lookups += 1
                if self.void_lookups > VOID_LOOKUP_LIMIT:
                    raise pyspf.PermError(f"Void lookup limit of {VOID_LOOKUP_LIMIT} exceeded")
            return result

        def _lookup(self, name: str, qtype: str) -> list[Any]:
            resolver = self.resolver
            try:
                if qtype == "TXT":
                    return [[txt] for txt in resolver.txt(name)]
                if qtype == "A":
                    return list(resolver.a(name))
                if qtype == "AAAA":
                    return list(resolver.aaaa(name))
                if qtype == "MX":
                    return [(mx.preference, mx.exchange) for mx in resolver.mx(name) if mx.exchange]
                if qtype == "PTR":
                    return list(resolver.ptr(name))
            except DnsError as error:
                if error.kind is DnsErrorKind.TEMPFAIL:
                    raise pyspf.TempError(f"DNS {error.describe()}") from None
                return []
            return []  # type SPF (99): obsolete, only asked in pyspf's "harsh" mode

    return _ResolverQuery


def _term(term: str) -> tuple[str, str]:
    """``-include:x.org`` -> ("include", "x.org"); ``redirect=x.org`` -> ("redirect", "x.org")."""
    term = term.lstrip("+-~?")
    equals, colon = term.find("="), term.find(":")
    if equals > 0 and (colon < 0 or equals < colon):
        return term[:equals].lower(), term[equals + 1 :]
    name_end = min([i for i in (colon, term.find("/")) if i >= 0], default=len(term))
    argument = term[colon + 1 :].split("/")[0] if colon >= 0 else ""
    return term[:name_end].lower(), argument


def lookup_count(domain: str, record: str, resolver: Resolver) -> LookupCount:
    """Count every DNS-querying term reachable from ``record`` (include, a, mx, ptr, exists, redirect).

    Targets written with macros cannot be followed without a message; they count as one.
    Raises :class:`DnsError` (TEMPFAIL) when an included record cannot be fetched now.
    """
    terms: list[str] = []
    problems: list[str] = []
    seen = {domain.lower()}

    def walk(record: str) -> None:
        parsed = [(raw, *_term(raw)) for raw in record.split()[1:]]
        has_all = any(name == "all" for _, name, _ in parsed)
        for raw, name, argument in parsed:
            if name == "redirect" and has_all:
                continue  # RFC 7208 section 6.1: ignored when "all" is present
            if name not in _DNS_MECHANISMS and name != "redirect":
                continue
            terms.append(raw.lstrip("+"))
            if name not in ("include", "redirect"):
                continue
            target = argument.rstrip(".").lower()
            if not target:
                problems.append(f"{raw} names no domain")
            elif "%" in target:
                problems.append(f"{raw} uses a macro, so its record was not counted")
            elif target in seen:
                problems.append(f"{raw} points back to a record already counted (a loop)")
            elif len(seen) >= _MAX_RECORDS_WALKED:
                problems.append(f"stopped counting at {raw}: more than {_MAX_RECORDS_WALKED} records")
            else:
                seen.add(target)
                found = records(target, resolver)
                if len(found) != 1:
                    state = "no SPF record" if not found else f"{len(found)} SPF records"
                    problems.append(f"{raw} has {state}, which is a permerror for every receiver")
                else:
                    walk(found[0])

    walk(record)
    return LookupCount(domain, len(terms), tuple(terms), tuple(problems))


def summary(record: str, limit: int = 5) -> str:
    """"record ends in -all and lists ip4:198.51.100.0/24, include:_spf.example.net" for a message."""
    terms = record.split()[1:]
    ending = next((t for t in terms if _term(t)[0] == "all"), None)
    redirect = next((t for t in terms if _term(t)[0] == "redirect"), None)
    listed = [t for t in terms if _term(t)[0] not in ("all", "redirect", "exp")]
    shown = ", ".join(listed[:limit]) + (f" and {len(listed) - limit} more" if len(listed) > limit else "")
    if ending:
        head = f"record ends in {ending}"
    elif redirect:
        head = f"record redirects ({redirect})"
    else:
        head = "record has no all term (unmatched mail is neutral)"
    return f"{head} and lists {shown}" if shown else f"{head} and lists nothing else"

