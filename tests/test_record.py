"""Recording a run when the state file cannot be used: the outage still reaches the phone.

Fast: the real state store on a temporary directory, ntfy a loopback stand-in.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from ntfy_server import FakeNtfy

from mail_monitor.app import record
from mail_monitor.config import Config, parse_config
from mail_monitor.deadline import Deadline
from mail_monitor.errors import StateError, StateUnavailable
from mail_monitor.results import CheckResult, Outcome, RunResult, Subject
from mail_monitor.state import STATE_VERSION, StateStore

T0 = 1_800_000_000.0


@pytest.fixture
def ntfy() -> Iterator[FakeNtfy]:
    server = FakeNtfy()
    yield server
    server.stop()


def config(ntfy: FakeNtfy, after_failures: int = 3) -> Config:
    return parse_config({
        "accounts": {"self": {"address": "me@example.org", "password_file": "/run/pw",
                              "smtp": {"host": "localhost"}, "imap": {"host": "localhost"}}},
        "routes": [{"name": "self", "from": "self", "to": "self"}],
        "alerts": {"ntfy": {"server": ntfy.url, "topic": "mail-alerts", "retries": 1,
                            "after_failures": after_failures}},
    }, "test.toml")


def failing_run() -> RunResult:
    route = Subject.route("self")
    return RunResult(started_at=T0, duration=1.0, instance="mx1", checks=(
        CheckResult(route, "imap_auth", Outcome.OK, 0.1),
        CheckResult(route, "smtp_auth", Outcome.FAILED, 0.1, "535 authentication failed"),
    ))


@pytest.mark.parametrize("breakage", ["directory is a file", "newer version"])
def test_an_unusable_state_still_delivers_the_failure_alert_and_makes_the_run_unknown(
        tmp_path: Path, ntfy: FakeNtfy, breakage: str) -> None:
    if breakage == "directory is a file":
        (tmp_path / "state").write_text("a file where the state directory should be")
        store = StateStore(tmp_path / "state" / "state.json")
    else:  # e.g. after a rollback to an older mail-monitor
        store = StateStore(tmp_path / "state.json")
        store.path.write_text(json.dumps({"version": STATE_VERSION + 1}))
    with pytest.raises(StateUnavailable):
        # after_failures cannot be counted without a state: the first failure alerts.
        record(config(ntfy, after_failures=3), failing_run(), store, Deadline(10), notify=True)
    assert [m["title"] for m in ntfy.accepted] == ["Mail broken on mx1: self"]
    assert "535 authentication failed" in ntfy.accepted[0]["message"]
    if breakage == "newer version":
        assert json.loads(store.path.read_text()) == {"version": STATE_VERSION + 1}  # left alone


def test_a_lock_held_by_another_run_is_not_degraded_to_alerting_without_state(
        tmp_path: Path, ntfy: FakeNtfy) -> None:
    store = StateStore(tmp_path / "state.json")
    with store.locked(timeout=1), pytest.raises(StateError, match="another run holds the lock") as caught:
        record(config(ntfy, after_failures=1), failing_run(), store, Deadline(0.5), notify=True)
    assert not isinstance(caught.value, StateUnavailable)
    assert ntfy.requests == []  # the run holding the lock records and alerts; no duplicate from this one


def test_a_usable_state_counts_failures_before_alerting(tmp_path: Path, ntfy: FakeNtfy) -> None:
    store = StateStore(tmp_path / "state.json")
    state = record(config(ntfy, after_failures=2), failing_run(), store, Deadline(10), notify=True)
    assert ntfy.requests == [] and state.consecutive_failed_runs == 1
    record(config(ntfy, after_failures=2), failing_run(), store, Deadline(10), notify=True)
    assert len(ntfy.accepted) == 1 and store.load().queue == []


def test_a_state_that_reads_but_cannot_be_saved_alerts_at_once(tmp_path: Path, ntfy: FakeNtfy,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # A full disk: every run reads the same saved state, so after_failures would never be counted up.
    store = StateStore(tmp_path / "state.json")

    def disk_full(state: object) -> None:
        raise StateError(f"{store.path}: cannot write state: No space left on device")

    monkeypatch.setattr(store, "save", disk_full)
    with pytest.raises(StateError, match="No space left"):
        record(config(ntfy, after_failures=3), failing_run(), store, Deadline(10), notify=True)
    assert [m["title"] for m in ntfy.accepted] == ["Mail broken on mx1: self"]


def test_a_lock_the_file_system_refuses_is_unavailable_not_another_run(tmp_path: Path, ntfy: FakeNtfy,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import fcntl

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")  # NFS without lockd

    monkeypatch.setattr(fcntl, "flock", no_locks)
    store = StateStore(tmp_path / "state.json")
    with pytest.raises(StateUnavailable, match="cannot lock: No locks available"):
        record(config(ntfy, after_failures=3), failing_run(), store, Deadline(10), notify=True)
    assert len(ntfy.accepted) == 1
