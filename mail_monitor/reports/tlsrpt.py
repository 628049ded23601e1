"""SMTP TLS reports (RFC 8460 section 4): JSON, validated key by key."""

from __future__ import annotations

import datetime
import json
from typing import Any

from mail_monitor.reports.model import MAX_COUNT, InvalidReport, TlsFailure, TlsPolicy, TlsReport, single_line

POLICY_TYPES = frozenset({"sts", "tlsa", "no-policy-found"})


def parse_tlsrpt(data: bytes) -> TlsReport:
    try:
        document = json.loads(data)
    except RecursionError:
        raise InvalidReport("JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, over-long integers
        raise InvalidReport(f"malformed JSON ({str(exc)[:80]})") from None
    top = _object(document, "report")
    date_range = _object(top.get("date-range"), "date-range")
    policies = top.get("policies")
    if not isinstance(policies, list):
        raise InvalidReport("policies: expected a list")
    return TlsReport(
        reporter=_string(top, "organization-name", "report"),
        report_id=_string(top, "report-id", "report"),
        begin=_datetime(date_range, "start-datetime"),
        end=_datetime(date_range, "end-datetime"),
        policies=tuple(_policy(p, i) for i, p in enumerate(policies, start=1)),
        contact=top["contact-info"] if isinstance(top.get("contact-info"), str) else None,
    )


def _policy(value: Any, index: int) -> TlsPolicy:
    where = f"policies[{index}]"
    entry = _object(value, where)
    policy = _object(entry.get("policy"), f"{where}.policy")
    summary = _object(entry.get("summary"), f"{where}.summary")
    policy_type = _string(policy, "policy-type", f"{where}.policy")
    if policy_type not in POLICY_TYPES:
        raise InvalidReport(f"{where}.policy.policy-type: {policy_type[:40]!r} is not sts, tlsa or no-policy-found")
    details = entry.get("failure-details", [])
    if not isinstance(details, list):
        raise InvalidReport(f"{where}.failure-details: expected a list")
    return TlsPolicy(
        policy_type=policy_type,
        policy_domain=_string(policy, "policy-domain", f"{where}.policy").lower().rstrip("."),
        successful_sessions=_count(summary, "total-successful-session-count", f"{where}.summary"),
        failed_sessions=_count(summary, "total-failure-session-count", f"{where}.summary"),
        failures=tuple(_failure(d, f"{where}.failure-details[{i}]") for i, d in enumerate(details, start=1)),
    )


def _failure(value: Any, where: str) -> TlsFailure:
    entry = _object(value, where)
    mx = entry.get("receiving-mx-hostname")
    ip = entry.get("sending-mta-ip")
    return TlsFailure(
        result_type=_string(entry, "result-type", where),
        sessions=_count(entry, "failed-session-count", where),
        receiving_mx_hostname=mx if isinstance(mx, str) else None,
        sending_mta_ip=ip if isinstance(ip, str) else None,
    )


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidReport(f"{where}: expected an object")
    return value


def _string(table: dict[str, Any], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InvalidReport(f"{where}.{key}: expected a non-empty string")
    return single_line(value, f"{where}.{key}")


def _count(table: dict[str, Any], key: str, where: str) -> int:
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise InvalidReport(f"{where}.{key}: expected a count")
    return value


def _datetime(table: dict[str, Any], key: str) -> datetime.datetime:
    text = _string(table, key, "date-range")
    try:
        stamp = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidReport(f"date-range.{key}: {text[:40]!r} is not an RFC 3339 date-time") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.UTC)
    return stamp.astimezone(datetime.UTC)
