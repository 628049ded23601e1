"""Report mails as receivers write them (Google, Microsoft, Yahoo style), and hostile ones.

Every sample is built here from its inputs, so the tests can state the expected
counters from the same inputs by hand.
"""

from __future__ import annotations

import gzip
import io
import json
import zipfile
import zlib
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid

from mail_monitor.reports import DmarcCounts, DmarcKey

DMARC_NS = "urn:ietf:params:xml:ns:dmarc-2.0"


@dataclass(frozen=True)
class Row:
    """One aggregate-report record."""

    source_ip: str
    count: int
    disposition: str = "none"
    dkim_eval: str = "pass"
    spf_eval: str = "pass"
    header_from: str = "example.test"
    dkim: tuple[tuple[str, str], ...] = (("example.test", "pass"),)  # (domain, result)
    spf: tuple[tuple[str, str], ...] = (("example.test", "pass"),)


@dataclass(frozen=True)
class Aggregate:
    reporter: str
    report_id: str
    rows: tuple[Row, ...]
    domain: str = "example.test"
    begin: int = 1_700_000_000
    end: int = 1_700_086_399
    namespaced: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    def xml(self) -> bytes:
        ns = f' xmlns="{DMARC_NS}"' if self.namespaced else ""
        records = "".join(_record(r) for r in self.rows)
        return (
            f'<?xml version="1.0" encoding="UTF-8" ?>\n<feedback{ns}>\n'
            "  <version>1.0</version>\n"
            f"  <report_metadata><org_name>{self.reporter}</org_name>"
            f"<email>noreply-dmarc@{self.reporter}</email><report_id>{self.report_id}</report_id>"
            f"<date_range><begin>{self.begin}</begin><end>{self.end}</end></date_range></report_metadata>\n"
            f"  <policy_published><domain>{self.domain}</domain><adkim>r</adkim><aspf>r</aspf>"
            "<p>reject</p><sp>reject</sp><pct>100</pct></policy_published>\n"
            f"{records}</feedback>\n"
        ).encode()


def _record(row: Row) -> str:
    dkim = "".join(f"<dkim><domain>{d}</domain><result>{r}</result><selector>mail</selector></dkim>"
                   for d, r in row.dkim)
    spf = "".join(f"<spf><domain>{d}</domain><scope>mfrom</scope><result>{r}</result></spf>" for d, r in row.spf)
    return (
        f"  <record><row><source_ip>{row.source_ip}</source_ip><count>{row.count}</count>"
        f"<policy_evaluated><disposition>{row.disposition}</disposition><dkim>{row.dkim_eval}</dkim>"
        f"<spf>{row.spf_eval}</spf></policy_evaluated></row>"
        f"<identifiers><header_from>{row.header_from}</header_from></identifiers>"
        f"<auth_results>{dkim}{spf}</auth_results></record>\n"
    )


def tlsrpt_json(reporter: str, report_id: str, policies: list[tuple[str, int, int]]) -> bytes:
    """policies: (policy_domain, successful sessions, failed sessions)."""
    return json.dumps({
        "organization-name": reporter,
        "date-range": {"start-datetime": "2023-11-14T00:00:00Z", "end-datetime": "2023-11-14T23:59:59Z"},
        "contact-info": f"smtp-tls-reporting@{reporter}",
        "report-id": report_id,
        "policies": [
            {
                "policy": {"policy-type": "sts", "policy-string": ["version: STSv1", "mode: enforce"],
                           "policy-domain": domain, "mx-host": [f"mail.{domain}"]},
                "summary": {"total-successful-session-count": ok, "total-failure-session-count": failed},
                "failure-details": [{"result-type": "certificate-expired", "sending-mta-ip": "192.0.2.7",
                                     "receiving-mx-hostname": f"mail.{domain}", "failed-session-count": failed}]
                if failed else [],
            }
            for domain, ok, failed in policies
        ],
    }).encode()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zipped(data: bytes, name: str = "report.xml") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


def zip_bomb(megabytes: int = 64, name: str = "report.xml") -> bytes:
    """A small zip holding ``megabytes`` MiB of zeros behind an XML opening."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive, \
            archive.open(name, "w") as member:
        member.write(b"<feedback>")
        block = b"\0" * (1024 * 1024)
        for _ in range(megabytes):
            member.write(block)
    return buffer.getvalue()


def gzip_bomb(megabytes: int = 64) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [compressor.compress(b"<feedback>")]
    block = b"\0" * (1024 * 1024)
    out += [compressor.compress(block) for _ in range(megabytes)]
    out.append(compressor.flush())
    return b"".join(out)


def encrypted_zip(data: bytes) -> bytes:
    """A zip whose member is flagged encrypted (zipfile cannot write real encryption)."""
    raw = bytearray(zipped(data))
    raw[6] |= 0x01  # local file header: general purpose bit flag
    central = raw.index(b"PK\x01\x02")
    raw[central + 8] |= 0x01
    return bytes(raw)


ENTITY_BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE feedback [
 <!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
 <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
 <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
 <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
 <!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">
 <!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">
 <!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;">
]>
<feedback><report_metadata><org_name>&g;</org_name></report_metadata></feedback>
"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE feedback [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<feedback><report_metadata><org_name>&secret;</org_name></report_metadata></feedback>
"""


def report_mail(attachment: bytes | None, filename: str, content_type: str, *, reporter: str = "google.com",
                to: str = "dmarc@example.test", subject: str | None = None, body: str = "") -> bytes:
    """A report mail as receivers send it: a short text part and the report attached."""
    message = EmailMessage()
    message["From"] = f"noreply-dmarc-support@{reporter}"
    message["To"] = to
    message["Subject"] = subject or f"Report Domain: example.test Submitter: {reporter} Report-ID: {filename}"
    message["Message-ID"] = make_msgid(domain=reporter)
    message.set_content(body or f"This is an aggregate report from {reporter}.")
    if attachment is not None:
        maintype, subtype = content_type.split("/", 1)
        message.add_attachment(attachment, maintype=maintype, subtype=subtype, filename=filename)
    return message.as_bytes()


# -- the samples the tests share, with their counters worked out by hand ----------------

GOOGLE = Aggregate("google.com", "1700000000123", (
    Row("203.0.113.5", 10),
    Row("203.0.113.5", 3, disposition="quarantine", dkim_eval="fail", spf_eval="fail",
        dkim=(("example.test", "fail"),), spf=(("example.test", "softfail"),)),
    # Passing for a foreign domain, so not aligned: pass counters only.
    Row("198.51.100.9", 2, disposition="reject", dkim_eval="fail", spf_eval="fail",
        dkim=(("spoof.example", "pass"),), spf=(("spoof.example", "pass"),)),
    # The receiver's verdict says DKIM passed aligned, but the *first* signature failed:
    # dmarc-metrics-exporter then counts dkim_aligned without dkim_pass, and not compliant.
    Row("203.0.113.7", 4, spf_eval="fail", dkim=(("example.test", "fail"), ("example.test", "pass")),
        spf=(("bounce.example.test", "pass"),)),
))
MICROSOFT = Aggregate("Outlook.com", "a1b2c3d4e5f6", (
    Row("203.0.113.5", 7),
    Row("203.0.113.6", 1, dkim_eval="fail", dkim=()),
), namespaced=True)
YAHOO = Aggregate("Yahoo", "1700001111.4242", (Row("2001:db8::25", 5),))


def google_mail() -> bytes:
    return report_mail(zipped(GOOGLE.xml(), "google.com!example.test!1700000000!1700086399.xml"),
                       "google.com!example.test!1700000000!1700086399.zip", "application/zip")


def microsoft_mail() -> bytes:
    return report_mail(gz(MICROSOFT.xml()), "enterprise.protection.outlook.com!example.test!1700000000.xml.gz",
                       "application/gzip", reporter="microsoft.com")


def yahoo_mail() -> bytes:
    return report_mail(YAHOO.xml(), "yahoo.com!example.test!1700000000!1700086399.xml", "text/xml",
                       reporter="yahoo.com")


def tls_mail() -> bytes:
    return report_mail(gz(tlsrpt_json("google.com", "2023-11-14T00:00:00Z_example.test", [("example.test", 100, 2)])),
                       "google.com!example.test!1699920000!1700006399!001.json.gz", "application/tlsrpt+gzip")


# dmarc-metrics-exporter's counters for GOOGLE + MICROSOFT + YAHOO (see the comments on the rows).
EXPECTED_DMARC = {
    DmarcKey("google.com", "example.test", "example.test", "example.test"):
        DmarcCounts(total=13, compliant=10, quarantine=3, reject=0, spf_aligned=10, spf_pass=10,
                    dkim_aligned=10, dkim_pass=10),
    DmarcKey("google.com", "example.test", "spoof.example", "spoof.example"):
        DmarcCounts(total=2, reject=2, spf_pass=2, dkim_pass=2),
    DmarcKey("google.com", "example.test", "example.test", "bounce.example.test"):
        DmarcCounts(total=4, dkim_aligned=4, spf_pass=4),
    DmarcKey("Outlook.com", "example.test", "example.test", "example.test"):
        DmarcCounts(total=7, compliant=7, spf_aligned=7, spf_pass=7, dkim_aligned=7, dkim_pass=7),
    DmarcKey("Outlook.com", "example.test", "", "example.test"):
        DmarcCounts(total=1, compliant=1, spf_aligned=1, spf_pass=1),
    DmarcKey("Yahoo", "example.test", "example.test", "example.test"):
        DmarcCounts(total=5, compliant=5, spf_aligned=5, spf_pass=5, dkim_aligned=5, dkim_pass=5),
}
