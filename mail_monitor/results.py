"""What one run found: plain dataclasses that flow on to state, alerts, metrics and output."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

CHECKS: tuple[str, ...] = ("imap_auth", "smtp_auth", "send", "receive", "cleanup", "tls")


class Status(enum.IntEnum):
    """Ordered like the monitoring-plugins exit codes, so ``max()`` gives the run's status."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    @property
    def label(self) -> str:
        return self.name


class Outcome(enum.StrEnum):
    OK = "ok"
    WARNING = "warning"  # worked, but something needs attention (spam folder, slow, cert expiring)
    FAILED = "failed"
    SKIPPED = "skipped"  # could not run because an earlier check failed

    @property
    def status(self) -> Status:
        return _OUTCOME_STATUS[self]


_OUTCOME_STATUS = {
    Outcome.OK: Status.OK,
    Outcome.SKIPPED: Status.OK,
    Outcome.WARNING: Status.WARNING,
    Outcome.FAILED: Status.CRITICAL,
}


@dataclass
class CheckResult:
    """One check of one route; ``message`` is written for the person who gets paged."""

    name: str
    outcome: Outcome
    duration: float | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome in (Outcome.OK, Outcome.WARNING)


@dataclass
class Certificate:
    """The verified certificate an endpoint presented, kept for the expiry metric."""

    endpoint: str  # host:port
    not_after: float  # Unix time
    subject: str = ""
    issuer: str = ""


@dataclass
class RouteResult:
    """Everything one route found; outputs, state and metrics all read from it."""

    route: str
    checks: dict[str, CheckResult] = field(default_factory=dict)
    roundtrip: float | None = None
    roundtrip_uncertainty: float | None = None
    delivery: float | None = None
    submitted_at: float | None = None  # Unix time the submission started
    seen_at: float | None = None  # Unix time the mail was seen (estimate, see docs)
    folder: str | None = None  # where the test mail landed
    in_spam: bool = False
    stale_deleted: int = 0
    imap_commands: int = 0  # commands sent while waiting for the mail
    imap_wait_seconds: float | None = None  # how long that wait lasted
    certificates: list[Certificate] = field(default_factory=list)

    @property
    def status(self) -> Status:
        return max((c.outcome.status for c in self.checks.values()), default=Status.OK)

    def failing(self) -> list[CheckResult]:
        return [c for c in self.checks.values() if c.outcome is Outcome.FAILED]


@dataclass
class RunResult:
    """One run over every route: the single input of everything after the checks."""

    started_at: float  # Unix time
    duration: float
    routes: list[RouteResult]
    instance: str = ""

    @property
    def status(self) -> Status:
        return max((r.status for r in self.routes), default=Status.OK)

    def certificates(self) -> dict[str, Certificate]:
        return {c.endpoint: c for r in self.routes for c in r.certificates}
