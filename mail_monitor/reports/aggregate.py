"""From parsed reports to counter increments, de-duplication and the compliance verdict.

Pure functions: the caller keeps the totals and the seen-report map (in the state file)
and decides when to save them. The DMARC counters mean exactly what
dmarc-metrics-exporter's do (see docs/reports.md for the mapping):

* labels: ``reporter`` = org_name, ``from_domain`` = header_from, ``dkim_domain`` and
  ``spf_domain`` = the domain of the *first* DKIM / SPF entry of ``auth_results``
  (empty when there is none);
* ``dkim_pass`` / ``spf_pass``: that first raw verdict is ``pass``;
* ``dkim_aligned`` / ``spf_aligned``: ``policy_evaluated`` says ``pass`` (the receiver's
  DMARC verdict: passed *and* aligned);
* ``compliant``: (dkim_aligned and dkim_pass) or (spf_aligned and spf_pass);
* ``quarantine`` / ``reject``: the disposition the receiver applied;
* every counter grows by the record's ``count``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mail_monitor.reports.model import Disposition, DmarcRecord, DmarcReport, Report, TlsReport

DMARC_COUNTERS: tuple[str, ...] = (
    "total", "compliant", "quarantine", "reject", "spf_aligned", "spf_pass", "dkim_aligned", "dkim_pass",
)
TLS_RESULTS: tuple[str, ...] = ("success", "failure")
OTHER = "(other)"  # every label of the series that takes what is over the cap
DEFAULT_MAX_SERIES = 1000  # label sets per counter family; a real setup has a few dozen
DEFAULT_MAX_SEEN = 50_000  # remembered report ids; a real setup sees a few a day


@dataclass(frozen=True, order=True)
class DmarcKey:
    """The label set of dmarc-metrics-exporter's counters."""

    reporter: str
    from_domain: str
    dkim_domain: str
    spf_domain: str


@dataclass(frozen=True)
class DmarcCounts:
    """One increment (or running total) of every DMARC counter, in DMARC_COUNTERS order."""

    total: int = 0
    compliant: int = 0
    quarantine: int = 0
    reject: int = 0
    spf_aligned: int = 0
    spf_pass: int = 0
    dkim_aligned: int = 0
    dkim_pass: int = 0

    def __add__(self, other: DmarcCounts) -> DmarcCounts:
        return DmarcCounts(*(getattr(self, n) + getattr(other, n) for n in DMARC_COUNTERS))

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, order=True)
class TlsKey:
    reporter: str
    policy_domain: str
    result: str  # one of TLS_RESULTS


def record_key(reporter: str, record: DmarcRecord) -> DmarcKey:
    return DmarcKey(
        reporter=reporter,
        from_domain=record.header_from,
        dkim_domain=record.dkim[0].domain if record.dkim else "",
        spf_domain=record.spf[0].domain if record.spf else "",
    )


def record_counts(record: DmarcRecord) -> DmarcCounts:
    n = record.count
    dkim_pass = bool(record.dkim) and record.dkim[0].result == "pass"
    spf_pass = bool(record.spf) and record.spf[0].result == "pass"
    dkim_aligned = record.dkim_evaluated == "pass"
    spf_aligned = record.spf_evaluated == "pass"
    compliant = (dkim_aligned and dkim_pass) or (spf_aligned and spf_pass)
    return DmarcCounts(
        total=n,
        compliant=n * compliant,
        quarantine=n * (record.disposition is Disposition.QUARANTINE),
        reject=n * (record.disposition is Disposition.REJECT),
        spf_aligned=n * spf_aligned,
        spf_pass=n * spf_pass,
        dkim_aligned=n * dkim_aligned,
        dkim_pass=n * dkim_pass,
    )


def dmarc_increments(reports: Iterable[DmarcReport]) -> dict[DmarcKey, DmarcCounts]:
    """What the reports add to each DMARC counter, per label set."""
    out: dict[DmarcKey, DmarcCounts] = {}
    for report in reports:
        for record in report.records:
            key = record_key(report.reporter, record)
            out[key] = out.get(key, DmarcCounts()) + record_counts(record)
    return out


def tls_increments(reports: Iterable[TlsReport]) -> dict[TlsKey, int]:
    """Sessions per reporter, policy domain and result (``success`` / ``failure``)."""
    out: dict[TlsKey, int] = {}
    for report in reports:
        for policy in report.policies:
            for result, sessions in (("success", policy.successful_sessions), ("failure", policy.failed_sessions)):
                key = TlsKey(report.reporter, policy.policy_domain, result)
                out[key] = out.get(key, 0) + sessions
    return out


def add_dmarc(totals: Mapping[DmarcKey, DmarcCounts], increments: Mapping[DmarcKey, DmarcCounts],
              max_series: int | None = DEFAULT_MAX_SERIES) -> dict[DmarcKey, DmarcCounts]:
    """Totals plus increments. Label sets beyond ``max_series`` add to one ``(other)`` set.

    Anyone can mail a report naming any reporter and domains: without a cap, a flood of
    made-up reports would create as many metric series.
    """
    out = dict(totals)
    for key, counts in sorted(increments.items()):
        if key not in out and max_series is not None and len(out) >= max_series:
            key = DmarcKey(OTHER, OTHER, OTHER, OTHER)
        out[key] = out.get(key, DmarcCounts()) + counts
    return out


def add_tls(totals: Mapping[TlsKey, int], increments: Mapping[TlsKey, int],
            max_series: int | None = DEFAULT_MAX_SERIES) -> dict[TlsKey, int]:
    """Totals plus increments, with the same cap on label sets as ``add_dmarc``."""
    out = dict(totals)
    for key, sessions in sorted(increments.items()):
        if key not in out and max_series is not None and len(out) >= max_series:
            key = TlsKey(OTHER, OTHER, key.result)
        out[key] = out.get(key, 0) + sessions
    return out


# -- de-duplication -------------------------------------------------------------


def report_key(report: Report) -> str:
    """Report ids are unique per reporter only (dmarc-metrics-exporter keys on both too)."""
    return f"{report.kind}\x1f{report.reporter}\x1f{report.report_id}"


def deduplicate(reports: Iterable[Report], seen: Mapping[str, float], now: float, window: float,
                max_seen: int = DEFAULT_MAX_SEEN) -> tuple[list[Report], dict[str, float]]:
    """The reports not seen within ``window`` seconds, and the seen map to keep (expired ids dropped).

    ``seen`` maps report_key -> Unix time first seen. An id is remembered for ``window``
    from its first sighting; a copy arriving later than that counts again, as
    dmarc-metrics-exporter's expiring set does. Past ``max_seen`` ids (a flood), the
    oldest are forgotten first.
    """
    listed = list(reports)
    fresh_keys, kept = deduplicate_keys([report_key(r) for r in listed], seen, now, window, max_seen)
    return [r for r, fresh in zip(listed, fresh_keys, strict=True) if fresh], kept


def deduplicate_keys(keys: Iterable[str], seen: Mapping[str, float], now: float, window: float,
                     max_seen: int = DEFAULT_MAX_SEEN) -> tuple[list[bool], dict[str, float]]:
    """``deduplicate`` on report keys: whether each is fresh, and the seen map to keep."""
    kept = {key: first for key, first in seen.items() if now - first < window}
    fresh: list[bool] = []
    for key in keys:
        fresh.append(key not in kept)
        kept.setdefault(key, now)
    if len(kept) > max_seen:
        kept = dict(sorted(kept.items(), key=lambda item: item[1])[-max_seen:])
    return fresh, kept


# -- compliance -----------------------------------------------------------------


@dataclass(frozen=True)
class ComplianceWarning:
    """A reporter whose share of DMARC-compliant mail is under ``min_compliance``."""

    reporter: str
    total: int
    ratio: float  # compliant / total
    failing: tuple[str, ...]  # "dkim", "spf": the mechanisms whose aligned pass share is under the minimum
    mechanism_ratios: tuple[tuple[str, float], ...]

    @property
    def message(self) -> str:
        parts = ", ".join(f"{name} {_percent(share)}" for name, share in self.mechanism_ratios
                          if name in self.failing)
        return (f"{self.reporter}: {_percent(self.ratio)} of {self.total} mails DMARC-compliant"
                + (f"; failing {parts}" if parts else ""))


def compliance_warnings(counts: Mapping[DmarcKey, DmarcCounts], min_compliance: float) -> list[ComplianceWarning]:
    """One warning per reporter under ``min_compliance`` (a share, 0..1), sorted by reporter.

    Feed it the increments of the reports read in one run (or any window the caller
    keeps); lifetime totals would let one bad week hide, or haunt, the present.
    """
    per_reporter: dict[str, DmarcCounts] = {}
    for key, value in counts.items():
        per_reporter[key.reporter] = per_reporter.get(key.reporter, DmarcCounts()) + value
    warnings = []
    for reporter, value in sorted(per_reporter.items()):
        if value.total == 0:
            continue
        ratio = value.compliant / value.total
        if ratio >= min_compliance:
            continue
        shares = (("dkim", value.dkim_aligned / value.total), ("spf", value.spf_aligned / value.total))
        failing = tuple(name for name, share in shares if share < min_compliance)
        warnings.append(ComplianceWarning(reporter, value.total, ratio, failing, shares))
    return warnings


def _percent(share: float) -> str:
    return f"{share * 100:.1f}%".replace(".0%", "%")


# -- the counters in the state file -------------------------------------------------------
# Flat JSON rows, one per label set: readable by a person and by jq, stable across versions.

DMARC_LABELS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(DmarcKey))
TLS_LABELS: tuple[str, ...] = ("reporter", "policy_domain", "result")


def dmarc_to_json(totals: Mapping[DmarcKey, DmarcCounts]) -> list[dict[str, str | int]]:
    return [{**dataclasses.asdict(key), **counts.as_dict()} for key, counts in sorted(totals.items())]


def dmarc_from_json(rows: object) -> dict[DmarcKey, DmarcCounts]:
    """The inverse of ``dmarc_to_json``; ValueError naming the row and key that is wrong."""
    out: dict[DmarcKey, DmarcCounts] = {}
    for index, row in enumerate(_rows(rows)):
        key = DmarcKey(*(_label(row, name, index) for name in DMARC_LABELS))
        out[key] = DmarcCounts(*(_counter(row, name, index) for name in DMARC_COUNTERS))
    return out


def tls_to_json(totals: Mapping[TlsKey, int]) -> list[dict[str, str | int]]:
    return [{**dataclasses.asdict(key), "sessions": sessions} for key, sessions in sorted(totals.items())]


def tls_from_json(rows: object) -> dict[TlsKey, int]:
    out: dict[TlsKey, int] = {}
    for index, row in enumerate(_rows(rows)):
        key = TlsKey(*(_label(row, name, index) for name in TLS_LABELS))
        out[key] = _counter(row, "sessions", index)
    return out


def _rows(rows: object) -> list[dict[str, object]]:
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError("expected a list of objects")
    return rows


def _label(row: dict[str, object], name: str, index: int) -> str:
    value = row.get(name)
    if not isinstance(value, str):
        raise ValueError(f"row {index}: {name} must be a string")
    return value


def _counter(row: dict[str, object], name: str, index: int) -> int:
    value = row.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"row {index}: {name} must be a whole number >= 0")
    return value
