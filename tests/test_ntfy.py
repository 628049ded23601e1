"""What reaches the ntfy server: the JSON bodies, retries, TLS trust. Fast: a loopback stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mailstack import CertificateAuthority
from ntfy_server import FakeNtfy

from mail_monitor.alerts import AlertPolicy, evaluate
from mail_monitor.config import NtfySettings
from mail_monitor.deadline import Deadline
from mail_monitor.ntfy import CardSettings, deliver, notify_test
from mail_monitor.results import CheckResult, Outcome, RunResult, Subject
from mail_monitor.state import Alert, State

T0 = 1_800_000_000.0
CARD = CardSettings(dashboard_url="https://grafana.example.org/d/mail",
                    runbook_url="https://wiki.example.org/mail-runbook", email="me@elsewhere.example")


@pytest.fixture
def ntfy() -> Iterator[FakeNtfy]:
    server = FakeNtfy()
    yield server
    server.stop()


def settings(server: FakeNtfy, **extra: object) -> NtfySettings:
    return NtfySettings(topic="mail-alerts", server=server.url, timeout=5.0, **extra)  # type: ignore[arg-type]


def run(at: float, *failing: str) -> RunResult:
    route = Subject.route("self")
    checks = tuple(CheckResult(route, name, Outcome.FAILED if name in failing else Outcome.OK, 0.1,
                               f"{name} broke" if name in failing else "")
                   for name in ("imap_auth", "smtp_auth", "tls"))
    return RunResult(started_at=at, duration=1.0, checks=checks, instance="mx1.example.org")


def incident(*runs: RunResult, state: State | None = None) -> State:
    state = state or State()
    for result in runs:
        state, _ = evaluate(state, result, AlertPolicy(), result.started_at)
    return state


def send(queue: list[Alert], conf: NtfySettings, card: CardSettings = CARD) -> list[Alert]:
    return deliver(queue, conf, "mx1.example.org", Deadline(20), sleep=lambda _: None, card=card)


def test_failure_update_and_recovery_share_one_card(ntfy: FakeNtfy) -> None:
    state = incident(run(T0, "tls"), run(T0 + 60, "tls", "smtp_auth"), run(T0 + 120))
    assert send(state.queue, settings(ntfy)) == []
    failure, update, recovery = ntfy.accepted
    sequence = f"mail-monitor-mx1-example-org-{state.queue[0].sequence_id}"
    assert failure == {
        "topic": "mail-alerts",
        "title": "Mail broken on mx1.example.org: self",
        "message": "- **self/tls**: tls broke",
        "priority": 4,
        "tags": ["rotating_light"],
        "markdown": True,
        "sequence_id": sequence,
        "click": "https://grafana.example.org/d/mail",
        "actions": [
            {"action": "view", "label": "Dashboard", "url": "https://grafana.example.org/d/mail"},
            {"action": "view", "label": "Runbook", "url": "https://wiki.example.org/mail-runbook"},
        ],
        "email": "me@elsewhere.example",
    }
    assert update["sequence_id"] == recovery["sequence_id"] == sequence
    assert update["priority"] == 5 and update["message"] == (
        "Now failing:\n\n- **self/smtp_auth**: smtp_auth broke\n- **self/tls**: tls broke")
    assert recovery["priority"] == 3 and recovery["tags"] == ["white_check_mark"]
    assert recovery["title"] == "Mail recovered on mx1.example.org"


def test_new_incident_gets_a_new_card_also_after_a_state_reset(ntfy: FakeNtfy) -> None:
    first = incident(run(T0, "smtp_auth"), run(T0 + 60))
    second = incident(run(T0 + 120, "smtp_auth"), state=first)
    reset = incident(run(T0 + 180, "smtp_auth"))  # state file lost: alert ids start at 1 again
    send(first.queue + second.queue[2:] + reset.queue, settings(ntfy))
    ids = [body["sequence_id"] for body in ntfy.accepted]
    assert ids[0] == ids[1] and len(set(ids)) == 3
    assert all(len(i) <= 64 and i.replace("-", "").isalnum() for i in ids)


def test_a_crash_resend_lands_on_the_same_card(ntfy: FakeNtfy) -> None:
    state = incident(run(T0, "smtp_auth"))
    saved = State.from_json(state.to_json())  # what the next run reads after a crash
    send(state.queue, settings(ntfy))
    send(saved.queue, settings(ntfy))
    assert ntfy.accepted[0] == ntfy.accepted[1]


def test_plain_settings_send_no_optional_fields(ntfy: FakeNtfy) -> None:
    state = incident(run(T0, "tls"))
    legacy = Alert("7", "failure", "old", "• self/tls: broke", 4, ["rotating_light"], T0)  # queued by 0.x
    send([legacy, *state.queue], settings(ntfy), card=CardSettings())
    old, new = ntfy.accepted
    assert set(old) == {"topic", "title", "message", "priority", "tags"}  # no card, no Markdown
    assert set(new) == {"topic", "title", "message", "priority", "tags", "markdown", "sequence_id"}


def test_click_setting_wins_over_the_dashboard(ntfy: FakeNtfy) -> None:
    send(incident(run(T0, "tls")).queue, settings(ntfy, click="https://status.example.org"))
    assert ntfy.accepted[0]["click"] == "https://status.example.org"
    assert ntfy.accepted[0]["actions"][0]["url"] == "https://grafana.example.org/d/mail"


def test_server_without_email_still_gets_the_alert(ntfy: FakeNtfy) -> None:
    ntfy.email_enabled = False
    state = incident(run(T0, "smtp_auth"))
    assert send(state.queue, settings(ntfy, retries=0)) == []
    assert len(ntfy.requests) == 2 and "email" in ntfy.requests[0].json
    assert len(ntfy.accepted) == 1 and "email" not in ntfy.accepted[0]


@pytest.mark.parametrize("status", ["408", "429", "500"])
def test_transient_answers_are_retried(ntfy: FakeNtfy, status: str) -> None:
    ntfy.mode, ntfy.failures = status, 2
    pauses: list[float] = []
    state = incident(run(T0, "smtp_auth"))
    left = deliver(state.queue, settings(ntfy, retries=3), "mx1", Deadline(60), sleep=pauses.append)
    assert left == [] and len(ntfy.requests) == 3 and len(ntfy.accepted) == 1
    assert pauses == [1.0, 2.0]


def test_a_refusal_is_not_retried(ntfy: FakeNtfy) -> None:
    ntfy.token = "right"
    state = incident(run(T0, "smtp_auth"))
    left = send(state.queue, settings(ntfy, retries=3))
    assert len(left) == 1 and len(ntfy.requests) == 1 and "HTTP 401" in left[0].last_error


def test_ca_file_is_trusted_even_when_the_environment_names_another_bundle(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    private = CertificateAuthority(tmp_path / "private", name="ntfy private CA")
    other = CertificateAuthority(tmp_path / "other", name="unrelated CA")
    server = FakeNtfy(tls=private.issue("ntfy", names=("localhost",), ips=("127.0.0.1",)))
    try:
        for variable in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
            monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
            monkeypatch.setenv(variable, str(other.ca_file))
            delivery = notify_test(settings(server, ca_file=private.ca_file, retries=0), "mx1", Deadline(20))
            assert delivery.ok, (variable, delivery.detail)
            # Without ca_file the environment's bundle rules, and it does not know this CA.
            refused = notify_test(settings(server, retries=0), "mx1", Deadline(20))
            assert not refused.ok and refused.detail.startswith("TLS error"), (variable, refused.detail)
        assert len(server.accepted) == 2
    finally:
        server.stop()
