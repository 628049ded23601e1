"""SPF through pyspf on a fake zone: mechanisms, includes, macros, and the RFC 7208 limits."""

from __future__ import annotations

import pytest

from mail_monitor.deliverability import spf
from mail_monitor.deliverability.dns import StaticResolver
from mail_monitor.deliverability.model import Verdict


def zone(record: str) -> StaticResolver:
    return StaticResolver({("example.org", "TXT"): [record]})


def includes(count: int, last: str = "ip4:203.0.113.7") -> StaticResolver:
    """example.org includes i1 ... iN, a chain of one DNS-querying term each."""
    records: dict[tuple[str, str], list[object]] = {}
    for n in range(1, count + 1):
        nxt = f"include:i{n + 1}.example.net" if n < count else last
        records[(f"i{n}.example.net", "TXT")] = [f"v=spf1 {nxt} -all"]
    records[("example.org", "TXT")] = ["v=spf1 include:i1.example.net -all"]
    return StaticResolver(records)


def test_ip4_pass_and_fail_with_the_matching_term() -> None:
    resolver = zone("v=spf1 ip4:198.51.100.0/24 -all")
    good = spf.check_host("198.51.100.9", "a@example.org", resolver)
    assert (good.verdict, good.mechanism) == (Verdict.PASS, "ip4:198.51.100.0/24")
    bad = spf.check_host("203.0.113.7", "a@example.org", resolver)
    assert (bad.verdict, bad.mechanism) == (Verdict.FAIL, "-all")


@pytest.mark.parametrize(("all_term", "verdict"), [("~all", Verdict.SOFTFAIL), ("?all", Verdict.NEUTRAL)])
def test_all_qualifiers(all_term: str, verdict: Verdict) -> None:
    assert spf.check_host("203.0.113.7", "example.org", zone(f"v=spf1 {all_term}")).verdict is verdict


def test_a_mx_and_ipv6() -> None:
    resolver = StaticResolver({
        ("example.org", "TXT"): ["v=spf1 a mx ip6:2001:db8::/32 -all"],
        ("example.org", "A"): ["192.0.2.10"],
        ("example.org", "MX"): [(10, "mx1.example.org")],
        ("mx1.example.org", "A"): ["192.0.2.20"],
    })
    assert spf.check_host("192.0.2.10", "example.org", resolver).mechanism == "a"
    assert spf.check_host("192.0.2.20", "example.org", resolver).mechanism == "mx"
    assert spf.check_host("2001:db8::5", "example.org", resolver).verdict is Verdict.PASS
    assert spf.check_host("192.0.2.30", "example.org", resolver).verdict is Verdict.FAIL


def test_exists_with_macros_expands_the_ip_and_domain() -> None:
    resolver = StaticResolver({
        ("example.org", "TXT"): ["v=spf1 exists:%{i}._spf.%{d} -all"],
        ("203.0.113.7._spf.example.org", "A"): ["127.0.0.2"],
    })
    assert spf.check_host("203.0.113.7", "a@example.org", resolver).verdict is Verdict.PASS
    assert spf.check_host("203.0.113.8", "a@example.org", resolver).verdict is Verdict.FAIL
    assert ("203.0.113.8._spf.example.org", "A") in resolver.queries


def test_ptr_mechanism_needs_forward_confirmation() -> None:
    records: dict[tuple[str, str], list[object]] = {
        ("example.org", "TXT"): ["v=spf1 ptr -all"],
        ("7.113.0.203.in-addr.arpa", "PTR"): ["mail.example.org"],
        ("mail.example.org", "A"): ["203.0.113.7"],
        ("8.113.0.203.in-addr.arpa", "PTR"): ["liar.example.org"],
        ("liar.example.org", "A"): ["192.0.2.1"],
    }
    resolver = StaticResolver(records)
    assert spf.check_host("203.0.113.7", "example.org", resolver).verdict is Verdict.PASS
    assert spf.check_host("203.0.113.8", "example.org", resolver).verdict is Verdict.FAIL


def test_include_fail_is_no_match_and_redirect_is_followed() -> None:
    resolver = StaticResolver({
        ("example.org", "TXT"): ["v=spf1 include:other.example -all"],
        ("other.example", "TXT"): ["v=spf1 -all"],
        ("redirected.example", "TXT"): ["v=spf1 redirect=example.org"],
    })
    result = spf.check_host("203.0.113.7", "example.org", resolver)
    assert (result.verdict, result.mechanism) == (Verdict.FAIL, "-all")
    assert spf.check_host("203.0.113.7", "redirected.example", resolver).verdict is Verdict.FAIL


def test_ten_lookups_pass_eleven_are_permerror() -> None:
    # include chain: example.org's include counts as 1, each i1..iN include one more
    assert spf.check_host("203.0.113.7", "example.org", includes(10)).verdict is Verdict.PASS
    eleven = spf.check_host("203.0.113.7", "example.org", includes(11))
    assert eleven.verdict is Verdict.PERMERROR
    assert "DNS lookups" in eleven.explanation


def test_two_void_lookups_are_fine_three_are_permerror() -> None:
    def with_voids(count: int) -> StaticResolver:
        terms = " ".join(f"a:void{n}.example.org" for n in range(count))
        return StaticResolver({("example.org", "TXT"): [f"v=spf1 {terms} ip4:203.0.113.7 -all"]})

    assert spf.check_host("203.0.113.7", "example.org", with_voids(2)).verdict is Verdict.PASS
    three = spf.check_host("203.0.113.7", "example.org", with_voids(3))
    assert three.verdict is Verdict.PERMERROR and "Void lookup" in three.explanation


def test_dns_tempfail_is_temperror_and_missing_record_is_none() -> None:
    flaky = StaticResolver({}, tempfail=frozenset({"example.org"}))
    assert spf.check_host("203.0.113.7", "example.org", flaky).verdict is Verdict.TEMPERROR
    assert spf.check_host("203.0.113.7", "example.org", StaticResolver({})).verdict is Verdict.NONE


def test_syntax_error_is_permerror() -> None:
    result = spf.check_host("203.0.113.7", "example.org", zone("v=spf1 ip4:203.0.113.7 moo -all"))
    assert result.verdict is Verdict.PERMERROR and "moo" in result.explanation


def test_records_ignores_other_txt_and_near_misses() -> None:
    resolver = StaticResolver({("example.org", "TXT"): ["google-site-verification=x", "v=spf10 -all", "V=SPF1  -all"]})
    assert spf.records("example.org", resolver) == ("V=SPF1 -all",)


def test_lookup_count_follows_includes_and_redirect() -> None:
    resolver = StaticResolver({
        ("example.org", "TXT"): [
            "v=spf1 mx a:out.example.org include:_spf.example.net ip4:192.0.2.0/24 redirect=x.example"
        ],
        ("_spf.example.net", "TXT"): ["v=spf1 exists:%{i}.list.example.net ptr include:deeper.example.net ~all"],
        ("deeper.example.net", "TXT"): ["v=spf1 ip4:198.51.100.0/24 -all"],
        ("x.example", "TXT"): ["v=spf1 a -all"],
    })
    counted = spf.lookup_count("example.org", spf.records("example.org", resolver)[0], resolver)
    assert counted.terms == (
        "mx", "a:out.example.org", "include:_spf.example.net", "exists:%{i}.list.example.net", "ptr",
        "include:deeper.example.net", "redirect=x.example", "a",
    )
    assert counted.count == 8 and counted.problems == ()


def test_lookup_count_ignores_redirect_when_all_is_present() -> None:
    resolver = zone("v=spf1 ip4:192.0.2.1 -all redirect=x.example")
    assert spf.lookup_count("example.org", "v=spf1 ip4:192.0.2.1 -all redirect=x.example", resolver).count == 0


def test_lookup_count_counts_past_the_first_match() -> None:
    # pyspf stops at the first match and counts 1; the worst case for other IPs is 11.
    resolver = includes(11)
    assert spf.check_host("203.0.113.7", "example.org", includes(1)).verdict is Verdict.PASS
    record = spf.records("example.org", resolver)[0]
    assert spf.lookup_count("example.org", record, resolver).count == 11
    assert spf.lookup_count("example.org", record, includes(10)).count == 10


def test_lookup_count_problems() -> None:
    resolver = StaticResolver({
        ("example.org", "TXT"): ["v=spf1 include:gone.example include:%{d}.x.example include:loop.example -all"],
        ("loop.example", "TXT"): ["v=spf1 include:example.org -all"],
    })
    counted = spf.lookup_count("example.org", spf.records("example.org", resolver)[0], resolver)
    assert counted.count == 4
    assert any("include:gone.example has no SPF record" in p for p in counted.problems)
    assert any("macro" in p for p in counted.problems)
    assert any("loop" in p for p in counted.problems)


def test_summary_for_messages() -> None:
    assert spf.summary("v=spf1 ip4:198.51.100.0/24 -all") == "record ends in -all and lists ip4:198.51.100.0/24"
    redirected = spf.summary("v=spf1 redirect=_spf.example.net")
    assert redirected == "record redirects (redirect=_spf.example.net) and lists nothing else"
    many = spf.summary("v=spf1 " + " ".join(f"ip4:192.0.2.{n}" for n in range(8)) + " ~all", limit=3)
    assert many.endswith("and 5 more") and many.startswith("record ends in ~all")


def test_evaluation_has_one_deadline() -> None:
    resolver = includes(3)
    result = spf.check_host("203.0.113.7", "example.org", resolver, timeout=0)
    assert result.verdict is Verdict.TEMPERROR and "out of time" in result.explanation
    assert resolver.queries == []
