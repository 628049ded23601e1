"""Prometheus metrics for node_exporter's textfile collector, written atomically.

Gauges describe this run; the ``_total`` counters come from the state file so they
keep counting across runs (each run is a new process).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mail_monitor import __version__
from mail_monitor.files import write_atomic
from mail_monitor.results import (
    AuthVerdicts,
    BlocklistLookups,
    Collection,
    Outcome,
    QueueDepth,
    ReportsRead,
    RunResult,
    Subject,
    SubjectKind,
)
from mail_monitor.state import State


@dataclass(frozen=True)
class CheckFamily:
    """The metric names and labels of one kind of subject's checks."""

    prefix: str  # mail_monitor_check_success, mail_monitor_dns_check_success, ...
    labels: tuple[str, ...]  # the subject's label(s); "check" is added
    consecutive: str  # routes keep the name they had before subjects existed

    def label_values(self, subject: Subject, check: str) -> list[str]:
        return [subject.name, check] if self.labels else [check]


FAMILIES = {
    SubjectKind.ROUTE: CheckFamily("mail_monitor_check", ("route",), "mail_monitor_consecutive_failures"),
    SubjectKind.DOMAIN: CheckFamily("mail_monitor_dns_check", ("domain",),
                                    "mail_monitor_dns_check_consecutive_failures"),
    SubjectKind.HOST: CheckFamily("mail_monitor_host_check", (), "mail_monitor_host_check_consecutive_failures"),
}


class RunCollector(Collector):
    def __init__(self, result: RunResult, state: State) -> None:
        self.result = result
        self.state = state

    def collect(self) -> Iterator[Metric]:
        for kind, family in FAMILIES.items():
            yield from self._checks(kind, family)
        yield from self._routes()
        yield from self._deliverability()
        yield from self._host()
        yield from self._run()

    def _checks(self, kind: SubjectKind, family: CheckFamily) -> Iterator[Metric]:
        result, state = self.result, self.state
        labels = [*family.labels, "check"]
        success = GaugeMetricFamily(f"{family.prefix}_success",
                                    "1 if the check passed (warnings included), 0 if it failed; absent if skipped",
                                    labels=labels)
        duration = GaugeMetricFamily(f"{family.prefix}_duration_seconds", "Time the check took", labels=labels)
        warning = GaugeMetricFamily(f"{family.prefix}_warning",
                                    "1 if the check passed with a warning (spam folder, slow, cert expiring)",
                                    labels=labels)
        checked = GaugeMetricFamily(f"{family.prefix}_timestamp_seconds",
                                    "When the check last ran (older than the run when it was not due)",
                                    labels=labels)
        for subject_result in result.of_kind(kind):
            for check in subject_result.checks:
                if check.outcome is Outcome.SKIPPED:
                    continue
                values = family.label_values(subject_result.subject, check.name)
                success.add_metric(values, 1.0 if check.ok else 0.0)
                warning.add_metric(values, 1.0 if check.outcome is Outcome.WARNING else 0.0)
                if check.duration is not None:
                    duration.add_metric(values, check.duration)
                if check.checked_at is not None:
                    checked.add_metric(values, check.checked_at)
        consecutive = GaugeMetricFamily(family.consecutive, "Failed runs in a row for this check", labels=labels)
        failures = CounterMetricFamily(f"{family.prefix}_failures", "Failed runs of this check, ever",
                                       labels=labels)
        last_success = GaugeMetricFamily(f"{family.prefix}_last_success_timestamp_seconds",
                                         "When the check last passed", labels=labels)
        for subject_text, checks in sorted(state.checks.items()):
            subject = Subject.parse(subject_text)
            if subject.kind is not kind:
                continue
            for name, check_state in sorted(checks.items()):
                values = family.label_values(subject, name)
                consecutive.add_metric(values, check_state.consecutive_failures)
                failures.add_metric(values, check_state.failures_total)
                if check_state.last_success is not None:
                    last_success.add_metric(values, check_state.last_success)
        # A kind of subject nobody configured adds nothing to the file, not even HELP lines.
        yield from (m for m in (success, duration, warning, checked, consecutive, failures, last_success)
                    if m.samples)

    def _routes(self) -> Iterator[Metric]:
        roundtrip = GaugeMetricFamily("mail_monitor_roundtrip_seconds",
                                      "Submission start until the test mail was seen", labels=["route"])
        delivery = GaugeMetricFamily("mail_monitor_delivery_seconds",
                                     "Server-side delivery time from the Received headers", labels=["route"])
        in_spam = GaugeMetricFamily("mail_monitor_received_in_spam",
                                    "1 if the test mail landed in an extra (spam) folder", labels=["route"])
        for route in self.result.routes:
            arrival = route.arrival()
            if arrival is None:
                continue
            roundtrip.add_metric([route.subject.name], arrival.roundtrip)
            in_spam.add_metric([route.subject.name], 1.0 if arrival.in_spam else 0.0)
            if arrival.delivery is not None:
                delivery.add_metric([route.subject.name], arrival.delivery)
        yield from (roundtrip, delivery, in_spam)
        lost = CounterMetricFamily("mail_monitor_lost", "Async probes counted lost (never twice)", labels=["route"])
        late = CounterMetricFamily("mail_monitor_late", "Async probes that arrived after late_after",
                                   labels=["route"])
        pending = GaugeMetricFamily("mail_monitor_pending_probes", "Async probes still on their way",
                                    labels=["route"])
        for route in self.result.routes:
            key = str(route.subject)
            if key in self.state.pending or key in self.state.lost_total or route.detail(Collection) is not None:
                lost.add_metric([route.subject.name], self.state.lost_total.get(key, 0))
                late.add_metric([route.subject.name], self.state.late_total.get(key, 0))
                pending.add_metric([route.subject.name], len(self.state.pending.get(key, [])))
        yield from (m for m in (lost, late, pending) if m.samples)
        cert = GaugeMetricFamily("mail_monitor_tls_cert_not_after_timestamp_seconds",
                                 "Expiry of the certificate an endpoint presented", labels=["endpoint"])
        for endpoint, certificate in sorted(self.result.certificates().items()):
            cert.add_metric([endpoint], certificate.not_after)
        yield cert

    def _deliverability(self) -> Iterator[Metric]:
        """The probe's verdicts per route, method and source; blocklist listings per IP and zone."""
        auth = GaugeMetricFamily("mail_monitor_auth_result",
                                 "1 if the probe's SPF/DKIM/DMARC passed for this source, 0 otherwise",
                                 labels=["route", "method", "source"])
        listed = GaugeMetricFamily("mail_monitor_blocklisted", "1 if the sending IP is listed on the zone",
                                   labels=["ip", "zone"])
        for subject in self.result.subjects:
            passed: dict[tuple[str, str], bool] = {}
            for check in subject.checks:
                if isinstance(check.detail, AuthVerdicts):
                    for verdict in check.detail.verdicts:  # several trusted receivers: all must pass
                        key = (verdict.method, verdict.source)
                        passed[key] = passed.get(key, True) and verdict.verdict == "pass"
                elif isinstance(check.detail, BlocklistLookups):
                    for entry in check.detail.entries:
                        if entry.listed is not None:  # a zone that could not tell says nothing
                            listed.add_metric([entry.ip, entry.zone], 1.0 if entry.listed else 0.0)
            for (method, source), ok in sorted(passed.items()):
                auth.add_metric([subject.subject.name, method, source], 1.0 if ok else 0.0)
        yield from (m for m in (auth, listed) if m.samples)
    def _host(self) -> Iterator[Metric]:
        """What receivers reported (lifetime counters from the state) and the local queue (this run)."""
        details = [check.detail for check in self.result.checks]
        if self.state.reports or any(isinstance(d, ReportsRead) for d in details):
            from mail_monitor.reports import DMARC_COUNTERS, DMARC_LABELS, TLS_LABELS

            totals = self.state.report_totals()
            dmarc = {name: CounterMetricFamily("mail_monitor_dmarc" + ("" if name == "total" else f"_{name}"),
                                               f"DMARC aggregate reports: mails counted as {name} "
                                               "(as dmarc-metrics-exporter)", labels=list(DMARC_LABELS))
                     for name in DMARC_COUNTERS}
            for key, counts in sorted(totals.dmarc.items()):
                labels = [getattr(key, label) for label in DMARC_LABELS]
                for name, family in dmarc.items():
                    family.add_metric(labels, getattr(counts, name))
            yield from dmarc.values()
            sessions = CounterMetricFamily("mail_monitor_tlsrpt_sessions", "TLS-RPT sessions by result",
                                           labels=list(TLS_LABELS))
            for tls_key, count in sorted(totals.tls.items()):
                sessions.add_metric([getattr(tls_key, label) for label in TLS_LABELS], count)
            yield sessions
            invalid = CounterMetricFamily("mail_monitor_reports_invalid", "Report mails that could not be read")
            invalid.add_metric([], totals.invalid)
            yield invalid
        queue = next((d for d in details if isinstance(d, QueueDepth)), None)
        if queue is not None:
            depth = GaugeMetricFamily("mail_monitor_postfix_queue_messages", "Mails in each Postfix queue",
                                      labels=["queue"])
            for name, count in sorted(queue.depth.items()):
                depth.add_metric([name], count)
            yield depth
            if queue.oldest_deferred_seconds is not None:
                oldest = GaugeMetricFamily("mail_monitor_postfix_oldest_deferred_seconds",
                                           "Age of the oldest deferred mail (absent when none is deferred)")
                oldest.add_metric([], queue.oldest_deferred_seconds)
                yield oldest

    def _run(self) -> Iterator[Metric]:
        result, state = self.result, self.state
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
