"""Alert decisions: previous state + this run's results -> new state + alerts. Pure, no I/O.

An *incident* starts with the first failed run in a row (a run with at least one
failed check). The failure alert goes out once ``after_failures`` failed runs are in a
row; after that only changes (another check breaks, one heals), reminders when asked
for, and one recovery alert when every check passes again. Warnings (spam folder, slow
delivery, certificate expiring) are left to metrics and ``status``: they are not outages.

Every alert of an incident carries the incident's random id, so ntfy shows the whole
incident as one card. Messages are Markdown, one line per failing check.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import re
from dataclasses import dataclass

from mail_monitor.config import human_duration
from mail_monitor.results import (
    CheckResult,
    Collection,
    Outcome,
    PendingProbe,
    ReportsRead,
    RunResult,
    Subject,
    SubjectKind,
    Submission,
    detail_to_json,
)
from mail_monitor.state import Alert, CheckState, Incident, State

# Async probes are looked for this long (a lost one too: found later, it counts as late),
# and at most this many per route are kept.
PENDING_KEEP = 7 * 86400.0
MAX_PENDING = 200
PRIORITY_DEFAULT = 3
PRIORITY_HIGH = 4
PRIORITY_URGENT = 5
# A route whose mail cannot be submitted, delivered or read: mail is not getting through.
# Other failures (an invalid certificate on its own, a domain's DNS record) are urgent
# enough for priority 4; cleanup fails only as a warning and never alerts.
UNDELIVERED = frozenset({"smtp_auth", "send", "receive", "imap_auth"})
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
    _update_probes(state, result, now)
    _update_reports(state, result, now)
    status = result.status
    if state.status != status or state.status_since is None:
        state.status, state.status_since = status, now
    state.runs_total += 1
    state.last_run = now
    state.first_run = False

    problems = {check.key: check for check in result.failing()}
    # A check the engine could not run (one it needs did not pass, the deadline came first)
    # says nothing about itself: if it failed when it last ran, it is still a problem,
    # neither "working again" nor news, and it neither resets nor advances the count.
    unconfirmed = {check.key for check in result.checks
                   if check.unchecked and _last_outcome(previous, check) is Outcome.FAILED}
    alerts: list[Alert] = []
    if problems:
        state.consecutive_failed_runs += 1
        if state.incident is None:
            state.incident = Incident(since=result.started_at)
        incident = state.incident
        keys = sorted(set(problems) | unconfirmed)
        if not incident.alerted:
            if state.consecutive_failed_runs >= policy.after_failures:
                alerts.append(_failure(state, result, problems, now))
                incident.alerted, incident.alerted_problems = True, keys
        elif keys != incident.alerted_problems:
            healed = sorted(set(incident.alerted_problems) - set(keys))
            alerts.append(_update(state, result, problems, healed, now))
            incident.alerted_problems = keys
        elif policy.remind_every > 0 and incident.last_alert is not None \
                and now - incident.last_alert >= policy.remind_every:
            alerts.append(_reminder(state, result, problems, now))
        if alerts:
            incident.last_alert = now
    elif not unconfirmed:
        if state.incident is not None and state.incident.alerted:
            alerts.append(_recovery(state, result, state.incident, now))
        state.incident = None
        state.consecutive_failed_runs = 0
    # else: nothing failed, but what was alerted could not be checked: the incident stays open.

    if policy.enabled:
        state.queue.extend(alerts)
        _trim_queue(state)
    else:
        alerts = []
    return state, alerts


def _last_outcome(state: State, check: CheckResult) -> Outcome | None:
    """How ``check`` went when it last really ran (skips do not change the state's record)."""
    recorded = state.checks.get(str(check.subject), {}).get(check.name)
    return recorded.outcome if recorded is not None else None


def _update_checks(state: State, result: RunResult, now: float) -> None:
    """Fold this run into each check's history; checks no longer configured are dropped."""
    present: dict[str, set[str]] = {}
    for check in result.checks:
        subject = str(check.subject)
        present.setdefault(subject, set()).add(check.name)
        if check.outcome is Outcome.SKIPPED or check.carried:
            continue  # says nothing new about this check
        checks = state.checks.setdefault(subject, {})
        ok = check.ok
        current = checks.get(check.name)
        if current is None or current.ok != ok:
            current = CheckState(outcome=check.outcome, since=now,
                                 last_success=current.last_success if current else None,
                                 failures_total=current.failures_total if current else 0)
            checks[check.name] = current
        current.outcome = check.outcome
        current.checked_at = check.checked_at if check.checked_at is not None else now
        current.message = check.message
        current.detail = detail_to_json(check.detail) if check.detail is not None else None
        if ok:
            current.consecutive_failures = 0
            current.last_success = now
            current.last_error = check.message if check.outcome is Outcome.WARNING else ""
        else:
            current.consecutive_failures += 1
            current.failures_total += 1
            current.last_error = check.message
    for subject_result in result.subjects:
        arrival = subject_result.arrival()
        if arrival is not None:
            state.last_roundtrip[str(subject_result.subject)] = arrival.roundtrip
    state.checks = {subject: {name: check for name, check in checks.items() if name in present[subject]}
                    for subject, checks in state.checks.items() if subject in present}
    state.last_roundtrip = {k: v for k, v in state.last_roundtrip.items() if k in present}


def _update_probes(state: State, result: RunResult, now: float) -> None:
    """Async probes: sent ones become pending; found ones leave; lost and late are counted once.

    Runs on the state read under the lock, so two runs that both found a probe count it once.
    """
    for subject_result in result.subjects:
        key = str(subject_result.subject)
        pending = {p.token: p for p in state.pending.get(key, [])}
        collection = subject_result.detail(Collection)
        if collection is not None:
            late = {probe.token for probe in collection.late}
            for probe in collection.lost:
                if probe.token in pending and not pending[probe.token].lost:
                    pending[probe.token] = dataclasses.replace(pending[probe.token], lost=True)
                    state.lost_total[key] = state.lost_total.get(key, 0) + 1
            for probe in collection.found:
                known = pending.pop(probe.token, None)
                if known is not None and (known.lost or probe.token in late):
                    state.late_total[key] = state.late_total.get(key, 0) + 1
        submission = subject_result.detail(Submission)
        if submission is not None and submission.pending and submission.token:
            pending[submission.token] = PendingProbe(submission.token, submission.submitted_at)
        probes = sorted((p for p in pending.values() if now - p.submitted_at < PENDING_KEEP),
                        key=lambda p: p.submitted_at)[-MAX_PENDING:]
        if probes:
            state.pending[key] = probes
        else:
            state.pending.pop(key, None)
    configured = {str(s.subject) for s in result.subjects}
    state.pending = {k: v for k, v in state.pending.items() if k in configured}


def _update_reports(state: State, result: RunResult, now: float) -> None:
    """Count the reports a run read into the lifetime totals, each report id once.

    Runs on the state read under the lock; the cursor saved with the counts tells the
    next run which mails it may now move away. A run without the reports check (not
    configured) leaves the counters alone: they are only reset with the state.
    """
    for check in result.checks:
        if check.carried or not isinstance(check.detail, ReportsRead):
            continue
        read, saved = check.detail, state.reports_cursor
        same_folder = saved is not None and (saved.folder, saved.uidvalidity) == (read.cursor.folder,
                                                                                  read.cursor.uidvalidity)
        # Unreadable mails have no report id: those below the saved cursor were counted by
        # a run that saved first (two runs at once read the same batch).
        counted_below = saved.next_uid if saved is not None and same_folder else 0
        unreadable = sum(1 for uid in read.cursor.error if uid >= counted_below)
        from mail_monitor.reports.totals import count_reports  # only where reports are configured

        totals = count_reports(state.report_totals(), read.new, unreadable, now, dedup_window=read.dedup_window)
        state.reports = totals.to_json()
        # The increments are in the totals now; the carried detail keeps only the summary.
        state.checks[str(check.subject)][check.name].detail = detail_to_json(dataclasses.replace(read, new=()))
        if saved is None or not same_folder or read.cursor.next_uid >= saved.next_uid:
            state.reports_cursor = read.cursor


def _new_alert(state: State, kind: str, title: str, message: str, priority: int, tags: list[str],
               now: float) -> Alert:
    incident = state.incident.id if state.incident is not None else ""
    alert = Alert(id=f"{state.next_alert}", kind=kind, title=title, message=message,
                  priority=priority, tags=tags, created=now, sequence_id=incident, markdown=True)
    state.next_alert += 1
    return alert


def mail_not_delivered(problems: dict[str, CheckResult]) -> bool:
    return any(check.subject.kind is SubjectKind.ROUTE and check.name in UNDELIVERED
               for check in problems.values())


def _priority(problems: dict[str, CheckResult]) -> int:
    return PRIORITY_URGENT if mail_not_delivered(problems) else PRIORITY_HIGH


# Markup within a line (the lines themselves start with "- "); an underscore inside a
# word (smtp_auth) is never emphasis, so only those at a word's edge are escaped.
_MARKDOWN_SPECIAL = re.compile(r"[\\`*\[\]<>~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def markdown_escape(text: str) -> str:
    """Server text shown as typed: ``*``, ``[``, ``<`` in an error never turn into markup."""
    return _MARKDOWN_SPECIAL.sub(lambda m: "\\" + m.group(0), text)


def _lines(problems: dict[str, CheckResult]) -> str:
    return "\n".join(f"- **{markdown_escape(check.label)}**: {markdown_escape(check.message or 'failed')}"
                     for _, check in sorted(problems.items()))


def _routes(problems: dict[str, CheckResult]) -> str:
    return ", ".join(sorted({check.subject.label for check in problems.values()}))


def _labels(keys: list[str]) -> str:
    """``route:self/receive`` keys as people read them: ``self/receive``."""
    out = []
    for key in keys:
        subject, _, check = key.rpartition("/")
        try:
            out.append(f"{Subject.parse(subject).label}/{check}")
        except ValueError:
            out.append(key)
    return ", ".join(out)


def _failure(state: State, result: RunResult, problems: dict[str, CheckResult], now: float) -> Alert:
    title = f"Mail broken on {result.instance}: {_routes(problems)}"
    runs = state.consecutive_failed_runs
    suffix = f"\n\nFailing for {runs} runs in a row." if runs > 1 else ""
    return _new_alert(state, "failure", title, _lines(problems) + suffix, _priority(problems),
                      ["rotating_light"], now)


def _update(state: State, result: RunResult, problems: dict[str, CheckResult], healed: list[str],
            now: float) -> Alert:
    title = f"Mail still broken on {result.instance}, changed: {_routes(problems)}"
    message = "Now failing:\n\n" + _lines(problems)
    if healed:
        message += "\n\nWorking again: " + markdown_escape(_labels(healed))
    return _new_alert(state, "update", title, message, _priority(problems), ["warning"], now)


def _reminder(state: State, result: RunResult, problems: dict[str, CheckResult], now: float) -> Alert:
    assert state.incident is not None
    since = human_duration(now - state.incident.since)
    title = f"Mail still broken on {result.instance} for {since}: {_routes(problems)}"
    return _new_alert(state, "reminder", title, _lines(problems), _priority(problems), ["repeat"], now)


def _recovery(state: State, result: RunResult, incident: Incident, now: float) -> Alert:
    outage = human_duration(result.started_at - incident.since)
    started = dt.datetime.fromtimestamp(incident.since, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    trips = [f"{r.subject.label} {arrival.roundtrip:.2f}s" for r in result.subjects
             if (arrival := r.arrival()) is not None]
    message = f"All checks pass again after {outage} (broken since {started})."
    if trips:
        message += "\n\nRoundtrip: " + markdown_escape(", ".join(trips))
    return _new_alert(state, "recovery", f"Mail recovered on {result.instance}", message,
                      PRIORITY_DEFAULT, ["white_check_mark"], now)


def _trim_queue(state: State) -> None:
    """Bound the queue; drop reminders first, then the oldest, never the newest failure/recovery."""
    while len(state.queue) > MAX_QUEUE:
        index = next((i for i, a in enumerate(state.queue) if a.kind == "reminder"), 0)
        del state.queue[index]
