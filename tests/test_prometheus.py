"""The shipped alert rules and dashboard: valid for promtool, and tied to metrics we really export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_samples import google_mail, tls_mail

from mail_monitor.metrics import render_metrics
from mail_monitor.reports import parse_message
from mail_monitor.reports.totals import report_count
from mail_monitor.results import (
    Arrival,
    AuthVerdict,
    AuthVerdicts,
    BlocklistEntry,
    BlocklistLookups,
    Certificate,
    CheckResult,
    Handshake,
    Outcome,
    QueueDepth,
    ReportsCursor,
    ReportsRead,
    RunResult,
    Subject,
)
from mail_monitor.state import Alert, State

DOCS = Path(__file__).resolve().parent.parent / "docs"
RULES = DOCS / "prometheus" / "mail-monitor.rules.yml"
RULES_TEST = Path(__file__).resolve().parent / "prometheus" / "rules_test.yml"


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is not installed (Debian package prometheus; run .ci/run)")
    return subprocess.run(["promtool", *args], input=stdin, capture_output=True, text=True, timeout=60)


def exported_names() -> set[str]:
    route = Subject.route("self")
    checks = (CheckResult(route, "imap_auth", Outcome.OK, 0.1, detail=Handshake("IMAP", "mx:993", "implicit",
                                                                                  Certificate("mx:993", 2e9))),
              CheckResult(route, "receive", Outcome.OK, 1.0,
                          detail=Arrival(1.0, 0.01, "INBOX", False, 1.8e9, 1.8e9 + 1, 20, 1.0, 0.0)),
              CheckResult(route, "dkim", Outcome.OK, 0.1,
                          detail=AuthVerdicts((AuthVerdict("dkim", "monitor", "pass"),))),
              CheckResult(Subject.domain("example.org"), "spf", Outcome.OK, 0.1, checked_at=1.8e9),
              CheckResult(Subject.host(), "blocklists", Outcome.OK, 0.1, checked_at=1.8e9,
                          detail=BlocklistLookups((BlocklistEntry("203.0.113.7", "bl.test", False),))))
    result = RunResult(started_at=1.8e9, duration=1.1, checks=checks, instance="mx")
    state = State()
    from mail_monitor.alerts import AlertPolicy, evaluate

    state, _ = evaluate(state, result, AlertPolicy(), 1.8e9)
    text = render_metrics(result, state).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")} \
        | host_names()


def host_names() -> set[str]:
    """The reports counters and queue gauges, from a run that read one report of each kind."""
    counts = tuple(report_count(report) for mail in (google_mail(), tls_mail()) for report in parse_message(mail))
    checks = (CheckResult(Subject.host(), "reports", Outcome.OK, 0.1,
                          detail=ReportsRead(ReportsCursor("DMARC", 1, 3, (1, 2)), counts, 1, 1)),
              CheckResult(Subject.host(), "postfix_queue", Outcome.OK, 0.1,
                          detail=QueueDepth({"deferred": 1, "hold": 0}, 120.0)))
    result = RunResult(started_at=1.8e9, duration=1.1, checks=checks, instance="mx")
    from mail_monitor.alerts import AlertPolicy, evaluate

    state, _ = evaluate(State(), result, AlertPolicy(), 1.8e9)
    text = render_metrics(result, state).decode()
    done = promtool("check", "metrics", stdin=text)
    assert done.returncode == 0, done.stdout + done.stderr
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_rules_pass_promtool_check():
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 15 rules found" in done.stdout


def test_rules_pass_their_unit_tests():
    done = promtool("test", "rules", str(RULES_TEST))
    assert done.returncode == 0, done.stdout + done.stderr


def test_rules_and_dashboard_use_only_exported_metrics():
    names = exported_names()
    used = set(re.findall(r"\bmail_monitor_[a-z_]+", RULES.read_text()))
    dashboard = json.loads((DOCS / "grafana" / "mail-monitor.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"\bmail_monitor_[a-z_]+", target["expr"]))
    assert used, "nothing references our metrics"
    assert used <= names, f"unknown metrics: {used - names}"


def test_exported_metrics_pass_promtool():
    checks = (CheckResult(Subject.route("self"), "receive", Outcome.FAILED, 1.0, "lost"),
              CheckResult(Subject.domain("example.org"), "spf", Outcome.OK, 0.1, checked_at=1.8e9 - 60),
              CheckResult(Subject.host(), "postfix_queue", Outcome.WARNING, 0.1, checked_at=1.8e9))
    result = RunResult(started_at=1.8e9, duration=1.1, checks=checks, instance="mx")
    state = State()
    state.queue = [Alert("1", "failure", "t", "m", 4, [], 1.8e9), Alert("2", "update", "t", "m", 4, [], 1.8e9)]
    done = promtool("check", "metrics", stdin=render_metrics(result, state).decode())
    assert done.returncode == 0, done.stdout + done.stderr


def samples(text: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def test_warnings_spam_and_queued_alerts_are_counted_not_stuck_at_zero():
    route = Subject.route("self")
    checks = (CheckResult(route, "receive", Outcome.WARNING, 0.2, "landed in Junk (spam)",
                          detail=Arrival(1.5, 0.01, "Junk", True, 1.8e9, 1.8e9 + 1.5, 20, 1.5, 1.0)),
              CheckResult(route, "cleanup", Outcome.OK, 0.01),
              CheckResult(Subject.domain("example.org"), "dmarc", Outcome.FAILED, 0.05, "no record",
                          checked_at=1.8e9 - 600))
    result = RunResult(started_at=1.8e9, duration=2.0, checks=checks, instance="mx")
    from mail_monitor.alerts import AlertPolicy, evaluate

    state, _ = evaluate(State(), result, AlertPolicy(), 1.8e9)
    got = samples(render_metrics(result, state).decode())
    assert got['mail_monitor_check_warning{check="receive",route="self"}'] == 1.0
    assert got['mail_monitor_check_warning{check="cleanup",route="self"}'] == 0.0
    assert got['mail_monitor_received_in_spam{route="self"}'] == 1.0
    assert got['mail_monitor_roundtrip_seconds{route="self"}'] == 1.5  # the arrival's, not the check's 0.2
    assert got['mail_monitor_check_duration_seconds{check="receive",route="self"}'] == 0.2
    assert got['mail_monitor_dns_check_success{check="dmarc",domain="example.org"}'] == 0.0
    assert got['mail_monitor_dns_check_timestamp_seconds{check="dmarc",domain="example.org"}'] == 1.8e9 - 600
    assert got['mail_monitor_dns_check_failures_total{check="dmarc",domain="example.org"}'] == 1.0
    assert got["mail_monitor_alerts_queued"] == 1.0  # the failure alert waits for delivery
    assert got["mail_monitor_status"] == 2.0
    assert not any(name.startswith("mail_monitor_host_check") for name in got)  # nothing configured there


def documented_query(heading: str) -> str:
    """The PromQL under a ``# heading`` comment in docs/metrics.md, as users copy it."""
    lines = (DOCS / "metrics.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"# {heading}"))
    body = []
    for line in lines[start + 1:]:
        if not line.strip() or line.startswith("```"):
            break
        if not line.startswith("#"):
            body.append(line.strip())
    return " ".join(body)


def test_documented_availability_query_answers(tmp_path):
    # Counters start inside the window (the first sample is 0 in both), so increase()
    # extrapolates both alike and the ratio is exact: 120 failed runs of 7200.
    query = documented_query("Availability of delivery")
    broken = 'mail_monitor_check_failures_total{instance="mx:9100",job="node",route="self",check="%s"}'
    tests = {
        "evaluation_interval": "1h",
        "tests": [{
            "interval": "1h",
            "input_series": [
                {"series": 'mail_monitor_runs_total{instance="mx:9100",job="node"}', "values": "_x10 0+12x600"},
                {"series": broken % "smtp_auth", "values": "_x10 0x299 0+10x10 100x289"},
                {"series": broken % "receive", "values": "_x10 0x399 0+2x10 20x189"},
                {"series": broken % "tls", "values": "_x10 0+1x600"},  # not a delivery failure
                {"series": broken % "imap_auth", "values": "_x10 0x600"},
                {"series": 'mail_monitor_check_failures_total{instance="mx:9100",job="node",route="other",'
                           'check="receive"}', "values": "_x10 0x600"},
            ],
            "promql_expr_test": [{
                "expr": query,
                "eval_time": "620h",
                "exp_samples": [
                    {"labels": '{instance="mx:9100",job="node",route="self"}', "value": 1 - 120 / 7200},
                    {"labels": '{instance="mx:9100",job="node",route="other"}', "value": 1},
                ],
            }],
        }],
    }
    path = tmp_path / "availability_test.yml"
    path.write_text(json.dumps(tests))  # YAML is a superset of JSON
    done = promtool("test", "rules", str(path))
    assert done.returncode == 0, f"{query}\n{done.stdout}{done.stderr}"


def test_probe_verdicts_and_listings_become_one_sample_per_label_set():
    route = Subject.route("self")
    receivers = (AuthVerdict("dkim", "monitor", "pass"), AuthVerdict("dkim", "receiver", "pass", "mx.a"),
                 AuthVerdict("dkim", "receiver", "fail", "mx.b"))
    checks = (CheckResult(route, "dkim", Outcome.FAILED, 0.1, "required", AuthVerdicts(receivers)),
              CheckResult(route, "spf", Outcome.OK, 0.1, "", AuthVerdicts((AuthVerdict("spf", "monitor", "none"),))),
              CheckResult(Subject.host(), "blocklists", Outcome.WARNING, 0.2, "listed", checked_at=1.8e9 - 60,
                          detail=BlocklistLookups((BlocklistEntry("203.0.113.7", "bl.a", True, "spam"),
                                                   BlocklistEntry("203.0.113.7", "bl.b", False),
                                                   BlocklistEntry("203.0.113.7", "bl.c", None, "timed out")))))
    result = RunResult(started_at=1.8e9, duration=2.0, checks=checks, instance="mx")
    text = render_metrics(result, State()).decode()
    got = samples(text)
    assert got['mail_monitor_auth_result{method="dkim",route="self",source="monitor"}'] == 1.0
    # One receiver of two says fail: the receiver sample is 0, not a duplicate series.
    assert got['mail_monitor_auth_result{method="dkim",route="self",source="receiver"}'] == 0.0
    assert got['mail_monitor_auth_result{method="spf",route="self",source="monitor"}'] == 0.0
    assert got['mail_monitor_blocklisted{ip="203.0.113.7",zone="bl.a"}'] == 1.0
    assert got['mail_monitor_blocklisted{ip="203.0.113.7",zone="bl.b"}'] == 0.0
    assert not any("bl.c" in name for name in got)  # could not tell: no sample rather than a false 0
    done = promtool("check", "metrics", stdin=text)
    assert done.returncode == 0, done.stdout + done.stderr
