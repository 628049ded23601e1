"""The reports folder logic against a fake IMAP client: batching, size bound, MOVE or COPY."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from imapclient.exceptions import IMAPClientError
from report_samples import Aggregate, Row, gz, report_mail, zipped

from mail_monitor.deadline import Deadline
from mail_monitor.reports import Limits
from mail_monitor.reports.mailbox import ReportsMailboxError, file_batch, read_batch

GOOD = [report_mail(zipped(Aggregate(f"r{i}.example", f"id-{i}", (Row("192.0.2.1", i + 1),)).xml()),
                    f"r{i}.zip", "application/zip") for i in range(5)]
BROKEN = report_mail(gz(b"<feedback>")[:-8], "broken.xml.gz", "application/gzip")


class FakeImap:
    """Just the IMAPClient calls the mailbox module makes, over in-memory folders."""

    def __init__(self, folders: dict[str, list[bytes]], capabilities: Sequence[bytes] = (b"MOVE", b"UIDPLUS"),
                 sizes: dict[int, int] | None = None) -> None:
        self.folders = {name: {uid: raw for uid, raw in enumerate(mails, start=1)} for name, mails in folders.items()}
        self.deleted: dict[str, set[int]] = {name: set() for name in folders}
        self.capabilities = set(capabilities)
        self.sizes = sizes or {}
        self.selected: str | None = None
        self.log: list[tuple[Any, ...]] = []
        self.timeouts: list[float] = []

    def socket(self) -> FakeImap:
        return self  # only settimeout is called on it

    def settimeout(self, seconds: float) -> None:
        self.timeouts.append(seconds)

    def has_capability(self, name: str) -> bool:
        return name.encode() in self.capabilities

    def select_folder(self, folder: str) -> dict[bytes, Any]:
        if folder not in self.folders:
            raise IMAPClientError(b"select failed: Mailbox doesn't exist: " + folder.encode())
        self.selected = folder
        return {}

    def folder_exists(self, folder: str) -> bool:
        return folder in self.folders

    def create_folder(self, folder: str) -> None:
        self.log.append(("create", folder))
        self.folders[folder] = {}
        self.deleted[folder] = set()

    def search(self, criteria: list[str]) -> list[int]:
        assert criteria == ["UNDELETED"]
        assert self.selected is not None
        return [u for u in self.folders[self.selected] if u not in self.deleted[self.selected]]

    def fetch(self, uids: list[int], items: list[str]) -> dict[int, dict[bytes, Any]]:
        assert self.selected is not None
        self.log.append(("fetch", tuple(uids), tuple(items)))
        mails = self.folders[self.selected]
        if items == ["RFC822.SIZE"]:
            return {u: {b"RFC822.SIZE": self.sizes.get(u, len(mails[u]))} for u in uids if u in mails}
        assert items == ["BODY.PEEK[]"]
        return {u: {b"BODY[]": mails[u]} for u in uids if u in mails}

    def move(self, uids: list[int], folder: str) -> None:
        assert b"MOVE" in self.capabilities
        self.log.append(("move", tuple(uids), folder))
        self._copy(uids, folder)
        for uid in uids:
            del self.folders[self.selected or ""][uid]

    def copy(self, uids: list[int], folder: str) -> None:
        self.log.append(("copy", tuple(uids), folder))
        self._copy(uids, folder)

    def _copy(self, uids: list[int], folder: str) -> None:
        target = self.folders[folder]
        for uid in uids:
            target[max(target, default=0) + 1] = self.folders[self.selected or ""][uid]

    def add_flags(self, uids: list[int], flags: list[bytes], silent: bool = False) -> None:
        assert flags == [b"\\Deleted"]
        self.log.append(("flag", tuple(uids)))
        self.deleted[self.selected or ""].update(uids)

    def uid_expunge(self, uids: list[int]) -> None:
        assert b"UIDPLUS" in self.capabilities
        self.log.append(("expunge", tuple(uids)))
        for uid in uids:
            del self.folders[self.selected or ""][uid]
            self.deleted[self.selected or ""].discard(uid)


def deadline() -> Deadline:
    return Deadline(60.0)


def test_a_backlog_is_read_oldest_first_in_batches() -> None:
    imap = FakeImap({"DMARC": [*GOOD, BROKEN]})
    batch = read_batch(imap, "DMARC", deadline(), batch_size=4)  # type: ignore[arg-type]
    assert [m.uid for m in batch.mails] == [1, 2, 3, 4]
    assert [r.reporter for r in batch.reports] == ["r0.example", "r1.example", "r2.example", "r3.example"]
    assert batch.left == 2
    file_batch(imap, batch, "DMARC.done", "DMARC.error", deadline())  # type: ignore[arg-type]
    batch = read_batch(imap, "DMARC", deadline(), batch_size=4)  # type: ignore[arg-type]
    assert [m.uid for m in batch.mails] == [5]
    assert [(m.uid, m.reason) for m in batch.unreadable] == [(6, "truncated gzip data")]
    assert batch.left == 0
    file_batch(imap, batch, "DMARC.done", "DMARC.error", deadline())  # type: ignore[arg-type]
    assert imap.folders["DMARC"] == {}
    assert sorted(imap.folders["DMARC.done"].values()) == sorted(GOOD)
    assert list(imap.folders["DMARC.error"].values()) == [BROKEN]
    assert ("create", "DMARC.done") in imap.log and ("create", "DMARC.error") in imap.log


def test_reading_changes_nothing_on_the_server() -> None:
    imap = FakeImap({"DMARC": [*GOOD, BROKEN]})
    read_batch(imap, "DMARC", deadline())  # type: ignore[arg-type]
    assert len(imap.folders["DMARC"]) == 6 and not imap.deleted["DMARC"]
    assert all(entry[0] == "fetch" for entry in imap.log)
    assert imap.timeouts and all(0 < t <= 30.0 for t in imap.timeouts)  # every command under the run's clock


def test_a_mail_over_the_size_bound_is_parked_without_being_fetched() -> None:
    imap = FakeImap({"DMARC": GOOD[:3]}, sizes={2: 50 * 1024 * 1024})
    batch = read_batch(imap, "DMARC", deadline())  # type: ignore[arg-type]
    assert [m.uid for m in batch.mails] == [1, 3]
    assert [(m.uid, m.reason) for m in batch.unreadable] == [
        (2, f"mail of {50 * 1024 * 1024} bytes is over the {Limits().max_message_bytes} byte limit (not fetched)")]
    bodies = [e[1] for e in imap.log if e[0] == "fetch" and e[2] == ("BODY.PEEK[]",)]
    assert all(2 not in uids for uids in bodies)


def test_fetches_are_grouped_by_size() -> None:
    imap = FakeImap({"DMARC": GOOD}, sizes={1: 9 * 1024 * 1024, 2: 9 * 1024 * 1024})
    read_batch(imap, "DMARC", deadline())  # type: ignore[arg-type]
    bodies = [e[1] for e in imap.log if e[0] == "fetch" and e[2] == ("BODY.PEEK[]",)]
    assert bodies == [(1,), (2, 3, 4, 5)]


def test_near_the_deadline_nothing_more_is_fetched() -> None:
    imap = FakeImap({"DMARC": GOOD})
    batch = read_batch(imap, "DMARC", Deadline(3.0), reserve=5.0)  # type: ignore[arg-type]
    assert batch.mails == () and batch.left == 5


class CountdownDeadline(Deadline):
    """A run clock that loses ``step`` seconds every time it is asked what is left."""

    def __init__(self, left: float, step: float) -> None:
        super().__init__(600.0)
        self.left, self.step = left, step

    def remaining(self) -> float:
        self.left -= self.step
        return self.left

    def timeout(self, limit: float | None = None) -> float:
        return 30.0


def test_the_deadline_is_checked_between_mails_of_one_fetch() -> None:
    imap = FakeImap({"DMARC": GOOD})
    batch = read_batch(imap, "DMARC", CountdownDeadline(left=10.0, step=2.0), reserve=5.0)  # type: ignore[arg-type]
    assert [m.uid for m in batch.mails] == [1]  # 8 s left before the fetch and the first mail, 4 s at the second
    assert batch.left == 4
    bodies = [e[1] for e in imap.log if e[0] == "fetch" and e[2] == ("BODY.PEEK[]",)]
    assert bodies == [(1, 2, 3, 4, 5)]


def test_without_move_mails_are_copied_flagged_and_only_they_expunged() -> None:
    imap = FakeImap({"DMARC": [*GOOD[:2], BROKEN]}, capabilities=(b"UIDPLUS",))
    imap.deleted["DMARC"].add(99)  # a mail someone else flagged \Deleted
    batch = read_batch(imap, "DMARC", deadline())  # type: ignore[arg-type]
    file_batch(imap, batch, "done", "error", deadline())  # type: ignore[arg-type]
    moves = [e for e in imap.log if e[0] in ("copy", "flag", "expunge")]
    assert moves == [("copy", (1, 2), "done"), ("flag", (1, 2)), ("expunge", (1, 2)),
                     ("copy", (3,), "error"), ("flag", (3,)), ("expunge", (3,))]
    assert imap.folders["DMARC"] == {} and imap.deleted["DMARC"] == {99}


def test_without_uidplus_originals_stay_flagged_and_are_not_read_again() -> None:
    imap = FakeImap({"DMARC": GOOD[:2]}, capabilities=())
    batch = read_batch(imap, "DMARC", deadline())  # type: ignore[arg-type]
    file_batch(imap, batch, "done", "error", deadline())  # type: ignore[arg-type]
    assert not any(e[0] == "expunge" for e in imap.log)
    assert len(imap.folders["done"]) == 2
    again = read_batch(imap, "DMARC", deadline())  # type: ignore[arg-type]
    assert again.mails == () and again.left == 0


def test_a_missing_reports_folder_is_a_clear_error() -> None:
    imap = FakeImap({"INBOX": []})
    with pytest.raises(ReportsMailboxError, match="cannot open folder 'DMARC': select failed: Mailbox doesn't exist"):
        read_batch(imap, "DMARC", deadline())  # type: ignore[arg-type]
