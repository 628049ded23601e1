"""Put one run together: every route concurrently, each check timed, all under one deadline."""

from __future__ import annotations

import copy
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage

from mail_monitor.config import Config, Route
from mail_monitor.deadline import Deadline
from mail_monitor.probes.imap import ImapLoginError, ImapSession, Sighting
from mail_monitor.probes.smtp import SmtpSession, build_message
from mail_monitor.probes.tls import describe_error, is_certificate_error
from mail_monitor.results import CheckResult, Outcome, RouteResult, RunResult

log = logging.getLogger(__name__)

MAX_CONNECTING = 8  # handshakes in flight at once, so many routes do not storm the server
# Open IMAP sessions per recipient login at once. Dovecot allows 10 per user and client
# address by default (mail_max_userip_connections), and the user's own clients count too:
# many routes into one mailbox must queue rather than be refused and cry wolf.
MAX_SESSIONS_PER_MAILBOX = 4
OUTPUT_RESERVE = 10.0  # seconds of the deadline kept for state, alerts and metrics
CLEANUP_RESERVE = 3.0  # seconds of the route's share kept for cleanup after the wait


class CheckFailed(Exception):
    """A check found a problem; the message is already phrased for the user."""


class _AllSent:
    """Starts ``action`` in a background thread once every route has sent its mail or given up.

    Until then the CPU is on the critical path (TLS handshakes, logins, the send): work
    done beside it delays every route's send, because the threads share one interpreter
    lock. The wait for delivery that follows is idle time.
    """

    def __init__(self, routes: int, action: Callable[[], None] | None) -> None:
        self._left = routes
        self._action = action
        self._lock = threading.Lock()

    def arrive(self) -> None:
        with self._lock:
            self._left -= 1
            if self._left != 0 or self._action is None:
                return
        threading.Thread(target=self._action, name="while-waiting", daemon=True).start()


def new_token() -> str:
    return f"{int(time.time())}-{secrets.token_hex(8)}"


@dataclass
class _RouteRun:
    """The checks of one route, in dependency order."""

    route: Route
    config: Config
    deadline: Deadline
    connecting: threading.Semaphore
    all_sent: _AllSent
    result: RouteResult = field(init=False)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _past_sending: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.result = RouteResult(self.route.name)

    def past_sending(self) -> None:
        """This route has sent its mail, or never will: count it once."""
        if not self._past_sending:
            self._past_sending = True
            self.all_sent.arrive()

    def record(self, check: CheckResult) -> CheckResult:
        with self.lock:
            self.result.checks[check.name] = check
        return check

    def skip(self, name: str, reason: str) -> CheckResult:
        return self.record(CheckResult(name, Outcome.SKIPPED, message=reason))

    def timed(self, name: str, step: Callable[[], str | None]) -> tuple[CheckResult, BaseException | None]:
        started = time.monotonic()
        try:
            message = step() or ""
        except Exception as exc:  # noqa: BLE001 - every failure becomes a reported check
            elapsed = time.monotonic() - started
            own = isinstance(exc, (CheckFailed, ImapLoginError))
            text = str(exc) if own else describe_error(exc, elapsed)
            check = CheckResult(name, Outcome.FAILED, elapsed, text)
            return self.record(check), exc
        return self.record(CheckResult(name, Outcome.OK, time.monotonic() - started, message)), None

    # -- the sequence -------------------------------------------------------------

    def run(self) -> None:
        route, monitor = self.route, self.config.monitor
        imap_box: dict[str, ImapSession] = {}
        imap_error: list[BaseException | None] = [None]

        def open_imap() -> None:
            endpoint = route.recipient.imap
            assert endpoint is not None

            def step() -> None:
                with self.connecting:
                    session = ImapSession(endpoint, self.deadline)
                    imap_box["session"] = session
                    session.login(route.recipient.username, route.recipient.require_password())
                session.prepare(endpoint.extra_folders)

            _, imap_error[0] = self.timed("imap_auth", step)

        # The IMAP login overlaps the SMTP handshake: both are mostly waiting on the network.
        imap_thread = threading.Thread(target=open_imap, name=f"imap-{route.name}", daemon=True)
        imap_thread.start()
        smtp_box: dict[str, SmtpSession] = {}

        def open_smtp() -> None:
            endpoint = route.sender.smtp
            assert endpoint is not None
            with self.connecting:
                session = SmtpSession(endpoint, self.deadline, monitor.instance)
                smtp_box["session"] = session
                session.login(route.sender.username, route.sender.require_password())

        _, smtp_error = self.timed("smtp_auth", open_smtp)
        # Compose the test mail while the IMAP login may still be under way (~4 ms of CPU).
        token = new_token()
        message = build_message(
            sender=route.sender.address, recipient=route.recipient.address,
            subject_prefix=monitor.subject_prefix, route=route.name, token=token,
            instance=monitor.instance,
        )
        imap_thread.join()
        imap = imap_box.get("session") if imap_error[0] is None else None
        smtp = smtp_box.get("session")
        try:
            sighting = self._send_and_receive(smtp if smtp_error is None else None, imap, token, message)
            if smtp is not None:
                smtp.close()
                smtp = None
            self._cleanup(imap, sighting)
        finally:
            self.past_sending()
            if smtp is not None:
                smtp.close()
            for session in imap_box.values():
                session.close()
        self._tls(imap_box.get("session"), imap_error[0], smtp_box.get("session"), smtp_error)

    def _send_and_receive(self, smtp: SmtpSession | None, imap: ImapSession | None,
                          token: str, message: EmailMessage) -> Sighting | None:
        route = self.route
        if smtp is None or imap is None:
            self.past_sending()
        if smtp is None:
            self.skip("send", "smtp_auth failed")
            self.skip("receive", "smtp_auth failed, nothing was sent")
            return None
        if imap is None:
            self.skip("send", "imap_auth failed, nobody could see the test mail")
            self.skip("receive", "imap_auth failed")
            return None
        sent_at: list[float] = []

        def send() -> str:
            sent_at.append(smtp.send(message, route.sender.address, route.recipient.address))
            self.result.submitted_at = time.time() - (time.monotonic() - sent_at[0])
            return f"submitted as {message['Message-ID']}"

        _, error = self.timed("send", send)
        self.past_sending()
        if error is not None:
            self.skip("receive", "send failed")
            return None
        sent = sent_at[0]
        # Keep a little of the run for cleanup; the wait never eats into it.
        wait_limit = min(route.receive_timeout, self.deadline.remaining() - CLEANUP_RESERVE)
        sightings: list[Sighting | None] = []

        def receive() -> str:
            sightings.append(imap.wait_for(token, sent, max(0.0, wait_limit - (time.monotonic() - sent))))
            found = sightings[0]
            if found is None:
                where = ", ".join(imap.folders)
                limit = "the run deadline" if wait_limit < route.receive_timeout else "receive_timeout"
                raise CheckFailed(f"test mail did not arrive within {wait_limit:.0f}s "
                                  f"({limit}); looked in {where}")
            return f"found in {found.folder}"

        check, _ = self.timed("receive", receive)
        found = sightings[0] if sightings else None
        if found is None:
            return None
        self._record_sighting(check, found, sent)
        try:
            self.result.delivery = imap.delivery_seconds(found.folder, found.uid)
        except Exception as exc:  # noqa: BLE001 - the header read is a bonus, not a check
            log.debug("route %s: could not read Received headers: %s", route.name, exc)
        return found

    def _record_sighting(self, check: CheckResult, found: Sighting, sent: float) -> None:
        route = self.route
        roundtrip = max(0.0, found.seen - sent)
        check.duration = roundtrip
        with self.lock:
            result = self.result
            result.roundtrip = roundtrip
            result.roundtrip_uncertainty = found.uncertainty
            result.seen_at = (result.submitted_at or 0.0) + roundtrip
            result.folder = found.folder
            result.imap_commands = found.commands
            result.imap_wait_seconds = found.waited
            result.in_spam = found.folder != "INBOX"
        if result.in_spam:
            check.outcome = Outcome.WARNING
            check.message = f"landed in {found.folder} (spam), not INBOX, after {roundtrip:.2f}s"
        elif roundtrip > route.slow_after:
            check.outcome = Outcome.WARNING
            check.message = (f"slow delivery: {roundtrip:.2f}s "
                             f"(slow_after is {route.slow_after:g}s)")
        else:
            check.message = f"found in INBOX after {roundtrip:.3f}s"

    def _cleanup(self, imap: ImapSession | None, found: Sighting | None) -> None:
        monitor = self.config.monitor
        if imap is None:
            self.skip("cleanup", "imap_auth failed")
            return

        def cleanup() -> str:
            deleted = 0
            if found is not None and monitor.delete_test_mail:
                deleted = imap.delete_own(found.folder, [found.uid], monitor.subject_prefix)
                if deleted == 0:
                    raise CheckFailed("the test mail was found but could not be verified for deletion")
            stale = 0
            for folder in imap.folders:
                uids = imap.find_stale(folder, monitor.subject_prefix, monitor.stale_after,
                                       monitor.cleanup_window)
                stale += imap.delete_own(folder, uids, monitor.subject_prefix)
            self.result.stale_deleted = stale
            parts = []
            if found is not None:
                parts.append("deleted the test mail" if deleted else "kept the test mail (delete_test_mail = false)")
            parts.append(f"{stale} stale monitor mail(s) deleted")
            return ", ".join(parts)

        check, _ = self.timed("cleanup", cleanup)
        if check.outcome is Outcome.FAILED:
            # Mail works; a mailbox that slowly fills with test mails is worth a warning, not a page.
            check.outcome = Outcome.WARNING

    def _tls(self, imap: ImapSession | None, imap_error: BaseException | None,
             smtp: SmtpSession | None, smtp_error: BaseException | None) -> None:
        route, monitor = self.route, self.config.monitor
        endpoints = [("IMAP", route.recipient.imap, imap, imap_error),
                     ("SMTP", route.sender.smtp, smtp, smtp_error)]
        problems: list[str] = []
        warnings: list[str] = []
        notes: list[str] = []
        for kind, endpoint, session, error in endpoints:
            assert endpoint is not None
            if endpoint.tls == "none":
                notes.append(f"{kind} {endpoint.label}: no TLS configured")
                continue
            if error is not None and is_certificate_error(error):
                problems.append(f"{kind} {endpoint.label}: {describe_error(error)}")
                continue
            certificate = session.certificate if session is not None else None
            if certificate is None:
                notes.append(f"{kind} {endpoint.label}: no TLS session")
                continue
            self.result.certificates.append(certificate)
            days = (certificate.not_after - time.time()) / 86400
            text = f"{kind} {endpoint.label}: certificate valid for {days:.0f} more days"
            (warnings if days < monitor.tls_warn_days else notes).append(text)
        if problems:
            self.record(CheckResult("tls", Outcome.FAILED, message="; ".join(problems)))
        elif warnings:
            self.record(CheckResult("tls", Outcome.WARNING,
                                    message=f"expires within {monitor.tls_warn_days:g} days: " + "; ".join(warnings)))
        elif self.result.certificates:
            self.record(CheckResult("tls", Outcome.OK, message="; ".join(notes)))
        else:
            self.skip("tls", "; ".join(notes))


ORDER = ("imap_auth", "smtp_auth", "send", "receive", "cleanup", "tls")


def _mailbox(route: Route) -> tuple[str, int, str]:
    """Which mailbox a route's IMAP session goes into: server and login."""
    endpoint = route.recipient.imap
    assert endpoint is not None
    return (endpoint.host, endpoint.port, route.recipient.username)


def _abandon(result: RouteResult, deadline: float) -> None:
    """The checks a hung route never finished: the one(s) in progress failed, the rest skipped."""
    in_progress_failed = False
    for name in ORDER:
        if name in result.checks:
            continue
        if name in ("imap_auth", "smtp_auth") or not in_progress_failed:
            result.checks[name] = CheckResult(
                name, Outcome.FAILED, message=f"did not finish before the run deadline ({deadline:g}s)")
            in_progress_failed = True
        else:
            result.checks[name] = CheckResult(name, Outcome.SKIPPED, message="run deadline reached first")


def run_checks(config: Config, deadline: Deadline | None = None,
               while_waiting: Callable[[], None] | None = None) -> RunResult:
    """One pass over every route. Returns by the deadline even if a server hangs.

    ``while_waiting`` runs in a background thread once every route has sent its test
    mail (or failed before): the moment the run has CPU to spare.
    """
    monitor = config.monitor
    started_wall = time.time()
    overall = deadline or Deadline(monitor.deadline, monitor.timeout)
    reserve = min(OUTPUT_RESERVE, overall.seconds * 0.1)
    checks_deadline = overall.sub(overall.remaining() - reserve)
    connecting = threading.Semaphore(MAX_CONNECTING)
    slots = threading.Semaphore(monitor.max_parallel)
    mailboxes: dict[tuple[str, int, str], threading.Semaphore] = {}
    gates = [mailboxes.setdefault(_mailbox(r), threading.Semaphore(MAX_SESSIONS_PER_MAILBOX))
             for r in config.routes]
    all_sent = _AllSent(len(config.routes), while_waiting)
    runs = [_RouteRun(r, config, checks_deadline, connecting, all_sent) for r in config.routes]

    def work(route_run: _RouteRun, mailbox: threading.Semaphore) -> None:
        with slots, mailbox:
            try:
                route_run.run()
            except Exception as exc:
                log.exception("route %s: unexpected error", route_run.route.name)
                route_run.record(CheckResult("receive", Outcome.FAILED, message=f"internal error: {exc!r}"))

    threads = [threading.Thread(target=work, args=(r, gate), name=f"route-{r.route.name}", daemon=True)
               for r, gate in zip(runs, gates, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, checks_deadline.remaining() + 0.5))

    results = []
    for route_run, thread in zip(runs, threads, strict=True):
        result = route_run.result
        if thread.is_alive():
            # A snapshot: the abandoned thread may still write into its own copy.
            with route_run.lock:
                result = copy.deepcopy(route_run.result)
            log.warning("route %s: still running at the deadline, abandoned", route_run.route.name)
            _abandon(result, monitor.deadline)
        result.checks = {name: result.checks[name] for name in ORDER if name in result.checks}
        results.append(result)
    return RunResult(
        started_at=started_wall,
        duration=time.monotonic() - overall.start,
        routes=results,
        instance=monitor.instance,
    )
