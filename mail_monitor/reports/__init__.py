"""What receivers report: DMARC aggregate (RFC 7489) and SMTP TLS (RFC 8460) reports.

``parse_message`` reads one report mail; ``aggregate`` turns reports into counter
increments, de-duplicates them and judges compliance; ``totals`` is one run's step
over a batch; ``mailbox`` reads and files the reports folder in bounded batches.
See docs/reports.md.
"""

from mail_monitor.reports.aggregate import (
    DMARC_COUNTERS,
    DMARC_LABELS,
    OTHER,
    TLS_LABELS,
    TLS_RESULTS,
    ComplianceWarning,
    DmarcCounts,
    DmarcKey,
    TlsKey,
    add_dmarc,
    add_tls,
    compliance_warnings,
    deduplicate,
    dmarc_from_json,
    dmarc_increments,
    dmarc_to_json,
    report_key,
    tls_from_json,
    tls_increments,
    tls_to_json,
)
from mail_monitor.reports.message import parse_message
from mail_monitor.reports.model import (
    AuthResult,
    Disposition,
    DmarcRecord,
    DmarcReport,
    InvalidReport,
    Limits,
    PolicyPublished,
    Report,
    TlsFailure,
    TlsPolicy,
    TlsReport,
)
from mail_monitor.reports.totals import DEFAULT_DEDUP_WINDOW, BatchSummary, ReportTotals, apply_batch, verdict

__all__ = [
    "DEFAULT_DEDUP_WINDOW",
    "DMARC_COUNTERS",
    "DMARC_LABELS",
    "OTHER",
    "TLS_LABELS",
    "TLS_RESULTS",
    "AuthResult",
    "BatchSummary",
    "ComplianceWarning",
    "Disposition",
    "DmarcCounts",
    "DmarcKey",
    "DmarcRecord",
    "DmarcReport",
    "InvalidReport",
    "Limits",
    "PolicyPublished",
    "Report",
    "ReportTotals",
    "TlsFailure",
    "TlsKey",
    "TlsPolicy",
    "TlsReport",
    "add_dmarc",
    "add_tls",
    "apply_batch",
    "compliance_warnings",
    "deduplicate",
    "dmarc_from_json",
    "dmarc_increments",
    "dmarc_to_json",
    "parse_message",
    "report_key",
    "tls_from_json",
    "tls_increments",
    "tls_to_json",
    "verdict",
]
