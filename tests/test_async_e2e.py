"""Async routes against the real Postfix + Dovecot: delivery held back for longer than a run."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import account_toml, monitor_toml, route_toml, run_cli, subjects
from mailstack import MailStack

pytestmark = pytest.mark.mailstack


@pytest.fixture
def hold_queue(stack: MailStack) -> Iterator[MailStack]:
    yield stack
    # What a test left on hold must not reach the mailboxes of later tests.
    subprocess.run(["postsuper", "-c", str(stack.root / "postfix"), "-d", "ALL", "hold"], capture_output=True)


def wait_until(condition, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def setup(stack: MailStack, secrets_dir: Path, tmp_path: Path, route: str) -> tuple[Path, Path, Path]:
    state, metrics = tmp_path / "state.json", tmp_path / "mail_monitor.prom"
    config = tmp_path / "config.toml"
    config.write_text(monitor_toml(state) + account_toml(stack, "self", "monitor", secrets_dir)
                      + route_toml(route, "self", "self", mode="async", late_after="1m", lost_after="2m")
                      + f'[metrics]\ntextfile = "{metrics}"\n')
    return config, state, metrics


def run(config: Path) -> tuple[int, dict]:  # type: ignore[type-arg]
    done = run_cli("run", "-c", str(config), "--format", "json")
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def receive(report: dict) -> dict:  # type: ignore[type-arg]
    return report["routes"][0]["checks"]["receive"]  # type: ignore[no-any-return]


def test_a_probe_held_past_its_run_is_found_on_the_next_with_its_roundtrip(hold_queue, secrets_dir, tmp_path):
    stack = hold_queue
    config, state, _ = setup(stack, secrets_dir, tmp_path, "held-async")
    code, first = run(config)
    assert code == 0, first
    assert receive(first)["message"] == "no earlier probe to look for yet"
    submitted = first["routes"][0]["submitted_at"]
    wait_until(lambda: stack.held() == 1, "the probe to wait in the hold queue")
    time.sleep(2.5)  # longer than the run took: the probe is still on its way when it ends
    released = time.time()
    stack.release_held()
    wait_until(lambda: any("held-async" in s for s in subjects(stack, "monitor")), "delivery")
    seen = time.time()
    code, second = run(config)
    assert code == 0, second
    assert receive(second)["outcome"] == "ok", receive(second)
    roundtrip = second["routes"][0]["roundtrip_seconds"]
    # From the server's arrival time (INTERNALDATE, whole seconds, reported +-0.5 s).
    assert released - submitted - 0.5 <= roundtrip <= seen - submitted + 1.0
    assert second["routes"][0]["roundtrip_uncertainty_seconds"] == 0.5
    assert not any("held-async" in s for s in subjects(stack, "monitor"))  # cleaned up
    pending = json.loads(state.read_text())["pending"]["route:held-async"]
    assert len(pending) == 1 and pending[0]["token"] not in json.dumps(first["routes"][0])  # only the new one


def test_a_probe_that_never_arrives_is_counted_lost_exactly_once(hold_queue, secrets_dir, tmp_path):
    stack = hold_queue
    config, state, metrics = setup(stack, secrets_dir, tmp_path, "held-lost")
    run(config)
    # Pretend the first probe left 3 minutes ago (lost_after is 2 minutes); it stays on hold.
    data = json.loads(state.read_text())
    for probe in data["pending"]["route:held-lost"]:
        probe["submitted_at"] -= 180
    state.write_text(json.dumps(data))
    code, second = run(config)
    assert code == 2 and receive(second)["outcome"] == "failed"
    assert "1 probe(s) lost" in receive(second)["message"]
    assert 'mail_monitor_lost_total{route="held-lost"} 1.0' in metrics.read_text()
    code, third = run(config)
    assert 'mail_monitor_lost_total{route="held-lost"} 1.0' in metrics.read_text()  # not twice
    assert receive(third)["outcome"] != "failed"
