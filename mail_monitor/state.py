"""The JSON state file: what earlier runs found, persistent counters, and undelivered alerts.

Written atomically under a lock next to it, so concurrent runs serialise and readers
(``mail-monitor status``, people) never see half a file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mail_monitor.errors import StateError, StateUnavailable
from mail_monitor.files import write_atomic
from mail_monitor.results import (
    CheckResult,
    History,
    Outcome,
    PendingProbe,
    ReportsCursor,
    Status,
    Subject,
    detail_from_json,
)

if TYPE_CHECKING:
    from mail_monitor.reports.totals import ReportTotals

log = logging.getLogger(__name__)

STATE_VERSION = 2


@dataclass
class CheckState:
    """A check's history across runs, so alerts can say "since" and count failures."""

    outcome: Outcome  # the last outcome that said something (skipped runs leave it)
    since: float  # when it became ok or failing
    consecutive_failures: int = 0
    last_error: str = ""  # the last failure's or warning's message
    last_success: float | None = None
    failures_total: int = 0
    checked_at: float | None = None  # when it last ran (carried results keep their age)
    message: str = ""  # the last message, for carrying it to runs where the check is not due
    detail: dict[str, Any] | None = None  # the last detail (detail_to_json), carried with it

    @property
    def ok(self) -> bool:
        return self.outcome.ok


@dataclass
class Alert:
    """One notification, queued until the ntfy server has accepted it."""

    id: str
    kind: str  # failure, update, reminder, recovery
    title: str
    message: str
    priority: int
    tags: list[str]
    created: float
    attempts: int = 0
    last_error: str = ""
    sequence_id: str = ""  # the incident's id: ntfy's card of the incident, which updates replace
    markdown: bool = False  # the message is Markdown (alerts queued by older versions are plain text)


@dataclass
class Incident:
    """An outage in progress: what has been alerted, so changes alert once."""

    since: float  # start of the first failed run in a row
    alerted: bool = False
    alerted_problems: list[str] = field(default_factory=list)  # "route:self/receive" keys
    last_alert: float | None = None
    id: str = field(default_factory=lambda: secrets.token_hex(8))  # never reused, even after a reset


@dataclass
class State:
    """Everything kept between runs (one process each): the JSON state file's content."""

    version: int = STATE_VERSION
    status: Status = Status.OK  # of the last run
    status_since: float | None = None
    last_run: float | None = None
    runs_total: int = 0
    consecutive_failed_runs: int = 0
    checks: dict[str, dict[str, CheckState]] = field(default_factory=dict)  # subject -> check -> state
    last_roundtrip: dict[str, float] = field(default_factory=dict)  # subject -> seconds
    incident: Incident | None = None
    queue: list[Alert] = field(default_factory=list)
    alerts_sent_total: int = 0
    next_alert: int = 1
    pending: dict[str, list[PendingProbe]] = field(default_factory=dict)  # subject -> async probes
    lost_total: dict[str, int] = field(default_factory=dict)  # subject -> probes counted lost, ever
    late_total: dict[str, int] = field(default_factory=dict)  # subject -> probes that came late, ever
    reports: dict[str, Any] = field(default_factory=dict)  # ReportTotals.to_json(): counters and seen ids
    reports_cursor: ReportsCursor | None = None  # the reports folder: what to file next, where to read on
    first_run: bool = True  # not persisted as True: a state read from disk is never a first run

    def to_json(self) -> bytes:
        data = asdict(self)
        data.pop("first_run")
        data["status"] = self.status.name
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes) -> State:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        version = data.get("version")
        if not isinstance(version, int) or version < 1:
            raise ValueError(f"unsupported state version {version!r}")
        if version > STATE_VERSION:
            raise NewerStateError(f"written by a newer mail-monitor (state version {version}, "
                                  f"this one reads up to {STATE_VERSION})")
        while version < STATE_VERSION:
            data = MIGRATIONS[version](data)
            version = data["version"]
        return _decode(data)

    def history(self) -> History:
        # The reports code (and its XML parsers) is imported only where reports were counted.
        seen = frozenset(self.report_totals().seen) if self.reports else frozenset()
        return History({subject: tuple(probes) for subject, probes in self.pending.items()},
                       reports_seen=seen, reports_cursor=self.reports_cursor)

    def report_totals(self) -> ReportTotals:
        """The reports counters (validated when the state was read)."""
        from mail_monitor.reports.totals import ReportTotals

        return ReportTotals.from_json(self.reports) if self.reports else ReportTotals()

    def last_results(self) -> dict[str, CheckResult]:
        """What each check found when it last ran, by result key: for checks not due this run."""
        results = {}
        for subject_text, checks in self.checks.items():
            subject = Subject.parse(subject_text)
            for name, check in checks.items():
                result = CheckResult(subject, name, check.outcome, None, check.message,
                                     detail_from_json(check.detail), check.checked_at)
                results[result.key] = result
        return results


class NewerStateError(ValueError):
    """The file is fine, but not ours to read: a newer version wrote it."""


def _migrate_1_to_2(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 keyed checks by bare route name and kept ``ok`` beside ``outcome``."""
    checks = {}
    for route, route_checks in (data.get("checks") or {}).items():
        migrated = {}
        for name, values in route_checks.items():
            values = dict(values)
            ok = values.pop("ok", True)
            values.setdefault("outcome", "ok" if ok else "failed")
            migrated[name] = values
        checks[f"route:{route}"] = migrated
    data["checks"] = checks
    data["last_roundtrip"] = {f"route:{k}": v for k, v in (data.get("last_roundtrip") or {}).items()}
    incident = data.get("incident")
    if isinstance(incident, dict):
        incident["alerted_problems"] = [f"route:{p}" for p in incident.get("alerted_problems", [])]
    data["version"] = 2
    return data


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _migrate_1_to_2}


def _known(cls: type[Any], values: object) -> dict[str, Any]:
    """The fields ``cls`` knows; unknown ones (from a newer minor change) are dropped, not fatal."""
    if not isinstance(values, dict):
        raise ValueError(f"expected an object for {cls.__name__}")
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in values.items() if k in names}


def _decode(data: dict[str, Any]) -> State:
    checks = {}
    for subject, subject_checks in (data.get("checks") or {}).items():
        Subject.parse(subject)
        decoded = {}
        for name, values in subject_checks.items():
            known = _known(CheckState, values)
            known["outcome"] = Outcome(known.get("outcome", "ok"))
            decoded[name] = CheckState(**known)
        checks[subject] = decoded
    incident = Incident(**_known(Incident, data["incident"])) if data.get("incident") else None
    pending = {subject: [PendingProbe(**_known(PendingProbe, p)) for p in probes]
               for subject, probes in (data.get("pending") or {}).items()}
    queue = [Alert(**_known(Alert, item)) for item in data.get("queue") or []]
    reports = data.get("reports") or {}
    if reports:  # validated now, so a damaged file is caught as corrupt when read
        from mail_monitor.reports.totals import ReportTotals

        try:
            ReportTotals.from_json(reports)
        except ValueError as exc:
            raise ValueError(f"reports: {exc}") from None
    cursor = _cursor(data["reports_cursor"]) if data.get("reports_cursor") else None
    plain = _known(State, data)
    for key in ("checks", "incident", "queue", "pending", "reports", "reports_cursor", "first_run"):
        plain.pop(key, None)
    plain["status"] = Status[str(plain.get("status", "OK"))]
    return State(**plain, checks=checks, incident=incident, queue=queue, pending=pending, reports=reports,
                 reports_cursor=cursor, first_run=False)


def _cursor(values: object) -> ReportsCursor:
    known = _known(ReportsCursor, values)
    for key in ("done", "error"):
        uids = known.get(key, [])
        if not isinstance(uids, list) or not all(isinstance(u, int) and not isinstance(u, bool) for u in uids):
            raise ValueError(f"reports_cursor.{key}: expected a list of UIDs")
        known[key] = tuple(uids)
    if not isinstance(known.get("folder"), str) or not all(
            isinstance(known.get(k, 1), int) for k in ("uidvalidity", "next_uid")):
        raise ValueError("reports_cursor: expected folder, uidvalidity and next_uid")
    return ReportsCursor(**known)


class StateStore:
    """Load and save one state file; ``locked()`` serialises runs on ``<state>.lock``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")

    @contextlib.contextmanager
    def locked(self, timeout: float) -> Iterator[None]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateUnavailable(f"{self.lock_path}: cannot create lock file: {exc.strerror}") from None
        try:
            end = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):  # e.g. ENOLCK on NFS
                        raise StateUnavailable(f"{self.lock_path}: cannot lock: {exc.strerror}") from None
                    if time.monotonic() > end:
                        raise StateError(f"{self.lock_path}: another run holds the lock") from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # releases the lock

    def load(self, read_only: bool = False) -> State:
        """The saved state; a missing file is a first run, a corrupt one is moved aside.

        ``read_only`` (for ``status``) never moves anything: a corrupt file is an error.
        A file from a newer version is never moved aside nor overwritten.
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return State()
        except OSError as exc:
            raise StateUnavailable(f"{self.path}: cannot read state: {exc.strerror}") from None
        try:
            return State.from_json(raw)
        except NewerStateError as exc:
            raise StateUnavailable(f"{self.path}: {exc}; refusing to touch it") from None
        except (ValueError, TypeError, KeyError) as exc:
            if read_only:
                raise StateError(f"{self.path}: corrupt state ({_short(exc)})") from None
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
            try:
                os.replace(self.path, aside)
            except OSError as move_error:
                raise StateUnavailable(f"{self.path}: corrupt and cannot be moved aside: "
                                       f"{move_error.strerror}") from None
            log.error("%s: corrupt state (%s); kept as %s, starting afresh", self.path, _short(exc), aside)
            return State()

    def save(self, state: State) -> None:
        try:
            write_atomic(self.path, state.to_json(), mode=0o600)
        except OSError as exc:
            raise StateError(f"{self.path}: cannot write state: {exc.strerror}") from None


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) < 120 else text[:117] + "..."


def as_dict(state: State) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(state.to_json())
    return data
