"""DNS blocklists (spec 8.3): is a sending IP listed, and why?

A DNSBL answers ``A`` for a listed address (``7.113.0.203.zen.spamhaus.org`` -> ``127.0.0.2``)
and usually a ``TXT`` with the reason and a removal link. Answers outside 127.0.0.0/8, and
Spamhaus' 127.255.255.x, are not listings but errors: the list refused the query or is gone
and answering everything. Those make the check WARNING as "could not check", never "listed".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from mail_monitor.deliverability.dns import DnsError, DnsErrorKind, Resolver
from mail_monitor.deliverability.model import Finding
from mail_monitor.results import Outcome

# Spamhaus' return codes that mean "your query", not "this IP" (https://www.spamhaus.org/faqs/).
QUERY_ERRORS = {
    "127.255.255.252": "the zone name was mistyped",
    "127.255.255.254": "the list refuses queries from public or open resolvers: use your own resolver",
    "127.255.255.255": "the list refuses: too many queries from this resolver",
}
MAX_REASON = 200  # characters of TXT reason kept


@dataclass(frozen=True)
class Listing:
    """One IP in one zone: ``listed`` is None when the zone could not tell (``error`` says why)."""

    ip: str
    zone: str
    listed: bool | None
    codes: tuple[str, ...] = ()
    reason: str = ""
    error: str = ""


@dataclass(frozen=True)
class BlocklistReport:
    listings: tuple[Listing, ...]  # every ip x zone, for mail_monitor_blocklisted{ip,zone}
    finding: Finding  # the check ``blocklists``


def query_name(ip: str, zone: str) -> str:
    """Reversed octets (IPv4) or nibbles (IPv6) under the zone."""
    reverse = ipaddress.ip_address(ip).reverse_pointer
    return reverse.rsplit(".", 2)[0] + "." + zone.rstrip(".").lower()


def lookup(ip: str, zone: str, resolver: Resolver) -> Listing:
    name = query_name(ip, zone)
    try:
        answers = resolver.a(name)
    except DnsError as error:
        if error.kind is DnsErrorKind.TEMPFAIL:
            return Listing(ip, zone, None, error=f"{zone}: {error.describe()}")
        return Listing(ip, zone, False)
    refused = [QUERY_ERRORS[a] for a in answers if a in QUERY_ERRORS]
    if refused:
        return Listing(ip, zone, None, tuple(answers), error=f"{zone} answered {answers[0]}: {refused[0]}")
    strange = [a for a in answers if ipaddress.ip_address(a) not in ipaddress.ip_network("127.0.0.0/8")]
    if strange:
        gone = f"{zone} answered {strange[0]}, not 127.0.0.x: the list may be gone and answering everything"
        return Listing(ip, zone, None, tuple(answers), error=gone)
    try:
        reason = " ".join(t.decode("utf-8", "replace") for t in resolver.txt(name))
    except DnsError:
        reason = ""
    return Listing(ip, zone, True, tuple(answers), " ".join(reason.split())[:MAX_REASON])


def check_blocklists(
    ips: Sequence[str], zones: Sequence[str], fail_on: Collection[str], resolver: Resolver
) -> BlocklistReport:
    """Every IP against every zone: listed is WARNING, or FAILED for zones in ``fail_on``."""
    listings = tuple(lookup(ip, zone, resolver) for ip in ips for zone in zones)
    fail_zones = {z.rstrip(".").lower() for z in fail_on}
    problems: list[tuple[Outcome, str]] = []
    for listing in listings:
        if listing.listed:
            outcome = Outcome.FAILED if listing.zone.rstrip(".").lower() in fail_zones else Outcome.WARNING
            why = listing.reason or f"answer {', '.join(listing.codes)}, no reason given"
            problems.append((outcome, f"{listing.ip} is listed on {listing.zone}: {why}"))
        elif listing.listed is None:
            problems.append((Outcome.WARNING, f"could not check {listing.ip} on {listing.error}"))
    if not ips:
        finding = Finding("blocklists", Outcome.SKIPPED, "no sending IPs to check")
    elif not problems:
        finding = Finding("blocklists", Outcome.OK, f"{', '.join(ips)} listed on none of {', '.join(zones)}")
    else:
        problems.sort(key=lambda p: p[0] is not Outcome.FAILED)
        finding = Finding("blocklists", problems[0][0], "; ".join(text for _, text in problems))
    return BlocklistReport(listings, finding)
