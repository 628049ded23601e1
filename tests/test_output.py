"""Output formats and the receive loop's pacing, without a network."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import pytest

from mail_monitor.output import render, summary_line
from mail_monitor.probes import imap
from mail_monitor.probes.imap import FAST_INTERVAL, MAX_COMMANDS_PER_SECOND, _Pacer, _poll_interval
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
    assert 0.055 < _poll_interval(10) < imap.SLOW_INTERVAL
    assert _poll_interval(60) == imap.SLOW_INTERVAL == 0.5


class FakeClock:
    """Stands in for the pacer's ``time``: sleeps pass instantly, the caller's work takes ``work``."""

    def __init__(self, work: float = 0.0) -> None:
        self.now = 1000.0
        self.work = work
        self.slept = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds
        self.slept += seconds


def paced(monkeypatch: pytest.MonkeyPatch, clock: FakeClock, interval: float, duration: float) -> list[float]:
    """The moments the pacer lets commands out until it refuses, on the fake clock."""
    monkeypatch.setattr(imap, "time", clock)
    pacer = _Pacer(end=clock.now + duration)
    end = pacer.end
    stamps: list[float] = []
    while pacer.wait(interval):
        stamps.append(clock.now)
        clock.now += clock.work
        assert len(stamps) <= 1000, "the pacer never stops"
    assert pacer.count == len(stamps)
    assert all(stamp < end for stamp in stamps)
    assert clock.now < end + clock.work  # it refused at once rather than sleeping past the end
    return stamps


def assert_budget(stamps: list[float]) -> None:
    """Never more than MAX_COMMANDS_PER_SECOND commands in any one-second window."""
    window = MAX_COMMANDS_PER_SECOND
    assert all(later - first >= 1.0 - 1e-9 for first, later in zip(stamps, stamps[window:], strict=False))


@pytest.mark.parametrize("work", [0.0, 0.01, 0.04])
def test_pacer_keeps_the_cadence(monkeypatch: pytest.MonkeyPatch, work: float) -> None:
    clock = FakeClock(work)
    stamps = paced(monkeypatch, clock, FAST_INTERVAL, duration=3.0)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) >= FAST_INTERVAL - 1e-9  # never earlier than the interval ...
    assert max(gaps) <= FAST_INTERVAL + 1e-9  # ... nor later when the caller keeps up
    assert len(stamps) == math.ceil(3.0 / FAST_INTERVAL)  # one per interval until the end
    assert_budget(stamps)


def test_pacer_does_not_catch_up_after_slow_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(work=0.25)  # each command takes longer than the interval
    stamps = paced(monkeypatch, clock, FAST_INTERVAL, duration=2.9)
    assert clock.slept == 0.0 and len(stamps) == 12
    assert all(b - a == 0.25 for a, b in itertools.pairwise(stamps))

    # One slow command, then quick ones: the missed polls are not made up in a burst.
    clock = FakeClock()
    monkeypatch.setattr(imap, "time", clock)
    pacer = _Pacer(end=clock.now + 3.0)
    stamps = []
    while pacer.wait(FAST_INTERVAL):
        stamps.append(clock.now)
        if len(stamps) == 2:
            clock.now += 1.0
        assert len(stamps) <= 1000, "the pacer never stops"
    assert min(b - a for a, b in itertools.pairwise(stamps)) >= FAST_INTERVAL - 1e-9


def test_pacer_never_lets_more_than_twenty_commands_into_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    # Follow-up commands (interval 0) go out at once, but only within the budget.
    clock = FakeClock()
    stamps = paced(monkeypatch, clock, 0.0, duration=2.5)
    assert_budget(stamps)
    assert stamps[:MAX_COMMANDS_PER_SECOND] == [stamps[0]] * MAX_COMMANDS_PER_SECOND  # not held back
    assert len(stamps) == 3 * MAX_COMMANDS_PER_SECOND  # bursts at 0 s, 1 s and 2 s


def test_pacer_stops_before_the_end_and_honours_a_delayed_start(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(imap, "time", clock)
    pacer = _Pacer(end=clock.now + 0.1)
    pacer.delay_start(0.04)
    assert pacer.wait(FAST_INTERVAL) and clock.now == pytest.approx(pacer.started + 0.04)
    assert pacer.wait(FAST_INTERVAL) and clock.now == pytest.approx(pacer.started + 0.095)
    assert not pacer.wait(FAST_INTERVAL)  # 0.15 s would be past the end: refused without a sleep
    assert clock.now == pytest.approx(pacer.started + 0.095) and pacer.count == 2


def test_version_is_the_same_everywhere() -> None:
    import tomllib
    from pathlib import Path

    from mail_monitor import __version__

    pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    assert pyproject["project"]["version"] == __version__
