"""The host checks: receivers' DMARC and TLS reports, and the local Postfix queue.

``reports`` reads a batch from the reports folder and hands what it read to the state
(:class:`ReportsRead`); the counting happens in :mod:`mail_monitor.alerts` against the
state read under the lock. Mails move only on the *next* run, once the state that
counted them is saved: that run files the mails the saved cursor lists, then reads on.
A crash anywhere leaves either uncounted mails in place (read again, counted once) or
counted ones listed for filing (moved, never read again). See docs/reports.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from imapclient.exceptions import IMAPClientError

from mail_monitor.checks.routes import CONNECTING, MAX_SESSIONS_PER_MAILBOX
from mail_monitor.config import Config, ImapEndpoint, ReportsSettings, Secret
from mail_monitor.deadline import Deadline
from mail_monitor.engine import CheckFailed, Finding, Gate, Step, StepContext, StepId
from mail_monitor.postfix_queue import QueueError, QueueThresholds, read_queue
from mail_monitor.postfix_queue import evaluate as evaluate_queue
from mail_monitor.probes.imap import ImapLoginError, ImapSession
from mail_monitor.probes.tls import describe_error
from mail_monitor.reports import ReportTotals, apply_batch, verdict
from mail_monitor.reports.mailbox import DEFAULT_BATCH_SIZE, ReportsMailboxError, ensure_folder, move, read_batch
from mail_monitor.reports.totals import report_count
from mail_monitor.results import History, QueueDepth, ReportsCursor, ReportsRead, Subject

log = logging.getLogger(__name__)

QUEUE_TIMEOUT = 20.0  # seconds postqueue may take, cut to what is left of the run


class ReportsSession(Protocol):
    """What the reports check uses of an IMAP session (:class:`ImapSession`)."""

    client: Any  # an IMAPClient

    def login(self, username: str, password: Secret) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class HostSeams:
    """Where the fast tests put fakes: the IMAP session, the postqueue program, a small batch."""

    imap: Callable[[ImapEndpoint, Deadline], ReportsSession] = ImapSession
    postqueue: str | None = None  # overrides the configured program
    batch_size: int = DEFAULT_BATCH_SIZE  # report mails read per run; a backlog drains over runs


def host_steps(config: Config, history: History, seams: HostSeams = HostSeams()) -> Iterator[Step]:
    if config.reports is not None:
        checks = ReportsCheck(config.reports, history, seams)
        yield Step(StepId(Subject.host(), "reports"), checks.run, gates=(CONNECTING, checks.mailbox()),
                   interval=config.reports.interval)
    queue = config.postfix_queue
    if queue is not None and queue.enable:
        thresholds = QueueThresholds(queue.warn_deferred, queue.crit_deferred, queue.warn_oldest_age)
        program = seams.postqueue or queue.postqueue
        directory = str(queue.config_directory) if queue.config_directory else None

        def postfix_queue(ctx: StepContext) -> Finding:
            try:
                snapshot = read_queue(directory, timeout=ctx.deadline.timeout(QUEUE_TIMEOUT), postqueue=program)
            except QueueError as exc:
                raise CheckFailed(str(exc)) from None
            outcome, message = evaluate_queue(snapshot, thresholds)
            return Finding(outcome, message, QueueDepth(dict(snapshot.depth), snapshot.oldest_deferred_seconds))

        yield Step(StepId(Subject.host(), "postfix_queue"), postfix_queue, interval=queue.interval)


@dataclass(frozen=True)
class ReportsCheck:
    settings: ReportsSettings
    history: History = field(default_factory=History)
    seams: HostSeams = HostSeams()

    def mailbox(self) -> Gate:
        """The same gate as the routes into this mailbox: its connection limit is shared."""
        imap = self.settings.account.imap
        assert imap is not None
        return Gate(("mailbox", imap.host, imap.port, self.settings.account.username), MAX_SESSIONS_PER_MAILBOX)

    def run(self, ctx: StepContext) -> Finding:
        account = self.settings.account
        assert account.imap is not None
        session = self.seams.imap(account.imap, ctx.deadline)
        try:
            session.login(account.username, account.require_password())
            return self._work(session.client, ctx.deadline)
        except (ImapLoginError, ReportsMailboxError) as exc:
            raise CheckFailed(str(exc)) from None
        except IMAPClientError as exc:
            raise CheckFailed(f"IMAP: {describe_error(exc, ctx.deadline.step_timeout) or exc}") from None
        finally:
            session.close()

    def _work(self, client: Any, deadline: Deadline) -> Finding:
        settings = self.settings
        cursor = self._cursor(client, deadline)
        filed = self._file(client, cursor, deadline)
        batch = read_batch(client, settings.folder, deadline, min_uid=cursor.next_uid,
                           batch_size=self.seams.batch_size)
        now = time.time()
        summary = apply_batch(ReportTotals(seen=dict.fromkeys(self.history.reports_seen, now)), batch.reports,
                              len(batch.unreadable), batch.left, now, dedup_window=settings.dedup_window,
                              min_compliance=settings.min_compliance)
        outcome, message = verdict(summary)
        if filed:
            message += f"; {filed} mail{'s' if filed != 1 else ''} counted earlier filed away"
        detail = ReportsRead(
            cursor=ReportsCursor(cursor.folder, cursor.uidvalidity, batch.next_uid,
                                 tuple(m.uid for m in batch.mails), tuple(m.uid for m in batch.unreadable)),
            new=tuple(report_count(report) for report in batch.reports),
            dmarc_reports=summary.dmarc_reports, tls_reports=summary.tls_reports,
            duplicates=summary.duplicates, unreadable=summary.unreadable, filed=filed, left=batch.left,
            dedup_window=settings.dedup_window,
        )
        for mail in batch.unreadable:
            log.warning("reports: unreadable mail UID %d in %s: %s", mail.uid, settings.folder, mail.reason)
        return Finding(outcome, message, detail)

    def _cursor(self, client: Any, deadline: Deadline) -> ReportsCursor:
        """The saved cursor if it still describes this folder; a new one from UID 1 otherwise."""
        client.socket().settimeout(deadline.timeout())
        try:
            info = client.select_folder(self.settings.folder)
        except IMAPClientError as exc:
            raise ReportsMailboxError(f"cannot open folder {self.settings.folder!r}: {exc}") from None
        uidvalidity = int(info.get(b"UIDVALIDITY", 0))
        saved = self.history.reports_cursor
        if saved is not None and saved.folder == self.settings.folder and saved.uidvalidity == uidvalidity:
            return saved
        if saved is not None:
            log.warning("reports: folder %s changed (UIDVALIDITY), reading it from the start", self.settings.folder)
        return ReportsCursor(self.settings.folder, uidvalidity)

    def _file(self, client: Any, cursor: ReportsCursor, deadline: Deadline) -> int:
        """Move the mails the saved state counted; those already gone (an earlier try) are skipped."""
        plan = [(target, uids) for target, uids in ((self.settings.done_folder, cursor.done),
                                                    (self.settings.error_folder, cursor.error))
                if target is not None and uids]
        if not plan:
            return 0
        client.socket().settimeout(deadline.timeout())
        present = {int(uid) for uid in client.search(["UNDELETED"])}
        filed = 0
        for target, uids in plan:
            assert target is not None
            still_here = [uid for uid in uids if uid in present]
            if still_here:
                ensure_folder(client, target, deadline)
                move(client, still_here, target, deadline)
                filed += len(still_here)
        return filed
