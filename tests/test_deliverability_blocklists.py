"""DNSBL lookups on a fake zone: listed, not listed, refused, gone, and fail_on."""

from __future__ import annotations

import re
from pathlib import Path

from mail_monitor.config.schema import DEFAULT_BLOCKLISTS
from mail_monitor.deliverability.blocklists import check_blocklists, lookup, query_name
from mail_monitor.deliverability.dns import StaticResolver
from mail_monitor.results import Outcome

IP = "203.0.113.7"
LISTED = "7.113.0.203"
V6 = "2001:db8::1"


def test_query_names() -> None:
    assert query_name(IP, "zen.spamhaus.org.") == "7.113.0.203.zen.spamhaus.org"
    nibbles = query_name(V6, "bl.example")
    assert nibbles == "1." + "0." * 23 + "8.b.d.0.1.0.0.2.bl.example"


def test_default_zones_are_unique_and_plain() -> None:
    assert len(set(DEFAULT_BLOCKLISTS)) == len(DEFAULT_BLOCKLISTS) >= 2
    assert all(zone == zone.lower().strip(".") for zone in DEFAULT_BLOCKLISTS)


def test_the_documented_default_zones_are_the_default() -> None:
    """docs/deliverability.md has a row for every default zone and no other, and shows the default."""
    docs = (Path(__file__).parents[1] / "docs" / "deliverability.md").read_text()
    table = docs.split("The default zones allow free queries", 1)[1].split("\n\n", 2)[1]
    assert tuple(re.findall(r"^\| `([^`]+)` \|", table, re.MULTILINE)) == DEFAULT_BLOCKLISTS
    (shown,) = re.findall(r"^# zones = (\[.*\])\s+# the default$", docs, re.MULTILINE)
    assert shown == "[" + ", ".join(f'"{zone}"' for zone in DEFAULT_BLOCKLISTS) + "]"


def zone(**answers: list[str]) -> StaticResolver:
    records: dict[tuple[str, str], list[object]] = {("bl.example", "TXT"): ["zone apex exists"]}
    for label, values in answers.items():
        records[(f"{LISTED}.{label.replace('_', '.')}", "A")] = list(values)
    return StaticResolver(records)


def test_listed_with_reason_is_a_warning() -> None:
    resolver = zone(bl_example=["127.0.0.2"])
    resolver.records = {**resolver.records, (f"{LISTED}.bl.example", "TXT"): ["Listed: spam trap hit, see https://bl.example/x"]}
    report = check_blocklists([IP], ["bl.example"], [], resolver)
    assert report.finding.outcome is Outcome.WARNING
    assert report.finding.message == f"{IP} is listed on bl.example: Listed: spam trap hit, see https://bl.example/x"
    (listing,) = report.listings
    assert (listing.listed, listing.codes) == (True, ("127.0.0.2",))


def test_fail_on_zone_makes_it_failed_and_leads_the_message() -> None:
    resolver = zone(bl_example=["127.0.0.2"], strict_example=["127.0.0.4"])
    report = check_blocklists([IP], ["bl.example", "strict.example"], ["Strict.Example."], resolver)
    assert report.finding.outcome is Outcome.FAILED
    assert report.finding.message.startswith(f"{IP} is listed on strict.example: answer 127.0.0.4, no reason given")
    assert "bl.example" in report.finding.message


def test_not_listed_is_ok_and_every_pair_is_reported() -> None:
    report = check_blocklists([IP, V6], ["bl.example", "other.example"], [], zone())
    assert report.finding.outcome is Outcome.OK
    assert [(entry.ip, entry.zone, entry.listed) for entry in report.listings] == [
        (IP, "bl.example", False), (IP, "other.example", False),
        (V6, "bl.example", False), (V6, "other.example", False),
    ]


def test_refused_query_is_an_error_not_a_listing() -> None:
    resolver = zone(zen_spamhaus_org=["127.255.255.254"])
    report = check_blocklists([IP], ["zen.spamhaus.org"], ["zen.spamhaus.org"], resolver)
    (listing,) = report.listings
    assert listing.listed is None and "public or open resolvers" in listing.error
    assert report.finding.outcome is Outcome.WARNING  # not FAILED, although the zone is in fail_on
    assert "could not check" in report.finding.message


def test_answers_outside_loopback_mean_the_list_is_gone() -> None:
    listing = lookup(IP, "dead.example", zone(dead_example=["192.0.2.80"]))
    assert listing.listed is None and "answering everything" in listing.error


def test_tempfail_is_a_warning() -> None:
    resolver = StaticResolver({}, tempfail=frozenset({f"{LISTED}.bl.example"}))
    report = check_blocklists([IP], ["bl.example"], [], resolver)
    assert report.finding.outcome is Outcome.WARNING and report.listings[0].listed is None


def test_long_reasons_are_cut_and_no_ips_skip() -> None:
    resolver = zone(bl_example=["127.0.0.2"])
    resolver.records = {**resolver.records, (f"{LISTED}.bl.example", "TXT"): ["why " * 200]}
    assert len(lookup(IP, "bl.example", resolver).reason) == 200
    assert check_blocklists([], ["bl.example"], [], zone()).finding.outcome is Outcome.SKIPPED
