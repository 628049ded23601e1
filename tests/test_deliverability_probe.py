"""The probe's verdicts: ours against a fake zone, the receiver's trusted Authentication-Results, require."""

from __future__ import annotations

import email
import functools

import pytest
from deliverability_helpers import message, new_key, sign

from mail_monitor.deliverability import received
from mail_monitor.deliverability.authresults import receiver_results
from mail_monitor.deliverability.dmarc import public_suffix_org_domain
from mail_monitor.deliverability.dns import StaticResolver
from mail_monitor.deliverability.model import MethodResult, Source, Verdict
from mail_monitor.deliverability.probe import ProbeAuth, evaluate_probe, judge
from mail_monitor.results import Outcome

KEY = new_key()
SENDER_IP = "203.0.113.7"
MX = "mx.example.net"
evaluate = functools.partial(evaluate_probe, org_domain=public_suffix_org_domain())  # one PSL load

LMTP_HOP = f"Received: from {MX} ([127.0.0.1]) by {MX} (Dovecot) with LMTP id x; Mon, 1 Jan 2024 00:00:01 +0000\r\n"
SMTP_HOP = (
    f"Received: from mail.example.org (mail.example.org [{SENDER_IP}])\r\n\t(using TLSv1.3 with cipher X)\r\n"
    f"\tby {MX} (Postfix) with ESMTPS id ABC\r\n\tfor <inbox@example.net>; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
)
FORGED_HOP = "Received: from friend ([192.0.2.66]) by mail.example.org with ESMTPSA; Mon, 1 Jan 2024 00:00:00 +0000\r\n"


def zone(spf_record: str = f"v=spf1 ip4:{SENDER_IP} -all", dmarc_record: str = "v=DMARC1; p=reject") -> StaticResolver:
    return StaticResolver({
        ("mail._domainkey.example.org", "TXT"): [KEY.record],
        ("example.org", "TXT"): [spf_record],
        ("_dmarc.example.org", "TXT"): [dmarc_record],
    })


def arrived(*headers: str, signed: bytes | None = None) -> bytes:
    top = "Return-Path: <monitor@example.org>\r\n" + "".join(headers)
    return top.encode() + (signed if signed is not None else sign(message(), KEY))


def ours(auth: ProbeAuth, method: str) -> MethodResult:
    result = auth.result(method, Source.MONITOR)
    assert result is not None
    return result


def test_healthy_probe_passes_all_three() -> None:
    auth = evaluate_probe(arrived(LMTP_HOP, SMTP_HOP, FORGED_HOP), resolver=zone(), trusted_authserv_ids=[MX])
    assert [(r.method, r.verdict) for r in auth.results] == [
        ("spf", Verdict.PASS), ("dkim", Verdict.PASS), ("dmarc", Verdict.PASS)]
    assert auth.hop == received.Hop("mail.example.org", SENDER_IP, MX, "ESMTPS")
    assert auth.from_domain == "example.org" and auth.mail_from == "monitor@example.org"
    assert "d=example.org s=mail" in ours(auth, "dkim").detail
    assert [c.outcome for c in judge(auth, ["spf", "dkim", "dmarc"])] == [Outcome.OK] * 3


def test_spf_uses_the_trusted_hop_not_a_lower_or_loopback_one() -> None:
    # Only 192.0.2.66 (the hop below, written before the receiver) is authorised: SPF must fail.
    resolver = zone("v=spf1 ip4:192.0.2.66 ip4:127.0.0.1 -all")
    auth = evaluate(arrived(LMTP_HOP, SMTP_HOP, FORGED_HOP), resolver=resolver, trusted_authserv_ids=[MX])
    assert ours(auth, "spf").verdict is Verdict.FAIL and SENDER_IP in ours(auth, "spf").detail


def test_without_trusted_ids_the_topmost_non_loopback_hop_counts() -> None:
    auth = evaluate(arrived(LMTP_HOP, SMTP_HOP, FORGED_HOP), resolver=zone(), trusted_authserv_ids=[])
    assert auth.hop is not None and auth.hop.ip == SENDER_IP


def test_no_trusted_hop_means_spf_none_with_a_hint() -> None:
    auth = evaluate(arrived(FORGED_HOP), resolver=zone(), trusted_authserv_ids=[MX])
    spf = ours(auth, "spf")
    assert spf.verdict is Verdict.NONE and "sending_ips" in spf.detail and auth.spf == ()


def test_sending_ips_override_the_received_headers() -> None:
    auth = evaluate(
        arrived(SMTP_HOP), resolver=zone(), trusted_authserv_ids=[MX], sending_ips=[SENDER_IP, "198.51.100.1"]
    )
    assert auth.hop is None and [r.ip for r in auth.spf] == [SENDER_IP, "198.51.100.1"]
    spf = ours(auth, "spf")
    assert spf.verdict is Verdict.FAIL and "198.51.100.1" in spf.detail and "1 of 2 sending IPs pass" in spf.detail


def test_broken_dkim_key_fails_dkim_and_dmarc_when_spf_is_not_aligned() -> None:
    signed = sign(message(), new_key())  # the server signs with a key DNS does not publish
    raw = ("Return-Path: <bounces@lists.example.net>\r\n" + SMTP_HOP).encode() + signed
    resolver = zone()
    resolver.records = {**resolver.records, ("lists.example.net", "TXT"): [f"v=spf1 ip4:{SENDER_IP} -all"]}
    auth = evaluate(raw, resolver=resolver, trusted_authserv_ids=[MX])
    assert ours(auth, "spf").verdict is Verdict.PASS
    assert ours(auth, "dkim").verdict is Verdict.FAIL
    assert ours(auth, "dmarc").verdict is Verdict.FAIL and "p=reject" in ours(auth, "dmarc").detail
    outcomes = {c.method: c for c in judge(auth, ["dkim"])}
    assert outcomes["dkim"].outcome is Outcome.FAILED and "required" in outcomes["dkim"].message
    assert outcomes["dmarc"].outcome is Outcome.OK  # reported, not required


def test_two_from_addresses_are_a_dmarc_permerror() -> None:
    raw = arrived(SMTP_HOP, signed=message(from_addr="a@example.org, b@example.net"))
    auth = evaluate(raw, resolver=zone(), trusted_authserv_ids=[MX])
    assert ours(auth, "dmarc").verdict is Verdict.PERMERROR and "exactly one address" in ours(auth, "dmarc").detail


TRUSTED_AR = (
    f"Authentication-Results: {MX};\r\n\tdkim=pass (1024-bit key) header.d=example.org header.s=mail header.b=AbC;\r\n"
    "\tspf=softfail smtp.mailfrom=monitor@example.org;\r\n\tdmarc=pass (p=reject) header.from=example.org\r\n"
)
FORGED_AR = "Authentication-Results: evil.example; dkim=fail; spf=fail; dmarc=fail\r\n"
BROKEN_AR = "Authentication-Results: ;;; garbage\r\n"


def test_receiver_results_only_from_trusted_authserv_ids() -> None:
    parsed = email.message_from_bytes(arrived(FORGED_AR, BROKEN_AR, TRUSTED_AR))
    results = receiver_results(parsed, [MX.upper()])
    assert [(r.method, r.verdict, r.authserv_id) for r in results] == [
        ("spf", Verdict.SOFTFAIL, MX), ("dkim", Verdict.PASS, MX), ("dmarc", Verdict.PASS, MX)]
    assert results[1].detail == "header.d=example.org header.s=mail"
    assert receiver_results(parsed, ["evil.example.net"]) == ()


def test_forged_header_from_an_untrusted_id_changes_nothing() -> None:
    raw = arrived(FORGED_AR, SMTP_HOP)
    auth = evaluate(raw, resolver=zone(), trusted_authserv_ids=[MX])
    assert all(r.source is Source.MONITOR for r in auth.results)
    assert all(c.outcome is Outcome.OK for c in judge(auth, ["spf", "dkim", "dmarc"]))


def test_topmost_trusted_header_wins_and_unknown_words_are_not_pass() -> None:
    newer = f"Authentication-Results: {MX}; dkim=bestguesspass header.d=example.org\r\n"
    older = f"Authentication-Results: {MX}; dkim=pass header.d=example.org\r\n"
    (dkim,) = receiver_results(email.message_from_bytes(arrived(newer, older)), [MX])
    assert dkim.verdict is Verdict.NEUTRAL and "bestguesspass" in dkim.detail


def test_a_required_method_fails_when_the_trusted_receiver_disagrees() -> None:
    auth = evaluate(arrived(TRUSTED_AR, SMTP_HOP), resolver=zone(), trusted_authserv_ids=[MX])
    assert ours(auth, "spf").verdict is Verdict.PASS
    assert [(r.source, r.verdict) for r in auth.verdicts("spf")] == [
        (Source.MONITOR, Verdict.PASS), (Source.RECEIVER, Verdict.SOFTFAIL)]
    spf = {c.method: c for c in judge(auth, ["spf"])}["spf"]
    assert spf.outcome is Outcome.FAILED and f"receiver {MX}: spf=softfail" in spf.message
    assert {c.method: c for c in judge(auth, [])}["spf"].outcome is Outcome.OK


def _auth(*results: MethodResult) -> ProbeAuth:
    from mail_monitor.deliverability.dmarc import DmarcEvaluation

    return ProbeAuth("example.org", "", None, (), (), DmarcEvaluation(Verdict.NONE, "none", ""), results)


@pytest.mark.parametrize(
    ("verdict", "required", "outcome"),
    [
        (Verdict.PASS, True, Outcome.OK),
        (Verdict.FAIL, True, Outcome.FAILED),
        (Verdict.NONE, True, Outcome.FAILED),
        (Verdict.TEMPERROR, True, Outcome.FAILED),
        (Verdict.FAIL, False, Outcome.OK),
        (Verdict.PERMERROR, False, Outcome.OK),
        (Verdict.TEMPERROR, False, Outcome.WARNING),
    ],
)
def test_require_semantics(verdict: Verdict, required: bool, outcome: Outcome) -> None:
    auth = _auth(MethodResult("dkim", Source.MONITOR, verdict, "d=example.org s=mail"))
    checks = {c.method: c for c in judge(auth, ["dkim"] if required else [])}
    assert checks["dkim"].outcome is outcome
    assert f"dkim={verdict}" in checks["dkim"].message


def test_required_method_with_no_verdict_at_all_fails_and_typos_are_refused() -> None:
    assert {c.method: c for c in judge(_auth(), ["dmarc"])}["dmarc"].outcome is Outcome.FAILED
    with pytest.raises(ValueError, match="dkmi"):
        judge(_auth(), ["dkmi"])


@pytest.mark.parametrize(
    ("header", "hop"),
    [
        ("from mail.example.org (mail.example.org [203.0.113.7]) by mx.example.net with ESMTPS; Mon, 1 Jan 2024",
         received.Hop("mail.example.org", "203.0.113.7", "mx.example.net", "ESMTPS")),
        ("from mail.example.org (mail.example.org. [2001:db8::7])\r\n\tby mx.google.com with ESMTPS id x; Mon",
         received.Hop("mail.example.org", "2001:db8::7", "mx.google.com", "ESMTPS")),
        ("from [192.0.2.1] (unknown [IPv6:2001:db8::9]) by mail.example.org (Postfix) with ESMTPSA; x",
         received.Hop("192.0.2.1", "2001:db8::9", "mail.example.org", "ESMTPSA")),  # the HELO literal is a claim
        ("from [192.0.2.1] by mail.example.org (Postfix); x",
         received.Hop("192.0.2.1", "192.0.2.1", "mail.example.org")),
        ("by 2002:a05:6000:1:b0:1:2:3 with SMTP id x; Mon, 1 Jan 2024", None),
        ("from localhost by mail.example.org with LMTP; Mon", None),
    ],
)
def test_parse_received(header: str, hop: received.Hop | None) -> None:
    assert received.parse_received(header) == hop


def test_one_good_signature_is_enough_when_another_breaks() -> None:
    # A relay added a second signature whose key is not published: dkim still passes on ours.
    twice = sign(sign(message(), KEY), new_key(), selector="gone", domain="relay.example")
    auth = evaluate(arrived(SMTP_HOP, signed=twice), resolver=zone(), trusted_authserv_ids=[MX])
    assert [s.verdict for s in auth.dkim] == [Verdict.PERMERROR, Verdict.PASS]
    dkim = ours(auth, "dkim")
    assert dkim.verdict is Verdict.PASS and "d=relay.example s=gone: permerror" in dkim.detail
    assert ours(auth, "dmarc").verdict is Verdict.PASS


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"", {"spf": "no Received header names", "dkim": "no DKIM-Signature", "dmarc": "carries 0"}),
        (b"\x00\xff garbage", {"dkim": "permerror, message does not parse"}),
        (b"DKIM-Signature: garbage\r\nFrom: a@example.org\r\n\r\n", {"dkim": "DKIM-Signature does not parse"}),
        (b"Return-Path: <>\r\nReceived: from helo.example (x [192.0.2.1]) by mx\r\nFrom: a@example.org\r\n\r\n",
         {"spf": "192.0.2.1 (from Received by mx) as postmaster@helo.example: helo.example publishes no SPF record"}),
    ],
)
def test_odd_messages_give_verdicts_not_exceptions(raw: bytes, words: dict[str, str]) -> None:
    auth = evaluate(raw, resolver=StaticResolver({}), trusted_authserv_ids=[])
    for method, expected in words.items():
        assert expected in ours(auth, method).detail


def test_a_logged_in_submission_is_not_judged_by_spf() -> None:
    submitted = (
        "Received: from laptop (unknown [198.51.100.20])\r\n\tby mail.example.org (Postfix) with ESMTPSA id X;"
        " Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    )
    assert received.parse_received(submitted.partition(": ")[2]) == received.Hop(
        "laptop", "198.51.100.20", "mail.example.org", "ESMTPSA")
    auth = evaluate(arrived(LMTP_HOP, submitted), resolver=zone(), trusted_authserv_ids=["mail.example.org"])
    spf = ours(auth, "spf")
    assert spf.verdict is Verdict.NONE and "logged-in client (198.51.100.20, with ESMTPSA)" in spf.detail
    assert auth.spf == ()
