"""The check engine: run declared steps concurrently under one deadline.

A *step* is one check of one subject. It declares what it ``needs`` (steps that must
have passed, whose values it receives), what it runs ``after`` (steps that must have
finished, whatever their outcome), the ``gates`` it holds while it runs and the
``lease`` it holds while the value it provides is in use (an IMAP session counts
against a mailbox's connection limit until it is closed). From those declarations
alone the engine derives everything else: the order, "skipped: smtp_auth failed",
"did not finish before the run deadline", when to close a session. It knows no check
by name.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from mail_monitor.deadline import Deadline
from mail_monitor.results import CheckResult, Detail, Outcome, Subject

log = logging.getLogger(__name__)

T = TypeVar("T")
CLOSE_GRACE = 2.0  # seconds the engine waits for sessions to close after the last step


@dataclass(frozen=True, order=True)
class StepId:
    """Which check of which subject: ``route:self/receive``."""

    subject: Subject
    check: str

    def __str__(self) -> str:
        return f"{self.subject}/{self.check}"

    def label_from(self, other: Subject) -> str:
        """How a dependent names this step: bare within its own subject."""
        return self.check if other == self.subject else f"{self.subject.label}/{self.check}"


@dataclass(frozen=True)
class Gate:
    """A bounded resource: at most ``capacity`` holders at once, across all steps."""

    key: Hashable
    capacity: int


@dataclass(frozen=True)
class Finding:
    """What a step returns. ``value`` goes to the steps that need this one."""

    outcome: Outcome = Outcome.OK
    message: str = ""
    detail: Detail | None = None
    value: object = None
    unchecked: bool = False  # SKIPPED because it could not look (see CheckResult.unchecked)


class CheckFailed(Exception):
    """A step found a problem; the message is already phrased for the person paged."""

    def __init__(self, message: str, detail: Detail | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class StepContext:
    """What a running step may read: its deadline and what the steps before it found."""

    def __init__(self, step: Step, deadline: Deadline, nodes: Mapping[StepId, _Node]) -> None:
        self.step = step
        self.deadline = deadline
        self._nodes = nodes

    def value(self, step: StepId, kind: type[T]) -> T:
        """The value a needed step provided (the engine guarantees it passed)."""
        found = self.optional(step, kind)
        if found is None:
            raise LookupError(f"{step} provided no {kind.__name__}")
        return found

    def optional(self, step: StepId, kind: type[T]) -> T | None:
        """The value of a step this one runs after, if that step passed and provided one."""
        if step not in self.step.needs and step not in self.step.after:
            raise LookupError(f"{self.step.id} did not declare {step}")
        value = self._nodes[step].value
        return value if isinstance(value, kind) else None

    def result(self, step: StepId) -> CheckResult | None:
        if step not in self.step.needs and step not in self.step.after:
            raise LookupError(f"{self.step.id} did not declare {step}")
        return self._nodes[step].result


@dataclass(frozen=True)
class Step:
    """One check of one subject, and everything the engine needs to know to schedule it."""

    id: StepId
    run: Callable[[StepContext], Finding]
    needs: tuple[StepId, ...] = ()
    after: tuple[StepId, ...] = ()
    gates: tuple[Gate, ...] = ()
    lease: Gate | None = None
    failure: Outcome = Outcome.FAILED  # what a failure of this check means (cleanup: a warning)
    interval: float = 0.0  # seconds between runs of this check; 0 = every run


Describe = Callable[[BaseException, float], str | None]


def _no_description(exc: BaseException, elapsed: float) -> str | None:
    return None


@dataclass(eq=False)
class _Node:
    step: Step
    index: int
    result: CheckResult | None = None
    value: object = None
    started: float | None = None  # monotonic
    skip_reason: str | None = None  # the root cause, when skipped for a failed need
    users: int = 0  # dependents still to finish before the value may be closed
    closed: bool = False

    @property
    def done(self) -> bool:
        return self.result is not None

    @property
    def running(self) -> bool:
        return self.started is not None and self.result is None


@dataclass
class _Event:
    node: _Node
    kind: str  # "done" or "closed"
    finding: Finding | None = None
    error: tuple[str, Detail | None, bool] | None = None  # message, detail, internal
    finished: float = 0.0


@dataclass
class Engine:
    """Runs steps. ``describe`` turns a network exception into a message (None: not ours)."""

    max_parallel: int = 50
    describe: Describe = _no_description
    # Steps time their own network waits out at the deadline and say so better than the
    # engine can ("timed out after 3.6s"); it gives them this long before it abandons them.
    grace: float = 0.5
    scrub: Callable[[str], str] = field(default=lambda text: text)
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time

    def run(self, steps: Sequence[Step], deadline: Deadline,
            carried: Mapping[str, CheckResult] | None = None) -> list[CheckResult]:
        """Every step's result, in declaration order, by the deadline whatever the steps do.

        ``carried`` holds the last results of steps with an ``interval``, by
        :attr:`CheckResult.key`; one younger than its interval is reported again
        instead of being re-checked.
        """
        return _Run(self, steps, deadline, carried or {}).run()


class _Run:
    """One pass of the scheduler; lives for one :meth:`Engine.run`."""

    def __init__(self, engine: Engine, steps: Sequence[Step], deadline: Deadline,
                 carried: Mapping[str, CheckResult]) -> None:
        self.engine = engine
        self.deadline = deadline
        self.carried = carried
        self.nodes: dict[StepId, _Node] = {}
        for index, step in enumerate(steps):
            if step.id in self.nodes:
                raise ValueError(f"step {step.id} declared twice")
            self.nodes[step.id] = _Node(step, index)
        for node in self.nodes.values():
            for other in (*node.step.needs, *node.step.after):
                if other not in self.nodes:
                    raise ValueError(f"step {node.step.id} depends on {other}, which is not declared")
                self.nodes[other].users += 1
        self.held: dict[Hashable, int] = {}
        self.running = 0
        self.closing = 0
        self.events: queue.Queue[_Event] = queue.Queue()

    # -- the loop ---------------------------------------------------------------

    def run(self) -> list[CheckResult]:
        pending = list(self.nodes.values())
        grace = self.engine.grace
        while True:
            pending = self._dispatch(pending)
            if not pending and self.running == 0:
                break
            if self.deadline.remaining() <= 0 and self.running == 0:
                self._abandon(pending)  # nothing left that could still finish in time
                break
            if self.running == 0 and self.closing == 0:
                # Nothing can start and nothing will finish: a dependency cycle.
                for node in pending:
                    self._finish(node, Outcome.SKIPPED, "waits on a check that can never run", unchecked=True)
                break
            try:
                event = self.events.get(timeout=max(0.0, self.deadline.remaining() + grace))
            except queue.Empty:
                self._abandon(pending)
                break
            self._handle(event)
            if self.deadline.remaining() <= -grace:
                self._abandon(pending)
                break
        self._close_leftovers()
        return [node.result for node in sorted(self.nodes.values(), key=lambda n: n.index)
                if node.result is not None]

    def _dispatch(self, pending: list[_Node]) -> list[_Node]:
        """Start, skip or carry every step that can be decided now; return the rest."""
        progressed = True
        while progressed:
            progressed = False
            waiting: list[_Node] = []
            for node in pending:
                if self._decide(node):
                    progressed = True
                else:
                    waiting.append(node)
            pending = waiting
        return pending

    def _decide(self, node: _Node) -> bool:
        step = node.step
        for need in step.needs:
            other = self.nodes[need]
            if not other.done:
                return False
            assert other.result is not None
            if not other.result.ok:
                cause = other.skip_reason or f"{need.label_from(step.id.subject)} failed"
                node.skip_reason = cause
                self._finish(node, Outcome.SKIPPED, cause, unchecked=True)
                self._release_users(node)
                return True
        if not all(self.nodes[a].done for a in step.after):
            return False
        previous = self.carried.get(str(step.id))
        if step.interval > 0 and previous is not None and previous.checked_at is not None \
                and 0 <= self.engine.wall() - previous.checked_at < step.interval:
            node.result = _carry(previous, self.engine.scrub)
            self._release_users(node)
            return True
        gates = (*step.gates, *((step.lease,) if step.lease else ()))
        if self.running >= self.engine.max_parallel or not all(self._free(g) for g in gates) \
                or self.deadline.remaining() <= 0:
            return False
        for gate in gates:
            self.held[gate.key] = self.held.get(gate.key, 0) + 1
        self._start(node)
        return True

    def _free(self, gate: Gate) -> bool:
        return self.held.get(gate.key, 0) < gate.capacity

    def _release(self, gate: Gate) -> None:
        self.held[gate.key] -= 1

    # -- running a step ---------------------------------------------------------

    def _start(self, node: _Node) -> None:
        self.running += 1
        node.started = self.engine.clock()
        context = StepContext(node.step, self.deadline, self.nodes)
        thread = threading.Thread(target=self._work, args=(node, context), name=f"step-{node.step.id}",
                                  daemon=True)
        thread.start()

    def _work(self, node: _Node, context: StepContext) -> None:
        event = _Event(node, "done")
        assert node.started is not None
        try:
            event.finding = node.step.run(context)
        except CheckFailed as exc:
            event.error = (exc.message, exc.detail, False)
        except Exception as exc:
            described = self.engine.describe(exc, self.engine.clock() - node.started)
            if described is None:
                log.error("%s: internal error", node.step.id, exc_info=True)
                event.error = (f"internal error: {exc.__class__.__name__}: {exc}", None, True)
            else:
                event.error = (described, None, False)
        event.finished = self.engine.clock()
        self.events.put(event)

    def _handle(self, event: _Event) -> None:
        node = event.node
        if event.kind == "closed":
            self.closing -= 1
            if node.step.lease is not None:
                self._release(node.step.lease)
            return
        self.running -= 1
        for gate in node.step.gates:
            self._release(gate)
        assert node.started is not None
        duration = event.finished - node.started
        if event.finding is not None:
            finding = event.finding
            node.value = finding.value
            self._finish(node, finding.outcome, finding.message, finding.detail, duration,
                         unchecked=finding.unchecked and finding.outcome is Outcome.SKIPPED)
        else:
            assert event.error is not None
            message, detail, internal = event.error
            outcome = Outcome.FAILED if internal else node.step.failure
            self._finish(node, outcome, message, detail, duration)
        self._release_users(node)
        if node.users == 0:
            self._close(node)

    def _finish(self, node: _Node, outcome: Outcome, message: str, detail: Detail | None = None,
                duration: float | None = None, *, unchecked: bool = False) -> None:
        checked_at = None if outcome is Outcome.SKIPPED else self.engine.wall()
        node.result = CheckResult(node.step.id.subject, node.step.id.check, outcome, duration,
                                  _one_line(self.engine.scrub(message)), detail, checked_at, unchecked=unchecked)

    def _release_users(self, node: _Node) -> None:
        """``node`` is finished: the steps it depends on have one user fewer."""
        for other_id in (*node.step.needs, *node.step.after):
            other = self.nodes[other_id]
            other.users -= 1
            if other.users == 0 and other.done and other.started is not None:
                self._close(other)

    def _close(self, node: _Node) -> None:
        """Close the value once nobody needs it, then give back its lease."""
        if node.closed or node.started is None or node.running:
            return
        node.closed = True
        close = getattr(node.value, "close", None)
        if not callable(close):
            if node.step.lease is not None:
                self._release(node.step.lease)
            return
        self.closing += 1

        def work() -> None:
            try:
                close()
            except Exception:
                log.debug("%s: close failed", node.step.id, exc_info=True)
            self.events.put(_Event(node, "closed"))

        threading.Thread(target=work, name=f"close-{node.step.id}", daemon=True).start()

    def _close_leftovers(self) -> None:
        """Let sessions that are being closed finish, briefly; abandoned steps keep theirs."""
        end = self.engine.clock() + min(CLOSE_GRACE, max(0.0, self.deadline.remaining()) + CLOSE_GRACE)
        while self.closing > 0:
            try:
                event = self.events.get(timeout=max(0.0, end - self.engine.clock()))
            except queue.Empty:
                return
            if event.kind == "closed":
                self.closing -= 1

    # -- the deadline -----------------------------------------------------------

    def _abandon(self, pending: Iterable[_Node]) -> None:
        """The run deadline passed: running steps failed, the rest never started."""
        seconds = self.deadline.seconds
        for node in self.nodes.values():
            if node.running:
                log.warning("%s: still running at the deadline, abandoned", node.step.id)
                assert node.started is not None
                self._finish(node, Outcome.FAILED, f"did not finish before the run deadline ({seconds:g}s)",
                             duration=self.engine.clock() - node.started)
        for node in pending:
            if not node.done:
                self._finish(node, Outcome.SKIPPED, "run deadline reached first", unchecked=True)


def _carry(previous: CheckResult, scrub: Callable[[str], str]) -> CheckResult:
    return CheckResult(previous.subject, previous.name, previous.outcome, previous.duration,
                       scrub(previous.message), previous.detail, previous.checked_at, carried=True)


MAX_MESSAGE = 500


def _one_line(text: str) -> str:
    """Messages are one line however a server phrased its error; long ones are shortened."""
    line = " ".join(text.split())
    line = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in line)
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 1] + "…"

