"""Render a run for people (text, Nagios-style first line), programs (JSON) and InfluxDB/Telegraf."""

from __future__ import annotations

from typing import Any

from mail_monitor.results import (
    AuthVerdicts,
    CheckResult,
    CleanupReport,
    Outcome,
    QueueDepth,
    ReportsRead,
    RunResult,
    SubjectKind,
    SubjectResult,
    Submission,
    certificates,
)

FORMATS = ("text", "json", "influx")


def render(result: RunResult, fmt: str) -> str:
    if fmt == "json":
        import json  # the text format is the common case; spare its start the import

        return json.dumps(to_dict(result), indent=2, sort_keys=False) + "\n"
    if fmt == "influx":
        return to_influx(result)
    return to_text(result)


def to_dict(result: RunResult) -> dict[str, Any]:
    data: dict[str, Any] = {
        "status": result.status.label,
        "exit_code": int(result.status),
        "instance": result.instance,
        "started_at": round(result.started_at, 3),
        "duration_seconds": round(result.duration, 4),
        "routes": [_route_dict(r) for r in result.routes],
        "subjects": [_subject_dict(s, result) for s in result.subjects
                     if s.subject.kind is not SubjectKind.ROUTE],
    }
    if result.errors:
        data["errors"] = list(result.errors)
    return data


def _checks_dict(subject: SubjectResult, started_at: float) -> dict[str, Any]:
    out = {}
    for c in subject.checks:
        entry: dict[str, Any] = {"outcome": c.outcome.value, "duration_seconds": _round(c.duration),
                                 "message": c.message}
        if c.carried and c.checked_at is not None:
            entry["age_seconds"] = round(max(0.0, started_at - c.checked_at), 1)
        out[c.name] = entry
    return out


def _subject_dict(subject: SubjectResult, result: RunResult) -> dict[str, Any]:
    data = {"subject": str(subject.subject), "status": subject.status.label,
            "checks": _checks_dict(subject, result.started_at)}
    if (queue := subject.detail(QueueDepth)) is not None:
        data["postfix_queue"] = {"messages": dict(queue.depth),
                                 "oldest_deferred_seconds": _round(queue.oldest_deferred_seconds, 1)}
    if (reports := subject.detail(ReportsRead)) is not None:
        data["reports"] = {"dmarc_reports": reports.dmarc_reports, "tls_reports": reports.tls_reports,
                           "duplicates": reports.duplicates, "unreadable": reports.unreadable,
                           "filed": reports.filed, "left": reports.left}
    return data


def _route_dict(route: SubjectResult) -> dict[str, Any]:
    arrival = route.arrival()
    submission = route.detail(Submission)
    cleanup = route.detail(CleanupReport)
    return {
        "route": route.subject.name,
        "status": route.status.label,
        "roundtrip_seconds": _round(arrival.roundtrip) if arrival else None,
        "roundtrip_uncertainty_seconds": _round(arrival.uncertainty) if arrival else None,
        "delivery_seconds": arrival.delivery if arrival else None,
        "submitted_at": _round(submission.submitted_at) if submission else None,
        "seen_at": _round(arrival.seen_at) if arrival else None,
        "folder": arrival.folder if arrival else None,
        "in_spam": arrival.in_spam if arrival else False,
        "stale_deleted": cleanup.stale_deleted if cleanup else 0,
        "imap_commands_while_waiting": arrival.commands if arrival else 0,
        "imap_wait_seconds": _round(arrival.waited) if arrival else None,
        "auth": _auth_dict(route),
        "checks": _checks_dict(route, 0.0),
        "certificates": [
            {"endpoint": c.endpoint, "not_after": c.not_after, "subject": c.subject, "issuer": c.issuer,
             "tls_version": c.tls_version}
            for c in certificates(route.checks).values()
        ],
    }


def _auth_dict(route: SubjectResult) -> dict[str, str]:
    """The probe's verdict words: ``spf`` (ours), ``receiver_spf`` (a trusted receiver's), ..."""
    words: dict[str, str] = {}
    for check in route.checks:
        if isinstance(check.detail, AuthVerdicts):
            for verdict in check.detail.verdicts:
                # Several trusted receivers: the first non-pass word is the one that matters.
                if words.get(verdict.word, "pass") == "pass":
                    words[verdict.word] = verdict.verdict
    return words


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _problems(result: RunResult) -> list[str]:
    problems = [f"mail-monitor: {error}" for error in result.errors]
    problems += [f"{c.label}: {c.message}" for c in result.checks
                 if c.outcome in (Outcome.FAILED, Outcome.WARNING)]
    return problems


def summary_line(result: RunResult) -> str:
    """The monitoring-plugins style first line: ``MAIL-MONITOR OK - ... | perfdata``."""
    status = result.status
    problems = _problems(result)
    trips = [(r.subject.name, a.roundtrip) for r in result.routes if (a := r.arrival()) is not None]
    if problems:
        text = "; ".join(problems)
    else:
        text = f"{len(result.routes)} route(s) ok" + (
            f", roundtrip {', '.join(f'{name} {seconds:.2f}s' for name, seconds in trips)}" if trips else "")
        others = len(result.subjects) - len(result.routes)
        if others:
            text += f", {others} other subject(s) ok"
    perf = [f"'{name}_roundtrip'={seconds:.3f}s" for name, seconds in trips]
    perf.append(f"run={result.duration:.3f}s")
    return f"MAIL-MONITOR {status.label} - {text} | {' '.join(perf)}"


def _check_line(check: CheckResult, started_at: float) -> str:
    duration = f"{check.duration:7.3f}s" if check.duration is not None else " " * 8
    message = check.message
    if check.carried and check.checked_at is not None:
        message = f"{message} (checked {max(0.0, started_at - check.checked_at):.0f}s ago)".lstrip()
    return f"  {check.name:<10} {check.outcome.value.upper():<8} {duration}  {message}".rstrip()


def to_text(result: RunResult) -> str:
    lines = [summary_line(result)]
    for subject in result.subjects:
        name = f"route {subject.subject.name}" if subject.subject.kind is SubjectKind.ROUTE else str(subject.subject)
        lines.append(f"{name}: {subject.status.label}")
        lines.extend(_check_line(check, result.started_at) for check in subject.checks)
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
    for subject in result.subjects:
        kind = subject.subject.kind
        tags = f"instance={instance}" + (f",{kind.value}={_tag(subject.subject.name)}"
                                         if kind is not SubjectKind.HOST else ",subject=host")
        for check in subject.checks:
            if check.outcome is Outcome.SKIPPED:
                continue
            fields = [f"success={1 if check.ok else 0}i", f"outcome={_string_field(check.outcome.value)}"]
            if check.duration is not None:
                fields.append(f"duration_seconds={check.duration:.6f}")
            lines.append(f"mail_monitor_check,{tags},check={_tag(check.name)} {','.join(fields)} {stamp}")
        if kind is not SubjectKind.ROUTE:
            continue
        arrival = subject.arrival()
        fields = [f"status={int(subject.status)}i",
                  f"in_spam={'true' if arrival is not None and arrival.in_spam else 'false'}"]
        if arrival is not None:
            fields.append(f"roundtrip_seconds={arrival.roundtrip:.6f}")
            if arrival.delivery is not None:
                fields.append(f"delivery_seconds={arrival.delivery:.3f}")
        lines.append(f"mail_monitor_route,{tags} {','.join(fields)} {stamp}")
    for subject in result.subjects:
        if (queue := subject.detail(QueueDepth)) is not None:
            for name, count in queue.depth.items():
                lines.append(f"mail_monitor_postfix_queue,instance={instance},queue={_tag(name)} "
                             f"messages={count}i {stamp}")
        if (reports := subject.detail(ReportsRead)) is not None and not any(c.carried for c in subject.checks
                                                                             if c.detail is reports):
            lines.append(f"mail_monitor_reports,instance={instance} dmarc_reports={reports.dmarc_reports}i,"
                         f"tls_reports={reports.tls_reports}i,unreadable={reports.unreadable}i,"
                         f"left={reports.left}i {stamp}")
    for endpoint, cert in result.certificates().items():
        lines.append(f"mail_monitor_tls,instance={instance},endpoint={_tag(endpoint)} "
                     f"not_after={int(cert.not_after)}i {stamp}")
    lines.append(f"mail_monitor_run,instance={instance} status={int(result.status)}i,"
                 f"duration_seconds={result.duration:.6f} {stamp}")
    return "\n".join(lines) + "\n"
