"""The state file across versions: migrations, tolerance, refusal, pruning. No network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mail_monitor.alerts import MAX_QUEUE, AlertPolicy, evaluate
from mail_monitor.errors import StateError
from mail_monitor.results import CheckResult, Outcome, RunResult, Status, Subject
from mail_monitor.state import STATE_VERSION, Alert, State, StateStore

# A state file as version 1 (main before the check engine, 880ddbf) wrote it: mid-outage,
# with two alerts the ntfy server has not accepted yet.
VERSION_1 = {
    "version": 1, "status": "CRITICAL", "status_since": 1800000000.0, "last_run": 1800000300.0,
    "runs_total": 12, "consecutive_failed_runs": 2,
    "checks": {"self": {
        "imap_auth": {"ok": True, "since": 1799990000.0, "consecutive_failures": 0, "last_error": "",
                      "last_success": 1800000300.0, "failures_total": 1, "outcome": "ok"},
        "receive": {"ok": False, "since": 1800000000.0, "consecutive_failures": 2,
                    "last_error": "test mail did not arrive within 60s", "last_success": 1799999700.0,
                    "failures_total": 5, "outcome": "failed"}}},
    "last_roundtrip": {"self": 0.8},
    "incident": {"since": 1800000000.0, "alerted": True, "alerted_problems": ["self/receive"],
                 "last_alert": 1800000000.0},
    "queue": [
        {"id": "7", "kind": "failure", "title": "Mail broken on mx: self", "message": "• self/receive: lost",
         "priority": 4, "tags": ["rotating_light"], "created": 1800000000.0, "attempts": 3,
         "last_error": "HTTP 502: bad gateway"},
        {"id": "8", "kind": "reminder", "title": "Mail still broken", "message": "•", "priority": 4,
         "tags": ["repeat"], "created": 1800000300.0, "attempts": 0, "last_error": ""},
    ],
    "alerts_sent_total": 6, "next_alert": 9,
}


def store_with(tmp_path: Path, data: object) -> StateStore:
    path = tmp_path / "state.json"
    path.write_text(json.dumps(data))
    return StateStore(path)


def test_a_version_1_file_loads_with_every_queued_alert_intact(tmp_path: Path) -> None:
    state = store_with(tmp_path, VERSION_1).load()
    assert state.version == STATE_VERSION == 2
    assert [(a.id, a.kind, a.attempts, a.last_error) for a in state.queue] == [
        ("7", "failure", 3, "HTTP 502: bad gateway"), ("8", "reminder", 0, "")]
    receive = state.checks["route:self"]["receive"]
    assert receive.outcome is Outcome.FAILED and not receive.ok and receive.failures_total == 5
    assert state.checks["route:self"]["imap_auth"].ok
    assert state.status is Status.CRITICAL and state.next_alert == 9 and state.runs_total == 12
    assert state.last_roundtrip == {"route:self": 0.8}
    assert state.incident is not None and state.incident.alerted_problems == ["route:self/receive"]


def test_the_migrated_outage_goes_on_without_a_second_failure_alert(tmp_path: Path) -> None:
    state = store_with(tmp_path, VERSION_1).load()
    still = RunResult(1800000600.0, 1.0, (CheckResult(Subject.route("self"), "receive", Outcome.FAILED, 1.0, "lost"),),
                      "mx")
    state, alerts = evaluate(state, still, AlertPolicy(), 1800000601.0)
    assert alerts == []  # the same problem, already alerted before the upgrade
    healed = RunResult(1800000900.0, 1.0, (CheckResult(Subject.route("self"), "receive", Outcome.OK, 1.0),), "mx")
    state, alerts = evaluate(state, healed, AlertPolicy(), 1800000901.0)
    assert [a.kind for a in alerts] == ["recovery"]
    assert [a.id for a in state.queue] == ["7", "8", "9"]  # the old queue first, in order


def test_unknown_fields_never_cost_the_queue(tmp_path: Path) -> None:
    data = json.loads(json.dumps(VERSION_1))
    data["version"] = 2
    data["checks"] = {"route:self": {"receive": {"outcome": "failed", "since": 1.0, "future": [1, 2]}}}
    data["something_new"] = {"x": 1}
    data["queue"][0]["future_field"] = "y"
    data["incident"] = {**data["incident"], "alerted_problems": ["route:self/receive"], "another": 3}
    state = store_with(tmp_path, data).load()
    assert [a.id for a in state.queue] == ["7", "8"]
    assert state.checks["route:self"]["receive"].outcome is Outcome.FAILED


def test_a_newer_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    data = {**VERSION_1, "version": STATE_VERSION + 1}
    store = store_with(tmp_path, data)
    with pytest.raises(StateError, match="newer mail-monitor"):
        store.load()
    assert json.loads(store.path.read_text()) == data
    assert list(tmp_path.iterdir()) == [store.path]


def test_status_reads_a_corrupt_file_without_moving_it(tmp_path: Path) -> None:
    store = store_with(tmp_path, "x")
    store.path.write_text('{"version": 2, "checks": [')
    with pytest.raises(StateError, match="corrupt state"):
        store.load(read_only=True)
    assert list(tmp_path.iterdir()) == [store.path]
    assert store.load().first_run  # a run moves it aside and starts afresh
    assert [p.name.startswith("state.json.corrupt-") for p in tmp_path.iterdir()] == [True]


def test_subjects_and_checks_no_longer_configured_are_pruned() -> None:
    state = State()
    route_a, domain = Subject.route("a"), Subject.domain("example.org")
    both = RunResult(1.0, 1.0, (CheckResult(route_a, "receive", Outcome.OK, 1.0),
                                CheckResult(domain, "spf", Outcome.FAILED, 0.1, "bad"),
                                CheckResult(domain, "dkim", Outcome.OK, 0.1)), "mx")
    state, _ = evaluate(state, both, AlertPolicy(), 2.0)
    assert set(state.checks) == {"route:a", "domain:example.org"}
    only_route = RunResult(3.0, 1.0, (CheckResult(route_a, "receive", Outcome.OK, 1.0),
                                      CheckResult(domain, "dkim", Outcome.OK, 0.1)), "mx")
    state, _ = evaluate(state, only_route, AlertPolicy(), 4.0)
    assert state.checks == {"route:a": state.checks["route:a"], "domain:example.org": {
        "dkim": state.checks["domain:example.org"]["dkim"]}}


def test_last_results_carry_outcome_message_and_age() -> None:
    domain = Subject.domain("example.org")
    run = RunResult(1.0, 1.0, (CheckResult(domain, "spf", Outcome.WARNING, 0.1, "temperror", checked_at=100.0),),
                    "mx")
    state, _ = evaluate(State(), run, AlertPolicy(), 101.0)
    again = State.from_json(state.to_json())
    carried = again.last_results()["domain:example.org/spf"]
    assert (carried.outcome, carried.message, carried.checked_at) == (Outcome.WARNING, "temperror", 100.0)


def test_each_incident_has_its_own_sequence_id_even_after_a_state_reset() -> None:
    broken = RunResult(1.0, 1.0, (CheckResult(Subject.route("a"), "send", Outcome.FAILED, 0.1, "x"),), "mx")
    healed = RunResult(2.0, 1.0, (CheckResult(Subject.route("a"), "send", Outcome.OK, 0.1),), "mx")
    state, first = evaluate(State(), broken, AlertPolicy(), 1.0)
    state, recovery = evaluate(state, healed, AlertPolicy(), 2.0)
    assert first[0].sequence_id and first[0].sequence_id == recovery[0].sequence_id  # one card per incident
    _, after_reset = evaluate(State(), broken, AlertPolicy(), 3.0)  # the state file was deleted
    assert after_reset[0].id == first[0].id == "1"  # alert numbers restart...
    assert after_reset[0].sequence_id != first[0].sequence_id  # ...but never the card they land on


def test_the_queue_is_trimmed_reminders_first_then_oldest() -> None:
    state = State()
    state.queue = [Alert(str(n), "reminder" if n % 2 else "failure", "t", "m", 4, [], float(n))
                   for n in range(MAX_QUEUE)]
    state.next_alert = MAX_QUEUE
    broken = RunResult(1.0, 1.0, (CheckResult(Subject.route("a"), "send", Outcome.FAILED, 0.1, "x"),), "mx")
    state, _ = evaluate(state, broken, AlertPolicy(), 10.0)
    assert len(state.queue) == MAX_QUEUE
    assert state.queue[-1] is not None and state.queue[-1].kind == "failure" and state.queue[-1].created == 10.0
    assert "1" not in [a.id for a in state.queue]  # the oldest reminder went
    assert [a.id for a in state.queue][:2] == ["0", "2"]  # the oldest failures stayed


def test_details_survive_the_state_file_so_carried_results_keep_them() -> None:
    from mail_monitor.results import Certificate, Collection, PendingProbe, TlsReport, detail_from_json

    domain = Subject.domain("example.org")
    tls = TlsReport((Certificate("mx:993", 2e9, "CN=mx", "CN=ca", "TLSv1.3"),))
    collection = Collection(found=(PendingProbe("t1", 5.0),), lost=(PendingProbe("t2", 1.0, True),), pending=2)
    run = RunResult(1.0, 1.0, (CheckResult(domain, "tls", Outcome.OK, 0.1, "fine", tls, checked_at=100.0),
                               CheckResult(domain, "collect", Outcome.FAILED, 0.1, "lost", collection,
                                           checked_at=100.0)), "mx")
    state, _ = evaluate(State(), run, AlertPolicy(), 101.0)
    again = State.from_json(state.to_json()).last_results()
    assert again["domain:example.org/tls"].detail == tls
    assert again["domain:example.org/collect"].detail == collection
    assert detail_from_json({"type": "SomethingNewer", "x": 1}) is None  # from a newer version: dropped
    assert detail_from_json({"type": "TlsReport", "certificates": "garbage"}) is None


@pytest.mark.parametrize(("content", "says"), [
    ('{"version": 2, "checks": [', "corrupt state"),
    ('{"version": 99}', "newer mail-monitor"),
])
def test_status_says_what_is_wrong_and_touches_nothing(tmp_path: Path, content: str, says: str) -> None:
    from conftest import run_cli

    (tmp_path / "pw").write_text("secret\n")
    (tmp_path / "pw").chmod(0o600)
    state = tmp_path / "state.json"
    state.write_text(content)
    config = tmp_path / "config.toml"
    config.write_text(f'[monitor]\nstate_file = "{state}"\n\n[accounts.self]\naddress = "a@example.org"\n'
                      f'password_file = "{tmp_path / "pw"}"\nsmtp = {{ host = "localhost" }}\n'
                      'imap = { host = "localhost" }\n\n[[routes]]\nname = "self"\nfrom = "self"\nto = "self"\n')
    done = run_cli("status", "-c", str(config))
    assert done.returncode == 3
    assert says in done.stderr and str(state) in done.stderr and "Traceback" not in done.stderr
    assert "OK" not in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml", "pw", "state.json"]
    assert state.read_text() == content
