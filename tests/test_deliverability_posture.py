"""DNS posture per domain against a fake zone: each check healthy, then each record broken."""

from __future__ import annotations

import pytest
from deliverability_helpers import new_key

from mail_monitor.deliverability import posture
from mail_monitor.deliverability.dkim import DkimSignature
from mail_monitor.deliverability.dmarc import public_suffix_org_domain
from mail_monitor.deliverability.dns import StaticResolver
from mail_monitor.deliverability.model import Verdict
from mail_monitor.results import Outcome

KEY = new_key()
IP = "203.0.113.7"
ORG = public_suffix_org_domain()


def healthy() -> StaticResolver:
    """example.org with every record right; tests break one with :func:`change`."""
    return StaticResolver({
        ("example.org", "MX"): [(10, "mail.example.org"), (20, "backup.example.org")],
        ("mail.example.org", "A"): [IP],
        ("backup.example.org", "AAAA"): ["2001:db8::25"],
        ("example.org", "TXT"): ["v=spf1 mx ip4:198.51.100.0/24 -all", "google-site-verification=abc"],
        ("mail._domainkey.example.org", "TXT"): [KEY.record],
        ("_dmarc.example.org", "TXT"): ["v=DMARC1; p=quarantine; rua=mailto:dmarc@example.org"],
        ("_smtp._tls.example.org", "TXT"): ["v=TLSRPTv1; rua=mailto:tls@example.org"],
        ("7.113.0.203.in-addr.arpa", "PTR"): ["mail.example.org"],
    })


def change(zone: StaticResolver, name: str, rdtype: str, values: list[object] | None) -> StaticResolver:
    records = dict(zone.records)
    if values is None:
        records.pop((name, rdtype))
    else:
        records[(name, rdtype)] = values
    return StaticResolver(records, zone.tempfail)


def test_sending_ips_from_smtp_hosts() -> None:
    found = posture.sending_ips(["mail.example.org", "MAIL.example.org.", "backup.example.org", "gone.example.org"],
                                healthy())
    assert found.ips == (IP, "2001:db8::25")
    assert len(found.problems) == 1 and "gone.example.org" in found.problems[0]


# mx
def test_mx_healthy_lists_hosts_and_addresses() -> None:
    finding = posture.check_mx("example.org", healthy())
    assert finding.outcome is Outcome.OK
    assert finding.message == f"MX of example.org: 10 mail.example.org ({IP}); 20 backup.example.org (2001:db8::25)"


@pytest.mark.parametrize(
    ("name", "rdtype", "values", "outcome", "words"),
    [
        ("example.org", "MX", None, Outcome.FAILED, "example.org has no MX record"),
        ("example.org", "MX", [(0, ".")], Outcome.FAILED, "null MX"),
        ("backup.example.org", "AAAA", None, Outcome.FAILED, "MX backup.example.org of example.org does not resolve"),
    ],
)
def test_mx_broken(name: str, rdtype: str, values: list[object] | None, outcome: Outcome, words: str) -> None:
    finding = posture.check_mx("example.org", change(healthy(), name, rdtype, values))
    assert finding.outcome is outcome and words in finding.message


def test_mx_of_a_missing_domain_and_a_flaky_resolver() -> None:
    assert "does not exist" in posture.check_mx("nowhere.example", healthy()).message
    flaky = StaticResolver(healthy().records, frozenset({"example.org"}))
    assert posture.check_mx("example.org", flaky).outcome is Outcome.WARNING


# spf
def test_spf_healthy_authorises_every_sending_ip() -> None:
    finding = posture.check_spf("example.org", [IP, "198.51.100.9"], healthy())
    assert finding.outcome is Outcome.OK
    assert finding.message == f"SPF for example.org authorises {IP}, 198.51.100.9 with 1 of 10 DNS lookups"
    assert ("record", "v=spf1 mx ip4:198.51.100.0/24 -all") in finding.details


def test_spf_names_the_ip_it_does_not_authorise() -> None:
    zone = change(healthy(), "example.org", "TXT", ["v=spf1 ip4:198.51.100.0/24 -all"])
    finding = posture.check_spf("example.org", [IP], zone)
    assert finding.outcome is Outcome.FAILED
    assert finding.message == (
        f"SPF for example.org does not authorise {IP} (fail): record ends in -all and lists ip4:198.51.100.0/24"
    )


def test_spf_missing_duplicate_and_broken_records() -> None:
    missing = posture.check_spf("example.org", [IP], change(healthy(), "example.org", "TXT", ["unrelated"]))
    assert missing.outcome is Outcome.FAILED and "no SPF record" in missing.message
    two = change(healthy(), "example.org", "TXT", ["v=spf1 -all", "v=spf1 mx -all"])
    assert "2 SPF records" in posture.check_spf("example.org", [IP], two).message
    broken = change(healthy(), "example.org", "TXT", ["v=spf1 mx ip4:not-an-ip -all"])
    finding = posture.check_spf("example.org", [], broken)
    assert finding.outcome is Outcome.FAILED and "permerror" in finding.message


def _chain(count: int) -> StaticResolver:
    zone = change(healthy(), "example.org", "TXT", ["v=spf1 mx include:i1.example.net -all"])
    records = dict(zone.records)
    for n in range(1, count):
        records[(f"i{n}.example.net", "TXT")] = [f"v=spf1 include:i{n + 1}.example.net -all"]
    records[(f"i{count}.example.net", "TXT")] = ["v=spf1 ip4:192.0.2.1 -all"]
    return StaticResolver(records)


def test_spf_lookup_limit_counts_terms_the_ip_never_reaches() -> None:
    # mx matches first, so evaluating IP needs 1 lookup; the record as a whole needs 1 + N.
    ok = posture.check_spf("example.org", [IP], _chain(9))
    assert ok.outcome is Outcome.OK and "10 of 10 DNS lookups" in ok.message
    over = posture.check_spf("example.org", [IP], _chain(10))
    assert over.outcome is Outcome.FAILED and "needs 11 DNS lookups" in over.message


def test_spf_with_no_ips_still_parses_and_tempfail_warns() -> None:
    assert "parses (no sending IPs to check)" in posture.check_spf("example.org", [], healthy()).message
    flaky = StaticResolver(healthy().records, frozenset({"mail.example.org"}))
    assert posture.check_spf("example.org", [IP], flaky).outcome is Outcome.WARNING


# dkim
def test_dkim_healthy_and_broken_selectors() -> None:
    ok = posture.check_dkim("example.org", ["mail"], healthy())
    assert ok.outcome is Outcome.OK and ok.message == "DKIM keys of example.org: mail (rsa 1024 bits)"
    missing = posture.check_dkim("example.org", ["mail", "2024"], healthy())
    assert missing.outcome is Outcome.FAILED and "no key published at 2024._domainkey.example.org" in missing.message
    revoked = change(healthy(), "mail._domainkey.example.org", "TXT", [b"v=DKIM1; p="])
    assert "revoked" in posture.check_dkim("example.org", ["mail"], revoked).message
    testing = change(healthy(), "mail._domainkey.example.org", "TXT", [KEY.record.replace(b"k=rsa", b"k=rsa; t=y")])
    assert posture.check_dkim("example.org", ["mail"], testing).outcome is Outcome.WARNING


def test_dkim_checks_the_probe_signature_and_its_selector() -> None:
    failed = DkimSignature("example.org", "mail", Verdict.FAIL, "body hash mismatch")
    finding = posture.check_dkim("example.org", [], healthy(), [failed])
    assert finding.outcome is Outcome.FAILED and "does not verify the probe" in finding.message
    other_domain = DkimSignature("relay.example", "mail", Verdict.FAIL, "x")
    assert posture.check_dkim("example.org", ["mail"], healthy(), [other_domain]).outcome is Outcome.OK
    passed = DkimSignature("example.org", "mail", Verdict.PASS)
    assert posture.check_dkim("example.org", [], healthy(), [passed]).outcome is Outcome.OK
    assert posture.check_dkim("example.org", [], healthy()).outcome is Outcome.SKIPPED


# dmarc
def test_dmarc_reports_the_policy() -> None:
    finding = posture.check_dmarc("example.org", healthy(), ORG)
    assert finding.outcome is Outcome.OK
    assert finding.message == "DMARC for example.org: p=quarantine rua=mailto:dmarc@example.org"
    assert ("policy", "quarantine") in finding.details
    sub = posture.check_dmarc("news.example.org", healthy(), ORG)
    assert sub.outcome is Outcome.OK and "inherited from _dmarc.example.org" in sub.message


def test_dmarc_missing_or_broken() -> None:
    missing = posture.check_dmarc("example.org", change(healthy(), "_dmarc.example.org", "TXT", None), ORG)
    assert missing.outcome is Outcome.FAILED and "no DMARC record at _dmarc.example.org" in missing.message
    broken = change(healthy(), "_dmarc.example.org", "TXT", ["v=DMARC1; p=reject; pct=200"])
    assert "pct=" in posture.check_dmarc("example.org", broken, ORG).message


# tls_rpt
def test_tls_rpt() -> None:
    ok = posture.check_tls_rpt("example.org", healthy())
    assert ok.outcome is Outcome.OK and ok.message == "TLS-RPT for example.org: reports to mailto:tls@example.org"
    missing = posture.check_tls_rpt("example.org", change(healthy(), "_smtp._tls.example.org", "TXT", None))
    assert missing.outcome is Outcome.FAILED and "no TLS-RPT record" in missing.message
    no_rua = change(healthy(), "_smtp._tls.example.org", "TXT", ["v=TLSRPTv1; rua=ftp://x"])
    assert "rua=" in posture.check_tls_rpt("example.org", no_rua).message


# ptr
def test_ptr_forward_confirmed() -> None:
    finding = posture.check_ptr([IP], healthy())
    assert finding.outcome is Outcome.OK and finding.message == f"reverse DNS confirmed: {IP} = mail.example.org"


def test_ptr_missing_or_not_confirmed() -> None:
    missing = posture.check_ptr(["198.51.100.9"], healthy())
    assert missing.outcome is Outcome.FAILED and "198.51.100.9 has no PTR record" in missing.message
    liar = change(healthy(), "7.113.0.203.in-addr.arpa", "PTR", ["backup.example.org"])
    finding = posture.check_ptr([IP], liar)
    assert finding.outcome is Outcome.FAILED
    assert f"PTR of {IP} is backup.example.org, which does not resolve back to {IP}" in finding.message
    assert posture.check_ptr([], healthy()).outcome is Outcome.SKIPPED


def test_ptr_ipv6() -> None:
    zone = change(healthy(), "5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", "PTR",
                  ["backup.example.org"])
    assert posture.check_ptr(["2001:db8::25"], zone).outcome is Outcome.OK
