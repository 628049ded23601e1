"""One run's step for the reports check: a read batch in, new totals and a verdict out.

Pure: the engine reads the batch (``mailbox.read_batch``), calls ``apply_batch``, saves
``ReportTotals.to_json()`` in the state, and only then files the batch away.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mail_monitor.reports.aggregate import (
    DEFAULT_MAX_SEEN,
    DEFAULT_MAX_SERIES,
    ComplianceWarning,
    DmarcCounts,
    DmarcKey,
    TlsKey,
    add_dmarc,
    add_tls,
    compliance_warnings,
    deduplicate,
    deduplicate_keys,
    dmarc_from_json,
    dmarc_increments,
    dmarc_to_json,
    report_key,
    tls_from_json,
    tls_increments,
    tls_to_json,
)
from mail_monitor.reports.model import DmarcReport, Report, TlsReport
from mail_monitor.results import Outcome, ReportCount

DEFAULT_DEDUP_WINDOW = 7 * 86400.0


@dataclass(frozen=True)
class ReportTotals:
    """Everything the reports check keeps across runs (in the state file)."""

    dmarc: Mapping[DmarcKey, DmarcCounts] = field(default_factory=dict)
    tls: Mapping[TlsKey, int] = field(default_factory=dict)
    seen: Mapping[str, float] = field(default_factory=dict)  # report_key -> first seen (Unix time)
    invalid: int = 0  # unreadable report mails ever: mail_monitor_reports_invalid_total

    def to_json(self) -> dict[str, Any]:
        return {"dmarc": dmarc_to_json(self.dmarc), "tls": tls_to_json(self.tls),
                "seen": dict(sorted(self.seen.items())), "invalid": self.invalid}

    @classmethod
    def from_json(cls, data: object) -> ReportTotals:
        """ValueError with the key that is wrong; the caller names the file."""
        if not isinstance(data, dict):
            raise ValueError("expected an object")
        seen = data.get("seen", {})
        if not isinstance(seen, dict) or not all(
                isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
                for k, v in seen.items()):
            raise ValueError("seen: expected an object of report ids to times")
        invalid = data.get("invalid", 0)
        if isinstance(invalid, bool) or not isinstance(invalid, int) or invalid < 0:
            raise ValueError("invalid: expected a whole number >= 0")
        try:
            dmarc = dmarc_from_json(data.get("dmarc", []))
        except ValueError as exc:
            raise ValueError(f"dmarc: {exc}") from None
        try:
            tls = tls_from_json(data.get("tls", []))
        except ValueError as exc:
            raise ValueError(f"tls: {exc}") from None
        return cls(dmarc, tls, {k: float(v) for k, v in seen.items()}, invalid)


@dataclass(frozen=True)
class BatchSummary:
    """What one run's batch changed, for output and the verdict."""

    totals: ReportTotals
    dmarc_reports: int  # new (not duplicate) aggregate reports counted
    tls_reports: int
    duplicates: int
    unreadable: int
    left: int  # mails still waiting for later runs
    warnings: tuple[ComplianceWarning, ...]


def apply_batch(totals: ReportTotals, reports: Sequence[Report], unreadable: int, left: int, now: float, *,
                dedup_window: float = DEFAULT_DEDUP_WINDOW, min_compliance: float | None = None,
                max_series: int = DEFAULT_MAX_SERIES, max_seen: int = DEFAULT_MAX_SEEN) -> BatchSummary:
    """Count the batch's new reports into the totals and judge this run's DMARC compliance."""
    fresh, seen = deduplicate(reports, totals.seen, now, dedup_window, max_seen)
    dmarc = [r for r in fresh if isinstance(r, DmarcReport)]
    tls = [r for r in fresh if isinstance(r, TlsReport)]
    increments = dmarc_increments(dmarc)
    warnings = tuple(compliance_warnings(increments, min_compliance)) if min_compliance is not None else ()
    new_totals = ReportTotals(
        dmarc=add_dmarc(totals.dmarc, increments, max_series),
        tls=add_tls(totals.tls, tls_increments(tls), max_series),
        seen=seen,
        invalid=totals.invalid + unreadable,
    )
    return BatchSummary(new_totals, len(dmarc), len(tls), len(reports) - len(fresh), unreadable, left, warnings)


def verdict(summary: BatchSummary) -> tuple[Outcome, str]:
    """WARNING when a reporter's compliance is under the minimum; otherwise OK with what was read.

    Unreadable mails do not warn: anyone can send them. They are counted, filed in the
    error folder, and named in the message.
    """
    parts = [f"{summary.dmarc_reports} DMARC and {summary.tls_reports} TLS reports read"]
    if summary.duplicates:
        parts.append(f"{summary.duplicates} duplicate{'s' if summary.duplicates != 1 else ''} skipped")
    if summary.unreadable:
        parts.append(f"{summary.unreadable} unreadable mail{'s' if summary.unreadable != 1 else ''} "
                     "counted as invalid")
    if summary.left:
        parts.append(f"{summary.left} left for later runs")
    text = ", ".join(parts)
    if summary.warnings:
        return Outcome.WARNING, "; ".join(w.message for w in summary.warnings) + f" ({text})"
    return Outcome.OK, text


def count_reports(totals: ReportTotals, counts: Sequence[ReportCount], unreadable: int, now: float, *,
                  dedup_window: float = DEFAULT_DEDUP_WINDOW, max_series: int = DEFAULT_MAX_SERIES,
                  max_seen: int = DEFAULT_MAX_SEEN) -> ReportTotals:
    """Add a run's reports (as :class:`ReportCount`) to the totals, each report id once.

    The reports check reads and converts; this runs on the state read under the lock, so
    two runs that read the same report count it once.
    """
    fresh, seen = deduplicate_keys([c.key for c in counts], totals.seen, now, dedup_window, max_seen)
    new = [c for c, is_fresh in zip(counts, fresh, strict=True) if is_fresh]
    dmarc = dict(totals.dmarc)
    tls = dict(totals.tls)
    for count in new:
        dmarc = add_dmarc(dmarc, dmarc_from_json(list(count.dmarc)), max_series)
        tls = add_tls(tls, tls_from_json(list(count.tls)), max_series)
    return ReportTotals(dmarc, tls, seen, totals.invalid + unreadable)


def report_count(report: Report) -> ReportCount:
    """One report's increments in the state's row form, for :func:`count_reports`."""
    if isinstance(report, DmarcReport):
        return ReportCount(report_key(report), tuple(dmarc_to_json(dmarc_increments([report]))))
    return ReportCount(report_key(report), tls=tuple(tls_to_json(tls_increments([report]))))
