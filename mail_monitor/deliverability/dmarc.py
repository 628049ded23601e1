"""DMARC (RFC 7489): find and parse a domain's policy, and judge the probe's alignment.

The organisational domain (for relaxed alignment and for the policy fallback of a subdomain)
comes from the Public Suffix List as packaged by ``publicsuffixlist``: the list ships inside the
package and is read from disk, never fetched at run time; upgrading the package refreshes it.
Parsing it costs about 60 ms of CPU, so :func:`public_suffix_org_domain` parses it on first
use only, and the common case (the From domain signs, bounces and publishes its own policy)
never needs it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mail_monitor.deliverability.dkim import DkimSignature
from mail_monitor.deliverability.dns import DnsError, DnsErrorKind, Resolver
from mail_monitor.deliverability.model import Verdict
from mail_monitor.deliverability.spf import SpfResult

OrgDomain = Callable[[str], str]
"""Maps a domain to its organisational domain: ``mail.example.co.uk`` -> ``example.co.uk``."""

POLICIES = ("none", "quarantine", "reject")


def public_suffix_org_domain() -> OrgDomain:
    """RFC 7489 section 3.2 with the packaged Public Suffix List (ICANN and private sections).

    The list is parsed on the first call of the returned function; keep one per run.
    """
    loaded: list[Any] = []

    def org_domain(domain: str) -> str:
        if not loaded:
            from publicsuffixlist import PublicSuffixList

            loaded.append(PublicSuffixList())
        domain = domain.rstrip(".").lower()
        return str(loaded[0].privatesuffix(domain) or domain)

    return org_domain


@dataclass(frozen=True)
class DmarcRecord:
    policy: str  # p=
    subdomain_policy: str  # sp=, defaulting to p=
    pct: int
    adkim: str  # "r" relaxed or "s" strict
    aspf: str
    rua: tuple[str, ...]
    ruf: tuple[str, ...]
    text: str

    def describe(self) -> str:
        parts = [f"p={self.policy}"]
        if self.subdomain_policy != self.policy:
            parts.append(f"sp={self.subdomain_policy}")
        if self.pct != 100:
            parts.append(f"pct={self.pct}")
        if "s" in (self.adkim, self.aspf):
            parts.append(f"adkim={self.adkim} aspf={self.aspf}")
        parts.append(f"rua={','.join(self.rua)}" if self.rua else "no rua (no aggregate reports)")
        return " ".join(parts)


def parse_record(text: str) -> DmarcRecord:
    """Parse a ``v=DMARC1`` record; raises ValueError saying what is wrong."""
    tags: dict[str, str] = {}
    for index, part in enumerate(p.strip() for p in text.split(";")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not sep:
            raise ValueError(f"{part!r} is not a tag=value pair")
        if index == 0 and (name != "v" or value != "DMARC1"):
            raise ValueError("the record must start with v=DMARC1")
        tags.setdefault(name, value)
    rua = _uris(tags.get("rua", ""))
    policy = tags.get("p", "").lower()
    if policy not in POLICIES:
        if "p" in tags or not rua:  # RFC 7489 section 6.6.3: only a valid rua rescues a missing p=
            raise ValueError(f"p= must be one of none, quarantine, reject, got {tags.get('p', 'nothing')!r}")
        policy = "none"
    subdomain_policy = tags.get("sp", policy).lower()
    if subdomain_policy not in POLICIES:
        raise ValueError(f"sp= must be one of none, quarantine, reject, got {tags['sp']!r}")
    pct_text = tags.get("pct", "100")
    if not pct_text.isdigit() or int(pct_text) > 100:
        raise ValueError(f"pct= must be a number from 0 to 100, got {pct_text!r}")
    modes = {}
    for tag in ("adkim", "aspf"):
        modes[tag] = tags.get(tag, "r").lower()
        if modes[tag] not in ("r", "s"):
            raise ValueError(f"{tag}= must be r or s, got {tags[tag]!r}")
    return DmarcRecord(
        policy=policy,
        subdomain_policy=subdomain_policy,
        pct=int(pct_text),
        adkim=modes["adkim"],
        aspf=modes["aspf"],
        rua=rua,
        ruf=_uris(tags.get("ruf", "")),
        text=text,
    )


def _uris(value: str) -> tuple[str, ...]:
    return tuple(uri.strip() for uri in value.split(",") if uri.strip())


@dataclass(frozen=True)
class PolicyLookup:
    """Where a domain's DMARC policy was found (RFC 7489 section 6.6.3) and what it says."""

    domain: str
    name: str  # the _dmarc name the record was found at, or the first one asked
    record: DmarcRecord | None
    verdict: Verdict  # PASS found and parsed, NONE no record, TEMPERROR, PERMERROR
    problem: str = ""

    @property
    def applied_policy(self) -> str:
        """p=, or sp= when the record was inherited from the organisational domain."""
        if self.record is None:
            return "none"
        own = self.name == f"_dmarc.{self.domain}"
        return self.record.policy if own else self.record.subdomain_policy


def find_policy(domain: str, resolver: Resolver, org_domain: OrgDomain) -> PolicyLookup:
    """The record at ``_dmarc.DOMAIN``, else at ``_dmarc.`` of the organisational domain."""
    domain = domain.rstrip(".").lower()
    names = [f"_dmarc.{domain}"]
    found = _policy_at(domain, names[0], resolver)
    if found is None and (organisational := org_domain(domain)) != domain:
        names.append(f"_dmarc.{organisational}")  # RFC 7489 section 6.6.3: the fallback
        found = _policy_at(domain, names[1], resolver)
    return found or PolicyLookup(domain, names[0], None, Verdict.NONE, f"no DMARC record at {' or '.join(names)}")


def _policy_at(domain: str, name: str, resolver: Resolver) -> PolicyLookup | None:
    """The policy published at one name; None when there is no DMARC record there."""
    try:
        txts = resolver.txt(name)
    except DnsError as error:
        if error.kind is DnsErrorKind.TEMPFAIL:
            return PolicyLookup(domain, name, None, Verdict.TEMPERROR, f"lookup of {name} failed: {error.reason}")
        return None
    found = [t.decode("utf-8", "replace") for t in txts if t.lower().replace(b" ", b"").startswith(b"v=dmarc1")]
    if not found:
        return None
    if len(found) > 1:
        problem = f"{len(found)} DMARC records at {name}; receivers then apply none: publish exactly one"
        return PolicyLookup(domain, name, None, Verdict.PERMERROR, problem)
    try:
        record = parse_record(found[0])
    except ValueError as error:
        return PolicyLookup(domain, name, None, Verdict.PERMERROR, f"DMARC record at {name} is invalid: {error}")
    return PolicyLookup(domain, name, record, Verdict.PASS)


def aligned(identifier: str, from_domain: str, mode: str, org_domain: OrgDomain) -> bool:
    """RFC 7489 section 3.1: strict needs the same domain, relaxed the same organisational domain."""
    identifier, from_domain = identifier.rstrip(".").lower(), from_domain.rstrip(".").lower()
    if mode == "s" or identifier == from_domain:
        return identifier == from_domain
    return org_domain(identifier) == org_domain(from_domain)


@dataclass(frozen=True)
class DmarcEvaluation:
    verdict: Verdict
    policy: str  # the policy a receiver would apply on failure (none, quarantine, reject)
    detail: str


def evaluate(
    from_domain: str,
    dkim: Sequence[DkimSignature],
    spf: Sequence[SpfResult],
    mail_from_domain: str,
    resolver: Resolver,
    org_domain: OrgDomain,
) -> DmarcEvaluation:
    """DMARC for a message: pass when a DKIM pass or an SPF pass is aligned with the From domain.

    ``spf`` are the SPF results of the connecting IP(s) for ``mail_from_domain``; DMARC needs all
    of them to pass for the SPF side to count.
    """
    lookup = find_policy(from_domain, resolver, org_domain)
    if lookup.record is None:
        return DmarcEvaluation(lookup.verdict, "none", lookup.problem)
    record = lookup.record
    where = "" if lookup.name == f"_dmarc.{lookup.domain}" else f" (from {lookup.name})"
    head = f"p={lookup.applied_policy}{where}"
    mode_word = {"r": "relaxed", "s": "strict"}
    for signature in dkim:
        if signature.verdict is Verdict.PASS and aligned(signature.domain, from_domain, record.adkim, org_domain):
            return DmarcEvaluation(
                Verdict.PASS,
                lookup.applied_policy,
                f"{head}, aligned dkim d={signature.domain} ({mode_word[record.adkim]})",
            )
    spf_passed = bool(spf) and all(result.verdict is Verdict.PASS for result in spf)
    if spf_passed and aligned(mail_from_domain, from_domain, record.aspf, org_domain):
        return DmarcEvaluation(
            Verdict.PASS,
            lookup.applied_policy,
            f"{head}, aligned spf for {mail_from_domain} ({mode_word[record.aspf]})",
        )
    reasons = []
    passing_dkim = [s for s in dkim if s.verdict is Verdict.PASS]
    if passing_dkim:
        names = ", ".join(f"d={s.domain}" for s in passing_dkim)
        reasons.append(f"dkim passed for {names}, not aligned with {from_domain} ({mode_word[record.adkim]})")
    else:
        reasons.append("no dkim signature passed" if dkim else "no dkim signature")
    if spf_passed:
        reasons.append(f"spf passed for {mail_from_domain}, not aligned ({mode_word[record.aspf]})")
    else:
        reasons.append("spf did not pass" if spf else "spf not evaluated")
    temporary = any(s.verdict is Verdict.TEMPERROR for s in dkim) or any(r.verdict is Verdict.TEMPERROR for r in spf)
    verdict = Verdict.TEMPERROR if temporary else Verdict.FAIL
    return DmarcEvaluation(verdict, lookup.applied_policy, f"{head}: " + "; ".join(reasons))
