"""The reports folder: read a bounded batch of report mails, then file them away.

Two steps on purpose. ``read_batch`` only reads (BODY.PEEK, nothing changes on the
server); the caller adds the reports to its counters and saves them, then calls
``file_batch`` to move the mails to the done and error folders. A run that dies in
between leaves the mails in place, and the report-id de-duplication keeps the next
run from counting them twice; the other order could lose reports.

A backlog drains over several runs: each reads at most ``batch_size`` mails, oldest
first, and stops early when the run's deadline comes near.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from mail_monitor.deadline import Deadline
from mail_monitor.reports.message import parse_message
from mail_monitor.reports.model import InvalidReport, Limits, Report

DEFAULT_BATCH_SIZE = 200
FETCH_GROUP_BYTES = 16 * 1024 * 1024  # mails fetched in one command, by their sizes
FETCH_GROUP_MAILS = 50
DEFAULT_RESERVE = 5.0  # seconds of the run kept for filing the batch and what follows


class ReportsMailboxError(Exception):
    """The reports folder cannot be used (missing, not selectable); one line for the user."""


@dataclass(frozen=True)
class ReportMail:
    uid: int
    reports: tuple[Report, ...]


@dataclass(frozen=True)
class UnreadableMail:
    uid: int
    reason: str


@dataclass(frozen=True)
class Batch:
    """What one run read from the reports folder."""

    folder: str
    mails: tuple[ReportMail, ...]
    unreadable: tuple[UnreadableMail, ...]
    left: int  # mails still waiting in the folder for later runs
    next_uid: int = 1  # where the next run reads on: every mail below it was read (or refused)

    @property
    def reports(self) -> list[Report]:
        return [r for mail in self.mails for r in mail.reports]


def read_batch(client: IMAPClient, folder: str, deadline: Deadline, *, batch_size: int = DEFAULT_BATCH_SIZE,
               limits: Limits | None = None, reserve: float = DEFAULT_RESERVE, min_uid: int = 1) -> Batch:
    """Parse up to ``batch_size`` of the oldest mails in ``folder`` from UID ``min_uid`` on.

    Mails over the size bound are not fetched. The batch is always the mails from
    ``min_uid`` up to (not including) ``Batch.next_uid``: one cut short by the deadline
    leaves everything from the first unread mail on for the next run.
    """
    limits = limits or Limits()
    _select(client, folder, deadline)
    _timeout(client, deadline)
    uids = sorted(u for u in (int(u) for u in client.search(["UNDELETED"])) if u >= min_uid)
    chosen = uids[:batch_size]
    if not chosen:
        return Batch(folder, (), (), 0, min_uid)
    _timeout(client, deadline)
    sizes = {int(uid): int(item.get(b"RFC822.SIZE", 0)) for uid, item in client.fetch(chosen, ["RFC822.SIZE"]).items()}
    mails: list[ReportMail] = []
    unreadable: list[UnreadableMail] = []
    wanted = []
    for uid in chosen:
        if uid not in sizes:
            continue  # expunged by someone else meanwhile
        if sizes[uid] > limits.max_message_bytes:
            unreadable.append(UnreadableMail(uid, f"mail of {sizes[uid]} bytes is over the "
                                                  f"{limits.max_message_bytes} byte limit (not fetched)"))
        else:
            wanted.append(uid)
    done = set(sizes) - set(wanted)
    for group in _groups(wanted, sizes):
        if deadline.remaining() < reserve:
            break
        _timeout(client, deadline)
        fetched = client.fetch(group, ["BODY.PEEK[]"])
        for uid in group:
            if deadline.remaining() < reserve:
                break  # parsing is CPU-bound: stop between mails, not only between fetches
            raw = fetched.get(uid, {}).get(b"BODY[]")
            done.add(uid)
            if raw is None:
                continue
            try:
                mails.append(ReportMail(uid, parse_message(bytes(raw), limits)))
            except InvalidReport as exc:
                unreadable.append(UnreadableMail(uid, exc.reason))
    unread = [uid for uid in chosen if uid not in done]
    next_uid = unread[0] if unread else chosen[-1] + 1
    mails = [m for m in mails if m.uid < next_uid]
    unreadable = [m for m in unreadable if m.uid < next_uid]
    left = sum(1 for uid in uids if uid >= next_uid)
    return Batch(folder, tuple(mails), tuple(sorted(unreadable, key=lambda m: m.uid)), left, next_uid)


def file_batch(client: IMAPClient, batch: Batch, done_folder: str, error_folder: str, deadline: Deadline) -> None:
    """Move read mails to ``done_folder`` and unreadable ones to ``error_folder``, creating them if missing."""
    for target, uids in ((done_folder, [m.uid for m in batch.mails]),
                         (error_folder, [m.uid for m in batch.unreadable])):
        if not uids:
            continue
        ensure_folder(client, target, deadline)
        _select(client, batch.folder, deadline)
        move(client, uids, target, deadline)


def move(client: IMAPClient, uids: Sequence[int], target: str, deadline: Deadline) -> None:
    """MOVE (RFC 6851) where offered; else COPY, flag \\Deleted and UID EXPUNGE exactly these.

    Without UIDPLUS the originals stay flagged \\Deleted rather than risk a plain EXPUNGE
    removing other mail a user flagged; ``read_batch`` skips deleted mail.
    """
    _timeout(client, deadline)
    if client.has_capability("MOVE"):
        client.move(list(uids), target)
        return
    client.copy(list(uids), target)
    _timeout(client, deadline)
    client.add_flags(list(uids), [b"\\Deleted"], silent=True)
    if client.has_capability("UIDPLUS"):
        _timeout(client, deadline)
        client.uid_expunge(list(uids))


def ensure_folder(client: IMAPClient, name: str, deadline: Deadline) -> None:
    _timeout(client, deadline)
    if client.folder_exists(name):
        return
    try:
        client.create_folder(name)
    except IMAPClientError as exc:
        _timeout(client, deadline)
        if not client.folder_exists(name):  # another client may have just created it
            raise ReportsMailboxError(f"cannot create folder {name!r}: {_server_text(exc)}") from None


def subfolder(client: IMAPClient, parent: str, name: str, deadline: Deadline) -> str:
    """``parent`` + the server's hierarchy delimiter + ``name`` ("DMARC/done" or "DMARC.done")."""
    _timeout(client, deadline)
    listed = client.list_folders(pattern=parent)
    delimiter = listed[0][1] if listed and listed[0][1] else b"/"
    text = delimiter.decode() if isinstance(delimiter, bytes) else str(delimiter)
    return f"{parent}{text}{name}"


def _select(client: IMAPClient, folder: str, deadline: Deadline) -> None:
    _timeout(client, deadline)
    try:
        client.select_folder(folder)
    except IMAPClientError as exc:
        raise ReportsMailboxError(f"cannot open folder {folder!r}: {_server_text(exc)}") from None


def _groups(uids: Sequence[int], sizes: dict[int, int]) -> list[list[int]]:
    groups: list[list[int]] = []
    current: list[int] = []
    total = 0
    for uid in uids:
        if current and (total + sizes[uid] > FETCH_GROUP_BYTES or len(current) >= FETCH_GROUP_MAILS):
            groups.append(current)
            current, total = [], 0
        current.append(uid)
        total += sizes[uid]
    if current:
        groups.append(current)
    return groups


def _timeout(client: IMAPClient, deadline: Deadline) -> None:
    client.socket().settimeout(deadline.timeout())


def _server_text(exc: BaseException) -> str:
    text: Any = exc.args[0] if exc.args else exc
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(str(text).split())[:200] or type(exc).__name__
