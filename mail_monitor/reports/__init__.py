"""What receivers report: DMARC aggregate (RFC 7489) and SMTP TLS (RFC 8460) reports.

``parse_message`` reads one report mail; ``aggregate`` turns reports into counter
increments, de-duplicates them and judges compliance; ``mailbox`` reads and files
the reports folder in bounded batches. See docs/reports.md.
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

__all__ = [
    "DMARC_COUNTERS",
    "DMARC_LABELS",
    "OTHER",
    "TLS_LABELS",
    "TLS_RESULTS",
    "AuthResult",
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
    "TlsFailure",
    "TlsKey",
    "TlsPolicy",
    "TlsReport",
    "add_dmarc",
    "add_tls",
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
]
