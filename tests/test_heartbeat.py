"""The heartbeat's requests for each flavour, and that it can neither hold nor fail a run."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w
from heartbeat_server import FakeHeartbeat
from mailstack import CertificateAuthority
from test_config_schema import minimal

from mail_monitor.app import heartbeat_settings
from mail_monitor.config import Config, Secret, load_config
from mail_monitor.deadline import Deadline
from mail_monitor.heartbeat import Heartbeat, HeartbeatSettings, summary
from mail_monitor.redact import ScrubbingFilter

UUID = "5f1b0c2e-9a7d-4c1e-8f00-secret-uuid"


@pytest.fixture
def service() -> Iterator[FakeHeartbeat]:
    server = FakeHeartbeat()
    yield server
    server.stop()


def test_healthchecks_start_then_exit_code(service: FakeHeartbeat) -> None:
    beat = Heartbeat(HeartbeatSettings(url=f"{service.url}/ping/{UUID}/"), Deadline(20))
    beat.begin()
    assert beat.end(2, "CRITICAL: self/receive failed")
    assert [(p.method, p.path) for p in service.pings] == [("GET", f"/ping/{UUID}/start"),
                                                            ("GET", f"/ping/{UUID}/2")]
    assert service.pings[0].headers["User-Agent"].startswith("mail-monitor/")


def test_uptime_kuma_push_up_and_down(service: FakeHeartbeat) -> None:
    template = f"{service.url}/api/push/TOKEN123?status={{status}}&msg={{message}}&ping="
    for code, message in ((0, "OK"), (1, "WARNING"), (2, "CRITICAL: self/receive, self/tls failed"),
                          (3, "UNKNOWN")):
        beat = Heartbeat(HeartbeatSettings(url_template=template), Deadline(20))
        beat.begin()  # push monitors know no start signal: nothing is sent
        assert beat.end(code, message)
    assert [p.path for p in service.pings] == ["/api/push/TOKEN123"] * 4
    assert [p.query["status"] for p in service.pings] == ["up", "up", "down", "down"]
    assert service.pings[2].query["msg"] == "CRITICAL: self/receive, self/tls failed"  # encoded, decoded
    assert all(p.method == "GET" for p in service.pings)


def test_gatus_external_endpoint_posts_with_bearer_token(service: FakeHeartbeat) -> None:
    settings = HeartbeatSettings(
        url_template=f"{service.url}/api/v1/endpoints/core_mail/external?success={{success}}&error={{message}}",
        method="POST", token=Secret("gatus-token-7"))
    assert Heartbeat(settings, Deadline(20)).end(2, "CRITICAL: self/send failed")
    assert Heartbeat(settings, Deadline(20)).end(0, "OK")
    failed, ok = service.pings
    assert (failed.method, failed.path) == ("POST", "/api/v1/endpoints/core_mail/external")
    assert failed.query == {"success": "false", "error": "CRITICAL: self/send failed"}
    assert failed.headers["Authorization"] == "Bearer gatus-token-7"
    assert ok.query["success"] == "true"


def test_hanging_service_cannot_outlast_the_deadline(service: FakeHeartbeat) -> None:
    service.hang = True
    beat = Heartbeat(HeartbeatSettings(url=f"{service.url}/ping/{UUID}", timeout=30), Deadline(2.0))
    began = time.monotonic()
    beat.begin()
    assert beat.end(0, "OK") is False
    assert time.monotonic() - began < 10  # the deadline (2 s) and some grace, far from the 30 s timeout


def test_refusing_service_is_retried_once_then_logged_without_the_url(
        service: FakeHeartbeat, caplog: pytest.LogCaptureFixture) -> None:
    service.status = 503
    caplog.set_level(logging.DEBUG, logger="mail_monitor")
    settings = HeartbeatSettings(url_template=f"{service.url}/api/push/TOKEN123?status={{status}}")
    assert Heartbeat(settings, Deadline(20)).end(0, "OK") is False
    assert len(service.pings) == 2
    assert "HTTP 503" in caplog.text and service.url in caplog.text
    assert "TOKEN123" not in caplog.text and "/api/push" not in caplog.text


def test_client_errors_are_not_retried(service: FakeHeartbeat) -> None:
    service.status = 404
    assert Heartbeat(HeartbeatSettings(url=f"{service.url}/ping/{UUID}"), Deadline(20)).end(0, "OK") is False
    assert len(service.pings) == 1


def test_nobody_listening_is_a_logged_failure(caplog: pytest.LogCaptureFixture) -> None:
    beat = Heartbeat(HeartbeatSettings(url=f"http://127.0.0.1:9/ping/{UUID}"), Deadline(5))
    beat.begin()
    assert beat.end(0, "OK") is False
    assert "cannot connect" in caplog.text and UUID not in caplog.text


def test_an_exception_in_the_request_is_contained() -> None:
    def broken(url: str, timeout: float) -> None:
        raise RuntimeError(url)

    beat = Heartbeat(HeartbeatSettings(url="https://hc-ping.com/x"), Deadline(5), send=broken)
    assert beat.end(0, "OK") is False


@pytest.mark.parametrize(("settings", "error"), [
    ({}, "exactly one of url and url_template"),
    ({"url": "https://a", "url_template": "https://b"}, "exactly one"),
    ({"url_template": "https://k/api/push/T?status={state}"}, "unknown placeholder {state}"),
    ({"url_template": "https://k/api/push/T?status={status"}, "url_template: "),
    ({"url_template": "https://k/{}"}, "unknown placeholder {}"),
    ({"url": "https://a", "method": "PUT"}, "method must be one of GET, POST"),
    ({"url": "https://a", "timeout": 0}, "timeout must be a positive"),
])
def test_settings_are_checked(settings: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error.replace("{", r"\{").replace("}", r"\}")):
        HeartbeatSettings(**settings)  # type: ignore[arg-type]


def test_summary_names_failing_checks_and_stays_short() -> None:
    assert summary("OK", []) == "OK"
    assert summary("CRITICAL", ["self/receive"]) == "CRITICAL: self/receive failed"
    assert len(summary("CRITICAL", [f"route{i}/receive" for i in range(50)])) == 200


def test_ca_file_is_trusted_even_when_the_environment_names_another_bundle(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    private = CertificateAuthority(tmp_path / "private", name="heartbeat private CA")
    other = CertificateAuthority(tmp_path / "other", name="unrelated CA")
    server = FakeHeartbeat(tls=private.issue("kuma", names=("localhost",), ips=("127.0.0.1",)))
    try:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other.ca_file))
        template = f"{server.url}/api/push/T?status={{status}}"
        assert Heartbeat(HeartbeatSettings(url_template=template, ca_file=private.ca_file), Deadline(20)).end(0, "")
        assert not Heartbeat(HeartbeatSettings(url_template=template), Deadline(20)).end(0, "")
        assert len(server.pings) == 1
    finally:
        server.stop()


def config_with(tmp_path: Path, heartbeat: dict[str, str]) -> Config:
    """A configuration file with this ``[heartbeat]``, loaded as ``run`` loads it."""
    password = tmp_path / "password"
    password.write_text("pw\n")
    password.chmod(0o600)
    data = minimal()
    data["accounts"]["self"]["password_file"] = str(password)
    data["heartbeat"] = heartbeat
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(data))
    return load_config(path)


def test_ca_file_and_timeout_from_the_config_reach_the_heartbeat(tmp_path: Path) -> None:
    private = CertificateAuthority(tmp_path / "private", name="heartbeat private CA")
    server = FakeHeartbeat(tls=private.issue("kuma", names=("localhost",), ips=("127.0.0.1",)))
    try:
        template = f"{server.url}/api/push/T?status={{status}}"
        config = config_with(tmp_path, {"url_template": template, "ca_file": str(private.ca_file),
                                        "timeout": "7s"})
        settings = heartbeat_settings(config)
        assert settings is not None
        assert (settings.ca_file, settings.timeout) == (private.ca_file, 7.0)
        assert Heartbeat(settings, Deadline(20)).end(0, "OK")
        assert [(p.path, p.query) for p in server.pings] == [("/api/push/T", {"status": "up"})]
        # The same service without the CA: not trusted, so the ca_file is what made it work.
        default = heartbeat_settings(config_with(tmp_path, {"url_template": template}))
        assert default is not None and default.ca_file is None and default.timeout == 10.0
        assert not Heartbeat(default, Deadline(20)).end(0, "OK")
    finally:
        server.stop()


def test_heartbeat_url_secret_is_scrubbed_from_the_http_librarys_debug_log(
        tmp_path: Path, service: FakeHeartbeat) -> None:
    # urllib3 logs every request line at DEBUG (-vv): the path, and so the check's UUID.
    config = config_with(tmp_path, {"url": f"{service.url}/ping/{UUID}"})
    settings = heartbeat_settings(config)
    assert settings is not None
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(ScrubbingFilter(config.scrubber()))
    root, urllib3 = logging.getLogger(), logging.getLogger("urllib3")
    level = urllib3.level
    root.addHandler(handler)
    urllib3.setLevel(logging.DEBUG)
    try:
        beat = Heartbeat(settings, Deadline(20))
        beat.begin()
        assert beat.end(0, "OK")
    finally:
        root.removeHandler(handler)
        urllib3.setLevel(level)
    assert [p.path for p in service.pings] == [f"/ping/{UUID}/start", f"/ping/{UUID}/0"]
    assert '"GET <redacted>/start HTTP/1.1" 200' in out.getvalue()
    assert UUID not in out.getvalue()


def test_a_url_with_an_odd_port_is_logged_without_raising(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mail_monitor")
    beat = Heartbeat(HeartbeatSettings(url=f"https://hc-ping.com:99999/{UUID}"), Deadline(5),
                     send=lambda url, timeout: None)
    assert beat.end(0, "OK")
    assert "end ping to https://hc-ping.com:99999 accepted" in caplog.text and UUID not in caplog.text
