"""Output formats and the receive loop's pacing, without a network."""

from __future__ import annotations

import dataclasses
import itertools
import json
import time

from mail_monitor.output import render, summary_line
from mail_monitor.probes.imap import FAST_INTERVAL, _Pacer, _poll_interval
from mail_monitor.results import Arrival, CheckResult, Outcome, RunResult, Subject

HOME, GMAIL = Subject.route("home, main"), Subject.route("gmail")


def arrival(roundtrip: float) -> Arrival:
    return Arrival(roundtrip, 0.01, "INBOX", False, 1_700_000_000.5, 1_700_000_000.5 + roundtrip, 20, roundtrip)


def sample(smtp: Outcome = Outcome.FAILED) -> RunResult:
    checks = (
        CheckResult(HOME, "imap_auth", Outcome.OK, 0.02),
        CheckResult(HOME, "receive", Outcome.OK, 0.9, 'found "quoted"', arrival(1.25)),
        CheckResult(GMAIL, "smtp_auth", smtp, 0.1, "authentication failed: 535"),
        CheckResult(GMAIL, "send", Outcome.SKIPPED, message="smtp_auth failed"),
    )
    return RunResult(started_at=1_700_000_000.5, duration=1.5, checks=checks, instance="mx 1")


def test_status_is_the_worst_outcome() -> None:
    assert int(sample().status) == 2
    assert int(sample(smtp=Outcome.WARNING).status) == 1
    assert int(sample(smtp=Outcome.OK).status) == 0


def test_monitor_errors_make_every_output_unknown() -> None:
    # The status word, the JSON status and the exit code must agree when the monitor failed.
    result = dataclasses.replace(sample(smtp=Outcome.OK), errors=("/x/m.prom: cannot write metrics",))
    assert int(result.status) == 3
    assert summary_line(result).startswith("MAIL-MONITOR UNKNOWN - mail-monitor: /x/m.prom: cannot write metrics")
    data = json.loads(render(result, "json"))
    assert (data["status"], data["exit_code"], data["errors"]) == ("UNKNOWN", 3, ["/x/m.prom: cannot write metrics"])
    assert render(result, "influx").splitlines()[-1].startswith("mail_monitor_run,instance=mx\\ 1 status=3i")


def test_other_subjects_are_reported_beside_routes() -> None:
    domain = Subject.domain("example.org")
    checks = (*sample(smtp=Outcome.OK).checks,
              CheckResult(domain, "spf", Outcome.FAILED, 0.01, "SPF lacks 203.0.113.7", checked_at=1_699_999_000.5,
                          carried=True))
    result = RunResult(1_700_000_000.5, 1.5, checks, "mx 1")
    data = json.loads(render(result, "json"))
    assert [r["route"] for r in data["routes"]] == ["home, main", "gmail"]
    assert data["subjects"] == [{"subject": "domain:example.org", "status": "CRITICAL", "checks": {
        "spf": {"outcome": "failed", "duration_seconds": 0.01, "message": "SPF lacks 203.0.113.7",
                "age_seconds": 1000.0}}}]
    text = render(result, "text")
    assert "domain:example.org: CRITICAL" in text and "(checked 1000s ago)" in text
    assert "domain:example.org/spf: SPF lacks 203.0.113.7" in summary_line(result)
    assert ("mail_monitor_check,instance=mx\\ 1,domain=example.org,check=spf success=0i"
            in render(result, "influx"))


def test_text_has_a_plugin_style_first_line() -> None:
    line = summary_line(sample())
    assert line.startswith("MAIL-MONITOR CRITICAL - gmail/smtp_auth: authentication failed: 535")
    assert "| 'home, main_roundtrip'=1.250s run=1.500s" in line
    healthy = summary_line(sample(smtp=Outcome.OK))
    assert healthy.startswith("MAIL-MONITOR OK - 2 route(s) ok, roundtrip home, main 1.25s |")
    text = render(sample(), "text")
    assert "  send       SKIPPED            smtp_auth failed" in text


def test_json_round_trips() -> None:
    data = json.loads(render(sample(), "json"))
    assert data["status"] == "CRITICAL" and data["exit_code"] == 2
    assert data["routes"][0]["checks"]["receive"] == {"outcome": "ok", "duration_seconds": 0.9,
                                                       "message": 'found "quoted"'}
    # The roundtrip is the arrival's own value, not the receive check's duration.
    assert data["routes"][0]["roundtrip_seconds"] == 1.25 and data["routes"][1]["roundtrip_seconds"] is None


def test_influx_line_protocol_escapes_and_skips() -> None:
    lines = render(sample(), "influx").splitlines()
    assert ('mail_monitor_check,instance=mx\\ 1,route=home\\,\\ main,check=receive '
            'success=1i,outcome="ok",duration_seconds=0.900000 1700000000500000000') in lines
    assert not any("check=send" in line for line in lines)  # skipped checks are absent
    assert any(line.startswith("mail_monitor_check,instance=mx\\ 1,route=gmail,check=smtp_auth success=0i")
               for line in lines)
    assert lines[-1].startswith("mail_monitor_run,instance=mx\\ 1 status=2i")


def test_poll_schedule_is_fast_first_then_backs_off() -> None:
    assert _poll_interval(0.1) == FAST_INTERVAL == 0.055
    assert _poll_interval(4.9) == 0.055
    assert 0.055 < _poll_interval(10) < 1.0
    assert _poll_interval(60) == 1.0


def test_pacer_keeps_the_cadence() -> None:
    pacer = _Pacer(end=time.monotonic() + 0.3)
    stamps = []
    while pacer.wait(FAST_INTERVAL):
        stamps.append(time.monotonic())
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert 4 <= len(stamps) == pacer.count <= 6  # 0, 55, 110, ... ms until 300 ms
    assert min(gaps) >= FAST_INTERVAL - 0.002


def test_pacer_never_lets_more_than_twenty_commands_into_a_second() -> None:
    # Follow-up commands (interval 0) go out at once, but only within the budget.
    pacer = _Pacer(end=time.monotonic() + 1.5)
    stamps = []
    while pacer.wait(0.0):
        stamps.append(time.monotonic())
    assert 20 < len(stamps) <= 40
    assert all(b - a >= 1.0 - 0.002 for a, b in zip(stamps, stamps[20:], strict=False))
    assert stamps[19] - stamps[0] < 0.05  # the first twenty were not held back


def test_version_is_the_same_everywhere() -> None:
    import tomllib
    from pathlib import Path

    from mail_monitor import __version__

    pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    assert pyproject["project"]["version"] == __version__
