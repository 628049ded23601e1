"""DKIM: is a selector's published key usable, and do the probe's signatures verify with it?

Verification is dkimpy's (RFC 6376 canonicalisation, RSA and the signature tags). We fetch the
key ourselves through the :class:`Resolver` and hand it to dkimpy as its ``dnsfunc``: that keeps
"no key published" (permerror), "DNS timed out" (temperror) and "signature does not verify"
(fail) apart, which dkimpy alone folds into one ``False``.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass

from mail_monitor.deliverability.dns import DnsError, DnsErrorKind, Resolver
from mail_monitor.deliverability.model import Verdict

MIN_RSA_BITS = 1024  # RFC 8301 section 3.2: verifiers must not accept smaller keys
DNS_TIMEOUT = 5.0


@dataclass(frozen=True)
class DkimKey:
    key_type: str  # "rsa" or "ed25519"
    bits: int
    testing: bool  # t=y: receivers may treat failures as if unsigned


@dataclass(frozen=True)
class KeyLookup:
    """The key record of one selector: ``key`` when usable, else ``problem`` says why not."""

    domain: str
    selector: str
    key: DkimKey | None
    verdict: Verdict  # PASS usable, PERMERROR missing or unusable, TEMPERROR could not look it up
    problem: str = ""
    record: bytes = b""

    @property
    def name(self) -> str:
        return key_name(self.domain, self.selector)


@dataclass(frozen=True)
class DkimSignature:
    """One DKIM-Signature of a message and whether it verifies against the published key."""

    domain: str  # d=
    selector: str  # s=
    verdict: Verdict
    reason: str = ""
    bits: int | None = None

    def describe(self) -> str:
        head = f"d={self.domain} s={self.selector}: " if self.domain else ""
        return f"{head}{self.verdict}" + (f", {self.reason}" if self.reason else "")


def key_name(domain: str, selector: str) -> str:
    return f"{selector}._domainkey.{domain}"


def fetch_key(domain: str, selector: str, resolver: Resolver) -> KeyLookup:
    """Look up and judge ``selector._domainkey.domain`` (RFC 6376 section 3.6.1)."""
    name = key_name(domain, selector)
    try:
        txts = resolver.txt(name)
    except DnsError as error:
        if error.kind is DnsErrorKind.TEMPFAIL:
            return KeyLookup(domain, selector, None, Verdict.TEMPERROR, f"lookup of {name} failed: {error.reason}")
        return KeyLookup(domain, selector, None, Verdict.PERMERROR, f"no key published at {name} ({error.kind})")
    if len(txts) > 1:
        problem = f"{len(txts)} TXT records at {name}; receivers may pick any, publish exactly one"
        return KeyLookup(domain, selector, None, Verdict.PERMERROR, problem)
    record = txts[0]
    key, problem = judge_key(record)
    if key is None:
        return KeyLookup(domain, selector, None, Verdict.PERMERROR, f"key at {name} {problem}", record)
    return KeyLookup(domain, selector, key, Verdict.PASS, record=record)


def judge_key(record: bytes) -> tuple[DkimKey | None, str]:
    """Parse a key record; ``(None, "why not")`` when a receiver could not use it."""
    import dkim as dkimpy
    from dkim.util import InvalidTagValueList, parse_tag_value

    try:
        tags = parse_tag_value(record)
    except InvalidTagValueList as error:
        return None, f"does not parse as tag=value list: {error}"
    if tags.get(b"v", b"DKIM1") != b"DKIM1":
        return None, f"has v={tags[b'v'].decode(errors='replace')}, expected DKIM1"
    public = tags.get(b"p")
    if public is None:
        return None, "has no p= tag"
    if not public.strip():
        return None, "has an empty p= (the key is revoked)"
    services = tags.get(b"s", b"*").split(b":")
    if not {b"*", b"email"} & {s.strip() for s in services}:
        return None, f"is for service {tags[b's'].decode(errors='replace')}, not email"
    testing = b"y" in [flag.strip() for flag in tags.get(b"t", b"").split(b":")]
    key_type = tags.get(b"k", b"rsa").decode(errors="replace")
    if key_type == "ed25519":
        try:
            raw = base64.b64decode(b"".join(public.split()), validate=True)
        except binascii.Error:
            return None, "has a p= that is not base64"
        if len(raw) != 32:
            return None, f"has an ed25519 key of {len(raw)} bytes, expected 32"
        return DkimKey("ed25519", 256, testing), ""
    if key_type != "rsa":
        return None, f"has unknown key type k={key_type}"
    try:
        _pk, bits, _ktag, _tlsrpt = dkimpy.evaluate_pk("key", record)
    except (dkimpy.DKIMException, binascii.Error, ValueError) as error:
        return None, f"has an RSA key that does not parse: {error}"
    if bits < MIN_RSA_BITS:
        return None, f"has a {bits}-bit RSA key; receivers ignore keys under {MIN_RSA_BITS} bits"
    return DkimKey("rsa", int(bits), testing), ""


def verify_signatures(raw_message: bytes, resolver: Resolver, *, timeout: float = DNS_TIMEOUT) -> tuple[
    DkimSignature, ...
]:
    """Verify every DKIM-Signature of a message, topmost first; no signature is an empty tuple."""
    import dkim as dkimpy
    from dkim.util import InvalidTagValueList, parse_tag_value

    quiet = logging.Logger("mail_monitor.dkimpy", logging.CRITICAL + 1)  # detached: dkimpy's chatter stays out
    try:
        verifier = dkimpy.DKIM(raw_message, logger=quiet, minkey=MIN_RSA_BITS, timeout=timeout)
    except dkimpy.DKIMException as error:
        return (DkimSignature("", "", Verdict.PERMERROR, f"message does not parse: {error}"),)
    headers = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    results = []
    for index, header in enumerate(headers):
        try:
            tags = parse_tag_value(header)
        except InvalidTagValueList as error:
            results.append(DkimSignature("", "", Verdict.PERMERROR, f"DKIM-Signature does not parse: {error}"))
            continue
        domain = tags.get(b"d", b"").decode(errors="replace").lower()
        selector = tags.get(b"s", b"").decode(errors="replace")
        if not domain or not selector:
            results.append(DkimSignature(domain, selector, Verdict.PERMERROR, "DKIM-Signature lacks d= or s="))
            continue
        results.append(_verify_one(verifier, index, domain, selector, resolver))
    return tuple(results)


def _verify_one(verifier: object, index: int, domain: str, selector: str, resolver: Resolver) -> DkimSignature:
    import dkim as dkimpy

    lookup = fetch_key(domain, selector, resolver)
    if lookup.key is None:
        return DkimSignature(domain, selector, lookup.verdict, lookup.problem)

    def dnsfunc(name: bytes | str, timeout: float = DNS_TIMEOUT) -> bytes:
        return lookup.record

    try:
        verified = verifier.verify(idx=index, dnsfunc=dnsfunc)  # type: ignore[attr-defined]
    except dkimpy.ValidationError as error:
        reason = str(error)
        if reason.startswith("body hash mismatch"):  # dkimpy adds both hashes: noise for a pager
            reason = "body hash mismatch: the body changed after signing (a footer, re-encoding, line endings)"
        return DkimSignature(domain, selector, Verdict.FAIL, reason, lookup.key.bits)
    except dkimpy.DKIMException as error:
        return DkimSignature(domain, selector, Verdict.PERMERROR, str(error), lookup.key.bits)
    if not verified:
        reason = f"signature does not verify with the key at {lookup.name} (signed headers changed, or another key)"
        return DkimSignature(domain, selector, Verdict.FAIL, reason, lookup.key.bits)
    return DkimSignature(domain, selector, Verdict.PASS, "", lookup.key.bits)
