"""Reports and the queue against the real stack: report mails delivered by Postfix into Dovecot,
read and filed by the mailbox module; Postfix's own queue with mail held and deferred."""

from __future__ import annotations

import json
import secrets
import shutil
import smtplib
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PASSWORDS, account_toml, monitor_toml, route_toml, run_cli
from imapclient import IMAPClient
from mailstack import MailStack
from report_samples import (
    ENTITY_BOMB,
    EXPECTED_DMARC,
    GOOGLE,
    Aggregate,
    Row,
    google_mail,
    gz,
    microsoft_mail,
    report_mail,
    tls_mail,
    yahoo_mail,
    zip_bomb,
)

from mail_monitor.deadline import Deadline
from mail_monitor.postfix_queue import QueueError, QueueThresholds, evaluate, read_queue
from mail_monitor.reports import Limits, ReportTotals, TlsKey, apply_batch, verdict
from mail_monitor.reports.mailbox import file_batch, read_batch, subfolder
from mail_monitor.results import Outcome

pytestmark = pytest.mark.mailstack

USER = "other"


def submit(stack: MailStack, raw: bytes, recipient: str) -> None:
    """Deliver through the stack's Postfix, as a receiver's report mail arrives."""
    context = ssl.create_default_context(cafile=str(stack.ca.ca_file))
    with smtplib.SMTP("localhost", stack.submission_port, timeout=30) as smtp:
        smtp.starttls(context=context)
        smtp.login(stack.accounts[USER].address, PASSWORDS[USER])
        smtp.sendmail(stack.accounts[USER].address, [recipient], raw)


def connect(stack: MailStack) -> IMAPClient:
    context = ssl.create_default_context(cafile=str(stack.ca.ca_file))
    client = IMAPClient("localhost", port=stack.imaps_port, ssl=True, ssl_context=context, timeout=30)
    client.login(stack.accounts[USER].address, PASSWORDS[USER])
    return client


def wait_for_messages(client: IMAPClient, folder: str, count: int, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while True:
        have = int(client.folder_status(folder, [b"MESSAGES"])[b"MESSAGES"]) if client.folder_exists(folder) else 0
        if have >= count:
            return
        if time.monotonic() > end:
            raise AssertionError(f"{have} of {count} report mails arrived in {folder} within {timeout}s")
        time.sleep(0.2)


def test_report_mails_are_read_counted_once_and_filed(stack: MailStack) -> None:
    folder = f"DMARC{secrets.token_hex(3)}"
    recipient = f"{USER}+{folder}@example.test"  # Dovecot files +detail mail into that folder
    big = Aggregate("bigcorp.example", "big-1", tuple(Row(f"192.0.2.{i % 250 + 1}", 1) for i in range(1500)))
    good = [google_mail(), microsoft_mail(), yahoo_mail(), tls_mail(),
            google_mail()]  # the same report again, in a mail of its own (new Message-ID)
    bad = {
        "truncated gzip data": report_mail(gz(big.xml())[:400], "r.xml.gz", "application/gzip"),
        "compression ratio over 100:1 (a zip bomb?)": report_mail(zip_bomb(7), "bomb.zip", "application/zip"),
        "XML refused: contains a DTD": report_mail(ENTITY_BOMB, "r.xml", "text/xml"),
        "no report attachment (expected XML, JSON, .gz or .zip)": report_mail(GOOGLE.xml(), "r.png", "image/png"),
        "byte limit (not fetched)": report_mail(big.xml(), "big.xml", "text/xml"),
    }
    for raw in good + list(bad.values()):
        submit(stack, raw, recipient)

    client = connect(stack)
    try:
        wait_for_messages(client, folder, len(good) + len(bad))
        done = subfolder(client, folder, "done", Deadline(30))
        error = subfolder(client, folder, "error", Deadline(30))
        totals = ReportTotals()
        unreadable: list[str] = []
        verdicts = []
        batches = 0
        while True:  # one iteration = what one run does
            deadline = Deadline(60)
            # 200 KB: the "big" report (~500 KB) stands for a mail over the size bound.
            batch = read_batch(client, folder, deadline, batch_size=4, limits=Limits(max_message_bytes=200_000))
            summary = apply_batch(totals, batch.reports, len(batch.unreadable), batch.left, time.time(),
                                  min_compliance=0.9)
            totals = summary.totals  # the engine saves this in the state before filing the batch
            file_batch(client, batch, done, error, deadline)
            batches += 1
            unreadable += [m.reason for m in batch.unreadable]
            verdicts.append(verdict(summary))
            if batch.left == 0:
                break
            assert batches < 10
        assert batches == 3  # 10 mails, 4 per run
        assert totals.dmarc == EXPECTED_DMARC  # the duplicate counted once
        assert totals.tls == {TlsKey("google.com", "example.test", "success"): 100,
                              TlsKey("google.com", "example.test", "failure"): 2}
        assert totals.invalid == len(bad) == len(unreadable)
        for expected in bad:
            assert sum(reason.endswith(expected) for reason in unreadable) == 1, (expected, unreadable)
        # Google's report (52.6% compliant) is counted in one run, and that run alone warns, naming it.
        warnings = [text for outcome, text in verdicts if outcome is Outcome.WARNING]
        assert len(warnings) == 1 and warnings[0].startswith("google.com: 52.6% of 19 mails DMARC-compliant")

        assert client.folder_status(folder, [b"MESSAGES"])[b"MESSAGES"] == 0
        assert client.folder_status(done, [b"MESSAGES"])[b"MESSAGES"] == len(good)
        assert client.folder_status(error, [b"MESSAGES"])[b"MESSAGES"] == len(bad)
        # What landed in the error folder is the hostile mail itself, untouched, for a human to look at.
        client.select_folder(error, readonly=True)
        types = [bytes(v[b"BODY[HEADER.FIELDS (CONTENT-TYPE)]"]) for v in client.fetch(
            client.search(["ALL"]), ["BODY.PEEK[HEADER.FIELDS (CONTENT-TYPE)]"]).values()]
        assert len(types) == len(bad) and all(b"multipart/mixed" in t for t in types)
        assert read_batch(client, folder, Deadline(30)).left == 0
    finally:
        client.logout()


# -- the Postfix queue ------------------------------------------------------------------


class DeferringRelay:
    """A loopback SMTP server that answers every RCPT with 451: Postfix must defer the mail."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.sessions = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.sessions += 1
            with conn, conn.makefile("rwb") as stream:
                conn.settimeout(10)
                stream.write(b"220 defer.test ESMTP deferring relay\r\n")
                stream.flush()
                for line in stream:
                    verb = line[:4].upper()
                    if verb in (b"EHLO", b"HELO"):
                        reply = b"250 defer.test"
                    elif verb == b"RCPT":
                        reply = b"451 4.7.1 greylisted, try again later"
                    elif verb == b"QUIT":
                        stream.write(b"221 bye\r\n")
                        stream.flush()
                        break
                    else:
                        reply = b"250 ok"
                    stream.write(reply + b"\r\n")
                    stream.flush()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def relay(stack: MailStack) -> Iterator[DeferringRelay]:
    server = DeferringRelay()
    stack.route_domain(f"defer{server.port}.test", f"smtp:[127.0.0.1]:{server.port}")
    try:
        yield server
    finally:
        server.close()


def queue_entries(stack: MailStack) -> list[dict]:
    """The queue as postqueue lists it, read independently of the module under test."""
    done = subprocess.run(["postqueue", "-c", str(stack.root / "postfix"), "-j"], capture_output=True,
                          timeout=30, check=True)
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def unprivileged_postqueue(directory: Path, group: str) -> str:
    """postqueue run as nobody with only ``group`` and no_new_privs, like a hardened systemd service."""
    script = directory / f"postqueue-as-{group}"
    script.write_text("#!/bin/sh\n"
                      f"exec setpriv --reuid=nobody --regid=nogroup --groups={group} --no-new-privs "
                      f"{shutil.which('postqueue') or '/usr/sbin/postqueue'} \"$@\"\n")
    script.chmod(0o755)
    return str(script)


def test_queue_depth_and_oldest_deferred_from_the_real_postfix(stack: MailStack, relay: DeferringRelay,
                                                               tmp_path: Path) -> None:
    config = str(stack.root / "postfix")
    before = read_queue(config)
    recipient = f"someone@defer{relay.port}.test"
    for n in range(2):
        submit(stack, f"Subject: queue test {n}\r\n\r\nhello\r\n".encode(), recipient)
    end = time.monotonic() + 60
    while True:
        ours = [e for e in queue_entries(stack)
                if any(r["address"] == recipient for r in e.get("recipients", []))]
        if len(ours) == 2 and all(e["queue_name"] == "deferred" for e in ours):
            break
        assert time.monotonic() < end, ours
        time.sleep(0.2)
    try:
        assert relay.sessions >= 1  # Postfix really tried, and was told 451
        assert "451 4.7.1 greylisted" in ours[0]["recipients"][0]["delay_reason"]
        subprocess.run(["postsuper", "-c", config, "-h", ours[0]["queue_id"]], check=True, capture_output=True,
                       timeout=30)
        snapshot = read_queue(config)
        assert snapshot.depth["hold"] == before.depth["hold"] + 1
        assert snapshot.depth["deferred"] == before.depth["deferred"] + 1
        assert snapshot.oldest_deferred_seconds is not None
        assert snapshot.oldest_deferred_seconds >= 0
        since_submit = time.time() - min(e["arrival_time"] for e in ours)
        assert snapshot.oldest_deferred_seconds >= since_submit - 2

        # As the NixOS service runs it: an unprivileged user, no_new_privs (so postqueue's set-gid
        # bit does nothing), and postdrop as a supplementary group.
        as_service = read_queue(config, postqueue=unprivileged_postqueue(tmp_path, "postdrop"))
        assert as_service.depth == snapshot.depth
        with pytest.raises(QueueError, match=r"^postqueue: fatal: Connect to the Postfix showq service: "
                                             r"Permission denied$"):
            read_queue(config, postqueue=unprivileged_postqueue(tmp_path, "nogroup"))

        outcome, message = evaluate(snapshot, QueueThresholds(warn_deferred=snapshot.depth["deferred"]))
        assert outcome is Outcome.WARNING and "deferred (warning at" in message
        outcome, _ = evaluate(snapshot, QueueThresholds(crit_deferred=snapshot.depth["deferred"]))
        assert outcome is Outcome.FAILED
        outcome, message = evaluate(snapshot, QueueThresholds(warn_deferred=snapshot.depth["deferred"] + 1))
        assert outcome is Outcome.OK and f"{snapshot.depth['hold']} hold" in message
    finally:
        for entry in ours:
            subprocess.run(["postsuper", "-c", config, "-d", entry["queue_id"]], capture_output=True, timeout=30)
    after = read_queue(config)
    assert after.depth["hold"] == before.depth["hold"]
    assert after.depth["deferred"] == before.depth["deferred"]


def test_a_postfix_that_is_not_running_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "queue").mkdir()
    (tmp_path / "main.cf").write_text(f"compatibility_level = 3.6\nqueue_directory = {tmp_path / 'queue'}\n")
    with pytest.raises(QueueError, match=r"^postqueue: fatal: "):
        read_queue(str(tmp_path), timeout=30)


# -- through the real command: the engine, the state, the textfile --------------------


def host_config(stack: MailStack, secrets_dir: Path, tmp_path: Path, extra: str) -> Path:
    text = (monitor_toml(state_file=tmp_path / "state.json", deadline="90s")
            + account_toml(stack, "self", "monitor", secrets_dir)
            + account_toml(stack, "reports", USER, secrets_dir)
            + route_toml("self", "self", "self")
            + f'[metrics]\ntextfile = "{tmp_path / "mail_monitor.prom"}"\n\n' + extra)
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def cli_run(config: Path) -> dict:  # type: ignore[type-arg]
    done = run_cli("run", "-c", str(config), "--format", "json", "--no-notify")
    assert done.stdout, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def host(report: dict) -> dict:  # type: ignore[type-arg]
    return next(s for s in report["subjects"] if s["subject"] == "host")  # type: ignore[no-any-return]


def metric_lines(path: Path, prefix: str) -> list[str]:
    return sorted(line for line in path.read_text().splitlines() if line.startswith(prefix))


def test_reports_through_the_cli_count_once_and_are_filed_on_the_next_run(
        stack: MailStack, secrets_dir: Path, tmp_path: Path) -> None:
    folder = f"DMARC{secrets.token_hex(3)}"
    recipient = f"{USER}+{folder}@example.test"
    good = [google_mail(), microsoft_mail(), yahoo_mail(), tls_mail(), google_mail()]  # the last one: a duplicate
    bad = [report_mail(zip_bomb(7), "bomb.zip", "application/zip"),
           report_mail(gz(GOOGLE.xml())[:200], "r.xml.gz", "application/gzip")]
    for raw in good + bad:
        submit(stack, raw, recipient)
    client = connect(stack)
    try:
        wait_for_messages(client, folder, len(good) + len(bad))
        done, error = (subfolder(client, folder, name, Deadline(30)) for name in ("done", "error"))
    finally:
        client.logout()
    config = host_config(stack, secrets_dir, tmp_path,
                         f'[reports]\naccount = "reports"\nfolder = "{folder}"\ndone_folder = "{done}"\n'
                         f'error_folder = "{error}"\ninterval = "0"\nmin_compliance = 0.9\n')
    textfile = tmp_path / "mail_monitor.prom"

    first = host(cli_run(config))["checks"]["reports"]
    assert first["outcome"] == "warning", first
    assert first["message"].startswith("google.com: 52.6% of 19 mails DMARC-compliant; failing dkim 73.7%")
    assert "(3 DMARC and 1 TLS reports read, 1 duplicate skipped, 2 unreadable mails counted" in first["message"]
    counters = metric_lines(textfile, "mail_monitor_dmarc_total{")
    expected = sorted(
        f'mail_monitor_dmarc_total{{dkim_domain="{key.dkim_domain}",from_domain="{key.from_domain}",'
        f'reporter="{key.reporter}",spf_domain="{key.spf_domain}"}} {float(counts.total)}'
        for key, counts in EXPECTED_DMARC.items())
    assert counters == expected
    assert metric_lines(textfile, "mail_monitor_reports_invalid_total") == ["mail_monitor_reports_invalid_total 2.0"]
    assert 'mail_monitor_tlsrpt_sessions_total{policy_domain="example.test",reporter="google.com",' \
           'result="success"} 100.0' in textfile.read_text()
    client = connect(stack)
    try:
        assert client.folder_status(folder, [b"MESSAGES"])[b"MESSAGES"] == len(good) + len(bad)  # not yet moved
    finally:
        client.logout()

    second = host(cli_run(config))["checks"]["reports"]
    assert second["outcome"] == "ok", second
    assert second["message"] == "0 DMARC and 0 TLS reports read; 7 mails counted earlier filed away"
    assert metric_lines(textfile, "mail_monitor_dmarc_total{") == expected  # nothing counted twice
    assert metric_lines(textfile, "mail_monitor_reports_invalid_total") == ["mail_monitor_reports_invalid_total 2.0"]
    client = connect(stack)
    try:
        assert client.folder_status(folder, [b"MESSAGES"])[b"MESSAGES"] == 0
        assert client.folder_status(done, [b"MESSAGES"])[b"MESSAGES"] == len(good)
        assert client.folder_status(error, [b"MESSAGES"])[b"MESSAGES"] == len(bad)
    finally:
        client.logout()
    status = run_cli("status", "-c", str(config))
    assert "reports: 32 mails in DMARC reports from 3 reporter(s) (71.9% compliant); 102 TLS sessions; " \
           "2 unreadable report mail(s)" in status.stdout, status.stdout


def test_queue_check_through_the_cli_with_held_and_deferred_mail(
        stack: MailStack, relay: DeferringRelay, secrets_dir: Path, tmp_path: Path) -> None:
    postfix = str(stack.root / "postfix")
    recipient = f"someone@defer{relay.port}.test"
    for n in range(2):
        submit(stack, f"Subject: queue cli {n}\r\n\r\nhello\r\n".encode(), recipient)
    end = time.monotonic() + 60
    while True:
        ours = [e for e in queue_entries(stack) if any(r["address"] == recipient for r in e.get("recipients", []))]
        if len(ours) == 2 and all(e["queue_name"] == "deferred" for e in ours):
            break
        assert time.monotonic() < end, ours
        time.sleep(0.2)
    try:
        subprocess.run(["postsuper", "-c", postfix, "-h", ours[0]["queue_id"]], check=True, capture_output=True,
                       timeout=30)
        listed = queue_entries(stack)
        deferred = sum(e["queue_name"] == "deferred" for e in listed)
        held = sum(e["queue_name"] == "hold" for e in listed)
        config = host_config(stack, secrets_dir, tmp_path,
                             f'[postfix_queue]\nenable = true\nconfig_directory = "{postfix}"\n'
                             f'postqueue = "{unprivileged_postqueue(tmp_path, "postdrop")}"\n'
                             f"warn_deferred = {deferred}\ncrit_deferred = {deferred + 5}\n")
        report = cli_run(config)
        check = host(report)["checks"]["postfix_queue"]
        assert check["outcome"] == "warning", check
        assert check["message"].startswith(f"{deferred} deferred (warning at {deferred})")
        assert host(report)["postfix_queue"]["messages"]["hold"] == held >= 1
        textfile = tmp_path / "mail_monitor.prom"
        assert f'mail_monitor_postfix_queue_messages{{queue="deferred"}} {float(deferred)}' in textfile.read_text()
        assert f'mail_monitor_postfix_queue_messages{{queue="hold"}} {float(held)}' in textfile.read_text()
        oldest = metric_lines(textfile, "mail_monitor_postfix_oldest_deferred_seconds ")
        assert len(oldest) == 1 and float(oldest[0].split()[1]) >= 0
        assert 'mail_monitor_host_check_warning{check="postfix_queue"} 1.0' in textfile.read_text()
    finally:
        for item in ours:
            subprocess.run(["postsuper", "-c", postfix, "-d", item["queue_id"]], capture_output=True, timeout=30)
