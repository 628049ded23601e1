"""Output formats and the receive loop's pacing, without a network."""

from __future__ import annotations

import itertools
import json
import time

from mail_monitor.output import render, summary_line
from mail_monitor.probes.imap import FAST_INTERVAL, _Pacer, _poll_interval
from mail_monitor.results import CheckResult, Outcome, RouteResult, RunResult


def sample() -> RunResult:
    ok = RouteResult("home, main", {
        "imap_auth": CheckResult("imap_auth", Outcome.OK, 0.02),
        "receive": CheckResult("receive", Outcome.OK, 1.25, 'found "quoted"'),
    }, roundtrip=1.25)
    broken = RouteResult("gmail", {
        "smtp_auth": CheckResult("smtp_auth", Outcome.FAILED, 0.1, "authentication failed: 535"),
        "send": CheckResult("send", Outcome.SKIPPED, message="smtp_auth failed"),
    })
    return RunResult(started_at=1_700_000_000.5, duration=1.5, routes=[ok, broken], instance="mx 1")


def test_status_is_the_worst_outcome() -> None:
    result = sample()
    assert int(result.status) == 2
    result.routes[1].checks["smtp_auth"].outcome = Outcome.WARNING
    assert int(result.status) == 1


def test_text_has_a_plugin_style_first_line() -> None:
    line = summary_line(sample())
    assert line.startswith("MAIL-MONITOR CRITICAL - gmail/smtp_auth: authentication failed: 535")
    assert "| 'home, main_roundtrip'=1.250s run=1.500s" in line
    text = render(sample(), "text")
    assert "  send       SKIPPED            smtp_auth failed" in text


def test_json_round_trips() -> None:
    data = json.loads(render(sample(), "json"))
    assert data["status"] == "CRITICAL" and data["exit_code"] == 2
    assert data["routes"][0]["checks"]["receive"] == {"outcome": "ok", "duration_seconds": 1.25,
                                                       "message": 'found "quoted"'}


def test_influx_line_protocol_escapes_and_skips() -> None:
    lines = render(sample(), "influx").splitlines()
    assert ('mail_monitor_check,instance=mx\\ 1,route=home\\,\\ main,check=receive '
            'success=1i,outcome="ok",duration_seconds=1.250000 1700000000500000000') in lines
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
