"""What one run found: frozen dataclasses that flow on to state, alerts, metrics and output.

Every check result has a *subject* (a route, a domain, the local host) and a check
name; everything after the engine is keyed by the two. Values a check measured are
typed *details* (an :class:`Arrival` for ``receive``, a :class:`TlsReport` for
``tls``...), so outputs find them by type, never by check name.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar


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
    """How one check went; SKIPPED means it could not run, which says nothing about it."""

    OK = "ok"
    WARNING = "warning"  # worked, but something needs attention (spam folder, slow, cert expiring)
    FAILED = "failed"
    SKIPPED = "skipped"  # could not run because a check it needs did not pass

    @property
    def status(self) -> Status:
        return _OUTCOME_STATUS[self]

    @property
    def ok(self) -> bool:
        return self in (Outcome.OK, Outcome.WARNING)


_OUTCOME_STATUS = {
    Outcome.OK: Status.OK,
    Outcome.SKIPPED: Status.OK,
    Outcome.WARNING: Status.WARNING,
    Outcome.FAILED: Status.CRITICAL,
}


class SubjectKind(enum.StrEnum):
    """What a check is about; also the metric label a subject gets (``route``, ``domain``)."""

    ROUTE = "route"
    DOMAIN = "domain"
    HOST = "host"


@dataclass(frozen=True, order=True)
class Subject:
    """``route:NAME``, ``domain:NAME`` or ``host``: the key of state, alerts and metrics."""

    kind: SubjectKind
    name: str = ""

    def __str__(self) -> str:
        return self.kind.value if self.kind is SubjectKind.HOST else f"{self.kind.value}:{self.name}"

    @property
    def label(self) -> str:
        """For people: a route by its bare name (as before subjects existed), others in full."""
        return self.name if self.kind is SubjectKind.ROUTE else str(self)

    @classmethod
    def route(cls, name: str) -> Subject:
        return cls(SubjectKind.ROUTE, name)

    @classmethod
    def domain(cls, name: str) -> Subject:
        return cls(SubjectKind.DOMAIN, name)

    @classmethod
    def host(cls) -> Subject:
        return cls(SubjectKind.HOST)

    @classmethod
    def parse(cls, text: str) -> Subject:
        kind, sep, name = text.partition(":")
        if not sep:
            if text == SubjectKind.HOST.value:
                return cls.host()
            raise ValueError(f"not a subject: {text!r}")
        return cls(SubjectKind(kind), name)


# --------------------------------------------------------------------------- details


@dataclass(frozen=True)
class Certificate:
    """The verified certificate an endpoint presented, kept for the expiry metric."""

    endpoint: str  # host:port
    not_after: float  # Unix time
    subject: str = ""
    issuer: str = ""
    tls_version: str = ""  # as negotiated, e.g. "TLSv1.3"


@dataclass(frozen=True)
class Handshake:
    """What a connection step learnt of an endpoint's TLS, whether or not the login then worked."""

    protocol: str  # "IMAP", "SMTP"
    endpoint: str  # host:port
    tls: str  # the configured mode: starttls, implicit, none
    certificate: Certificate | None = None
    certificate_error: str | None = None  # the verification failure, phrased for people
    allow_plaintext: bool = False


@dataclass(frozen=True)
class Submission:
    """The test mail as handed to the submission server."""

    submitted_at: float  # Unix time the submission started
    message_id: str
    token: str = ""
    pending: bool = False  # an async route's probe: looked for on later runs


@dataclass(frozen=True)
class Arrival:
    """Where and when the test mail showed up: the roundtrip and what it rests on."""

    roundtrip: float  # submission start -> mail seen, seconds
    uncertainty: float  # +/- seconds around the moment it was seen
    folder: str
    in_spam: bool
    submitted_at: float  # Unix time
    seen_at: float  # Unix time (estimate, see docs/how-it-works.md)
    commands: int  # IMAP commands sent while waiting
    waited: float  # seconds the wait lasted
    delivery: float | None = None  # server-side, from the Received headers


@dataclass(frozen=True)
class PendingProbe:
    """A probe an async route sent on an earlier run and has not seen arrive yet."""

    token: str
    submitted_at: float  # Unix time
    lost: bool = False  # already counted lost (found later, it counts as late instead)


@dataclass(frozen=True)
class Collection:
    """What an async route's ``receive`` found of the probes earlier runs sent."""

    found: tuple[PendingProbe, ...] = ()  # arrived (their roundtrips in ``late`` / ``latest``)
    late: tuple[PendingProbe, ...] = ()  # arrived after late_after (or after being counted lost)
    lost: tuple[PendingProbe, ...] = ()  # newly past lost_after and still not there
    latest: Arrival | None = None  # the newest probe found, for the roundtrip
    pending: int = 0  # still on their way after this run


@dataclass(frozen=True)
class ReportsCursor:
    """Where the reports folder stands once a run's counts are saved.

    ``done`` and ``error`` are the mails that run counted; the next run files them
    away (so nothing moves before its counts are saved) and reads on from ``next_uid``.
    """

    folder: str
    uidvalidity: int
    next_uid: int = 1
    done: tuple[int, ...] = ()
    error: tuple[int, ...] = ()


@dataclass(frozen=True)
class History:
    """What earlier runs left that this run's checks need: the async probes still under way."""

    pending: dict[str, tuple[PendingProbe, ...]] = field(default_factory=dict)  # subject -> probes
    reports_seen: frozenset[str] = frozenset()  # report keys already counted (within dedup_window)
    reports_cursor: ReportsCursor | None = None

    def probes(self, subject: Subject) -> tuple[PendingProbe, ...]:
        return self.pending.get(str(subject), ())


@dataclass(frozen=True)
class CleanupReport:
    """What cleanup removed."""

    test_mail_deleted: bool
    stale_deleted: int


@dataclass(frozen=True)
class TlsReport:
    """The certificates the endpoints of a subject presented this run."""

    certificates: tuple[Certificate, ...] = ()


@dataclass(frozen=True)
class AuthVerdict:
    """One method's verdict on the probe from one source (``monitor`` or ``receiver``)."""

    method: str  # spf, dkim, dmarc
    source: str  # monitor, receiver
    verdict: str  # the RFC 8601 word: pass, fail, none, temperror, ...
    authserv_id: str = ""  # who wrote a receiver verdict

    @property
    def word(self) -> str:
        """``spf`` for ours, ``receiver_spf`` for the receiver's: the names output uses."""
        return self.method if self.source == "monitor" else f"{self.source}_{self.method}"


@dataclass(frozen=True)
class AuthVerdicts:
    """The verdicts behind one of a route's checks ``spf``, ``dkim``, ``dmarc``."""

    verdicts: tuple[AuthVerdict, ...] = ()


@dataclass(frozen=True)
class DnsFacts:
    """What a DNS posture check read (the DMARC policy, the MX hosts...), as name/value pairs."""

    facts: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class BlocklistEntry:
    """One sending IP in one DNSBL zone; ``listed`` is None when the zone could not tell."""

    ip: str
    zone: str
    listed: bool | None
    reason: str = ""


@dataclass(frozen=True)
class BlocklistLookups:
    """Every IP x zone of the ``blocklists`` check, for ``mail_monitor_blocklisted{ip,zone}``."""

    entries: tuple[BlocklistEntry, ...] = ()


@dataclass(frozen=True)
class ReportCount:
    """What one report adds to the counters, in the state's row form; counted once by ``key``."""

    key: str  # kind, reporter and report id
    dmarc: tuple[dict[str, str | int], ...] = ()
    tls: tuple[dict[str, str | int], ...] = ()


@dataclass(frozen=True)
class ReportsRead:
    """What the reports check read this run; the counting happens against the locked state."""

    cursor: ReportsCursor
    new: tuple[ReportCount, ...] = ()
    dmarc_reports: int = 0
    tls_reports: int = 0
    duplicates: int = 0
    unreadable: int = 0
    filed: int = 0  # mails an earlier run counted, moved away this run
    left: int = 0  # mails still waiting for later runs
    dedup_window: float = 7 * 86400.0  # seconds a report id is remembered


@dataclass(frozen=True)
class QueueDepth:
    """The local Postfix queue as ``postqueue -j`` listed it."""

    depth: dict[str, int]
    oldest_deferred_seconds: float | None = None


# Every detail type, one per line: outputs find them by type, the state file by name.
Detail = (
    Handshake
    | Submission
    | Arrival
    | Collection
    | CleanupReport
    | TlsReport
    | AuthVerdicts
    | DnsFacts
    | BlocklistLookups
    | ReportsRead
    | QueueDepth
)
D = TypeVar("D", bound=Detail)
DETAIL_TYPES: dict[str, type[Any]] = {cls.__name__: cls for cls in typing.get_args(Detail)}


def detail_to_json(detail: Detail) -> dict[str, Any]:
    """A detail as plain data, tagged with its type, for the state file (carried results keep it)."""
    return {"type": type(detail).__name__, **dataclasses.asdict(detail)}


def detail_from_json(data: object) -> Detail | None:
    """The detail :func:`detail_to_json` wrote; None for anything this version does not know."""
    if not isinstance(data, dict) or data.get("type") not in DETAIL_TYPES:
        return None
    try:
        value = _build(DETAIL_TYPES[data["type"]], data)
    except (TypeError, ValueError, KeyError, AttributeError):  # damaged by hand, or another shape
        return None
    return value  # type: ignore[no-any-return]


def _build(kind: Any, value: Any) -> Any:
    """Rebuild typed data from JSON by the type hints: dataclasses, tuples, optionals, enums."""
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        hints = typing.get_type_hints(kind)
        names = {f.name for f in dataclasses.fields(kind) if f.init}
        return kind(**{k: _build(hints[k], v) for k, v in value.items() if k in names})
    if origin in (types.UnionType, typing.Union):
        if value is None:
            return None
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        return _build(options[0], value) if len(options) == 1 else value
    if origin is tuple:
        args = typing.get_args(kind)
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else Any
        return tuple(_build(item, v) for v in value)
    if origin is dict:
        _, item = typing.get_args(kind)
        return {k: _build(item, v) for k, v in value.items()}
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return kind(value)
    return value


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class CheckResult:
    """One check of one subject; ``message`` is written for the person who gets paged."""

    subject: Subject
    name: str
    outcome: Outcome
    duration: float | None = None
    message: str = ""
    detail: Detail | None = None
    checked_at: float | None = None  # Unix time it ran; an older one when carried
    carried: bool = False  # not due this run: the last result, kept with its age
    # SKIPPED by the engine (a check it needs did not pass, the run deadline came first):
    # unlike a check that skips itself ("nothing to check"), it says nothing about itself.
    unchecked: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome.ok

    @property
    def key(self) -> str:
        """``route:self/receive``: the one spelling state and alerts use."""
        return f"{self.subject}/{self.name}"

    @property
    def label(self) -> str:
        """``self/receive`` or ``domain:example.org/spf``: the spelling people read."""
        return f"{self.subject.label}/{self.name}"


@dataclass(frozen=True)
class SubjectResult:
    """The checks of one subject, in the order they were declared."""

    subject: Subject
    checks: tuple[CheckResult, ...]

    @property
    def status(self) -> Status:
        return max((c.outcome.status for c in self.checks), default=Status.OK)

    def check(self, name: str) -> CheckResult | None:
        return next((c for c in self.checks if c.name == name), None)

    def detail(self, kind: type[D]) -> D | None:
        """The first detail of this type any check of the subject recorded."""
        for check in self.checks:
            if isinstance(check.detail, kind):
                return check.detail
        return None

    def failing(self) -> list[CheckResult]:
        return [c for c in self.checks if c.outcome is Outcome.FAILED]

    def arrival(self) -> Arrival | None:
        """The test mail's arrival: this run's, or for an async route the newest probe found."""
        arrival = self.detail(Arrival)
        if arrival is None and (collection := self.detail(Collection)) is not None:
            arrival = collection.latest
        return arrival


@dataclass(frozen=True)
class RunResult:
    """One run over every subject: the single input of everything after the checks."""

    started_at: float  # Unix time
    duration: float
    checks: tuple[CheckResult, ...]
    instance: str = ""
    errors: tuple[str, ...] = ()  # the monitor's own failures (state, metrics): UNKNOWN
    subjects: tuple[SubjectResult, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        grouped: dict[Subject, list[CheckResult]] = {}
        for check in self.checks:
            grouped.setdefault(check.subject, []).append(check)
        object.__setattr__(self, "subjects",
                           tuple(SubjectResult(s, tuple(c)) for s, c in grouped.items()))

    @property
    def status(self) -> Status:
        """The worst check; UNKNOWN when the monitor itself could not do its job."""
        if self.errors:
            return Status.UNKNOWN
        return max((c.outcome.status for c in self.checks), default=Status.OK)

    def of_kind(self, kind: SubjectKind) -> Iterator[SubjectResult]:
        return (s for s in self.subjects if s.subject.kind is kind)

    @property
    def routes(self) -> list[SubjectResult]:
        return list(self.of_kind(SubjectKind.ROUTE))

    def failing(self) -> list[CheckResult]:
        return [c for c in self.checks if c.outcome is Outcome.FAILED]

    def certificates(self) -> dict[str, Certificate]:
        return certificates(self.checks)


def certificates(checks: Iterable[CheckResult]) -> dict[str, Certificate]:
    """Every certificate seen, by endpoint: from handshakes too, even if the login then failed."""
    found: dict[str, Certificate] = {}
    for check in checks:
        if isinstance(check.detail, Handshake) and check.detail.certificate is not None:
            found[check.detail.endpoint] = check.detail.certificate
        elif isinstance(check.detail, TlsReport):
            for certificate in check.detail.certificates:
                found[certificate.endpoint] = certificate
    return found
