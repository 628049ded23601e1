"""The heartbeat through the real CLI against the real mail stack: start, then the exit code."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PASSWORDS, ROOT, account_toml, route_toml
from heartbeat_server import FakeHeartbeat
from mailstack import MailStack

pytestmark = pytest.mark.mailstack
UUID = "0b7c1f55-heartbeat-secret-uuid"

@pytest.fixture
def service() -> Iterator[FakeHeartbeat]:
    server = FakeHeartbeat()
    yield server
    server.stop()


def run(stack: MailStack, tmp_path: Path, url: str, password: str, deadline: str = "30s") -> tuple[int, str]:
    secrets = tmp_path / "secrets"
    secrets.mkdir(parents=True, exist_ok=True)
    (secrets / "monitor").write_text(password + "\n")
    config = tmp_path / "config.toml"
    config.write_text(
        f'[monitor]\nstate_file = "{tmp_path / "state.json"}"\ndeadline = "{deadline}"\n\n'
        + account_toml(stack, "self", "monitor", secrets)
        + route_toml("self", "self", "self", receive_timeout="10s")
        + f'[heartbeat]\nurl = "{url}"\n')
    command = [sys.executable, "-m", "mail_monitor"]
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    done = subprocess.run([*command, "run", "-c", str(config)], capture_output=True, text=True, timeout=120,
                          env=env, cwd=ROOT, stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout + done.stderr


def test_run_pings_start_and_its_exit_code(stack, tmp_path, service):
    url = f"{service.url}/ping/{UUID}"
    code, output = run(stack, tmp_path / "ok", url, PASSWORDS["monitor"])
    assert code == 0, output
    code, output = run(stack, tmp_path / "broken", url, "wrong password")
    assert code == 2, output
    assert [p.path for p in service.pings] == [f"/ping/{UUID}/start", f"/ping/{UUID}/0",
                                               f"/ping/{UUID}/start", f"/ping/{UUID}/2"]
    assert UUID not in output


def test_hanging_heartbeat_changes_neither_deadline_nor_exit_code(stack, tmp_path, service):
    service.hang = True
    started = time.monotonic()
    code, output = run(stack, tmp_path, f"{service.url}/ping/{UUID}", PASSWORDS["monitor"], deadline="12s")
    assert code == 0, output
    assert time.monotonic() - started < 12 + 5  # the deadline, plus starting Python
    assert "heartbeat: start ping to http://127.0.0.1" in output and UUID not in output
    assert [p.path for p in service.pings][:1] == [f"/ping/{UUID}/start"]
