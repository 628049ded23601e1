"""The probe's verdicts (spec 8.1): SPF, DKIM and DMARC of the received probe, ours and the receiver's.

:func:`evaluate_probe` checks the received message against DNS and reads the trusted
Authentication-Results; :func:`judge` turns the verdicts and a route's ``require`` list into one
outcome per method, ready to become the checks ``spf``, ``dkim`` and ``dmarc`` of the route.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import email.utils
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from mail_monitor.deliverability import authresults, dkim, dmarc, received, spf
from mail_monitor.deliverability.dns import Resolver
from mail_monitor.deliverability.model import METHODS, MethodResult, Source, Verdict
from mail_monitor.results import Outcome


@dataclass(frozen=True)
class ProbeAuth:
    """Everything the monitor and the trusted receivers said about one received probe."""

    from_domain: str
    mail_from: str  # the Return-Path address ("" for a null sender)
    hop: received.Hop | None  # where the SPF IP came from, when it came from a Received header
    dkim: tuple[dkim.DkimSignature, ...]
    spf: tuple[spf.SpfResult, ...]
    dmarc: dmarc.DmarcEvaluation
    results: tuple[MethodResult, ...]  # per method: the monitor's, then any trusted receiver's

    def verdicts(self, method: str) -> tuple[MethodResult, ...]:
        return tuple(r for r in self.results if r.method == method)

    def result(self, method: str, source: Source) -> MethodResult | None:
        return next((r for r in self.results if r.method == method and r.source is source), None)


def evaluate_probe(
    raw_message: bytes,
    *,
    resolver: Resolver,
    trusted_authserv_ids: Collection[str],
    sending_ips: Sequence[str] | None = None,
    org_domain: dmarc.OrgDomain | None = None,
) -> ProbeAuth:
    """Judge a received probe. SPF is checked for ``sending_ips`` when given, else for the IP of
    the hand-over recorded by the topmost trusted Received header (see :mod:`.received`).

    ``org_domain`` defaults to the packaged Public Suffix List; pass one built once per run.
    """
    message = email.message_from_bytes(raw_message, policy=email.policy.compat32)
    org_domain = org_domain or dmarc.public_suffix_org_domain()
    from_addresses = [addr for _name, addr in email.utils.getaddresses(message.get_all("From") or []) if addr]
    from_domain = from_addresses[0].rpartition("@")[2].lower() if len(from_addresses) == 1 else ""
    mail_from = email.utils.parseaddr(str(message.get("Return-Path", "")))[1]

    signatures = dkim.verify_signatures(raw_message, resolver)

    hop = None if sending_ips else received.connecting_hop(message, trusted_authserv_ids)
    ips = list(sending_ips) if sending_ips else ([hop.ip] if hop and not hop.authenticated else [])
    helo = hop.helo if hop else ""
    spf_identity = mail_from or (f"postmaster@{helo}" if helo else "")
    spf_results = tuple(spf.check_host(ip, spf_identity, resolver, helo=helo) for ip in ips) if spf_identity else ()
    mail_from_domain = spf_identity.rpartition("@")[2].lower()

    if from_domain:
        dmarc_result = dmarc.evaluate(from_domain, signatures, spf_results, mail_from_domain, resolver, org_domain)
    else:
        problem = f"From must carry exactly one address, it carries {len(from_addresses)}"
        dmarc_result = dmarc.DmarcEvaluation(Verdict.PERMERROR, "none", problem)

    ours = (
        _spf_result(spf_results, ips, spf_identity, hop, trusted_authserv_ids),
        _dkim_result(signatures),
        MethodResult("dmarc", Source.MONITOR, dmarc_result.verdict, dmarc_result.detail),
    )
    theirs = authresults.receiver_results(message, trusted_authserv_ids)
    results = tuple(r for method in METHODS for r in (*ours, *theirs) if r.method == method)
    return ProbeAuth(from_domain, mail_from, hop, signatures, spf_results, dmarc_result, results)


def _spf_result(
    results: Sequence[spf.SpfResult],
    ips: Sequence[str],
    identity: str,
    hop: received.Hop | None,
    trusted: Collection[str],
) -> MethodResult:
    if not results:
        if ips:
            why = "no Return-Path and no HELO name to check"
        elif hop is not None:
            why = (
                f"the probe was submitted to {hop.by} by a logged-in client ({hop.ip}, with {hop.protocol}), "
                "not relayed to it: SPF does not apply; set sending_ips"
            )
        elif trusted:
            why = f"no Received header by {', '.join(sorted(trusted))} names the connecting IP; set sending_ips"
        else:
            why = "no Received header names a connecting IP; set sending_ips"
        return MethodResult("spf", Source.MONITOR, Verdict.NONE, why)
    worst = next((r for r in results if r.verdict is not Verdict.PASS), results[0])
    via = f" (from Received by {hop.by})" if hop else ""
    detail = f"{worst.ip}{via} as {identity}: {worst.explanation}"
    if worst.mechanism:
        detail += f", matched {worst.mechanism}"
    if len(results) > 1:
        passed = sum(r.verdict is Verdict.PASS for r in results)
        detail += f"; {passed} of {len(results)} sending IPs pass"
    return MethodResult("spf", Source.MONITOR, worst.verdict, detail)


def _dkim_result(signatures: Sequence[dkim.DkimSignature]) -> MethodResult:
    if not signatures:
        return MethodResult("dkim", Source.MONITOR, Verdict.NONE, "the probe carries no DKIM-Signature")
    best = next((s for s in signatures if s.verdict is Verdict.PASS), signatures[0])
    return MethodResult("dkim", Source.MONITOR, best.verdict, "; ".join(s.describe() for s in signatures))


@dataclass(frozen=True)
class MethodCheck:
    """One of the route's checks ``spf``, ``dkim``, ``dmarc``: its outcome and the verdicts behind it."""

    method: str
    outcome: Outcome
    message: str
    verdicts: tuple[MethodResult, ...]


def judge(auth: ProbeAuth, require: Collection[str]) -> tuple[MethodCheck, ...]:
    """A required method must pass in every source (ours and each trusted receiver's): else FAILED.
    A method not required is reported: OK, or WARNING when a source could not tell (temperror).
    """
    unknown = set(require) - set(METHODS)
    if unknown:
        raise ValueError(f"require: unknown method(s) {', '.join(sorted(unknown))}; expected {', '.join(METHODS)}")
    checks = []
    for method in METHODS:
        verdicts = auth.verdicts(method)
        summary = "; ".join(v.describe() for v in verdicts)
        if method in require:
            if verdicts and all(v.verdict is Verdict.PASS for v in verdicts):
                checks.append(MethodCheck(method, Outcome.OK, summary, verdicts))
            else:
                message = f"{method.upper()} of the probe is required but did not pass: {summary}"
                checks.append(MethodCheck(method, Outcome.FAILED, message, verdicts))
        elif any(v.verdict is Verdict.TEMPERROR for v in verdicts):
            message = f"{method.upper()} of the probe could not be checked (temperror): {summary}"
            checks.append(MethodCheck(method, Outcome.WARNING, message, verdicts))
        else:
            checks.append(MethodCheck(method, Outcome.OK, summary, verdicts))
    return tuple(checks)
