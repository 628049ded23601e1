"""prepare() against a fake IMAP client: which folders a session watches when some are missing."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from mail_monitor.config import ImapEndpoint
from mail_monitor.deadline import Deadline
from mail_monitor.probes.imap import ImapSession


class FolderClient:
    """A server with the folders ``uidnext`` names; STATUS of any other is refused, as
    Dovecot does (``NO [NONEXISTENT] Mailbox doesn't exist``)."""

    def __init__(self, uidnext: dict[str, int], *, status_error: Exception | None = None) -> None:
        self.uidnext = uidnext
        self.status_error = status_error
        self.listed: list[str] = []

    def socket(self) -> Any:
        return SimpleNamespace(settimeout=lambda _: None)

    def select_folder(self, name: str) -> dict[bytes, Any]:
        return {b"UIDNEXT": self.uidnext[name]}

    def folder_status(self, name: str, _: Any) -> dict[bytes, int]:
        if self.status_error is not None:
            raise self.status_error
        if name not in self.uidnext:
            raise IMAPClientError(f"status failed: Mailbox doesn't exist: {name}")
        return {b"UIDNEXT": self.uidnext[name]}

    def folder_exists(self, name: str) -> bool:
        self.listed.append(name)
        return name in self.uidnext


def prepared(client: FolderClient, extra: tuple[str, ...]) -> ImapSession:
    session = ImapSession(ImapEndpoint("imap.example.org", 993, "implicit"), Deadline(60), client=client)
    session.prepare(extra)
    return session


def test_a_missing_extra_folder_is_skipped_and_named() -> None:
    client = FolderClient({"INBOX": 5, "Spam": 9})
    session = ImapSession(ImapEndpoint("imap.example.org", 993, "implicit"), Deadline(60), client=client)
    assert session.prepare(("Junk", "Spam")) == ("Junk",)
    assert session.folders == ["INBOX", "Spam"]


def test_an_existing_folder_whose_status_fails_still_fails() -> None:
    client = FolderClient({"INBOX": 5, "Junk": 7}, status_error=IMAPClientError("status failed: Permission denied"))
    with pytest.raises(IMAPClientError, match="Permission denied"):
        prepared(client, ("Junk",))
    assert client.listed == ["Junk"]


def test_a_lost_connection_is_not_taken_for_a_missing_folder() -> None:
    client = FolderClient({"INBOX": 5}, status_error=IMAPClientAbortError("socket error: EOF"))
    with pytest.raises(IMAPClientAbortError):
        prepared(client, ("Junk",))
    assert client.listed == []
