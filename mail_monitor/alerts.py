"""Alert decisions: previous state + this run's results -> new state + alerts. Pure, no I/O.

An *incident* starts with the first failed run in a row (a run with at least one
failed check). The failure alert goes out once ``after_failures`` failed runs are in a
row; after that only changes (another check breaks, one heals), reminders when asked
for, and one recovery alert when every check passes again. Warnings (spam folder, slow
delivery, certificate expiring) are left to metrics and ``status``: they are not outages.
"""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass

from mail_monitor.config import human_duration
from mail_monitor.results import CheckResult, Outcome, RunResult
from mail_monitor.state import Alert, CheckState, Incident, State

PRIORITY_DEFAULT = 3
PRIORITY_HIGH = 4
MAX_QUEUE = 500  # undelivered alerts kept; beyond that the oldest reminders go first


@dataclass(frozen=True)
class AlertPolicy:
    """When a failure is worth a notification, and how often to repeat it."""

    enabled: bool = True
    after_failures: int = 1
    remind_every: float = 0.0


def evaluate(previous: State, result: RunResult, policy: AlertPolicy, now: float) -> tuple[State, list[Alert]]:
    state = copy.deepcopy(previous)
    _update_checks(state, result, now)
    status = result.status.label
    if state.status != status or state.status_since is None:
        state.status, state.status_since = status, now
    state.runs_total += 1
    state.last_run = now
    state.first_run = False

    problems = {f"{route.route}/{check.name}": check for route in result.routes for check in route.failing()}
    alerts: list[Alert] = []
    if problems:
        state.consecutive_failed_runs += 1
        if state.incident is None:
            state.incident = Incident(since=result.started_at)
        incident = state.incident
        keys = sorted(problems)
        if not incident.alerted:
            if state.consecutive_failed_runs >= policy.after_failures:
                alerts.append(_failure(state, result, problems, now))
                incident.alerted, incident.alerted_problems = True, keys
        elif keys != incident.alerted_problems:
            alerts.append(_update(state, result, problems, incident.alerted_problems, now))
            incident.alerted_problems = keys
        elif policy.remind_every > 0 and incident.last_alert is not None \
                and now - incident.last_alert >= policy.remind_every:
            alerts.append(_reminder(state, result, problems, now))
        if alerts:
            incident.last_alert = now
    else:
        if state.incident is not None and state.incident.alerted:
            alerts.append(_recovery(state, result, state.incident, now))
        state.incident = None
        state.consecutive_failed_runs = 0

    if policy.enabled:
        state.queue.extend(alerts)
        _trim_queue(state)
    else:
        alerts = []
    return state, alerts


def _update_checks(state: State, result: RunResult, now: float) -> None:
    for route in result.routes:
        checks = state.checks.setdefault(route.route, {})
        for check in route.checks.values():
            if check.outcome is Outcome.SKIPPED:
                continue  # says nothing new about this check
            ok = check.ok
            current = checks.get(check.name)
            if current is None or current.ok != ok:
                current = CheckState(ok=ok, since=now, last_success=current.last_success if current else None,
                                     failures_total=current.failures_total if current else 0)
                checks[check.name] = current
            current.outcome = check.outcome.value
            if ok:
                current.consecutive_failures = 0
                current.last_success = now
                current.last_error = check.message if check.outcome is Outcome.WARNING else ""
            else:
                current.consecutive_failures += 1
                current.failures_total += 1
                current.last_error = check.message
        if route.roundtrip is not None:
            state.last_roundtrip[route.route] = route.roundtrip


def _new_alert(state: State, kind: str, title: str, message: str, priority: int, tags: list[str],
               now: float) -> Alert:
    alert = Alert(id=f"{state.next_alert}", kind=kind, title=title, message=message,
                  priority=priority, tags=tags, created=now)
    state.next_alert += 1
    return alert


def _lines(problems: dict[str, CheckResult]) -> str:
    return "\n".join(f"• {key}: {check.message or 'failed'}" for key, check in sorted(problems.items()))


def _routes(problems: dict[str, CheckResult]) -> str:
    return ", ".join(sorted({key.split("/")[0] for key in problems}))


def _failure(state: State, result: RunResult, problems: dict[str, CheckResult], now: float) -> Alert:
    title = f"Mail broken on {result.instance}: {_routes(problems)}"
    runs = state.consecutive_failed_runs
    suffix = f"\n\nFailing for {runs} runs in a row." if runs > 1 else ""
    return _new_alert(state, "failure", title, _lines(problems) + suffix, PRIORITY_HIGH,
                      ["rotating_light"], now)


def _update(state: State, result: RunResult, problems: dict[str, CheckResult], before: list[str],
            now: float) -> Alert:
    healed = sorted(set(before) - set(problems))
    title = f"Mail still broken on {result.instance}, changed: {_routes(problems)}"
    message = "Now failing:\n" + _lines(problems)
    if healed:
        message += "\n\nWorking again: " + ", ".join(healed)
    return _new_alert(state, "update", title, message, PRIORITY_HIGH, ["warning"], now)


def _reminder(state: State, result: RunResult, problems: dict[str, CheckResult], now: float) -> Alert:
    assert state.incident is not None
    since = human_duration(now - state.incident.since)
    title = f"Mail still broken on {result.instance} for {since}: {_routes(problems)}"
    return _new_alert(state, "reminder", title, _lines(problems), PRIORITY_HIGH, ["repeat"], now)


def _recovery(state: State, result: RunResult, incident: Incident, now: float) -> Alert:
    outage = human_duration(result.started_at - incident.since)
    started = dt.datetime.fromtimestamp(incident.since, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    trips = [f"{r.route} {r.roundtrip:.2f}s" for r in result.routes if r.roundtrip is not None]
    message = f"All checks pass again after {outage} (broken since {started})."
    if trips:
        message += "\nRoundtrip: " + ", ".join(trips)
    return _new_alert(state, "recovery", f"Mail recovered on {result.instance}", message,
                      PRIORITY_DEFAULT, ["white_check_mark"], now)


def _trim_queue(state: State) -> None:
    """Bound the queue; drop reminders first, then the oldest, never the newest failure/recovery."""
    while len(state.queue) > MAX_QUEUE:
        index = next((i for i, a in enumerate(state.queue) if a.kind == "reminder"), 0)
        del state.queue[index]
