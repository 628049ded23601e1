"""State, ntfy alerts and metrics across real runs against the real mail stack."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import PASSWORDS, account_toml, route_toml, run_cli
from mailstack import MailStack
from ntfy_server import FakeNtfy

from mail_monitor.state import State, StateError, StateStore

pytestmark = pytest.mark.mailstack
NTFY_TOKEN = "tk_ntfy-token-secret-5"


@dataclass
class Setup:
    config: Path
    state: Path
    metrics: Path
    password: Path
    ntfy: FakeNtfy
    outputs: list[str]

    def run(self, *extra: str) -> tuple[int, str]:
        done = run_cli("run", "-c", str(self.config), *extra)
        self.outputs += [done.stdout, done.stderr]
        return done.returncode, done.stdout + done.stderr

    def break_mail(self) -> None:
        self.password.write_text("wrong password\n")

    def heal_mail(self) -> None:
        self.password.write_text(PASSWORDS["monitor"] + "\n")

    def state_data(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self.state.read_text())  # type: ignore[no-any-return]

    def everything_written(self) -> str:
        parts = [*self.outputs, self.state.read_text() if self.state.exists() else ""]
        if self.metrics.exists():
            parts.append(self.metrics.read_text())
        for request in self.ntfy.requests:
            parts.append(request.body.decode())
            parts.append(json.dumps(request.headers))
        return "\n".join(parts)


@pytest.fixture
def ntfy() -> Iterator[FakeNtfy]:
    server = FakeNtfy(token=NTFY_TOKEN)
    yield server
    server.stop()


def make_setup(stack: MailStack, tmp_path: Path, ntfy: FakeNtfy, secrets_dir: Path, *,
               ntfy_extra: str = "", monitor_extra: str = "") -> Setup:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    password = secrets / "monitor"
    password.write_text(PASSWORDS["monitor"] + "\n")
    (secrets / "ntfy-token").write_text(NTFY_TOKEN + "\n")
    textfile_dir = tmp_path / "textfile"
    textfile_dir.mkdir()
    state = tmp_path / "state" / "state.json"
    metrics = textfile_dir / "mail_monitor.prom"
    config = tmp_path / "config.toml"
    config.write_text(
        f'[monitor]\nstate_file = "{state}"\ndeadline = "30s"\ninstance = "mx-test"\n{monitor_extra}\n'
        + account_toml(stack, "self", "monitor", secrets)
        + route_toml("self", "self", "self", receive_timeout="10s")
        + f'[alerts.ntfy]\nserver = "{ntfy.url}"\ntopic = "mail-alerts"\n'
        f'token_file = "{secrets / "ntfy-token"}"\nretries = 1\n{ntfy_extra}\n'
        + f'[metrics]\ntextfile = "{metrics}"\n'
    )
    return Setup(config, state, metrics, password, ntfy, [])


def assert_no_secrets(setup: Setup) -> None:
    written = setup.everything_written()
    for password in PASSWORDS.values():
        assert password not in written
    assert "wrong password" not in written
    bodies = "\n".join(r.body.decode() for r in setup.ntfy.requests)
    assert NTFY_TOKEN not in bodies and NTFY_TOKEN not in setup.state.read_text()
    assert NTFY_TOKEN not in "".join(setup.outputs)


def test_outage_gives_one_failure_and_one_recovery_alert(stack, secrets_dir, tmp_path, ntfy):
    setup = make_setup(stack, tmp_path, ntfy, secrets_dir)
    code, _ = setup.run()
    assert code == 0 and ntfy.requests == []  # healthy first run: silence
    assert setup.state_data()["status"] == "OK"

    setup.break_mail()
    code, _ = setup.run()
    assert code == 2
    assert len(ntfy.accepted) == 1
    failure = ntfy.accepted[0]
    assert failure["topic"] == "mail-alerts" and failure["priority"] == 5  # mail is not getting through
    assert failure["markdown"] is True and failure["sequence_id"].startswith("mail-monitor-mx-test-")
    assert failure["tags"] == ["rotating_light"]
    assert failure["title"] == "Mail broken on mx-test: self"
    assert "self/imap_auth" in failure["message"] and "self/smtp_auth" in failure["message"]
    assert ntfy.requests[0].headers["Authorization"] == f"Bearer {NTFY_TOKEN}"
    assert ntfy.requests[0].headers["Content-Type"] == "application/json"

    code, _ = setup.run()
    assert code == 2 and len(ntfy.accepted) == 1  # still broken: no repeat

    setup.heal_mail()
    code, _ = setup.run()
    assert code == 0
    assert len(ntfy.accepted) == 2
    recovery = ntfy.accepted[1]
    assert recovery["priority"] == 3 and recovery["tags"] == ["white_check_mark"]
    assert recovery["title"] == "Mail recovered on mx-test"
    assert "All checks pass again after" in recovery["message"]
    assert recovery["sequence_id"] == failure["sequence_id"]  # replaces the failure's card
    code, _ = setup.run()
    assert code == 0 and len(ntfy.accepted) == 2

    state = setup.state_data()
    assert state["version"] == 2 and state["runs_total"] == 5 and state["queue"] == []
    assert state["checks"]["route:self"]["smtp_auth"]["failures_total"] == 2
    assert state["alerts_sent_total"] == 2
    assert_no_secrets(setup)


def test_alert_survives_ntfy_outage_and_is_sent_once(stack, secrets_dir, tmp_path, ntfy):
    setup = make_setup(stack, tmp_path, ntfy, secrets_dir)
    setup.run()
    setup.break_mail()
    ntfy.mode = "500"
    code, output = setup.run()
    assert code == 2
    assert len(ntfy.requests) == 2  # one retry (retries = 1), then kept
    assert ntfy.accepted == []
    queued = setup.state_data()["queue"]
    assert [a["kind"] for a in queued] == ["failure"] and "HTTP 500" in queued[0]["last_error"]
    assert "not delivered" in output

    status = run_cli("status", "-c", str(setup.config))
    assert status.returncode == 2
    assert "alerts waiting for delivery: 1" in status.stdout
    assert "self/smtp_auth: failing since" in status.stdout

    ntfy.mode = "ok"
    setup.heal_mail()
    code, _ = setup.run()
    assert code == 0
    # The queued failure goes first, then the recovery: in order, each once.
    assert [a["tags"] for a in ntfy.accepted] == [["rotating_light"], ["white_check_mark"]]
    assert ntfy.accepted[0]["sequence_id"] == ntfy.accepted[1]["sequence_id"]  # one incident, one card
    setup.run()
    assert len(ntfy.accepted) == 2
    assert setup.state_data()["queue"] == []
    assert_no_secrets(setup)


def test_hanging_ntfy_cannot_outlast_the_deadline(stack, secrets_dir, tmp_path, ntfy):
    setup = make_setup(stack, tmp_path, ntfy, secrets_dir, ntfy_extra='timeout = "2s"',
                       monitor_extra="")
    setup.config.write_text(setup.config.read_text().replace('deadline = "30s"', 'deadline = "6s"'))
    setup.break_mail()
    ntfy.mode = "hang"
    started = time.monotonic()
    code, _ = setup.run()
    assert code == 2
    assert time.monotonic() - started < 6 + 3
    assert len(setup.state_data()["queue"]) == 1


def test_no_notify_keeps_alerts_queued(stack, secrets_dir, tmp_path, ntfy):
    setup = make_setup(stack, tmp_path, ntfy, secrets_dir)
    setup.break_mail()
    code, _ = setup.run("--no-notify")
    assert code == 2 and ntfy.requests == []
    assert len(setup.state_data()["queue"]) == 1
    setup.run()
    assert len(ntfy.accepted) == 1


def test_corrupt_state_is_moved_aside(stack, secrets_dir, tmp_path, ntfy):
    setup = make_setup(stack, tmp_path, ntfy, secrets_dir)
    setup.state.parent.mkdir(parents=True)
    setup.state.write_text('{"version": 1, "checks": [')
    code, output = setup.run()
    assert code == 0
    assert "corrupt state" in output
    kept = list(setup.state.parent.glob("state.json.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_text() == '{"version": 1, "checks": ['
    assert setup.state_data()["runs_total"] == 1
    assert ntfy.requests == []  # a fresh state is a first run: no "recovered" alert


def test_unwritable_state_is_unknown_but_checks_are_reported(stack, secrets_dir, tmp_path, ntfy):
    setup = make_setup(stack, tmp_path, ntfy, secrets_dir)
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    done = run_cli("run", "-c", str(setup.config))
    assert done.returncode == 3
    # The status word agrees with the exit code, and the checks are still reported.
    assert done.stdout.startswith(f"MAIL-MONITOR UNKNOWN - mail-monitor: {blocker}")
    assert "route self: OK" in done.stdout and "  receive    OK" in done.stdout
    assert "cannot" in done.stderr and str(blocker) in done.stderr
    assert "Traceback" not in done.stderr
    assert "mail_monitor_status 3.0" in setup.metrics.read_text()  # metrics are still written, and agree


def test_missing_metrics_directory_is_unknown_in_every_output(stack, secrets_dir, tmp_path, ntfy):
    setup = make_setup(stack, tmp_path, ntfy, secrets_dir)
    missing = tmp_path / "no-such-dir" / "mail_monitor.prom"
    setup.config.write_text(setup.config.read_text().replace(str(setup.metrics), str(missing)))
    done = run_cli("run", "-c", str(setup.config), "--format", "json")
    assert done.returncode == 3
    report = json.loads(done.stdout)
    assert (report["status"], report["exit_code"]) == ("UNKNOWN", 3)
    assert report["errors"] == [f"{missing}: cannot write metrics: No such file or directory"]
    assert report["routes"][0]["status"] == "OK"  # the mail itself is fine, and still reported
    assert setup.state_data()["status"] == "OK"  # the state records what the checks found


def test_state_lock_serialises_runs(tmp_path):
    store = StateStore(tmp_path / "state.json")
    with (store.locked(timeout=1), pytest.raises(StateError, match="another run holds the lock"),
          StateStore(tmp_path / "state.json").locked(timeout=0.2)):
        pass
    with store.locked(timeout=0.2):
        store.save(State())
    assert StateStore(tmp_path / "state.json").load().first_run is False
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_notify_test(tmp_path, ntfy, stack, secrets_dir):
    setup = make_setup(stack, tmp_path, ntfy, secrets_dir)
    done = run_cli("notify-test", "-c", str(setup.config))
    assert done.returncode == 0, done.stderr
    assert "server answered 200" in done.stdout
    assert ntfy.accepted[0]["title"] == "mail-monitor test from mx-test"
    (tmp_path / "secrets" / "ntfy-token").write_text("tk_wrong\n")
    done = run_cli("notify-test", "-c", str(setup.config))
    assert done.returncode == 3
    assert "HTTP 401: unauthorized" in done.stderr


def test_basic_auth(tmp_path):
    server = FakeNtfy(basic=("alice", "ntfy-basic-secret"))
    try:
        (tmp_path / "pw").write_text("ntfy-basic-secret\n")
        (tmp_path / "mail-pw").write_text("x\n")
        config = tmp_path / "c.toml"
        config.write_text(
            '[accounts.a]\naddress = "a@example.test"\npassword_file = "' + str(tmp_path / "mail-pw") + '"\n'
            'smtp = { host = "localhost" }\nimap = { host = "localhost" }\n'
            '[[routes]]\nname = "r"\nfrom = "a"\nto = "a"\n'
            f'[alerts.ntfy]\nserver = "{server.url}"\ntopic = "t"\nusername = "alice"\n'
            f'password_file = "{tmp_path / "pw"}"\n'
        )
        done = run_cli("notify-test", "-c", str(config))
        assert done.returncode == 0, done.stderr
        assert len(server.accepted) == 1
    finally:
        server.stop()


# --------------------------------------------------------------------------- metrics


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape_node_exporter(textfile_dir: Path) -> str:
    binary = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    assert binary, "prometheus-node-exporter is not installed (run .ci/run)"
    port = free_port()
    process = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults",
         "--collector.textfile", f"--collector.textfile.directory={textfile_dir}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                    return response.read().decode()  # type: ignore[no-any-return]
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(10)


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                          timeout=30)


def test_metrics_read_by_node_exporter_and_valid(stack, secrets_dir, tmp_path, ntfy):
    setup = make_setup(stack, tmp_path, ntfy, secrets_dir)
    setup.run()
    setup.break_mail()
    setup.run()
    text = setup.metrics.read_text()
    check = promtool_check(text)
    assert check.returncode == 0, check.stdout + check.stderr

    scraped = scrape_node_exporter(setup.metrics.parent)
    assert "node_textfile_scrape_error 0" in scraped
    lines = set(scraped.splitlines())
    assert 'mail_monitor_check_success{check="smtp_auth",route="self"} 0' in lines
    assert 'mail_monitor_check_success{check="imap_auth",route="self"} 0' in lines
    assert 'mail_monitor_check_success{check="tls",route="self"} 1' in lines
    assert not any(line.startswith('mail_monitor_check_success{check="send"') for line in lines)  # skipped
    assert not any(line.startswith("mail_monitor_roundtrip_seconds") for line in lines)  # not measured now
    assert 'mail_monitor_check_failures_total{check="smtp_auth",route="self"} 1' in lines
    assert 'mail_monitor_consecutive_failures{check="smtp_auth",route="self"} 1' in lines
    assert "mail_monitor_runs_total 2" in lines
    assert "mail_monitor_status 2" in lines
    assert "mail_monitor_alerts_queued 0" in lines
    assert 'mail_monitor_build_info{version="0.1.0"} 1' in lines
    assert any(line.startswith("mail_monitor_last_run_timestamp_seconds ") for line in lines)
    assert any(line.startswith("mail_monitor_tls_cert_not_after_timestamp_seconds{endpoint=") for line in lines)

    setup.heal_mail()
    setup.run()
    scraped = scrape_node_exporter(setup.metrics.parent)
    lines = set(scraped.splitlines())
    assert 'mail_monitor_check_success{check="send",route="self"} 1' in lines
    assert 'mail_monitor_check_failures_total{check="smtp_auth",route="self"} 1' in lines  # kept
    assert "mail_monitor_runs_total 3" in lines
    assert any(line.startswith('mail_monitor_roundtrip_seconds{route="self"} ') for line in lines)
    assert_no_secrets(setup)
    # Only the .prom file is left in the directory: temp files never linger.
    assert [p.name for p in setup.metrics.parent.iterdir()] == ["mail_monitor.prom"]


def test_logs_carry_journald_priorities_under_systemd(stack, secrets_dir, tmp_path, ntfy):
    setup = make_setup(stack, tmp_path, ntfy, secrets_dir)
    setup.state.parent.mkdir(parents=True)
    setup.state.write_text("not json")
    done = run_cli("run", "-c", str(setup.config), env={"JOURNAL_STREAM": "8:12345"})
    assert done.returncode == 0
    lines = done.stderr.splitlines()
    assert any(line.startswith("<3>") and "corrupt state" in line for line in lines), done.stderr
    # No timestamps of our own: journald adds them.
    assert not any(line[3:7].isdigit() for line in lines if line.startswith("<"))
    assert all(line.startswith("<") for line in lines)
