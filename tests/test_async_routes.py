"""Async routes across runs: pending probes in the state, late and lost counted exactly once."""

from __future__ import annotations

import time
from dataclasses import replace

from test_route_steps import World, config, run

from mail_monitor.alerts import AlertPolicy, evaluate
from mail_monitor.probes.imap import Arrived
from mail_monitor.results import Collection, Outcome, RunResult, Submission
from mail_monitor.state import State

HOUR = 3600.0


def async_config():  # type: ignore[no-untyped-def]
    cfg = config()
    return replace(cfg, routes=tuple(replace(r, mode="async", late_after=HOUR, lost_after=4 * HOUR)
                                     for r in cfg.routes))


def one_run(world: World, state: State) -> tuple[RunResult, State]:
    result = run(world, async_config(), history=state.history())
    state, _ = evaluate(state, result, AlertPolicy(), time.time())
    return result, State.from_json(state.to_json())  # every run reads what the last one wrote


def receive(result: RunResult):  # type: ignore[no-untyped-def]
    return result.routes[0].check("receive")


def age(state: State, seconds: float) -> State:
    """Pretend the pending probes were sent ``seconds`` earlier."""
    state.pending = {k: [replace(p, submitted_at=p.submitted_at - seconds) for p in v]
                     for k, v in state.pending.items()}
    return state


def test_a_probe_sent_now_is_found_on_a_later_run_with_the_servers_arrival_time() -> None:
    world = World()
    first, state = one_run(world, State())
    assert receive(first).outcome is Outcome.OK and receive(first).message == "no earlier probe to look for yet"
    submission = first.routes[0].detail(Submission)
    assert submission is not None and submission.pending
    [probe] = state.pending["route:r0"]
    assert probe.token == submission.token
    # The server says it arrived 20 minutes after it was sent (INTERNALDATE, whole seconds).
    world.arrived[probe.token] = Arrived("INBOX", 42, int(probe.submitted_at) + 1200)
    second, state = one_run(world, state)
    got = receive(second)
    assert got.outcome is Outcome.OK, got.message
    arrival = second.routes[0].arrival()
    assert arrival is not None and arrival.uncertainty == 0.5
    assert abs(arrival.roundtrip - (int(probe.submitted_at) + 1200.5 - probe.submitted_at)) < 1e-6
    assert ("INBOX", [42]) in world.deleted  # cleaned up like a probe
    assert [p.token for p in state.pending["route:r0"]] != [probe.token]  # it left; this run's probe waits
    assert state.lost_total == {} and state.late_total == {}


def test_late_probes_warn_and_are_counted() -> None:
    world = World()
    _, state = one_run(world, State())
    [probe] = state.pending["route:r0"]
    world.arrived[probe.token] = Arrived("INBOX", 7, int(probe.submitted_at) + 2 * int(HOUR))
    result, state = one_run(world, state)
    assert receive(result).outcome is Outcome.WARNING and "arrived late" in receive(result).message
    assert state.late_total == {"route:r0": 1} and state.lost_total == {}


def test_a_probe_still_missing_after_late_after_warns_before_it_is_lost() -> None:
    world = World()
    _, state = one_run(world, State())
    result, state = one_run(world, age(state, 2 * HOUR))  # past late_after (1 h), before lost_after (4 h)
    got = receive(result)
    assert got.outcome is Outcome.WARNING and "1 probe(s) overdue" in got.message, got.message
    assert state.lost_total == {} and state.late_total == {}  # nothing counted yet: it may still come
    result, state = one_run(world, State.from_json(state.to_json()))  # a fresh probe: not overdue
    assert "1 probe(s) overdue" in receive(result).message  # the old one still is


def test_a_probe_that_never_arrives_is_counted_lost_exactly_once() -> None:
    world = World()
    _, state = one_run(world, State())
    state.pending = {"route:r0": state.pending["route:r0"][:1]}
    lost_token = state.pending["route:r0"][0].token
    result, state = one_run(world, age(state, 5 * HOUR))
    assert receive(result).outcome is Outcome.FAILED and "1 probe(s) lost" in receive(result).message
    assert state.lost_total == {"route:r0": 1}
    for _ in range(3):  # later runs neither count it again nor forget it
        result, state = one_run(world, state)
        assert state.lost_total == {"route:r0": 1}
        assert lost_token in [p.token for p in state.pending["route:r0"]]
    # It turns up after all: counted late, not lost a second time, and cleaned up.
    world.arrived[lost_token] = Arrived("INBOX", 9, int(time.time()))
    result, state = one_run(world, state)
    assert state.lost_total == {"route:r0": 1} and state.late_total == {"route:r0": 1}
    assert lost_token not in [p.token for p in state.pending["route:r0"]]
    assert ("INBOX", [9]) in world.deleted


def test_two_runs_that_find_the_same_probe_count_it_once() -> None:
    world = World()
    _, state = one_run(world, State())
    [probe] = state.pending["route:r0"]
    world.arrived[probe.token] = Arrived("INBOX", 3, int(probe.submitted_at) + 2 * int(HOUR))
    # Both runs read the state before either saved it; each then updates the saved one under the lock.
    first = run(world, async_config(), history=state.history())
    second = run(world, async_config(), history=state.history())
    assert first.routes[0].detail(Collection) is not None
    locked, _ = evaluate(state, first, AlertPolicy(), time.time())
    locked, _ = evaluate(locked, second, AlertPolicy(), time.time())
    assert locked.late_total == {"route:r0": 1}


def test_an_async_route_sends_even_when_imap_is_down() -> None:
    from mail_monitor.probes.imap import ImapLoginError

    world = World(imap_login_error=ImapLoginError("login refused"))
    result, state = one_run(world, State())
    assert result.routes[0].check("send").outcome is Outcome.OK
    assert receive(result).outcome is Outcome.SKIPPED
    assert len(state.pending["route:r0"]) == 1
