"""DKIM: a message signed here with dkimpy and a fresh key, its key in a fake zone; then broken."""

from __future__ import annotations

import base64

import pytest
from deliverability_helpers import message, new_key, sign

from mail_monitor.deliverability import dkim
from mail_monitor.deliverability.dns import StaticResolver
from mail_monitor.deliverability.model import Verdict

KEY = new_key()
KEY_NAME = "mail._domainkey.example.org"


def published(record: bytes = KEY.record, **more: list[object]) -> StaticResolver:
    return StaticResolver({(KEY_NAME, "TXT"): [record], **{(k, "TXT"): v for k, v in more.items()}})


def test_signed_probe_passes_with_d_and_s() -> None:
    (result,) = dkim.verify_signatures(sign(message(), KEY), published())
    assert (result.domain, result.selector, result.verdict, result.bits) == ("example.org", "mail", Verdict.PASS, 1024)


def test_changed_body_fails_with_body_hash_reason() -> None:
    signed = sign(message(), KEY).replace(b"probe body", b"probe b0dy")
    (result,) = dkim.verify_signatures(signed, published())
    assert result.verdict is Verdict.FAIL and "body hash mismatch" in result.reason


def test_changed_signed_header_fails() -> None:
    signed = sign(message(), KEY).replace(b"probe abc", b"probe xyz")
    (result,) = dkim.verify_signatures(signed, published())
    assert result.verdict is Verdict.FAIL and KEY_NAME in result.reason


def test_rotated_key_not_in_dns_fails() -> None:
    (result,) = dkim.verify_signatures(sign(message(), new_key()), published())
    assert result.verdict is Verdict.FAIL


def test_missing_key_is_permerror_and_dns_trouble_is_temperror() -> None:
    signed = sign(message(), KEY)
    (missing,) = dkim.verify_signatures(signed, StaticResolver({}))
    assert missing.verdict is Verdict.PERMERROR and "no key published at mail._domainkey.example.org" in missing.reason
    (flaky,) = dkim.verify_signatures(signed, StaticResolver({}, tempfail=frozenset({KEY_NAME})))
    assert flaky.verdict is Verdict.TEMPERROR


def test_revoked_key_is_permerror() -> None:
    (result,) = dkim.verify_signatures(sign(message(), KEY), published(b"v=DKIM1; k=rsa; p="))
    assert result.verdict is Verdict.PERMERROR and "revoked" in result.reason


def test_every_signature_is_reported_and_unsigned_has_none() -> None:
    other = new_key()
    twice = sign(sign(message(), KEY), other, selector="s2", domain="relay.example")
    zone = published(**{"s2._domainkey.relay.example": [b"v=DKIM1; p=" + other.record.split(b"p=")[1]]})
    results = dkim.verify_signatures(twice, zone)
    assert [(r.domain, r.selector, r.verdict) for r in results] == [
        ("relay.example", "s2", Verdict.PASS), ("example.org", "mail", Verdict.PASS),
    ]
    assert dkim.verify_signatures(message(), published()) == ()


def _rsa_record(bits: int) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    modulus = (1 << (bits - 1)) | 1  # parses as a key of that size; never used to verify
    der = rsa.RSAPublicNumbers(65537, modulus).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        (b"v=DKIM1; k=rsa; p=", "revoked"),
        (b"v=DKIM1; k=rsa", "no p="),
        (b"v=DKIM2; p=abc", "expected DKIM1"),
        (b"v=DKIM1; k=dsa; p=abcd", "unknown key type"),
        (b"v=DKIM1; p=bm90IGEga2V5", "does not parse"),
        (b"v=DKIM1; s=tlsrpt; p=abcd", "not email"),
        (b"v=DKIM1; k=ed25519; p=" + base64.b64encode(b"x" * 31), "31 bytes"),
        (_rsa_record(768), "768-bit"),
        (b"garbage without tags", "tag=value"),
    ],
)
def test_unusable_keys(record: bytes, problem: str) -> None:
    key, why = dkim.judge_key(record)
    assert key is None and problem in why


def test_usable_keys() -> None:
    assert dkim.judge_key(KEY.record) == (dkim.DkimKey("rsa", 1024, False), "")
    assert dkim.judge_key(_rsa_record(2048)) == (dkim.DkimKey("rsa", 2048, False), "")
    ed = b"v=DKIM1; k=ed25519; t=y; p=" + base64.b64encode(b"k" * 32)
    assert dkim.judge_key(ed) == (dkim.DkimKey("ed25519", 256, True), "")


def test_fetch_key_rejects_two_records() -> None:
    lookup = dkim.fetch_key("example.org", "mail", StaticResolver({(KEY_NAME, "TXT"): [KEY.record, KEY.record]}))
    assert lookup.key is None and lookup.verdict is Verdict.PERMERROR and "2 TXT records" in lookup.problem
