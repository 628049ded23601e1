"""DMARC: records, where the policy is found, and alignment (relaxed vs strict, organisational domain)."""

from __future__ import annotations

import pytest

from mail_monitor.deliverability import dmarc
from mail_monitor.deliverability.dkim import DkimSignature
from mail_monitor.deliverability.dns import StaticResolver
from mail_monitor.deliverability.model import Verdict
from mail_monitor.deliverability.spf import SpfResult

ORG = dmarc.public_suffix_org_domain()


def test_org_domain_uses_the_public_suffix_list() -> None:
    assert ORG("mail.example.org") == "example.org"
    assert ORG("a.b.example.co.uk") == "example.co.uk"
    assert ORG("Example.ORG.") == "example.org"
    assert ORG("co.uk") == "co.uk"  # a public suffix is its own organisational domain
    assert ORG("x.user.github.io") == "user.github.io"  # the list's private section counts


def test_parse_record_defaults_and_tags() -> None:
    record = dmarc.parse_record("v=DMARC1; p=reject; rua=mailto:a@example.org, mailto:b@example.net")
    assert (record.policy, record.subdomain_policy, record.pct, record.adkim, record.aspf) == (
        "reject", "reject", 100, "r", "r")
    assert record.rua == ("mailto:a@example.org", "mailto:b@example.net")
    strict = dmarc.parse_record("v=DMARC1;p=quarantine;sp=none;pct=20;adkim=s;aspf=S")
    assert (strict.subdomain_policy, strict.pct, strict.adkim, strict.aspf) == ("none", 20, "s", "s")
    assert strict.describe() == "p=quarantine sp=none pct=20 adkim=s aspf=s no rua (no aggregate reports)"


def test_missing_p_is_none_only_with_rua() -> None:
    assert dmarc.parse_record("v=DMARC1; rua=mailto:d@example.org").policy == "none"
    with pytest.raises(ValueError, match="p= must be"):
        dmarc.parse_record("v=DMARC1; pct=100")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("p=reject; v=DMARC1", "start with v=DMARC1"),
        ("v=DMARC1; p=block", "p= must be"),
        ("v=DMARC1; p=none; sp=drop", "sp= must be"),
        ("v=DMARC1; p=none; pct=101", "pct="),
        ("v=DMARC1; p=none; adkim=x", "adkim="),
        ("v=DMARC1; p=none; oops", "tag=value"),
    ],
)
def test_invalid_records(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        dmarc.parse_record(text)


def test_find_policy_falls_back_to_the_organisational_domain_and_applies_sp() -> None:
    zone = StaticResolver({("_dmarc.example.org", "TXT"): ["v=DMARC1; p=reject; sp=quarantine"]})
    own = dmarc.find_policy("example.org", zone, ORG)
    assert (own.verdict, own.applied_policy, own.name) == (Verdict.PASS, "reject", "_dmarc.example.org")
    inherited = dmarc.find_policy("news.example.org", zone, ORG)
    assert (inherited.applied_policy, inherited.name) == ("quarantine", "_dmarc.example.org")
    assert zone.queries[-2:] == [("_dmarc.news.example.org", "TXT"), ("_dmarc.example.org", "TXT")]


def test_find_policy_problems() -> None:
    none = dmarc.find_policy("example.org", StaticResolver({("_dmarc.example.org", "TXT"): ["something else"]}), ORG)
    assert none.verdict is Verdict.NONE and "no DMARC record at _dmarc.example.org" in none.problem
    two = StaticResolver({("_dmarc.example.org", "TXT"): ["v=DMARC1; p=none", "v=DMARC1; p=reject"]})
    assert dmarc.find_policy("example.org", two, ORG).verdict is Verdict.PERMERROR
    broken = StaticResolver({("_dmarc.example.org", "TXT"): ["v=DMARC1; p=maybe"]})
    assert "invalid" in dmarc.find_policy("example.org", broken, ORG).problem
    flaky = StaticResolver({}, tempfail=frozenset({"_dmarc.example.org"}))
    assert dmarc.find_policy("example.org", flaky, ORG).verdict is Verdict.TEMPERROR


@pytest.mark.parametrize(
    ("identifier", "from_domain", "mode", "expected"),
    [
        ("example.org", "example.org", "s", True),
        ("mail.example.org", "example.org", "s", False),
        ("mail.example.org", "example.org", "r", True),
        ("example.org", "news.example.org", "r", True),
        ("example.net", "example.org", "r", False),
        ("evil-example.org", "example.org", "r", False),
        ("a.example.co.uk", "b.example.co.uk", "r", True),
        ("example.co.uk", "other.co.uk", "r", False),  # sharing only a public suffix is not alignment
    ],
)
def test_alignment(identifier: str, from_domain: str, mode: str, expected: bool) -> None:
    assert dmarc.aligned(identifier, from_domain, mode, ORG) is expected


def _sig(domain: str, verdict: Verdict = Verdict.PASS) -> DkimSignature:
    return DkimSignature(domain, "mail", verdict)


def _spf(verdict: Verdict = Verdict.PASS) -> SpfResult:
    return SpfResult("203.0.113.7", "bounce.example.org", verdict, "")


def _zone(record: str = "v=DMARC1; p=reject") -> StaticResolver:
    return StaticResolver({("_dmarc.example.org", "TXT"): [record]})


def test_evaluate_passes_on_aligned_dkim_or_aligned_spf() -> None:
    by_dkim = dmarc.evaluate("example.org", [_sig("mail.example.org")], [], "", _zone(), ORG)
    assert by_dkim.verdict is Verdict.PASS and "aligned dkim d=mail.example.org (relaxed)" in by_dkim.detail
    by_spf = dmarc.evaluate("example.org", [], [_spf()], "bounce.example.org", _zone(), ORG)
    assert by_spf.verdict is Verdict.PASS and "aligned spf" in by_spf.detail


def test_evaluate_strict_alignment_rejects_subdomains() -> None:
    strict = _zone("v=DMARC1; p=reject; adkim=s; aspf=s")
    result = dmarc.evaluate("example.org", [_sig("mail.example.org")], [_spf()], "bounce.example.org", strict, ORG)
    assert result.verdict is Verdict.FAIL and result.policy == "reject"
    assert "not aligned with example.org (strict)" in result.detail


def test_evaluate_fails_for_foreign_or_failing_signatures() -> None:
    foreign = dmarc.evaluate("example.org", [_sig("example.net")], [_spf(Verdict.FAIL)], "example.org", _zone(), ORG)
    assert foreign.verdict is Verdict.FAIL and "d=example.net" in foreign.detail
    failing = dmarc.evaluate("example.org", [_sig("example.org", Verdict.FAIL)], [], "", _zone(), ORG)
    assert failing.verdict is Verdict.FAIL and "no dkim signature passed" in failing.detail


def test_evaluate_spf_must_pass_for_every_ip() -> None:
    mixed = [_spf(), _spf(Verdict.SOFTFAIL)]
    assert dmarc.evaluate("example.org", [], mixed, "example.org", _zone(), ORG).verdict is Verdict.FAIL


def test_evaluate_temperror_and_no_record() -> None:
    temp = dmarc.evaluate("example.org", [_sig("example.org", Verdict.TEMPERROR)], [], "", _zone(), ORG)
    assert temp.verdict is Verdict.TEMPERROR
    none = dmarc.evaluate("example.org", [_sig("example.org")], [], "", StaticResolver({}), ORG)
    assert none.verdict is Verdict.NONE


def test_the_common_case_never_loads_the_public_suffix_list() -> None:
    def unwanted(domain: str) -> str:
        raise AssertionError(f"organisational domain of {domain} asked")

    result = dmarc.evaluate("example.org", [_sig("example.org")], [_spf()], "example.org", _zone(), unwanted)
    assert result.verdict is Verdict.PASS
    assert dmarc.aligned("Example.org.", "example.org", "r", unwanted)
