"""The check engine with fake steps: order, skips, gates, leases, the deadline, blame. Milliseconds."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import pytest

from mail_monitor.deadline import Deadline
from mail_monitor.engine import CheckFailed, Engine, Finding, Gate, Step, StepContext, StepId
from mail_monitor.results import CheckResult, Outcome, Subject

A, B = Subject.route("a"), Subject.route("b")
GENEROUS = 30.0  # seconds a test waits for something that should take milliseconds


def sid(subject: Subject, check: str) -> StepId:
    return StepId(subject, check)


def ok(message: str = "", value: object = None) -> Callable[[StepContext], Finding]:
    return lambda ctx: Finding(message=message, value=value)


def fail(message: str) -> Callable[[StepContext], Finding]:
    def run(ctx: StepContext) -> Finding:
        raise CheckFailed(message)

    return run


def run(steps: list[Step], seconds: float = GENEROUS, **engine: object) -> dict[str, CheckResult]:
    results = Engine(**engine).run(steps, Deadline(seconds))  # type: ignore[arg-type]
    return {str(StepId(r.subject, r.name)): r for r in results}


def chain(subject: Subject, first: Callable[[StepContext], Finding]) -> list[Step]:
    """login -> send -> receive, cleanup after receive: the shape of a route."""
    login, send, receive = sid(subject, "login"), sid(subject, "send"), sid(subject, "receive")
    return [Step(login, first), Step(send, ok(), needs=(login,)), Step(receive, ok(), needs=(send,)),
            Step(sid(subject, "cleanup"), ok(), needs=(login,), after=(receive,))]


def test_results_come_in_declaration_order_with_their_own_durations() -> None:
    results = run(chain(A, ok("in")))
    assert list(results) == ["route:a/login", "route:a/send", "route:a/receive", "route:a/cleanup"]
    assert all(r.outcome is Outcome.OK and r.duration is not None and r.checked_at for r in results.values())
    assert results["route:a/login"].message == "in"


def test_skips_name_the_root_cause_not_the_check_in_between() -> None:
    results = run(chain(A, fail("authentication failed: 535")))
    assert results["route:a/login"].outcome is Outcome.FAILED
    assert results["route:a/login"].message == "authentication failed: 535"
    for name in ("send", "receive", "cleanup"):
        assert results[f"route:a/{name}"].outcome is Outcome.SKIPPED
        assert results[f"route:a/{name}"].message == "login failed"
        assert results[f"route:a/{name}"].unchecked  # the engine's skip: it says nothing of the check


def test_a_check_that_skips_itself_is_not_unchecked() -> None:
    results = run([Step(sid(A, "dkim"), lambda ctx: Finding(Outcome.SKIPPED, "no DKIM selector to check")),
                   Step(sid(A, "tls"), lambda ctx: Finding(Outcome.OK, unchecked=True))])
    assert results["route:a/dkim"].outcome is Outcome.SKIPPED and not results["route:a/dkim"].unchecked
    assert not results["route:a/tls"].unchecked  # only a skip can be one that could not look


def test_after_runs_whatever_the_outcome_and_sees_the_result() -> None:
    login, send = sid(A, "login"), sid(A, "send")
    seen: list[CheckResult | None] = []

    def report(ctx: StepContext) -> Finding:
        seen.append(ctx.result(send))
        return Finding()

    results = run([Step(login, ok()), Step(send, fail("refused"), needs=(login,)),
                   Step(sid(A, "tls"), report, after=(login, send))])
    assert results["route:a/tls"].outcome is Outcome.OK
    assert seen[0] is not None and seen[0].outcome is Outcome.FAILED


def test_a_failure_of_another_subject_is_named_with_its_subject() -> None:
    other = sid(B, "receive")
    results = run([Step(other, fail("lost")), Step(sid(A, "dkim"), ok(), needs=(other,))])
    assert results["route:a/dkim"].message == "b/receive failed"


def test_values_flow_to_the_steps_that_need_them() -> None:
    login, send = sid(A, "login"), sid(A, "send")
    got: list[str] = []

    def use(ctx: StepContext) -> Finding:
        got.append(ctx.value(login, str))
        return Finding()

    run([Step(login, ok(value="session")), Step(send, use, needs=(login,))])
    assert got == ["session"]


def test_an_unexpected_exception_fails_only_its_own_step(caplog: pytest.LogCaptureFixture) -> None:
    def broken(ctx: StepContext) -> Finding:
        return {}["missing"]  # type: ignore[no-any-return]

    steps = [*chain(A, broken), *chain(B, ok())]
    with caplog.at_level(logging.ERROR):
        results = run(steps)
    assert results["route:a/login"].outcome is Outcome.FAILED
    assert results["route:a/login"].message == "internal error: KeyError: 'missing'"
    assert results["route:a/send"].outcome is Outcome.SKIPPED and results["route:a/send"].unchecked
    assert all(results[f"route:b/{n}"].outcome is Outcome.OK for n in ("login", "send", "receive", "cleanup"))
    assert "route:a/login: internal error" in caplog.text and "Traceback" in caplog.text


def test_known_errors_are_described_and_keep_the_steps_failure_outcome() -> None:
    def refused(ctx: StepContext) -> Finding:
        raise ConnectionRefusedError

    def describe(exc: BaseException, elapsed: float) -> str | None:
        return "connection refused" if isinstance(exc, ConnectionRefusedError) else None

    results = run([Step(sid(A, "cleanup"), refused, failure=Outcome.WARNING)], describe=describe)
    assert (results["route:a/cleanup"].outcome, results["route:a/cleanup"].message) == (
        Outcome.WARNING, "connection refused")


def test_the_deadline_fails_what_runs_and_skips_what_never_started() -> None:
    never = threading.Event()

    def hang(ctx: StepContext) -> Finding:
        never.wait()
        return Finding()

    steps = [Step(sid(A, "login"), ok()), Step(sid(A, "receive"), hang, needs=(sid(A, "login"),)),
             Step(sid(A, "cleanup"), ok(), needs=(sid(A, "login"),), after=(sid(A, "receive"),))]
    box: list[dict[str, CheckResult]] = []
    thread = threading.Thread(target=lambda: box.append(run(steps, seconds=0.3)), daemon=True)
    thread.start()
    thread.join(GENEROUS)
    never.set()
    assert box, "the engine did not return at its deadline"
    results = box[0]
    assert results["route:a/login"].outcome is Outcome.OK
    assert results["route:a/receive"].outcome is Outcome.FAILED
    assert results["route:a/receive"].message == "did not finish before the run deadline (0.3s)"
    assert results["route:a/cleanup"].outcome is Outcome.SKIPPED
    assert results["route:a/cleanup"].message == "run deadline reached first"
    assert results["route:a/cleanup"].unchecked and not results["route:a/login"].unchecked


def test_subjects_run_concurrently() -> None:
    # Every receive waits for all the others: run one at a time, the barrier breaks.
    barrier = threading.Barrier(5, timeout=GENEROUS / 3)

    def together(ctx: StepContext) -> Finding:
        barrier.wait()
        return Finding()

    steps = [step for n in range(5) for step in chain(Subject.route(f"r{n}"), ok())]
    steps = [Step(s.id, together, s.needs, s.after) if s.id.check == "receive" else s for s in steps]
    results = run(steps)
    assert all(r.outcome is Outcome.OK for r in results.values()), results


def test_max_parallel_bounds_the_steps_at_once() -> None:
    lock = threading.Lock()
    running = [0]
    peak = [0]

    def busy(ctx: StepContext) -> Finding:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        threading.Event().wait(0.02)
        with lock:
            running[0] -= 1
        return Finding()

    run([Step(sid(Subject.route(f"r{n}"), "x"), busy) for n in range(8)], max_parallel=3)
    assert peak[0] == 3


class Session:
    """A closable value that records how many are open at once."""

    open = 0
    peak = 0
    closed: list[str] = []  # noqa: RUF012 - reset by the test
    lock = threading.Lock()

    def __init__(self, name: str) -> None:
        self.name = name
        with Session.lock:
            Session.open += 1
            Session.peak = max(Session.peak, Session.open)

    def close(self) -> None:
        with Session.lock:
            Session.open -= 1
            Session.closed.append(self.name)


def test_a_lease_bounds_open_sessions_per_mailbox_and_sessions_close_once_unused() -> None:
    Session.open = Session.peak = 0
    Session.closed = []
    mailbox = Gate(("mailbox", "mx", "user"), 2)
    steps: list[Step] = []
    for n in range(6):
        subject = Subject.route(f"r{n}")
        login = sid(subject, "login")
        steps.append(Step(login, lambda ctx, n=n: Finding(value=Session(f"r{n}")), lease=mailbox))
        steps.append(Step(sid(subject, "receive"), lambda ctx: (threading.Event().wait(0.01), Finding())[1],
                          needs=(login,)))
    results = run(steps)
    assert all(r.outcome is Outcome.OK for r in results.values())
    assert Session.peak == 2  # never more than the gate allows, and it did run two at once
    assert sorted(Session.closed) == [f"r{n}" for n in range(6)]  # each closed exactly once


def test_a_gate_held_while_running_queues_the_rest() -> None:
    gate = Gate("connecting", 1)
    lock = threading.Lock()
    inside = [0]
    overlaps = [0]

    def connect(ctx: StepContext) -> Finding:
        with lock:
            inside[0] += 1
            overlaps[0] += inside[0] > 1
        threading.Event().wait(0.01)
        with lock:
            inside[0] -= 1
        return Finding()

    results = run([Step(sid(Subject.route(f"r{n}"), "login"), connect, gates=(gate,)) for n in range(4)])
    assert overlaps[0] == 0 and len(results) == 4


def test_checks_with_an_interval_are_carried_until_due() -> None:
    spf = sid(Subject.domain("example.org"), "spf")
    calls: list[int] = []

    def check(ctx: StepContext) -> Finding:
        calls.append(1)
        return Finding(message="fresh")

    step = Step(spf, check, interval=3600)
    now = 1_800_000_000.0
    young = CheckResult(spf.subject, "spf", Outcome.FAILED, 0.1, "SPF lacks 203.0.113.7", checked_at=now - 60)
    results = Engine(wall=lambda: now).run([step], Deadline(GENEROUS), {"domain:example.org/spf": young})
    assert calls == [] and results[0].carried and results[0].outcome is Outcome.FAILED
    assert results[0].checked_at == now - 60 and results[0].message == "SPF lacks 203.0.113.7"
    old = CheckResult(spf.subject, "spf", Outcome.FAILED, 0.1, "old", checked_at=now - 3601)
    results = Engine(wall=lambda: now).run([step], Deadline(GENEROUS), {"domain:example.org/spf": old})
    assert calls == [1] and not results[0].carried and results[0].message == "fresh"


def test_messages_are_scrubbed_and_kept_on_one_line() -> None:
    results = run([Step(sid(A, "login"), fail("NO LOGIN monitor \"hunter2\"\r\nsecond line\x07"))],
                  scrub=lambda text: text.replace("hunter2", "<redacted>"))
    assert results["route:a/login"].message == 'NO LOGIN monitor "<redacted>" second line\\x07'


def test_undeclared_dependencies_are_refused() -> None:
    with pytest.raises(ValueError, match="not declared"):
        run([Step(sid(A, "send"), ok(), needs=(sid(A, "login"),))])
