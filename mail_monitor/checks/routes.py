"""The route checks: log in, send the test mail, watch for it, clean up, judge TLS.

Each check is a step on the engine; what one needs of another is declared, so the
skips ("smtp_auth failed") and the deadline handling come from the engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Protocol, TypeVar, runtime_checkable

from mail_monitor.config import Account, Config, Endpoint, ImapEndpoint, Route, Secret, SecretError, oauth2_token
from mail_monitor.config.secrets import TOKEN_COMMAND_TIMEOUT
from mail_monitor.deadline import Deadline
from mail_monitor.engine import CheckFailed, Finding, Gate, Step, StepContext, StepId
from mail_monitor.probes.imap import Arrived, Bounced, ImapLoginError, ImapSession, Sighting
from mail_monitor.probes.smtp import SmtpSession
from mail_monitor.probes.tls import describe_error, is_tls_failure
from mail_monitor.results import (
    Arrival,
    Certificate,
    CleanupReport,
    Collection,
    Handshake,
    History,
    Outcome,
    PendingProbe,
    Subject,
    Submission,
    TlsReport,
)
from mail_monitor.testmail import Bounce, build_message, foreign_stale_after, new_token

MAX_CONNECTING = 8  # handshakes in flight at once, so many routes do not storm the server
# Open IMAP sessions per recipient login at once. Dovecot allows 10 per user and client
# address by default (mail_max_userip_connections), and the user's own clients count too:
# many routes into one mailbox must queue rather than be refused and cry wolf.
MAX_SESSIONS_PER_MAILBOX = 4
CLEANUP_RESERVE = 3.0  # seconds of the run kept for cleanup after the wait
CONNECTING = Gate("connecting", MAX_CONNECTING)
MAX_PROBE_BYTES = 256 * 1024  # of the received probe read for its verdicts; ours is a few KiB


@dataclass(frozen=True)
class Sent:
    """What ``send`` hands to ``receive``: the token to look for and when it left."""

    token: str
    started: float  # monotonic start of the submission
    submitted_at: float  # the same moment in Unix time


@runtime_checkable
class Mailbox(Protocol):
    """What the route checks use of an IMAP session (:class:`ImapSession`)."""

    certificate: Certificate | None

    def login(self, username: str, password: Secret) -> None: ...
    def login_oauth2(self, username: str, token: Secret) -> None: ...
    def prepare(self, extra_folders: Sequence[str]) -> tuple[str, ...]: ...
    def wait_for(self, token: str, sent: float, timeout: float) -> Sighting | None: ...
    def wait_for_probe_or_bounce(self, token: str, sent: float, timeout: float, *, prefix: str,
                                 instance: str | None = None) -> Sighting | Bounced | None: ...
    def find_bounce(self, token: str, prefix: str, *, instance: str | None = None,
                    folder: str = "INBOX", window: float = 86400.0) -> tuple[int, Bounce] | None: ...
    def delete_bounce(self, uid: int, token: str, prefix: str, *, instance: str | None = None,
                      folder: str = "INBOX") -> bool: ...
    def delivery_seconds(self, folder: str, uid: int) -> float | None: ...
    def delete_own(self, folder: str, uids: Iterable[int], prefix: str, token: str | None = None) -> int: ...
    def find_stale(self, folder: str, prefix: str, older_than: float, window: float, *,
                   instance: str | None = None, foreign_older_than: float | None = None) -> list[int]: ...
    def find_tokens(self, tokens: Iterable[str], prefix: str, since: float) -> dict[str, Arrived]: ...
    def fetch_message(self, folder: str, uid: int, limit: int) -> bytes: ...
    @property
    def folders(self) -> list[str]: ...
    def close(self) -> None: ...


@runtime_checkable
class Submitter(Protocol):
    """What the route checks use of an SMTP session (:class:`SmtpSession`)."""

    certificate: Certificate | None

    def login(self, username: str, password: Secret) -> None: ...
    def login_oauth2(self, username: str, token: Secret) -> None: ...
    def send(self, message: EmailMessage, sender: str, recipient: str) -> float: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Sessions:
    """How the route checks open sessions: the seam where the fast tests put fakes."""

    imap: Callable[[ImapEndpoint, Deadline], Mailbox] = ImapSession
    smtp: Callable[[Endpoint, Deadline, str], Submitter] = SmtpSession


def route_steps(config: Config, history: History, sessions: Sessions = Sessions()) -> Iterator[Step]:
    for route in config.routes:
        yield from RouteChecks(route, config, history, sessions).steps()


def judges_probe(route: Route) -> bool:
    """Whether the route has the checks ``spf``, ``dkim``, ``dmarc`` on its received probe.

    Only a route that asks (``require`` or ``trusted_authserv_ids``) has them: judging
    every probe would put DNS on every default setup, and a monitor without a resolver
    would report temperror warnings nobody asked for. Async routes see their probes only
    on later runs and are not judged.
    """
    return route.mode != "async" and bool(route.require or route.trusted_authserv_ids)


@dataclass(frozen=True)
class ToDelete:
    """What ``receive`` found that ``cleanup`` may delete: (folder, uid) of our own probes.

    ``raw`` is the received probe itself (at most ``MAX_PROBE_BYTES``), read for the
    route's verdict checks when it has them (:func:`judges_probe`); None otherwise or
    when the read failed.
    """

    mails: tuple[tuple[str, int], ...] = ()
    raw: bytes | None = None
    token: str = ""
    bounces: tuple[tuple[str, int], ...] = ()  # bounces of the probe, deleted through their own guard


@dataclass(frozen=True)
class RouteChecks:
    """The six steps of one route, with the settings they read."""

    route: Route
    config: Config
    history: History = field(default_factory=History)
    sessions: Sessions = Sessions()

    def id(self, check: str) -> StepId:
        return StepId(Subject.route(self.route.name), check)

    def steps(self) -> Iterator[Step]:
        imap_auth, smtp_auth = self.id("imap_auth"), self.id("smtp_auth")
        send, receive = self.id("send"), self.id("receive")
        recipient = self.route.recipient
        assert recipient.imap is not None
        mailbox = Gate(("mailbox", recipient.imap.host, recipient.imap.port, recipient.username),
                       MAX_SESSIONS_PER_MAILBOX)
        yield Step(imap_auth, self.imap_auth, gates=(CONNECTING,), lease=mailbox)
        yield Step(smtp_auth, self.smtp_auth, gates=(CONNECTING,))
        if self.route.mode == "async":
            # Nobody watches this probe now: it is looked for on later runs, IMAP or not.
            yield Step(send, self.send, needs=(smtp_auth,))
            yield Step(receive, self.collect, needs=(imap_auth,))
        else:
            # The IMAP session must have noted where new mail starts before anything is sent.
            yield Step(send, self.send, needs=(smtp_auth, imap_auth))
            yield Step(receive, self.receive, needs=(send, imap_auth))
        # Mail works even if the mailbox slowly fills with test mails: a warning, not a page.
        yield Step(self.id("cleanup"), self.cleanup, needs=(imap_auth,), after=(receive,),
                   failure=Outcome.WARNING)
        yield Step(self.id("tls"), self.tls, after=(imap_auth, smtp_auth))

    # -- the steps --------------------------------------------------------------

    def imap_auth(self, ctx: StepContext) -> Finding:
        account = self.route.recipient
        endpoint = account.imap
        assert endpoint is not None
        return _connected(ctx, "IMAP", account, endpoint, lambda: self.sessions.imap(endpoint, ctx.deadline),
                          lambda session: _unwatched(session.prepare(endpoint.extra_folders)))

    def smtp_auth(self, ctx: StepContext) -> Finding:
        account = self.route.sender
        endpoint = account.smtp
        assert endpoint is not None
        return _connected(ctx, "SMTP", account, endpoint,
                          lambda: self.sessions.smtp(endpoint, ctx.deadline, self.config.monitor.instance))

    def send(self, ctx: StepContext) -> Finding:
        route, monitor = self.route, self.config.monitor
        smtp = ctx.value(self.id("smtp_auth"), Submitter)
        token = new_token()
        message: EmailMessage = build_message(
            sender=route.sender.address, recipient=route.recipient.address,
            subject_prefix=monitor.subject_prefix, route=route.name, token=token,
            instance=monitor.instance,
        )
        started = smtp.send(message, route.sender.address, route.recipient.address)
        submitted_at = time.time() - (time.monotonic() - started)
        message_id = str(message["Message-ID"])
        pending = route.mode == "async"
        detail = Submission(submitted_at, message_id, token, pending)
        message_text = f"submitted as {message_id}" + (", to be looked for on later runs" if pending else "")
        return Finding(message=message_text, detail=detail, value=Sent(token, started, submitted_at))

    def receive(self, ctx: StepContext) -> Finding:
        route = self.route
        sent = ctx.value(self.id("send"), Sent)
        imap = ctx.value(self.id("imap_auth"), Mailbox)
        # Keep a little of the run for cleanup; the wait never eats into it.
        wait_limit = min(route.receive_timeout, ctx.deadline.remaining() - CLEANUP_RESERVE)
        budget = max(0.0, wait_limit - (time.monotonic() - sent.started))
        prefix, instance = self.config.monitor.subject_prefix, self.config.monitor.instance
        if self.bounces_come_here():
            # The sender's mailbox is this one: a bounce of the probe ends the wait at once.
            found = imap.wait_for_probe_or_bounce(sent.token, sent.started, budget, prefix=prefix, instance=instance)
        else:
            found = imap.wait_for(sent.token, sent.started, budget)
        if isinstance(found, Bounced):
            return Finding(Outcome.FAILED, f"the test mail {found.bounce.describe()}",
                           value=ToDelete(token=sent.token, bounces=((found.folder, found.uid),)))
        if found is None:
            where = ", ".join(imap.folders)
            limit = "the run deadline" if wait_limit < route.receive_timeout else "receive_timeout"
            message = f"test mail did not arrive within {max(0.0, wait_limit):.0f}s ({limit}); looked in {where}"
            bounce = self._sender_bounce(ctx, sent.token)
            raise CheckFailed(f"{message}; it {bounce}" if bounce else message)
        try:
            delivery = imap.delivery_seconds(found.folder, found.uid)
        except Exception:  # noqa: BLE001 - the header read is a bonus, not a check
            delivery = None
        arrival = _arrival(found, sent, delivery)
        raw = None
        if judges_probe(route):
            try:
                raw = imap.fetch_message(found.folder, found.uid, MAX_PROBE_BYTES) or None
            except Exception:  # noqa: BLE001 - the verdict checks say they could not read it
                raw = None
        mine = ToDelete(((found.folder, found.uid),), raw, sent.token)
        if arrival.in_spam:
            return Finding(Outcome.WARNING, f"landed in {found.folder} (spam), not INBOX, after "
                           f"{arrival.roundtrip:.2f}s", arrival, mine)
        if arrival.roundtrip > route.slow_after:
            return Finding(Outcome.WARNING, f"slow delivery: {arrival.roundtrip:.2f}s "
                           f"(slow_after is {route.slow_after:g}s)", arrival, mine)
        return Finding(Outcome.OK, f"found in INBOX after {arrival.roundtrip:.3f}s", arrival, mine)

    def bounces_come_here(self) -> bool:
        """Whether bounces (to the sender) land in the mailbox the recipient's session watches."""
        sender, recipient = self.route.sender, self.route.recipient
        return (sender.imap is not None and recipient.imap is not None and sender.username == recipient.username
                and (sender.imap.host, sender.imap.port) == (recipient.imap.host, recipient.imap.port))

    def _sender_bounce(self, ctx: StepContext, token: str) -> str | None:
        """After a wait in vain: a bounce in the sender's own mailbox says why (and is removed)."""
        sender = self.route.sender
        if sender.imap is None or self.bounces_come_here() or ctx.deadline.remaining() < CLEANUP_RESERVE:
            return None
        monitor = self.config.monitor
        session = None
        try:
            session = self.sessions.imap(sender.imap, ctx.deadline)
            log_in(session, sender, sender.imap, ctx.deadline)
            found = session.find_bounce(token, monitor.subject_prefix, instance=monitor.instance,
                                        window=self.route.receive_timeout + 3600)
            if found is None:
                return None
            uid, bounce = found
            if monitor.delete_test_mail:
                session.delete_bounce(uid, token, monitor.subject_prefix, instance=monitor.instance)
            return bounce.describe()
        except Exception:  # noqa: BLE001 - the bounce only explains the failure already reported
            return None
        finally:
            if session is not None:
                session.close()

    def collect(self, ctx: StepContext) -> Finding:
        """An async route's receive: which of the probes earlier runs sent have arrived."""
        route = self.route
        imap = ctx.value(self.id("imap_auth"), Mailbox)
        probes = self.history.probes(self.id("receive").subject)
        if not probes:
            return Finding(message="no earlier probe to look for yet", detail=Collection())
        arrived = imap.find_tokens([p.token for p in probes], self.config.monitor.subject_prefix,
                                   since=min(p.submitted_at for p in probes))
        now = time.time()
        found, late, lost, waiting = [], [], [], []
        latest: tuple[PendingProbe, Arrived] | None = None
        for probe in probes:
            mail = arrived.get(probe.token)
            if mail is not None:
                found.append(probe)
                if probe.lost or _async_roundtrip(probe, mail) > route.late_after:
                    late.append(probe)
                if latest is None or probe.submitted_at > latest[0].submitted_at:
                    latest = (probe, mail)
            elif now - probe.submitted_at > route.lost_after:
                if not probe.lost:
                    lost.append(probe)
            else:
                waiting.append(probe)
        arrival = _async_arrival(*latest) if latest is not None else None
        collection = Collection(tuple(found), tuple(late), tuple(lost), arrival, len(waiting))
        mine = ToDelete(tuple((arrived[p.token].folder, arrived[p.token].uid) for p in found))
        parts = []
        if arrival is not None:
            parts.append(f"{len(found)} earlier probe(s) arrived, the newest after {arrival.roundtrip:.0f}s"
                         f" (in {arrival.folder})")
        if waiting:
            oldest = now - min(p.submitted_at for p in waiting)
            parts.append(f"{len(waiting)} still on the way, the oldest sent {oldest:.0f}s ago")
        if lost:
            sent = ", ".join(_when(p.submitted_at) for p in lost)
            message = (f"{len(lost)} probe(s) lost: sent {sent}, not seen within lost_after "
                       f"({route.lost_after:g}s)")
            return Finding(Outcome.FAILED, "; ".join([message, *parts]), collection, mine)
        if not parts:
            missing = sum(1 for p in probes if p.lost)
            parts.append(f"{missing} probe(s) counted lost earlier still missing; nothing new")
        overdue = [p for p in waiting if now - p.submitted_at > route.late_after]
        warnings = []
        if late:
            warnings.append(f"{len(late)} probe(s) arrived late (after late_after, {route.late_after:g}s, "
                            f"or after they were counted lost)")
        if overdue:
            sent = ", ".join(_when(p.submitted_at) for p in overdue)
            warnings.append(f"{len(overdue)} probe(s) overdue: sent {sent}, not seen within late_after "
                            f"({route.late_after:g}s)")
        if warnings:
            return Finding(Outcome.WARNING, "; ".join([*warnings, *parts]), collection, mine)
        if arrival is not None and arrival.in_spam:
            return Finding(Outcome.WARNING, f"landed in {arrival.folder} (spam); " + "; ".join(parts),
                           collection, mine)
        return Finding(Outcome.OK, "; ".join(parts), collection, mine)

    def cleanup(self, ctx: StepContext) -> Finding:
        monitor = self.config.monitor
        imap = ctx.value(self.id("imap_auth"), Mailbox)
        received = ctx.optional(self.id("receive"), ToDelete) or ToDelete()
        found = received if received.mails else None
        deleted = False
        if found is not None and monitor.delete_test_mail:
            for folder, uid in found.mails:
                if imap.delete_own(folder, [uid], monitor.subject_prefix) == 0:
                    raise CheckFailed("the test mail was found but could not be verified for deletion")
            deleted = True
        bounces = 0
        if monitor.delete_test_mail:
            for folder, uid in received.bounces:
                bounces += imap.delete_bounce(uid, received.token, monitor.subject_prefix,
                                              instance=monitor.instance, folder=folder)
        stale = 0
        for folder in imap.folders:
            uids = imap.find_stale(folder, monitor.subject_prefix, monitor.stale_after, monitor.cleanup_window,
                                   instance=monitor.instance,
                                   foreign_older_than=foreign_stale_after(monitor.stale_after))
            stale += imap.delete_own(folder, uids, monitor.subject_prefix)
        parts = []
        if found is not None:
            parts.append("deleted the test mail" if deleted else "kept the test mail (delete_test_mail = false)")
        if bounces:
            parts.append(f"deleted {bounces} bounce(s) of it")
        parts.append(f"{stale} stale monitor mail(s) deleted")
        return Finding(message=", ".join(parts), detail=CleanupReport(deleted, stale))

    def tls(self, ctx: StepContext) -> Finding:
        warn_days = self.config.monitor.tls_warn_days
        problems: list[str] = []
        warnings: list[str] = []
        notes: list[str] = []
        certificates: list[Certificate] = []
        unreached = False  # a TLS endpoint without a session: the check could not look
        for step in (self.id("imap_auth"), self.id("smtp_auth")):
            result = ctx.result(step)
            handshake = result.detail if result is not None else None
            if not isinstance(handshake, Handshake):
                continue
            name = f"{handshake.protocol} {handshake.endpoint}"
            if handshake.tls == "none":
                if handshake.allow_plaintext:
                    notes.append(f"{name}: no TLS (allow_plaintext)")
                else:
                    warnings.append(f"{name}: no TLS, the password goes over the network in clear")
                continue
            if handshake.certificate_error is not None:
                problems.append(f"{name}: {handshake.certificate_error}")
                continue
            certificate = handshake.certificate
            if certificate is None:
                notes.append(f"{name}: no TLS session")
                unreached = True
                continue
            certificates.append(certificate)
            days = (certificate.not_after - time.time()) / 86400
            text = f"{name}: certificate valid for {days:.0f} more days"
            if days < warn_days:
                warnings.append(f"{text} (expires within {warn_days:g} days)")
            else:
                notes.append(text)
        report = TlsReport(tuple(certificates))
        if problems:
            raise CheckFailed("; ".join(problems), report)
        if warnings:
            return Finding(Outcome.WARNING, "; ".join(warnings + notes), report)
        if certificates:
            return Finding(Outcome.OK, "; ".join(notes), report)
        # Skipped: plain text by choice (nothing to check), or no session (could not look).
        return Finding(Outcome.SKIPPED, "; ".join(notes) or "no endpoint was reached", report,
                       unchecked=unreached or not notes)


def log_in(session: Mailbox | Submitter, account: Account, endpoint: Endpoint, deadline: Deadline) -> None:
    """With the endpoint's OAuth2 token (XOAUTH2) when it has a token source, else the password.

    A token command not yet run for this run (app.run_once runs them first) runs now,
    within the step's time.
    """
    if not endpoint.uses_oauth2:
        session.login(account.username, account.require_password())
        return
    token = oauth2_token(endpoint, deadline.timeout(TOKEN_COMMAND_TIMEOUT))
    assert token is not None  # uses_oauth2: a file read with the config, or a command
    session.login_oauth2(account.username, token)


S = TypeVar("S", Mailbox, Submitter)


def _connected(ctx: StepContext, protocol: str, account: Account, endpoint: Endpoint, connect: Callable[[], S],
               then: Callable[[S], str] | None = None) -> Finding:
    """Connect and log in, then ``then``, whose words (if any) are the message.

    The handshake (certificate, TLS version) is reported either way.
    """
    handshake = _handshake(protocol, endpoint)
    try:
        session = connect()
    except Exception as exc:  # noqa: BLE001 - re-raised by _describe unless a network failure
        raise _connect_failed(handshake, exc, ctx) from None
    try:
        handshake = _with_certificate(handshake, session.certificate)
        log_in(session, account, endpoint, ctx.deadline)
        note = then(session) if then is not None else ""
    except Exception as exc:  # noqa: BLE001 - re-raised by _describe unless a network failure
        session.close()
        raise CheckFailed(_describe(exc, ctx), handshake) from None
    return Finding(message=note, detail=handshake, value=session)


def _unwatched(missing: tuple[str, ...]) -> str:
    """Folders to watch that the server does not have: said, not failed (``Junk`` is a default)."""
    if not missing:
        return ""
    names = ", ".join(repr(name) for name in missing)
    return f"not watched, the server has no such folder: {names}"


def _handshake(protocol: str, endpoint: Endpoint) -> Handshake:
    return Handshake(protocol, endpoint.label, endpoint.tls, allow_plaintext=endpoint.allow_plaintext)


def _with_certificate(handshake: Handshake, certificate: Certificate | None) -> Handshake:
    return Handshake(handshake.protocol, handshake.endpoint, handshake.tls, certificate,
                     allow_plaintext=handshake.allow_plaintext)



def _describe(exc: BaseException, ctx: StepContext) -> str:
    """The user's words for a network failure; anything else is a bug and propagates."""
    if isinstance(exc, (ImapLoginError, SecretError)):
        return str(exc)
    text = describe_error(exc, ctx.deadline.step_timeout)
    if text is None:
        raise exc
    return text


def _connect_failed(handshake: Handshake, exc: Exception, ctx: StepContext) -> Exception:
    """A connection that failed: a failed TLS handshake (a bad certificate, no TLS 1.2) is
    also what the tls check reports, never an OK from the other endpoint alone."""
    message = _describe(exc, ctx)
    if is_tls_failure(exc):
        handshake = Handshake(handshake.protocol, handshake.endpoint, handshake.tls,
                              certificate_error=message, allow_plaintext=handshake.allow_plaintext)
    return CheckFailed(message, handshake)


def _async_roundtrip(probe: PendingProbe, mail: Arrived) -> float:
    """INTERNALDATE is truncated to the second: the arrival lies in [at, at + 1)."""
    return max(0.0, mail.at + 0.5 - probe.submitted_at)


def _async_arrival(probe: PendingProbe, mail: Arrived) -> Arrival:
    roundtrip = _async_roundtrip(probe, mail)
    return Arrival(roundtrip=roundtrip, uncertainty=0.5, folder=mail.folder, in_spam=mail.folder != "INBOX",
                   submitted_at=probe.submitted_at, seen_at=probe.submitted_at + roundtrip, commands=0,
                   waited=0.0)


def _when(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(unix))


def _arrival(found: Sighting, sent: Sent, delivery: float | None) -> Arrival:
    roundtrip = max(0.0, found.seen - sent.started)
    return Arrival(
        roundtrip=roundtrip, uncertainty=found.uncertainty, folder=found.folder,
        in_spam=found.folder != "INBOX", submitted_at=sent.submitted_at,
        seen_at=sent.submitted_at + roundtrip, commands=found.commands, waited=found.waited,
        delivery=delivery,
    )
