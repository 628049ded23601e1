"""Render a run for people (text, Nagios-style first line), programs (JSON) and InfluxDB/Telegraf."""

from __future__ import annotations

from typing import Any

from mail_monitor.results import Outcome, RouteResult, RunResult

FORMATS = ("text", "json", "influx")


def render(result: RunResult, fmt: str) -> str:
    if fmt == "json":
        import json  # the text format is the common case; spare its start the import

        return json.dumps(to_dict(result), indent=2, sort_keys=False) + "\n"
    if fmt == "influx":
        return to_influx(result)
    return to_text(result)


def to_dict(result: RunResult) -> dict[str, Any]:
    return {
        "status": result.status.label,
        "exit_code": int(result.status),
        "instance": result.instance,
        "started_at": round(result.started_at, 3),
        "duration_seconds": round(result.duration, 4),
        "routes": [_route_dict(r) for r in result.routes],
    }


def _route_dict(route: RouteResult) -> dict[str, Any]:
    return {
        "route": route.route,
        "status": route.status.label,
        "roundtrip_seconds": _round(route.roundtrip),
        "roundtrip_uncertainty_seconds": _round(route.roundtrip_uncertainty),
        "delivery_seconds": route.delivery,
        "submitted_at": _round(route.submitted_at),
        "seen_at": _round(route.seen_at),
        "folder": route.folder,
        "in_spam": route.in_spam,
        "stale_deleted": route.stale_deleted,
        "imap_commands_while_waiting": route.imap_commands,
        "imap_wait_seconds": _round(route.imap_wait_seconds),
        "checks": {
            c.name: {"outcome": c.outcome.value, "duration_seconds": _round(c.duration), "message": c.message}
            for c in route.checks.values()
        },
        "certificates": [
            {"endpoint": c.endpoint, "not_after": c.not_after, "subject": c.subject, "issuer": c.issuer}
            for c in route.certificates
        ],
    }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def summary_line(result: RunResult) -> str:
    """The monitoring-plugins style first line: ``MAIL-MONITOR OK - ... | perfdata``."""
    status = result.status
    problems = []
    for route in result.routes:
        for check in route.checks.values():
            if check.outcome in (Outcome.FAILED, Outcome.WARNING):
                problems.append(f"{route.route}/{check.name}: {check.message}")
    if problems:
        text = "; ".join(problems)
    else:
        trips = [f"{r.route} {r.roundtrip:.2f}s" for r in result.routes if r.roundtrip is not None]
        text = f"{len(result.routes)} route(s) ok" + (f", roundtrip {', '.join(trips)}" if trips else "")
    perf = [f"'{r.route}_roundtrip'={r.roundtrip:.3f}s" for r in result.routes if r.roundtrip is not None]
    perf.append(f"run={result.duration:.3f}s")
    return f"MAIL-MONITOR {status.label} - {text} | {' '.join(perf)}"


def to_text(result: RunResult) -> str:
    lines = [summary_line(result)]
    for route in result.routes:
        lines.append(f"route {route.route}: {route.status.label}")
        for check in route.checks.values():
            duration = f"{check.duration:7.3f}s" if check.duration is not None else " " * 8
            lines.append(f"  {check.name:<10} {check.outcome.value.upper():<8} {duration}  {check.message}".rstrip())
    return "\n".join(lines) + "\n"


def _tag(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _string_field(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_influx(result: RunResult) -> str:
    """InfluxDB line protocol, one line per check, route and certificate (ns timestamps)."""
    stamp = int(result.started_at * 1e9)
    instance = _tag(result.instance or "mail-monitor")
    lines = []
    for route in result.routes:
        tags = f"instance={instance},route={_tag(route.route)}"
        for check in route.checks.values():
            if check.outcome is Outcome.SKIPPED:
                continue
            fields = [f"success={1 if check.ok else 0}i", f"outcome={_string_field(check.outcome.value)}"]
            if check.duration is not None:
                fields.append(f"duration_seconds={check.duration:.6f}")
            lines.append(f"mail_monitor_check,{tags},check={_tag(check.name)} {','.join(fields)} {stamp}")
        fields = [f"status={int(route.status)}i", f"in_spam={'true' if route.in_spam else 'false'}"]
        if route.roundtrip is not None:
            fields.append(f"roundtrip_seconds={route.roundtrip:.6f}")
        if route.delivery is not None:
            fields.append(f"delivery_seconds={route.delivery:.3f}")
        lines.append(f"mail_monitor_route,{tags} {','.join(fields)} {stamp}")
    for endpoint, cert in result.certificates().items():
        lines.append(f"mail_monitor_tls,instance={instance},endpoint={_tag(endpoint)} "
                     f"not_after={int(cert.not_after)}i {stamp}")
    lines.append(f"mail_monitor_run,instance={instance} status={int(result.status)}i,"
                 f"duration_seconds={result.duration:.6f} {stamp}")
    return "\n".join(lines) + "\n"

