"""The receiving server's own verdicts, from its ``Authentication-Results`` headers (RFC 8601).

Only headers whose authserv-id the route trusts count: anyone on the path, the sender included,
can write an Authentication-Results header, and a conforming receiver only strips forged ones
carrying its own id. Parsing is the ``authres`` package's (the one dkimpy uses for ARC).
"""

from __future__ import annotations

import email.message
from collections.abc import Collection

from mail_monitor.deliverability.model import METHODS, MethodResult, Source, Verdict

_SHOWN_PROPERTIES = ("header.d", "header.s", "header.i", "header.from", "smtp.mailfrom", "smtp.helo", "policy.dmarc")


def receiver_results(message: email.message.Message, trusted_authserv_ids: Collection[str]) -> tuple[MethodResult, ...]:
    """Per method, the verdict of the topmost trusted header that has one; a pass wins within it."""
    import authres

    trusted = {authserv_id.rstrip(".").lower() for authserv_id in trusted_authserv_ids}
    found: dict[str, MethodResult] = {}
    for value in message.get_all("Authentication-Results") or []:
        try:
            header = authres.AuthenticationResultsHeader.parse_value(" ".join(str(value).split()))
        except authres.AuthResError:
            continue  # one unreadable header from anyone must not hide the others
        authserv_id = str(header.authserv_id).rstrip(".").lower()
        if authserv_id not in trusted:
            continue
        in_this_header: dict[str, list[MethodResult]] = {}
        for result in header.results:
            method = str(result.method).lower()
            if method not in METHODS or method in found:
                continue
            word = str(result.result)
            verdict = Verdict.from_word(word)
            detail = _detail(result)
            if verdict is None:
                verdict, detail = Verdict.NEUTRAL, f"receiver wrote {word!r}" + (f"; {detail}" if detail else "")
            in_this_header.setdefault(method, []).append(
                MethodResult(method, Source.RECEIVER, verdict, detail, authserv_id)
            )
        for method, results in in_this_header.items():
            found[method] = next((r for r in results if r.verdict is Verdict.PASS), results[0])
    return tuple(found[m] for m in METHODS if m in found)


def _detail(result: object) -> str:
    properties = {
        f"{p.type}.{p.name}".lower(): str(p.value)
        for p in getattr(result, "properties", None) or []
    }
    parts = [f"{name}={properties[name]}" for name in _SHOWN_PROPERTIES if name in properties]
    reason = getattr(result, "reason", None)
    if reason:
        parts.append(f"reason={reason}")
    return " ".join(parts)
