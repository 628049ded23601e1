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
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mail_monitor.errors import StateError
from mail_monitor.files import write_atomic

log = logging.getLogger(__name__)

STATE_VERSION = 1


@dataclass
class CheckState:
    """A check's history across runs, so alerts can say "since" and count failures."""

    ok: bool
    since: float  # when it became ok or failing
    consecutive_failures: int = 0
    last_error: str = ""
    last_success: float | None = None
    failures_total: int = 0
    outcome: str = "ok"  # the last outcome: ok, warning, failed (skipped runs leave it)


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


@dataclass
class Incident:
    """An outage in progress: what has been alerted, so changes alert once."""

    since: float  # start of the first failed run in a row
    alerted: bool = False
    alerted_problems: list[str] = field(default_factory=list)  # "route/check" keys
    last_alert: float | None = None


@dataclass
class State:
    """Everything kept between runs (one process each): the JSON state file's content."""

    version: int = STATE_VERSION
    status: str = "OK"  # OK, WARNING, CRITICAL of the last run
    status_since: float | None = None
    last_run: float | None = None
    runs_total: int = 0
    consecutive_failed_runs: int = 0
    checks: dict[str, dict[str, CheckState]] = field(default_factory=dict)  # route -> check -> state
    last_roundtrip: dict[str, float] = field(default_factory=dict)
    incident: Incident | None = None
    queue: list[Alert] = field(default_factory=list)
    alerts_sent_total: int = 0
    next_alert: int = 1
    first_run: bool = True  # not persisted as True: a state read from disk is never a first run

    def to_json(self) -> bytes:
        data = asdict(self)
        data.pop("first_run")
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes) -> State:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported state version {data.get('version') if isinstance(data, dict) else '?'}")
        checks = {
            route: {name: CheckState(**values) for name, values in route_checks.items()}
            for route, route_checks in data.get("checks", {}).items()
        }
        incident = Incident(**data["incident"]) if data.get("incident") else None
        queue = [Alert(**item) for item in data.get("queue", [])]
        plain = {k: v for k, v in data.items() if k not in ("checks", "incident", "queue")}
        return cls(**plain, checks=checks, incident=incident, queue=queue, first_run=False)


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
            raise StateError(f"{self.lock_path}: cannot create lock file: {exc.strerror}") from None
        try:
            end = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > end:
                        raise StateError(f"{self.lock_path}: another run holds the lock") from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # releases the lock

    def load(self) -> State:
        """The saved state; a missing file is a first run, a corrupt one is moved aside."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return State()
        except OSError as exc:
            raise StateError(f"{self.path}: cannot read state: {exc.strerror}") from None
        try:
            return State.from_json(raw)
        except (ValueError, TypeError, KeyError) as exc:
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
            try:
                os.replace(self.path, aside)
            except OSError as move_error:
                raise StateError(f"{self.path}: corrupt and cannot be moved aside: {move_error.strerror}") from None
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
