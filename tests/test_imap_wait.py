"""The wait against a fake IMAP client: the reported bracket always holds the moment of arrival.

Real time, short phases: no assertion on how long anything took, only on what the
session reports about moments the fake knows exactly.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from mail_monitor.config import ImapEndpoint
from mail_monitor.deadline import Deadline
from mail_monitor.probes import imap
from mail_monitor.probes.imap import SLOW_INTERVAL, ImapSession, _poll_interval

TOKEN = "1763930000-0123456789abcdef"


class FakeClient:
    """Mail becomes visible in ``folder`` at ``visible_at`` (monotonic). News of it comes
    with the next command, or ``push_lag`` later in IDLE, as Dovecot does."""

    def __init__(self, visible_at: float, *, idle: bool = False, push_lag: float = 0.3,
                 folder: str = "INBOX", news_with_status: bool = False) -> None:
        self.visible_at = float("inf") if news_with_status else visible_at
        self.appear_after = visible_at
        self.idle_ok = idle
        self.push_lag = push_lag
        self.folder = folder
        self.news_with_status = news_with_status
        self.selected = "INBOX"
        self.reported = False
        self._imap = SimpleNamespace(untagged_responses={})

    def _visible(self) -> bool:
        return time.monotonic() >= self.visible_at

    def _report(self) -> None:
        if self._visible() and not self.reported and self.selected == self.folder:
            self._imap.untagged_responses["EXISTS"] = [b"5"]
            self.reported = True

    def capabilities(self) -> tuple[bytes, ...]:
        return (b"IMAP4REV1", b"IDLE") if self.idle_ok else (b"IMAP4REV1",)

    def socket(self) -> Any:
        return SimpleNamespace(settimeout=lambda _: None)

    def select_folder(self, name: str) -> dict[bytes, Any]:
        self.selected = name
        return {b"UIDNEXT": 5, b"EXISTS": 4}

    def folder_status(self, name: str, _: Any) -> dict[bytes, int]:
        if self.news_with_status and self.visible_at == float("inf") and time.monotonic() >= self.appear_after:
            # The mail lands just as a STATUS of another folder goes out: the server reports
            # the selected folder's news with that command, and never again.
            self.visible_at = time.monotonic()
            self._report()
        visible = self._visible() and name == self.folder
        return {b"UIDNEXT": 6 if visible else 5}

    def noop(self) -> tuple[bytes, list[Any]]:
        self._report()
        return b"NOOP completed", []

    def search(self, criteria: list[Any]) -> list[int]:
        assert criteria[:2] == ["UID", "5:*"] and criteria[2:] == ["HEADER", "X-Mail-Monitor-Token", TOKEN]
        return [5] if self._visible() and self.selected == self.folder else []

    def idle(self) -> None:
        pass

    def idle_check(self, timeout: float) -> list[Any]:
        push = self.visible_at + self.push_lag
        now = time.monotonic()
        if now < push:
            time.sleep(max(0.0, min(timeout, push - now)))
        if time.monotonic() >= push and not self.reported and self.selected == self.folder:
            self.reported = True
            return [(5, b"EXISTS")]
        return []

    def idle_done(self) -> tuple[bytes, list[Any]]:
        return b"IDLE terminated", []


def session(client: FakeClient, extra: tuple[str, ...] = ()) -> ImapSession:
    result = ImapSession(ImapEndpoint("fake", 993, "implicit"), Deadline(60), client=client)
    result.prepare(extra)
    return result


def assert_bracketed(found: imap.Sighting | None, truth: float) -> None:
    assert found is not None
    assert found.seen - found.uncertainty <= truth <= found.seen + found.uncertainty, (
        f"truth {truth - found.seen:+.3f}s from seen, uncertainty {found.uncertainty:.3f}s")


def test_the_fast_phase_brackets_the_arrival():
    sent = time.monotonic()
    client = FakeClient(sent + 0.3)
    assert_bracketed(session(client).wait_for(TOKEN, sent, timeout=10), client.visible_at)


@pytest.fixture
def short_phases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imap, "FAST_PHASE", 0.05)
    monkeypatch.setattr(imap, "BACKOFF_PHASE", 0.1)
    monkeypatch.setattr(imap, "SLOW_INTERVAL", 0.2)
    monkeypatch.setattr(imap, "IDLE_AFTER", 0.3)
    monkeypatch.setattr(imap, "IDLE_CYCLE", 1.0)


@pytest.mark.usefixtures("short_phases")
def test_the_slow_phase_brackets_the_arrival():
    sent = time.monotonic()
    client = FakeClient(sent + 0.25)  # past the fast phase, before IDLE
    assert_bracketed(session(client).wait_for(TOKEN, sent, timeout=10), client.visible_at)


@pytest.mark.usefixtures("short_phases")
def test_the_idle_phase_brackets_the_arrival_even_late_in_a_window():
    # IDLE starts at ~0.3 s and waits up to 1 s; the mail comes near the end of that window
    # and its news 0.3 s after it: the moment is not the middle of the window.
    sent = time.monotonic()
    client = FakeClient(sent + 1.0, idle=True, push_lag=0.3)
    assert_bracketed(session(client).wait_for(TOKEN, sent, timeout=10), client.visible_at)


def test_news_that_came_with_another_command_is_not_lost():
    sent = time.monotonic()
    client = FakeClient(sent + 0.2, news_with_status=True)
    found = session(client, extra=("Junk",)).wait_for(TOKEN, sent, timeout=3)
    assert found is not None and found.folder == "INBOX"
    assert_bracketed(found, client.visible_at)


def test_mail_in_an_extra_folder_is_found_there():
    sent = time.monotonic()
    client = FakeClient(sent + 0.2, folder="Junk")
    found = session(client, extra=("Junk",)).wait_for(TOKEN, sent, timeout=5)
    assert found is not None and found.folder == "Junk"
    assert_bracketed(found, client.visible_at)


def test_nothing_found_is_none_by_the_timeout():
    sent = time.monotonic()
    assert session(FakeClient(sent + 3600)).wait_for(TOKEN, sent, timeout=0.3) is None


def test_the_poll_slows_to_half_a_second_and_no_further():
    assert _poll_interval(0.1) == imap.FAST_INTERVAL
    assert imap.FAST_INTERVAL < _poll_interval(10) < SLOW_INTERVAL
    assert _poll_interval(60) == _poll_interval(600) == SLOW_INTERVAL == 0.5
