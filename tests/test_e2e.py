"""End to end against a real Postfix + Dovecot: healthy runs and every fault we promise to catch."""

from __future__ import annotations

import datetime as dt
import email
import imaplib
import json
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import (
    PASSWORDS,
    account_toml,
    imap_login,
    monitor_toml,
    route_toml,
    run_cli,
    subjects,
)
from mailstack import MailStack

pytestmark = pytest.mark.mailstack


def run_json(config: Path, *extra: str) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    done = run_cli("run", "-c", str(config), "--format", "json", "--no-state", *extra)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout), done.stderr


def outcomes(report: dict, route: str = "self") -> dict[str, str]:  # type: ignore[type-arg]
    route_report = next(r for r in report["routes"] if r["route"] == route)
    return {name: check["outcome"] for name, check in route_report["checks"].items()}


def message(report: dict, check: str, route: str = "self") -> str:  # type: ignore[type-arg]
    route_report = next(r for r in report["routes"] if r["route"] == route)
    return str(route_report["checks"][check]["message"])


def self_config(stack: MailStack, secrets_dir: Path, **account: object) -> str:
    return (monitor_toml() + account_toml(stack, "self", "monitor", secrets_dir, **account)  # type: ignore[arg-type]
            + route_toml("self", "self", "self"))


def assert_no_password(*texts: str) -> None:
    for text in texts:
        for password in PASSWORDS.values():
            assert password not in text


# --------------------------------------------------------------------------- healthy


def test_healthy_run_checks_everything_and_deletes_the_test_mail(stack, secrets_dir, write_config):
    before = subjects(stack, "monitor")
    code, report, stderr = run_json(write_config(self_config(stack, secrets_dir)))
    assert code == 0, report
    assert outcomes(report) == {"imap_auth": "ok", "smtp_auth": "ok", "send": "ok",
                                "receive": "ok", "cleanup": "ok", "tls": "ok"}
    route = report["routes"][0]
    assert route["folder"] == "INBOX" and route["in_spam"] is False
    assert 0 < route["roundtrip_seconds"] < 20
    # Half the 55 ms poll gap when the machine keeps pace; far below IDLE's or 2 s polling's.
    assert route["roundtrip_uncertainty_seconds"] <= 0.1
    assert route["seen_at"] > route["submitted_at"]
    assert route["delivery_seconds"] is not None and route["delivery_seconds"] >= 0
    assert {c["endpoint"] for c in route["certificates"]} == {
        f"localhost:{stack.imaps_port}", f"localhost:{stack.submission_port}"}
    assert subjects(stack, "monitor") == before  # the test mail is gone again
    assert_no_password(json.dumps(report), stderr)


@pytest.mark.parametrize(
    ("smtp_tls", "smtp_port", "imap_tls", "imap_port"),
    [
        ("implicit", "submissions_port", "starttls", "imap_port"),
        ("none", "plain_port", "none", "imap_port"),
    ],
    ids=["smtps+imap-starttls", "plain-both"],
)
def test_other_tls_modes(stack, secrets_dir, write_config, smtp_tls, smtp_port, imap_tls, imap_port):
    config = write_config(self_config(stack, secrets_dir, smtp_tls=smtp_tls, smtp_port=getattr(stack, smtp_port),
                                      imap_tls=imap_tls, imap_port=getattr(stack, imap_port)))
    code, report, _ = run_json(config)
    assert outcomes(report)["receive"] == "ok"
    if smtp_tls == "none":
        # A password sent in clear is never silent: a warning unless the endpoint allows it.
        assert code == 1, report
        assert outcomes(report)["tls"] == "warning"
        assert "SMTP localhost" in message(report, "tls") and "in clear" in message(report, "tls")
    else:
        assert code == 0, report
        assert outcomes(report)["tls"] == "ok"


def test_starttls_is_required_when_configured(stack, secrets_dir, write_config):
    # The plain port offers no STARTTLS: a "starttls" endpoint must refuse to go on in clear text.
    config = write_config(self_config(stack, secrets_dir, smtp_port=stack.plain_port))
    code, report, _ = run_json(config)
    assert code == 2
    assert outcomes(report)["smtp_auth"] == "failed"
    assert "STARTTLS" in message(report, "smtp_auth")


def test_test_mail_is_a_proper_message(stack, secrets_dir, write_config):
    config = write_config(monitor_toml(delete_test_mail=False)
                          + account_toml(stack, "self", "other", secrets_dir)
                          + route_toml("proper", "self", "self"))
    code, report, _ = run_json(config)
    assert code == 0, report
    client = imap_login(stack, "other")
    try:
        client.select("INBOX")
        _, data = client.search(None, "HEADER", "X-Mail-Monitor-Token", '""')
        ids = data[0].split()
        assert len(ids) == 1
        _, fetched = client.fetch(ids[0], "(BODY.PEEK[])")
        raw = next(part[1] for part in fetched if isinstance(part, tuple))
        mail = email.message_from_bytes(raw)
        token = mail["X-Mail-Monitor-Token"]
        assert mail["Message-ID"] == f"<{token}.mail-monitor@example.test>" and mail["Date"], raw
        assert mail["Subject"].startswith("[mail-monitor] proper ")
        assert mail["Auto-Submitted"] == "auto-generated"
        body = mail.get_payload(decode=True).decode()
        assert "automated test message" in body and len(body) > 50
        client.store(ids[0], "+FLAGS", "\\Deleted")
        client.expunge()
    finally:
        client.logout()


def test_adhoc_flags_without_a_config_file(stack, secrets_dir):
    done = run_cli(
        "run", "--format", "json",
        "--smtp-host", "localhost", "--smtp-port", str(stack.submission_port),
        "--imap-host", "localhost", "--imap-port", str(stack.imaps_port),
        "--username", stack.accounts["monitor"].address,
        "--password-file", str(secrets_dir / "monitor"),
        "--ca-file", str(stack.ca.ca_file), "--receive-timeout", "20s",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["status"] == "OK"


def test_routes_run_concurrently(stack, secrets_dir, write_config):
    config = write_config(
        monitor_toml()
        + account_toml(stack, "a", "monitor", secrets_dir)
        + account_toml(stack, "b", "other", secrets_dir)
        + route_toml("a-to-b", "a", "b") + route_toml("b-to-a", "b", "a") + route_toml("a-to-a", "a", "a")
    )
    code, report, _ = run_json(config)
    assert code == 0, report
    assert [r["route"] for r in report["routes"]] == ["a-to-b", "b-to-a", "a-to-a"]
    starts = [r["submitted_at"] for r in report["routes"]]
    ends = [r["seen_at"] for r in report["routes"]]
    # Concurrent, not one after the other: every route was submitted before any other was seen... roughly.
    assert max(starts) < max(ends) and min(ends) > min(starts)
    assert max(starts) - min(starts) < sum(r["roundtrip_seconds"] for r in report["routes"]) + 0.5


# --------------------------------------------------------------------------- outcomes


def test_mail_in_junk_is_a_warning(stack, secrets_dir, write_config):
    # Dovecot's lmtp_save_to_detail_mailbox files user+Junk@ into Junk, as a spam filter would.
    config = write_config(
        monitor_toml()
        + account_toml(stack, "self", "junkuser", secrets_dir, address="junkuser+Junk@example.test")
        + route_toml("self", "self", "self")
    )
    code, report, _ = run_json(config)
    assert code == 1, report
    assert outcomes(report)["receive"] == "warning"
    assert "Junk" in message(report, "receive")
    assert report["routes"][0]["in_spam"] is True
    assert subjects(stack, "junkuser", "Junk") == []  # cleaned up there too


def test_undelivered_mail_fails_receive(stack, secrets_dir, write_config):
    # Postfix accepts mail for an unknown user; Dovecot's LMTP bounces it: it never arrives.
    config = write_config(
        monitor_toml()
        + account_toml(stack, "self", "monitor", secrets_dir, address="nobody-here@example.test")
        + route_toml("self", "self", "self", receive_timeout="3s")
    )
    code, report, _ = run_json(config)
    assert code == 2
    assert outcomes(report)["receive"] == "failed"
    assert "did not arrive within 3s" in message(report, "receive")
    assert outcomes(report)["cleanup"] == "ok"


def test_a_bounce_fails_receive_at_once_with_its_status_and_is_cleaned_up(stack, secrets_dir, write_config):
    # Mail to an address Dovecot does not know: Postfix bounces it to the sender, whose
    # mailbox is the one being watched. The bounce quotes the probe; it is not its arrival.
    before = subjects(stack, "monitor")
    config = write_config(
        monitor_toml()
        + account_toml(stack, "self", "monitor", secrets_dir)
        + account_toml(stack, "ghost", "monitor", secrets_dir, address="nobody-here@example.test")
        + route_toml("self", "self", "ghost", receive_timeout="20s")
    )
    started = time.monotonic()
    code, report, _ = run_json(config)
    assert code == 2
    assert outcomes(report)["receive"] == "failed"
    assert "bounced for nobody-here@example.test with status 5.1.1" in message(report, "receive")
    assert time.monotonic() - started < 15  # the bounce ended the wait, not receive_timeout
    assert report["routes"][0]["roundtrip_seconds"] is None
    assert outcomes(report)["cleanup"] == "ok" and "deleted 1 bounce(s)" in message(report, "cleanup")
    assert subjects(stack, "monitor") == before  # the bounce is gone, nothing else was touched


def test_slow_delivery_is_a_warning(stack, secrets_dir, write_config):
    config = write_config(monitor_toml() + account_toml(stack, "self", "monitor", secrets_dir)
                          + route_toml("self", "self", "self", slow_after="1ms"))
    code, report, _ = run_json(config)
    assert code == 1
    assert outcomes(report)["receive"] == "warning"
    assert "slow delivery" in message(report, "receive")


def test_certificate_expiring_soon_is_a_warning(stack, secrets_dir, write_config):
    config = write_config(monitor_toml(tls_warn_days=200) + account_toml(stack, "self", "monitor", secrets_dir)
                          + route_toml("self", "self", "self"))
    code, report, _ = run_json(config)
    assert code == 1
    assert outcomes(report)["tls"] == "warning"
    assert "expires within 200 days" in message(report, "tls")


# --------------------------------------------------------------------------- faults


def test_wrong_password_fails_auth_and_skips_the_rest(stack, secrets_dir, write_config):
    config = write_config(self_config(stack, secrets_dir, password="wrong"))
    done = run_cli("run", "-c", str(config), "--no-state")
    assert done.returncode == 2
    code, report, stderr = run_json(config)
    assert code == 2
    assert outcomes(report) == {"imap_auth": "failed", "smtp_auth": "failed", "send": "skipped",
                                "receive": "skipped", "cleanup": "skipped", "tls": "ok"}
    assert "authentication failed" in message(report, "smtp_auth").lower()
    assert "auth" in message(report, "imap_auth").lower()
    assert message(report, "send") == "smtp_auth failed"
    assert "not-the-password" not in done.stdout + done.stderr + json.dumps(report) + stderr


def run_while_stopped(stop: Callable[[], None], start: Callable[[], None],
                      config: Path) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    """One run while a daemon of the shared stack is down; it is back up afterwards."""
    stop()
    try:
        return run_json(config)
    finally:
        start()


def test_dovecot_down(stack, secrets_dir, write_config):
    config = write_config(self_config(stack, secrets_dir))
    code, report, _ = run_while_stopped(stack.stop_dovecot, stack.start_dovecot, config)
    assert code == 2
    checks = outcomes(report)
    assert checks["imap_auth"] == "failed"
    assert "connection refused" in message(report, "imap_auth")
    assert checks["send"] == "skipped" and checks["receive"] == "skipped"


def test_postfix_down(stack, secrets_dir, write_config):
    config = write_config(self_config(stack, secrets_dir))
    code, report, _ = run_while_stopped(stack.stop_postfix, stack.start_postfix, config)
    assert code == 2
    checks = outcomes(report)
    assert checks["smtp_auth"] == "failed" and checks["imap_auth"] == "ok"
    assert "connection refused" in message(report, "smtp_auth")
    assert checks["send"] == "skipped" and checks["receive"] == "skipped"
    assert checks["cleanup"] == "ok"


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


@pytest.mark.parametrize("silent", ["imap", "smtp"])
def test_silent_server_cannot_outlast_the_deadline(stack, secrets_dir, write_config, black_hole, silent):
    account = {"imap_port": black_hole} if silent == "imap" else {"smtp_port": black_hole}
    config = write_config(monitor_toml(deadline="4s") + account_toml(stack, "self", "monitor", secrets_dir,
                                                                     **account)  # type: ignore[arg-type]
                          + route_toml("self", "self", "self"))
    started = time.monotonic()
    code, report, _ = run_json(config)
    elapsed = time.monotonic() - started
    assert code == 2
    assert outcomes(report)[f"{silent}_auth"] == "failed"
    assert "timed out" in message(report, f"{silent}_auth")
    assert report["duration_seconds"] <= 4.0
    assert elapsed < 4.0 + 3.0  # the deadline plus interpreter start-up, never the 30s step timeout


def test_unknown_ca_is_refused(stack, secrets_dir, write_config, tmp_path):
    from mailstack import CertificateAuthority

    stranger = CertificateAuthority(tmp_path / "other-ca", name="some other CA")
    config = write_config(self_config(stack, secrets_dir, ca_file=stranger.ca_file))
    code, report, _ = run_json(config)
    assert code == 2
    checks = outcomes(report)
    assert checks["imap_auth"] == "failed" and checks["smtp_auth"] == "failed"
    assert "certificate verification failed" in message(report, "imap_auth")
    assert "not trusted" in message(report, "imap_auth")
    assert checks["tls"] == "failed"


def test_expired_and_wrong_host_certificates(stack, secrets_dir, write_config):
    config = write_config(self_config(stack, secrets_dir))
    now = dt.datetime.now(dt.UTC)
    expired = stack.ca.issue("expired", valid_from=now - dt.timedelta(days=100),
                             valid_until=now - dt.timedelta(days=1))
    wrong_host = stack.ca.issue("wrong-host", names=("elsewhere.example.org",), ips=())
    try:
        stack.use_certificate(*expired)
        code, report, _ = run_json(config)
        assert code == 2
        assert "expired" in message(report, "imap_auth")
        assert outcomes(report)["tls"] == "failed"

        stack.use_certificate(*wrong_host)
        code, report, _ = run_json(config)
        assert code == 2
        assert "not valid for this host" in message(report, "smtp_auth")
    finally:
        stack.use_certificate(stack.cert, stack.key)
    code, report, _ = run_json(config)
    assert code == 0, report


# --------------------------------------------------------------------------- cleanup safety


def _append(client: imaplib.IMAP4_SSL, folder: str, subject: str, *, token: str | None,
            age: dt.timedelta, flags: str = "", instance: str | None = "mx-cleanup") -> None:
    headers = f"From: someone@example.test\r\nTo: cleanup@example.test\r\nSubject: {subject}\r\n"
    if token is not None:
        headers += f"X-Mail-Monitor-Token: {token}\r\n"
        if instance is not None:
            headers += f"X-Mail-Monitor-Instance: {instance}\r\n"
    raw = (headers + "\r\nbody\r\n").encode()
    when = imaplib.Time2Internaldate(time.time() - age.total_seconds())
    status, _ = client.append(folder, flags, when, raw)
    assert status == "OK"


def _token(n: int) -> str:
    """A token shaped like the monitor's (Unix time, 16 hex digits): the guard checks the shape."""
    return f"1763900000-{n:016x}"


def test_cleanup_deletes_only_stale_monitor_mail(stack, secrets_dir, write_config):
    old, fresh = dt.timedelta(hours=3), dt.timedelta(minutes=1)
    keep = {
        "INBOX": [
            ("Lunch on Friday?", None, old, ""),
            ("[mail-monitor] look-alike without the header", None, old, ""),
            (f"Re: [mail-monitor] self {_token(1)}", _token(1), old, ""),  # header, but no prefix
            (f"[mail-monitor]self {_token(2)}", _token(2), old, ""),  # prefix glued to the route
            (f"[mail-monitor] self {_token(3)}", _token(3), fresh, ""),  # ours, but not stale yet
            ("Deleted by the user, not expunged", None, old, "\\Deleted"),
            # Ours and stale, but older than cleanup_window (7 days): never searched, so kept.
            (f"[mail-monitor] self {_token(4)}", _token(4), dt.timedelta(days=30), ""),
        ],
        "Junk": [("Buy now", None, old, "")],
    }
    stale = {"INBOX": [(f"[mail-monitor] self {_token(5)}", _token(5), old, "")],
             "Junk": [(f"[mail-monitor] self {_token(6)}", _token(6), old, "")]}
    # Another monitor sharing the mailbox: its 3-hour-old probe may still be in flight for
    # it, so it is kept; one two days old is swept (foreign_stale_after: a day here).
    other_fresh = ("INBOX", f"[mail-monitor] self {_token(7)}", _token(7), old, "mx-other")
    other_stale = ("INBOX", f"[mail-monitor] self {_token(8)}", _token(8), dt.timedelta(days=2), "mx-other")
    client = imap_login(stack, "cleanup")
    try:
        for folder in ("INBOX", "Junk"):
            for subject, token, age, flags in keep[folder] + stale[folder]:
                _append(client, folder, subject, token=token, age=age, flags=flags)
        for folder, subject, token, age, instance in (other_fresh, other_stale):
            _append(client, folder, subject, token=token, age=age, instance=instance)
    finally:
        client.logout()
    keep["INBOX"].append((other_fresh[1], other_fresh[2], other_fresh[3], ""))

    config = write_config(monitor_toml(stale_after="1h", instance="mx-cleanup")
                          + account_toml(stack, "self", "cleanup", secrets_dir) + route_toml("self", "self", "self"))
    code, report, _ = run_json(config)
    assert code == 0, report
    assert report["routes"][0]["stale_deleted"] == 3
    for folder in ("INBOX", "Junk"):
        assert sorted(subjects(stack, "cleanup", folder)) == sorted(s for s, *_ in keep[folder])


def test_many_routes_into_one_mailbox_respect_the_servers_connection_limit(tmp_path, write_config):
    # A server that allows 5 sessions per user and address; 8 routes deliver into one mailbox.
    # Outside pytest's own temp tree, which another pytest on the machine may make 0700
    # while Postfix (its own user) still needs to traverse it.
    stack = MailStack(Path(tempfile.mkdtemp(prefix="mailstack-limit-")) / "stack", max_userip_connections=5)
    stack.add_user("monitor", PASSWORDS["monitor"])
    (tmp_path / "monitor").write_text(PASSWORDS["monitor"] + "\n")
    stack.start()
    try:
        routes = "".join(route_toml(f"r{i}", "self", "self") for i in range(8))
        config = write_config(monitor_toml() + account_toml(stack, "self", "monitor", tmp_path) + routes)
        code, report, _ = run_json(config)
        assert code == 0, [r["checks"]["imap_auth"] for r in report["routes"]]
        assert len(report["routes"]) == 8
    finally:
        stack.destroy()
        stack.root.parent.rmdir()
