"""Report parsing, hostile input and the counters, on generated report mails (no network)."""

from __future__ import annotations

import datetime
import random
import tracemalloc

import pytest
from report_samples import (
    ENTITY_BOMB,
    EXPECTED_DMARC,
    EXTERNAL_ENTITY,
    GOOGLE,
    YAHOO,
    Aggregate,
    encrypted_zip,
    google_mail,
    gz,
    gzip_bomb,
    microsoft_mail,
    report_mail,
    tls_mail,
    tlsrpt_json,
    yahoo_mail,
    zip_bomb,
    zipped,
)

from mail_monitor.reports import (
    OTHER,
    DmarcCounts,
    DmarcKey,
    DmarcReport,
    InvalidReport,
    Limits,
    ReportTotals,
    TlsKey,
    TlsReport,
    add_dmarc,
    add_tls,
    apply_batch,
    compliance_warnings,
    deduplicate,
    dmarc_from_json,
    dmarc_increments,
    dmarc_to_json,
    parse_message,
    tls_from_json,
    tls_increments,
    tls_to_json,
    verdict,
)
from mail_monitor.results import Outcome


def only(raw: bytes, limits: Limits | None = None) -> DmarcReport:
    reports = parse_message(raw, limits)
    assert len(reports) == 1
    report = reports[0]
    assert isinstance(report, DmarcReport)
    return report


def refused(raw: bytes, limits: Limits | None = None) -> str:
    with pytest.raises(InvalidReport) as caught:
        parse_message(raw, limits)
    return caught.value.reason


# -- parsing -------------------------------------------------------------------


def test_zip_report_is_read_field_by_field() -> None:
    report = only(google_mail())
    assert report.reporter == "google.com"
    assert report.report_id == "1700000000123"
    assert report.email == "noreply-dmarc@google.com"
    assert report.begin == datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=datetime.UTC)
    assert report.end == datetime.datetime.fromtimestamp(1_700_086_399, datetime.UTC)
    assert (report.policy.domain, report.policy.p, report.policy.sp, report.policy.pct) == (
        "example.test", "reject", "reject", 100)
    assert [r.count for r in report.records] == [10, 3, 2, 4]
    second = report.records[1]
    assert (second.source_ip, second.disposition, second.dkim_evaluated, second.spf_evaluated) == (
        "203.0.113.5", "quarantine", "fail", "fail")
    assert second.header_from == "example.test"
    assert second.dkim[0].selector == "mail" and second.dkim[0].result == "fail"
    assert second.spf[0].scope == "mfrom" and second.spf[0].result == "softfail"
    assert [a.domain for a in report.records[3].dkim] == ["example.test", "example.test"]


def test_gzip_with_namespace_and_plain_xml_are_read() -> None:
    microsoft = only(microsoft_mail())
    assert microsoft.reporter == "Outlook.com" and len(microsoft.records) == 2
    assert microsoft.records[1].dkim == ()
    yahoo = only(yahoo_mail())
    assert yahoo.records[0].source_ip == "2001:db8::25"


def test_octet_stream_is_accepted_by_file_name_only() -> None:
    named = report_mail(zipped(YAHOO.xml()), "yahoo.com!example.test.zip", "application/octet-stream")
    assert only(named).reporter == "Yahoo"
    unnamed = report_mail(zipped(YAHOO.xml()), "attachment.bin", "application/octet-stream")
    assert "no report attachment" in refused(unnamed)


def test_tls_report_is_read() -> None:
    (report,) = parse_message(tls_mail())
    assert isinstance(report, TlsReport)
    assert report.reporter == "google.com"
    assert report.begin == datetime.datetime(2023, 11, 14, tzinfo=datetime.UTC)
    (policy,) = report.policies
    assert (policy.policy_type, policy.policy_domain, policy.successful_sessions, policy.failed_sessions) == (
        "sts", "example.test", 100, 2)
    assert policy.failures[0].result_type == "certificate-expired"
    plain = report_mail(tlsrpt_json("mail.ru", "r1", [("example.test", 3, 0)]), "report.json",
                        "application/tlsrpt+json")
    assert parse_message(plain)[0].reporter == "mail.ru"


def test_every_member_of_a_zip_is_a_report() -> None:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.xml", GOOGLE.xml())
        archive.writestr("b.xml", YAHOO.xml())
    reports = parse_message(report_mail(buffer.getvalue(), "two.zip", "application/zip"))
    assert [r.reporter for r in reports] == ["google.com", "Yahoo"]


# -- hostile and broken input ------------------------------------------------------


def test_zip_bomb_is_refused_by_its_declared_size() -> None:
    bomb = report_mail(zip_bomb(128), "bomb.zip", "application/zip")
    assert refused(bomb) == "zip member 'report.xml' declares 134217738 bytes (at most 8 MiB)"


def test_zip_bomb_under_the_size_bound_is_refused_by_ratio_before_it_fills_memory() -> None:
    bomb = report_mail(zip_bomb(7), "bomb.zip", "application/zip")
    tracemalloc.start()
    try:
        reason = refused(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reason == "compression ratio over 100:1 (a zip bomb?)"
    assert peak < 4 * 1024 * 1024  # stopped near the 1 MiB grace, not at 7 MiB


def test_gzip_bomb_is_refused_by_size_when_the_ratio_would_allow_it() -> None:
    bomb = report_mail(gzip_bomb(128), "bomb.xml.gz", "application/gzip")
    tracemalloc.start()
    try:
        reason = refused(bomb, Limits(max_ratio=10**6))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reason == "decompresses to more than 8 MiB"
    assert peak < 32 * 1024 * 1024  # about the 8 MiB bound, not the 128 MiB bomb


@pytest.mark.parametrize("xml", [ENTITY_BOMB, EXTERNAL_ENTITY], ids=["billion-laughs", "external-entity"])
def test_xml_with_a_dtd_is_refused(xml: bytes) -> None:
    assert refused(report_mail(xml, "report.xml", "text/xml")) == "XML refused: contains a DTD"
    assert refused(report_mail(gz(xml), "report.xml.gz", "application/gzip")) == "XML refused: contains a DTD"


def test_truncated_and_corrupt_gzip_are_refused() -> None:
    data = gz(GOOGLE.xml())
    assert refused(report_mail(data[: len(data) // 2], "r.xml.gz", "application/gzip")) == "truncated gzip data"
    corrupt = bytearray(data)
    corrupt[-6] ^= 0xFF  # inside the CRC-32 / length trailer
    assert refused(report_mail(bytes(corrupt), "r.xml.gz", "application/gzip")).startswith("corrupt gzip data")
    assert refused(report_mail(data + b"garbage", "r.xml.gz", "application/gzip")) == \
        "trailing data after the gzip stream"


def test_truncated_zip_is_refused() -> None:
    data = zipped(GOOGLE.xml())
    assert refused(report_mail(data[:-30], "r.zip", "application/zip")) == "not a readable zip archive"


def test_wrong_content_type_is_not_taken_for_a_report() -> None:
    assert "no report attachment" in refused(report_mail(GOOGLE.xml(), "report.png", "image/png"))
    assert "no report attachment" in refused(report_mail(None, "", "", body="<feedback></feedback>"))


def test_declared_compression_that_is_not_there_is_refused() -> None:
    assert refused(report_mail(GOOGLE.xml(), "r.xml.gz", "application/gzip")) == \
        "attachment says application/gzip but is not compressed"


def test_huge_mail_is_refused_before_parsing() -> None:
    raw = report_mail(b"x" * (11 * 1024 * 1024), "big.xml", "text/xml")
    assert "byte limit" in refused(raw)
    assert "over the 5 byte limit" in refused(google_mail(), Limits(max_attachment_bytes=5))


def test_encrypted_nested_and_crowded_zips_are_refused() -> None:
    assert refused(report_mail(encrypted_zip(GOOGLE.xml()), "r.zip", "application/zip")) == \
        "encrypted zip member 'report.xml'"
    nested = zipped(zipped(GOOGLE.xml()), "inner.zip")
    assert refused(report_mail(nested, "r.zip", "application/zip")) == "nested archive 'inner.zip' in zip"
    disguised = zipped(gz(GOOGLE.xml()), "report.xml")
    assert refused(report_mail(disguised, "r.zip", "application/zip")) == "nested archive 'report.xml' in zip"
    assert refused(report_mail(gz(gz(GOOGLE.xml())), "r.gz", "application/gzip")) == "nested archive in gzip"
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(5):
            archive.writestr(f"{i}.xml", YAHOO.xml())
    assert refused(report_mail(buffer.getvalue(), "r.zip", "application/zip")) == \
        "zip archive has 5 members (at most 4)"


@pytest.mark.parametrize(("xml", "reason"), [
    (b"<feedback><report_metadata>", "malformed XML"),
    (b"<html><body/></html>", "XML root is <html>, not <feedback>"),
    (GOOGLE.xml().replace(b"<report_id>1700000000123</report_id>", b""),
     "<report_id> missing or empty in <report_metadata>"),
    (GOOGLE.xml().replace(b"203.0.113.7", b"not-an-ip"), "record 4: source_ip 'not-an-ip' is not an IP address"),
    (GOOGLE.xml().replace(b"<count>10</count>", b"<count>-3</count>"), "record 1/count: '-3' is not a count"),
    (GOOGLE.xml().replace(b"<count>10</count>", b"<count>" + b"9" * 30 + b"</count>"),
     "record 1/count: '" + "9" * 30 + "' is not a count"),
    (GOOGLE.xml().replace(b"<disposition>reject</disposition>", b"<disposition>drop</disposition>"),
     "record 3: unknown disposition 'drop'"),
    (GOOGLE.xml().replace(b"<begin>1700000000</begin>", b""), "<begin> missing in <date_range>"),
    (GOOGLE.xml().replace(b"<report_id>1700000000123", b"<report_id>" + b"7" * 2000),
     "<report_id>: longer than 255 characters"),
    (GOOGLE.xml().replace(b"<header_from>example.test", b"<header_from>" + b"a" * 300, 1),
     "record 1: <header_from>: longer than 255 characters"),
], ids=["truncated", "root", "report-id", "source-ip", "negative-count", "huge-count", "disposition", "begin",
        "huge-id", "long-domain"])
def test_malformed_aggregate_reports_name_what_is_wrong(xml: bytes, reason: str) -> None:
    assert refused(report_mail(gz(xml), "r.xml.gz", "application/gzip")).startswith(reason)


@pytest.mark.parametrize(("payload", "reason"), [
    (b'{"organization-name": "x"', "malformed JSON"),
    (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "JSON nested too deeply"),
    (tlsrpt_json("g", "1", [("example.test", 1, 0)]).replace(b'"total-successful-session-count": 1',
                                                            b'"total-successful-session-count": "1"'),
     "policies[1].summary.total-successful-session-count: expected a count"),
    (tlsrpt_json("g", "1", [("example.test", 1, 0)]).replace(b'"total-failure-session-count": 0',
                                                            b'"total-failure-session-count": true'),
     "policies[1].summary.total-failure-session-count: expected a count"),
    (tlsrpt_json("g", "1", [("example.test", 1, 0)]).replace(b'"sts"', b'"dane"'),
     "policies[1].policy.policy-type: 'dane' is not sts, tlsa or no-policy-found"),
    (tlsrpt_json("", "1", []), "report.organization-name: expected a non-empty string"),
    (tlsrpt_json("g", "1", []).replace(b"2023-11-14T00:00:00Z", b"yesterday"),
     "date-range.start-datetime: 'yesterday' is not an RFC 3339 date-time"),
], ids=["truncated", "deep", "string-count", "bool-count", "policy-type", "reporter", "date"])
def test_malformed_tls_reports_name_what_is_wrong(payload: bytes, reason: str) -> None:
    assert refused(report_mail(payload, "r.json", "application/tlsrpt+json")).startswith(reason)


def test_values_reach_labels_and_alerts_as_one_printable_line() -> None:
    sneaky = Aggregate("evil\n  corp\u200b\t ltd", "id\r\n2", YAHOO.rows)
    report = only(report_mail(sneaky.xml(), "r.xml", "text/xml"))
    assert (report.reporter, report.report_id) == ("evil corp ltd", "id 2")
    tls = parse_message(report_mail(tlsrpt_json("a\u2028b\x00", "1", []), "r.json", "application/tlsrpt+json"))[0]
    assert tls.reporter == "a b"


def test_deep_or_crowded_mime_is_refused() -> None:
    deep = b'Content-Type: multipart/mixed; boundary="b0"\n\n' + b"".join(
        b'--b%d\nContent-Type: multipart/mixed; boundary="b%d"\n\n' % (i - 1, i) for i in range(1, 3000))
    assert refused(deep) == "MIME structure nested too deeply"
    crowded = b'Content-Type: multipart/mixed; boundary="b"\n\n' + b"".join(
        b"--b\nContent-Type: text/plain\n\nhi\n" for _ in range(100)) + b"--b--\n"
    assert refused(crowded) == "more than 64 MIME parts"


def test_neither_xml_nor_json_is_refused() -> None:
    assert refused(report_mail(gz(b"%PDF-1.4"), "r.gz", "application/gzip")) == \
        "attachment is neither an XML aggregate report nor a JSON TLS report"


def test_any_damage_gives_invalid_report_never_another_exception() -> None:
    """Random byte damage to real report mails: every outcome is a report or InvalidReport."""
    rng = random.Random(8460)
    samples = [google_mail(), microsoft_mail(), yahoo_mail(), tls_mail(),
               report_mail(zipped(YAHOO.xml()), "r.zip", "application/octet-stream")]
    outcomes = {"ok": 0, "invalid": 0}
    for _ in range(400):
        raw = bytearray(rng.choice(samples))
        for _ in range(rng.randint(1, 8)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        if rng.random() < 0.3:
            del raw[rng.randrange(len(raw)):]
        try:
            parse_message(bytes(raw))
            outcomes["ok"] += 1
        except InvalidReport:
            outcomes["invalid"] += 1
    assert outcomes["invalid"] > 50 and outcomes["ok"] > 10, outcomes


# -- counters ------------------------------------------------------------------------


def test_dmarc_counters_mean_what_dmarc_metrics_exporter_counts() -> None:
    reports = [only(google_mail()), only(microsoft_mail()), only(yahoo_mail())]
    got = dmarc_increments(r for r in reports)
    assert got == EXPECTED_DMARC


def test_totals_add_up_across_runs() -> None:
    key = DmarcKey("Yahoo", "example.test", "example.test", "example.test")
    once = dmarc_increments([only(yahoo_mail())])
    twice = add_dmarc(once, once)
    assert twice[key].total == 10 and twice[key].dkim_pass == 10
    assert once[key].total == 5  # inputs untouched


def test_tls_sessions_by_reporter_policy_domain_and_result() -> None:
    google = parse_message(tls_mail())[0]
    other = parse_message(report_mail(
        tlsrpt_json("Microsoft Corporation", "m-1", [("example.test", 50, 0), ("other.test", 5, 1)]),
        "r.json", "application/tlsrpt+json"))[0]
    assert isinstance(google, TlsReport) and isinstance(other, TlsReport)
    assert tls_increments([google, other, google]) == {
        TlsKey("google.com", "example.test", "success"): 200,
        TlsKey("google.com", "example.test", "failure"): 4,
        TlsKey("Microsoft Corporation", "example.test", "success"): 50,
        TlsKey("Microsoft Corporation", "example.test", "failure"): 0,
        TlsKey("Microsoft Corporation", "other.test", "success"): 5,
        TlsKey("Microsoft Corporation", "other.test", "failure"): 1,
    }


def test_duplicates_count_once_within_the_window_and_again_after_it() -> None:
    week = 7 * 86400.0
    google, yahoo = only(google_mail()), only(yahoo_mail())
    fresh, seen = deduplicate([google, google, yahoo], {}, now=1000.0, window=week)
    assert fresh == [google, yahoo]
    fresh, seen = deduplicate([google], seen, now=1000.0 + week - 1, window=week)
    assert fresh == [] and len(seen) == 2
    fresh, seen = deduplicate([google], seen, now=1000.0 + week, window=week)
    assert fresh == [google]
    assert len(seen) == 1  # Yahoo's id expired and was dropped; Google's was seen anew
    assert list(seen.values()) == [1000.0 + week]


def test_the_same_report_id_from_two_reporters_is_two_reports() -> None:
    copy = Aggregate("Yahoo", GOOGLE.report_id, YAHOO.rows)
    theirs = only(report_mail(copy.xml(), "r.xml", "text/xml"))
    fresh, _ = deduplicate([only(google_mail()), theirs], {}, now=0.0, window=60.0)
    assert len(fresh) == 2
    tls_same_id = parse_message(report_mail(tlsrpt_json("google.com", GOOGLE.report_id, []), "r.json",
                                            "application/tlsrpt+json"))[0]
    fresh, _ = deduplicate([only(google_mail()), tls_same_id], {}, now=0.0, window=60.0)
    assert len(fresh) == 2


def test_compliance_warning_names_reporter_and_failing_mechanisms() -> None:
    counts = dmarc_increments([only(google_mail()), only(microsoft_mail()), only(yahoo_mail())])
    (warning,) = compliance_warnings(counts, 0.9)
    assert warning.reporter == "google.com"
    assert warning.total == 19
    assert warning.ratio == pytest.approx(10 / 19)
    assert warning.failing == ("dkim", "spf")
    assert warning.message == "google.com: 52.6% of 19 mails DMARC-compliant; failing dkim 73.7%, spf 52.6%"
    (only_spf,) = compliance_warnings(counts, 0.7)
    assert only_spf.failing == ("spf",)
    assert compliance_warnings(counts, 0.5) == []



def test_made_up_reporters_cannot_grow_the_series_without_bound() -> None:
    flood = {DmarcKey(f"spam{i}.example", "example.test", "", ""): DmarcCounts(total=1) for i in range(5)}
    known = DmarcKey("google.com", "example.test", "example.test", "example.test")
    totals = add_dmarc({known: DmarcCounts(total=3)}, flood, max_series=3)
    assert totals == {
        known: DmarcCounts(total=3),
        DmarcKey("spam0.example", "example.test", "", ""): DmarcCounts(total=1),
        DmarcKey("spam1.example", "example.test", "", ""): DmarcCounts(total=1),
        DmarcKey(OTHER, OTHER, OTHER, OTHER): DmarcCounts(total=3),
    }
    # Known series keep counting even when the cap is reached.
    assert add_dmarc(totals, {known: DmarcCounts(total=2)}, max_series=3)[known].total == 5
    tls = add_tls({}, {TlsKey(f"r{i}", "example.test", "failure"): 1 for i in range(3)}, max_series=2)
    assert tls == {TlsKey("r0", "example.test", "failure"): 1, TlsKey("r1", "example.test", "failure"): 1,
                   TlsKey(OTHER, OTHER, "failure"): 1}


def test_a_flood_of_report_ids_forgets_the_oldest_first() -> None:
    reports = [only(report_mail(Aggregate("x", f"id{i}", YAHOO.rows).xml(), "r.xml", "text/xml")) for i in range(4)]
    _, seen = deduplicate(reports[:2], {}, now=1.0, window=60.0, max_seen=3)
    fresh, seen = deduplicate(reports[2:], seen, now=2.0, window=60.0, max_seen=3)
    assert len(fresh) == 2
    assert sorted(k.rsplit("\x1f", 1)[1] for k in seen) == ["id1", "id2", "id3"]


def test_counters_survive_the_state_file_as_flat_json_rows() -> None:
    import json

    dmarc = dmarc_increments([only(google_mail()), only(microsoft_mail())])
    rows = json.loads(json.dumps(dmarc_to_json(dmarc)))
    assert rows[0] == {"reporter": "Outlook.com", "from_domain": "example.test", "dkim_domain": "",
                       "spf_domain": "example.test", "total": 1, "compliant": 1, "quarantine": 0, "reject": 0,
                       "spf_aligned": 1, "spf_pass": 1, "dkim_aligned": 0, "dkim_pass": 0}
    assert dmarc_from_json(rows) == dmarc
    tls = tls_increments([t for t in parse_message(tls_mail()) if isinstance(t, TlsReport)])
    assert tls_from_json(json.loads(json.dumps(tls_to_json(tls)))) == tls
    with pytest.raises(ValueError, match="row 0: total must be a whole number >= 0"):
        dmarc_from_json([dict(rows[0], total=-1)])
    with pytest.raises(ValueError, match="row 1: reporter must be a string"):
        dmarc_from_json([rows[0], dict(rows[1], reporter=None)])
    with pytest.raises(ValueError, match="expected a list of objects"):
        tls_from_json({"reporter": "x"})


def test_one_runs_step_counts_new_reports_and_warns_on_compliance() -> None:
    reports = [*parse_message(google_mail()), *parse_message(microsoft_mail()), *parse_message(yahoo_mail()),
               *parse_message(tls_mail()), *parse_message(google_mail())]
    summary = apply_batch(ReportTotals(), reports, unreadable=2, left=5, now=1000.0, min_compliance=0.9)
    assert summary.totals.dmarc == EXPECTED_DMARC
    assert summary.totals.tls == {TlsKey("google.com", "example.test", "success"): 100,
                                  TlsKey("google.com", "example.test", "failure"): 2}
    assert (summary.dmarc_reports, summary.tls_reports, summary.duplicates, summary.totals.invalid) == (3, 1, 1, 2)
    assert verdict(summary) == (Outcome.WARNING, (
        "google.com: 52.6% of 19 mails DMARC-compliant; failing dkim 73.7%, spf 52.6% "
        "(3 DMARC and 1 TLS reports read, 1 duplicate skipped, 2 unreadable mails counted as invalid, "
        "5 left for later runs)"))

    again = apply_batch(summary.totals, reports, unreadable=0, left=0, now=2000.0, min_compliance=0.9)
    assert again.totals.dmarc == EXPECTED_DMARC and again.totals.invalid == 2
    assert verdict(again) == (Outcome.OK, "0 DMARC and 0 TLS reports read, 5 duplicates skipped")
    assert verdict(apply_batch(ReportTotals(), reports[1:3], 0, 0, 0.0, min_compliance=0.9))[0] is Outcome.OK


def test_run_totals_survive_the_state_file() -> None:
    import json

    reports = [*parse_message(google_mail()), *parse_message(tls_mail())]
    totals = apply_batch(ReportTotals(), reports, unreadable=1, left=0, now=1000.0).totals
    assert ReportTotals.from_json(json.loads(json.dumps(totals.to_json()))) == totals
    assert ReportTotals.from_json({}) == ReportTotals()
    for bad, reason in [([], "expected an object"), ({"invalid": -1}, "invalid: expected a whole number >= 0"),
                        ({"seen": {"x": "yesterday"}}, "seen: expected an object of report ids to times"),
                        ({"dmarc": [{"reporter": 1}]}, "dmarc: row 0: reporter must be a string")]:
        with pytest.raises(ValueError, match=f"^{reason}$"):
            ReportTotals.from_json(bad)
