"""Every alert transition, as a pure function: no network, no files."""

from __future__ import annotations

from mail_monitor.alerts import AlertPolicy, evaluate
from mail_monitor.results import Arrival, CheckResult, Outcome, RunResult, Status, Subject
from mail_monitor.state import State

T0 = 1_800_000_000.0
MINUTE = 60.0


# What each route check needs, as the route steps declare it (mail_monitor/checks/routes.py).
NEEDS = {"send": ("smtp_auth", "imap_auth"), "receive": ("send", "imap_auth"), "cleanup": ("imap_auth",)}


def run(at: float, *failing: str, warning: str | None = None) -> RunResult:
    """A one-route run; ``failing`` names failed checks, the checks that need them are skipped."""
    checks = []
    subject = Subject.route("self")
    not_passed = set(failing)
    for name in ("imap_auth", "smtp_auth", "send", "receive", "cleanup", "tls"):
        detail = Arrival(1.5, 0.01, "INBOX", False, at, at + 1.5, 10, 1.5) if name == "receive" else None
        if name in failing:
            checks.append(CheckResult(subject, name, Outcome.FAILED, 0.1, f"{name} broke"))
        elif not_passed & set(NEEDS.get(name, ())):
            not_passed.add(name)
            checks.append(CheckResult(subject, name, Outcome.SKIPPED, message="earlier check failed",
                                      unchecked=True))
        elif name == warning:
            checks.append(CheckResult(subject, name, Outcome.WARNING, 0.1, "landed in Junk", detail))
        else:
            checks.append(CheckResult(subject, name, Outcome.OK, 0.1, detail=None if failing else detail))
    return RunResult(started_at=at, duration=2.0, checks=tuple(checks), instance="mx1")


def sequence(policy: AlertPolicy, *runs: RunResult, state: State | None = None) -> tuple[State, list[list[str]]]:
    state = state or State()
    kinds = []
    for result in runs:
        state, alerts = evaluate(state, result, policy, result.started_at + 2)
        kinds.append([a.kind for a in alerts])
    return state, kinds


def test_healthy_first_run_sends_nothing() -> None:
    state, kinds = sequence(AlertPolicy(), run(T0))
    assert kinds == [[]]
    assert state.queue == [] and state.runs_total == 1 and not state.first_run


def test_first_run_already_failing_alerts() -> None:
    state, kinds = sequence(AlertPolicy(), run(T0, "smtp_auth"))
    assert kinds == [["failure"]]
    alert = state.queue[0]
    assert alert.priority == 5 and alert.tags == ["rotating_light"]  # no mail leaves: urgent
    assert alert.title == "Mail broken on mx1: self"
    assert alert.message == "- **self/smtp_auth**: smtp_auth broke" and alert.markdown


def test_outage_alerts_once_then_recovers_once_with_duration() -> None:
    state, kinds = sequence(
        AlertPolicy(),
        run(T0), run(T0 + 5 * MINUTE, "receive"), run(T0 + 10 * MINUTE, "receive"),
        run(T0 + 15 * MINUTE, "receive"), run(T0 + 20 * MINUTE), run(T0 + 25 * MINUTE),
    )
    assert kinds == [[], ["failure"], [], [], ["recovery"], []]
    recovery = state.queue[-1]
    assert recovery.priority == 3 and recovery.tags == ["white_check_mark"]
    assert "after 15m" in recovery.message  # broken from the first failed run to the healthy one
    assert state.incident is None and state.consecutive_failed_runs == 0


def test_after_failures_waits_for_consecutive_failed_runs() -> None:
    _, kinds = sequence(
        AlertPolicy(after_failures=3),
        run(T0, "receive"), run(T0 + MINUTE, "receive"), run(T0 + 2 * MINUTE),  # blip: no alert at all
        run(T0 + 3 * MINUTE, "receive"), run(T0 + 4 * MINUTE, "receive"), run(T0 + 5 * MINUTE, "receive"),
        run(T0 + 6 * MINUTE),
    )
    assert kinds == [[], [], [], [], [], ["failure"], ["recovery"]]


def test_change_while_failing_sends_one_update() -> None:
    state, kinds = sequence(
        AlertPolicy(),
        run(T0, "receive"), run(T0 + MINUTE, "receive", "tls"), run(T0 + 2 * MINUTE, "receive", "tls"),
        run(T0 + 3 * MINUTE, "tls"),
    )
    assert kinds == [["failure"], ["update"], [], ["update"]]
    last = state.queue[-1]
    assert "Working again: self/receive" in last.message and "self/tls" in last.message


def skipped(at: float, check: str, message: str = "run deadline reached first", *,
            unchecked: bool = True) -> RunResult:
    """A healthy run in which ``check`` was skipped: by the engine (the deadline), or by itself."""
    subject = Subject.route("self")
    return RunResult(started_at=at, duration=60.0, instance="mx1", checks=tuple(
        CheckResult(subject, name, Outcome.SKIPPED, message=message, unchecked=unchecked)
        if name == check else CheckResult(subject, name, Outcome.OK, 0.1)
        for name in ("imap_auth", "smtp_auth", "send", "receive", "cleanup", "tls")))


def test_a_check_skipped_behind_a_new_failure_is_not_working_again() -> None:
    # receive fails; then smtp_auth fails, so send and receive are skipped: receive is not healed.
    state, kinds = sequence(AlertPolicy(), run(T0, "receive"), run(T0 + MINUTE, "smtp_auth"),
                            run(T0 + 2 * MINUTE, "smtp_auth"), run(T0 + 3 * MINUTE))
    assert kinds == [["failure"], ["update"], [], ["recovery"]]
    update = state.queue[1]
    assert "self/smtp_auth" in update.message and "Working again" not in update.message


def test_an_alerted_check_not_run_before_the_deadline_neither_recovers_nor_alerts() -> None:
    not_reached = skipped(T0 + MINUTE, "receive")
    state, kinds = sequence(AlertPolicy(), run(T0, "receive"), not_reached, run(T0 + 2 * MINUTE))
    assert kinds == [["failure"], [], ["recovery"]]
    assert "after 2m" in state.queue[-1].message  # the outage ran on through the unchecked run


def test_a_check_that_skips_itself_for_want_of_anything_to_check_has_healed() -> None:
    # e.g. dkim once failed, then its selectors were removed: "no DKIM selector to check".
    nothing = skipped(T0 + MINUTE, "tls", "nothing to check", unchecked=False)
    _, kinds = sequence(AlertPolicy(), run(T0, "tls"), nothing, run(T0 + 2 * MINUTE, "receive"))
    assert kinds == [["failure"], ["recovery"], ["failure"]]  # the next outage is an outage of its own


def test_an_unchecked_check_that_passed_when_it_last_ran_does_not_hold_the_recovery() -> None:
    _, kinds = sequence(AlertPolicy(), run(T0, "receive"), skipped(T0 + MINUTE, "cleanup"))
    assert kinds == [["failure"], ["recovery"]]


def test_a_deadline_skip_neither_resets_nor_advances_the_count_before_the_alert() -> None:
    _, kinds = sequence(AlertPolicy(after_failures=2), run(T0, "receive"), skipped(T0 + MINUTE, "receive"),
                        run(T0 + 2 * MINUTE, "receive"))
    assert kinds == [[], [], ["failure"]]


def test_reminders_every_interval_while_failing() -> None:
    _, kinds = sequence(
        AlertPolicy(remind_every=60 * MINUTE),
        run(T0, "imap_auth"), run(T0 + 30 * MINUTE, "imap_auth"), run(T0 + 61 * MINUTE, "imap_auth"),
        run(T0 + 90 * MINUTE, "imap_auth"), run(T0 + 122 * MINUTE, "imap_auth"), run(T0 + 130 * MINUTE),
    )
    assert kinds == [["failure"], [], ["reminder"], [], ["reminder"], ["recovery"]]


def test_no_reminders_by_default() -> None:
    _, kinds = sequence(AlertPolicy(), *(run(T0 + i * 600 * MINUTE, "imap_auth") for i in range(5)))
    assert kinds == [["failure"], [], [], [], []]


def test_warnings_are_not_outages() -> None:
    state, kinds = sequence(AlertPolicy(), run(T0, warning="receive"), run(T0 + MINUTE, warning="receive"))
    assert kinds == [[], []]
    assert state.status is Status.WARNING
    assert state.checks["route:self"]["receive"].outcome is Outcome.WARNING


def test_disabled_policy_tracks_state_but_queues_nothing() -> None:
    state, kinds = sequence(AlertPolicy(enabled=False), run(T0, "send"))
    assert kinds == [[]] and state.queue == []
    assert state.checks["route:self"]["send"].consecutive_failures == 1


def test_check_state_and_counters() -> None:
    state, _ = sequence(AlertPolicy(), run(T0), run(T0 + MINUTE, "smtp_auth"), run(T0 + 2 * MINUTE, "smtp_auth"))
    smtp = state.checks["route:self"]["smtp_auth"]
    assert (smtp.ok, smtp.since, smtp.consecutive_failures, smtp.failures_total) == (False, T0 + MINUTE + 2, 2, 2)
    assert smtp.last_success == T0 + 2 and smtp.last_error == "smtp_auth broke"
    # Skipped checks keep what they knew: receive was ok and is not marked failing.
    assert state.checks["route:self"]["receive"].ok
    assert state.runs_total == 3 and state.status is Status.CRITICAL and state.status_since == T0 + MINUTE + 2
    state, _ = sequence(AlertPolicy(), run(T0 + 3 * MINUTE), state=state)
    assert state.checks["route:self"]["smtp_auth"].failures_total == 2  # a counter: never goes down
    assert state.checks["route:self"]["smtp_auth"].consecutive_failures == 0


def test_alert_ids_are_unique_and_ordered() -> None:
    state, _ = sequence(AlertPolicy(), run(T0, "send"), run(T0 + MINUTE, "send", "tls"), run(T0 + 2 * MINUTE))
    assert [a.id for a in state.queue] == ["1", "2", "3"]


def test_state_round_trips_through_json() -> None:
    state, _ = sequence(AlertPolicy(), run(T0, "send"), run(T0 + MINUTE, "send", "tls"))
    again = State.from_json(state.to_json())
    assert again.to_json() == state.to_json()
    assert again.queue[1].kind == "update" and again.incident is not None


def test_priority_5_only_when_mail_is_not_delivered() -> None:
    for check in ("imap_auth", "smtp_auth", "send", "receive"):
        state, _ = sequence(AlertPolicy(), run(T0, check))
        assert state.queue[0].priority == 5, check
    state, kinds = sequence(AlertPolicy(), run(T0, "tls"), run(T0 + MINUTE, "tls", "receive"),
                            run(T0 + 2 * MINUTE, "tls"), run(T0 + 3 * MINUTE))
    assert kinds == [["failure"], ["update"], ["update"], ["recovery"]]
    assert [a.priority for a in state.queue] == [4, 5, 4, 3]


def test_a_domain_check_failing_is_not_undelivered_mail() -> None:
    checks = (CheckResult(Subject.domain("example.org"), "receive", Outcome.FAILED, 0.1, "no record"),
              CheckResult(Subject.route("self"), "receive", Outcome.OK, 0.1))
    state, _ = evaluate(State(), RunResult(T0, 1.0, checks, instance="mx1"), AlertPolicy(), T0)
    assert state.queue[0].priority == 4


def test_one_incident_one_sequence_id_never_reused() -> None:
    state, kinds = sequence(AlertPolicy(remind_every=MINUTE), run(T0, "send"), run(T0 + 2 * MINUTE, "send"),
                            run(T0 + 3 * MINUTE, "send", "tls"), run(T0 + 4 * MINUTE))
    assert kinds == [["failure"], ["reminder"], ["update"], ["recovery"]]
    first = {a.sequence_id for a in state.queue}
    assert len(first) == 1 and len(first.pop()) == 16
    again, _ = sequence(AlertPolicy(), run(T0 + 5 * MINUTE, "send"), run(T0 + 6 * MINUTE), state=state)
    # A fresh state (file deleted, or moved aside as corrupt) starts its ids at 1 again;
    # the incident id must still differ, or ntfy would replace the old incident's card.
    reset, _ = sequence(AlertPolicy(), run(T0 + 7 * MINUTE, "send"))
    ids = [a.sequence_id for a in state.queue[:1] + again.queue[4:] + reset.queue]
    assert [a.id for a in reset.queue] == ["1"] == [state.queue[0].id]
    assert len(set(ids)) == 3, ids


def test_markdown_body_one_line_per_failing_check_escapes_server_text() -> None:
    route = Subject.route("self")
    checks = (CheckResult(route, "smtp_auth", Outcome.FAILED, 0.1, "535 *denied* see [here](http://x) <b>"),
              CheckResult(route, "imap_auth", Outcome.FAILED, 0.1, "NO _login_ failed"),
              CheckResult(route, "tls", Outcome.FAILED, 0.1, "certificate expired"))
    state, _ = evaluate(State(), RunResult(T0, 1.0, checks, instance="mx1"), AlertPolicy(), T0)
    assert state.queue[0].message.splitlines() == [
        "- **self/imap_auth**: NO \\_login\\_ failed",
        "- **self/smtp_auth**: 535 \\*denied\\* see \\[here\\](http://x) \\<b\\>",
        "- **self/tls**: certificate expired",
    ]
