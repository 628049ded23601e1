"""Prometheus metrics for node_exporter's textfile collector, written atomically.

Gauges describe this run; the ``_total`` counters come from the state file so they
keep counting across runs (each run is a new process).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mail_monitor import __version__
from mail_monitor.files import write_atomic
from mail_monitor.results import Outcome, RunResult
from mail_monitor.state import State


class RunCollector(Collector):
    def __init__(self, result: RunResult, state: State) -> None:
        self.result = result
        self.state = state

    def collect(self) -> Iterator[Metric]:
        result, state = self.result, self.state
        labels = ["route", "check"]
        success = GaugeMetricFamily("mail_monitor_check_success",
                                    "1 if the check passed (warnings included), 0 if it failed; absent if skipped",
                                    labels=labels)
        duration = GaugeMetricFamily("mail_monitor_check_duration_seconds", "Time the check took", labels=labels)
        warning = GaugeMetricFamily("mail_monitor_check_warning",
                                    "1 if the check passed with a warning (spam folder, slow, cert expiring)",
                                    labels=labels)
        roundtrip = GaugeMetricFamily("mail_monitor_roundtrip_seconds",
                                      "Submission start until the test mail was seen", labels=["route"])
        delivery = GaugeMetricFamily("mail_monitor_delivery_seconds",
                                     "Server-side delivery time from the Received headers", labels=["route"])
        in_spam = GaugeMetricFamily("mail_monitor_received_in_spam",
                                    "1 if the test mail landed in an extra (spam) folder", labels=["route"])
        for route in result.routes:
            for check in route.checks.values():
                if check.outcome is Outcome.SKIPPED:
                    continue
                success.add_metric([route.route, check.name], 1.0 if check.ok else 0.0)
                warning.add_metric([route.route, check.name], 1.0 if check.outcome is Outcome.WARNING else 0.0)
                if check.duration is not None:
                    duration.add_metric([route.route, check.name], check.duration)
            if route.roundtrip is not None:
                roundtrip.add_metric([route.route], route.roundtrip)
                in_spam.add_metric([route.route], 1.0 if route.in_spam else 0.0)
            if route.delivery is not None:
                delivery.add_metric([route.route], route.delivery)
        yield from (success, duration, warning, roundtrip, delivery, in_spam)

        cert = GaugeMetricFamily("mail_monitor_tls_cert_not_after_timestamp_seconds",
                                 "Expiry of the certificate an endpoint presented", labels=["endpoint"])
        for endpoint, certificate in sorted(result.certificates().items()):
            cert.add_metric([endpoint], certificate.not_after)
        yield cert

        consecutive = GaugeMetricFamily("mail_monitor_consecutive_failures",
                                        "Failed runs in a row for this check", labels=labels)
        failures = CounterMetricFamily("mail_monitor_check_failures", "Failed runs of this check, ever",
                                       labels=labels)
        last_success = GaugeMetricFamily("mail_monitor_check_last_success_timestamp_seconds",
                                         "When the check last passed", labels=labels)
        for route_name, checks in sorted(state.checks.items()):
            for name, check_state in sorted(checks.items()):
                consecutive.add_metric([route_name, name], check_state.consecutive_failures)
                failures.add_metric([route_name, name], check_state.failures_total)
                if check_state.last_success is not None:
                    last_success.add_metric([route_name, name], check_state.last_success)
        yield from (consecutive, failures, last_success)

        runs = CounterMetricFamily("mail_monitor_runs", "Runs, ever")
        runs.add_metric([], state.runs_total)
        yield runs
        status = GaugeMetricFamily("mail_monitor_status",
                                   "Result of the last run: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN")
        status.add_metric([], int(result.status))
        yield status
        queued = GaugeMetricFamily("mail_monitor_alerts_queued", "Alerts not yet accepted by the ntfy server")
        queued.add_metric([], len(state.queue))
        yield queued
        last_run = GaugeMetricFamily("mail_monitor_last_run_timestamp_seconds", "When the last run started")
        last_run.add_metric([], result.started_at)
        yield last_run
        run_duration = GaugeMetricFamily("mail_monitor_run_duration_seconds", "How long the last run took")
        run_duration.add_metric([], result.duration)
        yield run_duration
        build = GaugeMetricFamily("mail_monitor_build_info", "Version of mail-monitor", labels=["version"])
        build.add_metric([__version__], 1)
        yield build


def render_metrics(result: RunResult, state: State) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunCollector(result, state))
    return generate_latest(registry)


def write_textfile(path: Path, result: RunResult, state: State) -> None:
    """node_exporter reads only ``*.prom``; our temp file is ``.name.XXXX.tmp`` beside it."""
    write_atomic(path, render_metrics(result, state), mode=0o644)
