"""IMAP: log in, watch for the test mail on the open session, and clean up after the monitor.

The wait is the part that decides how truthful the roundtrip is. Dovecot (like
most servers) sends IDLE news about half a second late, so the first seconds are
watched by polling the selected INBOX with NOOP every 55 ms; a SEARCH is sent at
once when NOOP reports new messages (never more than 20 commands in any second), and
only over the UIDs that arrived since the wait began, so the cost does not grow with
the mailbox.
Long waits back off to a poll every half second, and after two and a half minutes to
IDLE where offered. Every reported moment is bracketed by a look that missed and one that hit.
"""

from __future__ import annotations

import datetime
import email.utils
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from typing import Any

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError

from mail_monitor.config import ImapEndpoint, Secret
from mail_monitor.deadline import Deadline
from mail_monitor.probes.bounded import BoundedIMAPClient
from mail_monitor.probes.sasl import XOAuth2
from mail_monitor.probes.tls import client_context, negotiated_version, peer_certificate
from mail_monitor.results import Certificate
from mail_monitor.testmail import (
    BOUNCE_FETCH_BYTES,
    GUARD_FIELDS,
    TOKEN_HEADER,
    Bounce,
    arrival_criteria,
    bounce_for,
    bounce_search_criteria,
    gmail_search_criteria,
    is_stale,
    probe_headers,
    search_criteria,
)

MAX_COMMANDS_PER_SECOND = 20  # in any one-second window of the wait
FAST_INTERVAL = 0.055  # NOOP cadence: about 18 a second, room left for the follow-up SEARCH
FAST_PHASE = 5.0  # poll at full speed this long
BACKOFF_PHASE = 15.0  # then slow down to SLOW_INTERVAL by this point
# Half a second between looks keeps the roundtrip within +/-0.25 s (median error ~0.13 s)
# for late mail, at 2-3 commands a second.
SLOW_INTERVAL = 0.5
# IDLE only once the mail is this late: Dovecot pushes its news ~0.5 s late and in batches,
# so before then polling gives the truer moment. Beyond it the bracket is the IDLE window.
# Past the two minutes within which the roundtrip is promised to be true to 250 ms.
IDLE_AFTER = 150.0
IDLE_CYCLE = 5.0  # longest single IDLE before re-checking the other folders
EXTRA_FOLDER_EVERY = 10  # in the fast phase, check another folder every Nth look
_GUARD_FETCH = f"BODY.PEEK[HEADER.FIELDS ({' '.join(GUARD_FIELDS)})]"
_TOKEN_FETCH = f"BODY.PEEK[HEADER.FIELDS ({TOKEN_HEADER.upper()})]"
_MAX_BOUNCE_CANDIDATES = 20  # mails quoting one token: any more and something else is going on
MAX_COLLECT = 500  # monitor mails per folder an async route's collection looks at


class ImapLoginError(Exception):
    """The server refused the credentials."""


@dataclass
class Sighting:
    """Where and when the test mail showed up, with the error bar of that moment."""

    folder: str
    uid: int
    seen: float  # monotonic estimate of when the mail became visible
    uncertainty: float  # +/- seconds around ``seen``
    commands: int  # IMAP commands sent while waiting
    waited: float  # seconds from the start of the wait until the mail was found


@dataclass(frozen=True)
class Bounced:
    """A bounce of the test mail arrived while the monitor waited for the mail itself."""

    folder: str
    uid: int
    bounce: Bounce
    commands: int  # IMAP commands sent while waiting
    waited: float  # seconds from the start of the wait until the bounce was found


@dataclass(frozen=True)
class ImapProvider:
    """What differs between IMAP servers for the monitor: where probes may land, how the
    server is searched for them, and what deleting one means.

    The standard: SEARCH HEADER, and \\Deleted plus UID EXPUNGE in place. Gmail: its own
    index (X-GM-RAW, whose hits the guard then checks, as it matches text anywhere), its
    spam label as a folder, and deletion by moving to Trash and expunging there: in Gmail
    an expunge from INBOX only removes the label, the mail stays in All Mail.
    """

    name: str
    spam_folders: tuple[str, ...] = ()  # watched even when not in extra_folders
    trash: str | None = None  # deleting = moving here, then expunging here
    raw_search: bool = False  # searched with X-GM-RAW

    def watched(self, extra_folders: Sequence[str]) -> list[str]:
        """INBOX, the configured extra folders, then the provider's spam folders."""
        names = ["INBOX", *extra_folders, *self.spam_folders]
        return list(dict.fromkeys(names))

    def arrival_criteria(self, token: str) -> list[Any]:
        return gmail_search_criteria(None, token) if self.raw_search else arrival_criteria(token)

    def candidate_criteria(self, prefix: str, token: str | None = None) -> list[Any]:
        return gmail_search_criteria(prefix, token) if self.raw_search else search_criteria(prefix, token)

    def text_criteria(self, token: str) -> list[Any]:
        """Any mail with the token in its text: the probe, and bounces quoting it."""
        return gmail_search_criteria(None, token) if self.raw_search else bounce_search_criteria(token)


STANDARD = ImapProvider("default")
GMAIL = ImapProvider("gmail", spam_folders=("[Gmail]/Spam",), trash="[Gmail]/Trash", raw_search=True)
PROVIDERS = {provider.name: provider for provider in (STANDARD, GMAIL)}


@dataclass
class _Folder:
    """A watched folder and the first UID our mail could have."""

    name: str
    uidnext: int


class ImapSession:
    """One logged-in IMAP session used for the auth check, the wait and the cleanup."""

    def __init__(self, endpoint: ImapEndpoint, deadline: Deadline, *, client: Any = None) -> None:
        """Connect (and STARTTLS) to ``endpoint``; ``client``, an IMAPClient lookalike
        already connected, replaces the connection (tests of the wait use a fake)."""
        self.endpoint = endpoint
        self.deadline = deadline
        self.certificate: Certificate | None = None
        self.tls_version: str | None = None  # "TLSv1.3"; None without TLS
        self.selected: str | None = None
        self.provider = PROVIDERS[endpoint.provider]
        self._folders: dict[str, _Folder] = {}
        if client is not None:
            self.client = client
            return
        self.client = BoundedIMAPClient(
            endpoint.host,
            deadline=deadline,
            port=endpoint.port,
            ssl=endpoint.tls == "implicit",
            ssl_context=client_context(endpoint.ca_file),
            timeout=deadline.timeout(),
        )
        # imapclient turns imaplib's debug output up to route it to logging: every protocol
        # line is then formatted (LOGIN included) even though nobody logs it. Off: it costs
        # CPU on every poll, and protocol traces with credentials are not wanted anyway.
        self.client._imap.debug = 0
        try:
            if endpoint.tls == "starttls":
                self._refresh_timeout()
                self.client.starttls(client_context(endpoint.ca_file))
            self.certificate = peer_certificate(self.client.socket(), endpoint.label)
            self.tls_version = negotiated_version(self.client.socket())
        except BaseException:
            self.close()
            raise

    # -- plumbing ------------------------------------------------------------

    def _refresh_timeout(self, limit: float | None = None) -> None:
        self.client.socket().settimeout(self.deadline.timeout(limit))

    def login(self, username: str, password: Secret) -> None:
        self._refresh_timeout()
        try:
            self.client.login(username, password.reveal())
        except LoginError as exc:
            raise ImapLoginError(f"login refused: {_server_text(exc)}") from None

    def login_oauth2(self, username: str, token: Secret) -> None:
        """SASL XOAUTH2 with an OAuth2 access token (Gmail, Microsoft, Dovecot's oauth2 passdb)."""
        self._refresh_timeout()
        if not self.client.has_capability("AUTH=XOAUTH2"):
            raise ImapLoginError("the server does not offer AUTH=XOAUTH2 (is oauth2 enabled for IMAP?)")
        mechanism = XOAuth2(username, token)
        try:
            self.client.sasl_login("XOAUTH2", mechanism)
        except LoginError as exc:
            raise ImapLoginError(f"XOAUTH2 login refused: {_server_text(exc)}{mechanism.explain()}") from None

    def close(self) -> None:
        try:
            self._refresh_timeout(2.0)
            self.client.logout()
        except Exception:  # noqa: BLE001 - best effort, the session is done either way
            try:
                self.client.shutdown()
            except Exception:  # noqa: BLE001
                pass

    def _select(self, folder: str) -> dict[bytes, Any]:
        self._refresh_timeout()
        info: dict[bytes, Any] = self.client.select_folder(folder)
        self.selected = folder
        return info

    # -- before sending --------------------------------------------------------

    def prepare(self, extra_folders: Sequence[str]) -> tuple[str, ...]:
        """Select INBOX and note where new mail will start in every watched folder.

        A watched folder the server does not have (no ``Junk`` on a fresh Dovecot) is left
        out and returned: failing the login for it would be a false alarm on every run.
        """
        missing: list[str] = []
        info = self._select("INBOX")
        self._folders = {"INBOX": _Folder("INBOX", int(info.get(b"UIDNEXT", 1)))}
        for name in self.provider.watched(extra_folders)[1:]:
            try:
                uidnext = self._status_uidnext(name)
            except IMAPClientAbortError:
                raise
            except IMAPClientError:
                self._refresh_timeout()
                if self.client.folder_exists(name):
                    raise
                missing.append(name)
                continue
            self._folders[name] = _Folder(name, uidnext)
        return tuple(missing)

    def _status_uidnext(self, folder: str) -> int:
        self._refresh_timeout()
        status = self.client.folder_status(folder, [b"UIDNEXT"])
        return int(status[b"UIDNEXT"])

    # -- the wait --------------------------------------------------------------

    def wait_for(self, token: str, sent: float, timeout: float) -> Sighting | None:
        """Watch every folder for ``token`` until found or ``timeout`` after ``sent``.

        ``seen`` is the middle of the bracket between the start of the last look that
        did not find the mail and the end of the first that did, and ``uncertainty`` is
        half its width: the truth lies inside it, whatever the network or server did.
        """
        found = self._wait(token, sent, timeout, None)
        return found if isinstance(found, Sighting) else None

    def wait_for_probe_or_bounce(self, token: str, sent: float, timeout: float, *, prefix: str,
                                 instance: str | None = None) -> Sighting | Bounced | None:
        """``wait_for``, on a session in the sender's mailbox: a bounce of the probe (see
        testmail.bounce_for) that arrives in INBOX meanwhile ends the wait at once."""
        return self._wait(token, sent, timeout, (prefix, instance))

    def _wait(self, token: str, sent: float, timeout: float,
              bounces: tuple[str, str | None] | None) -> Sighting | Bounced | None:
        pacer = _Pacer(end=min(sent + timeout, self.deadline.at))
        # A random phase for the poll grid, so that it cannot lock onto a delivery time
        # that is itself regular (a fixed relay delay, a queue run every N ms): over many
        # runs the midpoint estimate is then unbiased.
        pacer.delay_start(random.uniform(0.0, FAST_INTERVAL))
        extras = [f for f in self._folders if f != "INBOX"]
        idle_ok = b"IDLE" in self.client.capabilities()
        last_miss = dict.fromkeys(self._folders, sent)  # per folder: start of the last look that missed
        turn = looked_aside = 0
        while True:
            elapsed = time.monotonic() - sent
            turn += 1
            if not pacer.wait(_poll_interval(elapsed)):
                return None
            before = time.monotonic()
            if idle_ok and elapsed > IDLE_AFTER:
                news, after = self._idle(min(IDLE_CYCLE, pacer.end - before))
            else:
                self._refresh_timeout()
                self.client.noop()
                after = time.monotonic()
                news = self._news()
            if news:
                inbox = self._folders["INBOX"]
                searched = time.monotonic()
                found = self._search_new(inbox, token, pacer)
                if found is not None:
                    return _sighting("INBOX", found, last_miss["INBOX"], after, pacer)
                if bounces is not None:
                    bounced = self._bounce_among_new(inbox, token, *bounces, pacer)
                    if bounced is not None:
                        return Bounced("INBOX", *bounced, pacer.count, time.monotonic() - pacer.started)
                last_miss["INBOX"] = searched
            else:
                last_miss["INBOX"] = before

            if extras and _extra_folder_due(turn, elapsed):
                # Another folder (Junk...): STATUS tells cheaply whether anything arrived. It
                # follows the INBOX look at once, so INBOX keeps its cadence.
                folder = self._folders[extras[looked_aside % len(extras)]]
                looked_aside += 1
                if not pacer.wait(0.0):
                    return None
                before = time.monotonic()
                uidnext = self._status_uidnext(folder.name)
                after = time.monotonic()
                if uidnext > folder.uidnext:
                    found = self._search_new(folder, token, pacer)
                    if found is not None:
                        return _sighting(folder.name, found, last_miss[folder.name], after, pacer)
                    folder.uidnext = uidnext  # nothing of ours below it: look further on only
                    if pacer.wait(0.0):
                        self._select("INBOX")  # back to polling INBOX
                last_miss[folder.name] = before

    def _idle(self, seconds: float) -> tuple[bool, float]:
        """IDLE for up to ``seconds``; whether news came, and when it reached us."""
        self._refresh_timeout()
        self.client.idle()
        try:
            self.client.socket().settimeout(None)
            responses = self.client.idle_check(timeout=max(0.0, seconds))
            pushed = time.monotonic()
        finally:
            self._refresh_timeout()
            _, done = self.client.idle_done()
        if _has_new(responses) | self._news():
            return True, pushed
        return _has_new(done), time.monotonic()

    def _news(self) -> bool:
        """Whether the server reported new mail in the selected folder since we last asked.

        Taken from imaplib's store of untagged responses, so news that came with any
        command (a STATUS, a SEARCH) counts, and the store does not grow over a long wait.
        """
        store = self.client._imap.untagged_responses
        exists = store.pop("EXISTS", None)
        recent = store.pop("RECENT", None)
        return bool(exists or recent)

    def _bounce_among_new(self, folder: _Folder, token: str, prefix: str, instance: str | None,
                          pacer: _Pacer) -> tuple[int, Bounce] | None:
        """A bounce of ``token`` among the mail that arrived in ``folder`` during the wait."""
        if not (pacer.wait(0.0) and pacer.wait(0.0)):  # a SEARCH, and maybe a FETCH
            return None
        return self._first_bounce(["UID", f"{folder.uidnext}:*"], folder.uidnext, token, prefix, instance)

    def _first_bounce(self, scope: list[Any], lowest: int, token: str, prefix: str,
                      instance: str | None) -> tuple[int, Bounce] | None:
        """SEARCH the token's text within ``scope``; the first candidate the guard accepts."""
        self._refresh_timeout()
        uids = [int(u) for u in self.client.search([*scope, *self.provider.text_criteria(token)])]
        # "n:*" also matches the highest UID when it is below n: filter those out.
        candidates = sorted(u for u in uids if u >= lowest)[:_MAX_BOUNCE_CANDIDATES]
        for uid, raw in self._fetch_bounded(candidates):
            bounce = bounce_for(raw, prefix, token, instance)
            if bounce is not None:
                return uid, bounce
        return None

    def _search_new(self, folder: _Folder, token: str, pacer: _Pacer) -> int | None:
        """UID SEARCH over the UIDs that arrived since we last looked (flat cost)."""
        if self.selected != folder.name:
            if not pacer.wait(0.0):
                return None
            self._select(folder.name)
        if not pacer.wait(0.0):
            return None
        self._refresh_timeout()
        uids = self.client.search(["UID", f"{folder.uidnext}:*", *self.provider.arrival_criteria(token)])
        # "n:*" also matches the highest UID when it is below n: filter those out.
        found = sorted(int(u) for u in uids if int(u) >= folder.uidnext)
        if found and self.provider.raw_search:
            # Gmail's index matches the token anywhere (a bounce quoting it too): keep
            # only mails that carry it in their own token header.
            if not pacer.wait(0.0):
                return None
            found = self._carrying_token(found, token)
        return found[0] if found else None

    def _carrying_token(self, uids: list[int], token: str) -> list[int]:
        self._refresh_timeout()
        data = self.client.fetch(uids, [_TOKEN_FETCH])
        return sorted(int(uid) for uid, item in data.items()
                      if BytesHeaderParser().parsebytes(_header_bytes(item)).get_all(TOKEN_HEADER) == [token])

    # -- after the wait ---------------------------------------------------------

    def delivery_seconds(self, folder: str, uid: int) -> float | None:
        """Server-side delivery time: newest minus oldest Received header (1 s resolution)."""
        if self.selected != folder:
            self._select(folder)
        self._refresh_timeout()
        data = self.client.fetch([uid], ["BODY.PEEK[HEADER.FIELDS (RECEIVED)]"])
        raw = data.get(uid, {}).get(b"BODY[HEADER.FIELDS (RECEIVED)]", b"")
        stamps = []
        for value in BytesHeaderParser().parsebytes(raw).get_all("Received", []):
            _, _, date = str(value).rpartition(";")
            try:
                parsed = email.utils.parsedate_to_datetime(date.strip())
            except (TypeError, ValueError):
                continue
            stamps.append(parsed.timestamp())
        if len(stamps) < 2:
            return None
        return max(0.0, max(stamps) - min(stamps))

    def delete_own(self, folder: str, uids: Iterable[int], prefix: str, token: str | None = None) -> int:
        """Delete mails, but only those whose fetched headers pass the probe guard.

        With ``token``, only the probe with that token.
        """
        uids = list(uids)
        if not uids:
            return 0
        if self.selected != folder:
            self._select(folder)
        ours = self._probes(uids, prefix, token)
        return self._discard(list(ours), set(ours.values()),
                             lambda found, mine: list(self._probes(found, prefix, mine)))

    def _probes(self, uids: list[int], prefix: str, token: str | None) -> dict[int, str]:
        """The guard: which of ``uids`` in the selected folder are probes (with ``token``); their tokens."""
        if not uids:
            return {}
        self._refresh_timeout()
        data = self.client.fetch(uids, [_GUARD_FETCH])
        ours = {}
        for uid, item in data.items():
            probe = probe_headers(_header_bytes(item), prefix)
            if probe is not None and (token is None or probe.token == token):
                ours[int(uid)] = probe.token
        return ours

    def _discard(self, uids: list[int], tokens: set[str], guard: Callable[[list[int], str], list[int]]) -> int:
        """Delete ``uids`` of the selected folder, which passed ``guard`` there.

        With a provider's trash folder (Gmail) they are moved there; in the trash each
        token is searched again, and only what passes ``guard(uids, token)`` anew is expunged.
        """
        trash = self.provider.trash
        if trash is None or not uids:
            return self._expunge(uids)
        self._refresh_timeout()
        if self.client.has_capability("MOVE"):
            self.client.move(uids, trash)
        else:
            self.client.copy(uids, trash)
            self._expunge(uids)
        self._select(trash)
        for token in sorted(tokens):
            self._refresh_timeout()
            found = sorted(int(u) for u in self.client.search(self.provider.text_criteria(token)))
            self._expunge(guard(found, token) if found else [])
        return len(uids)

    def _expunge(self, uids: list[int]) -> int:
        if not uids:
            return 0
        self._refresh_timeout()
        self.client.add_flags(uids, [b"\\Deleted"], silent=True)
        if self.client.has_capability("UIDPLUS"):
            # UID EXPUNGE removes only these; a plain EXPUNGE would also remove mail the
            # user flagged \Deleted, which is not ours to remove.
            self.client.uid_expunge(uids)
        return len(uids)

    def find_stale(self, folder: str, prefix: str, older_than: float, window: float, *,
                   instance: str | None = None, foreign_older_than: float | None = None) -> list[int]:
        """Probes left by failed runs: this ``instance``'s after ``older_than`` seconds,
        any other (another instance's, or without the marker) after ``foreign_older_than``
        (testmail.foreign_stale_after gives the documented default). Without
        ``foreign_older_than`` every probe is swept after ``older_than``, as before
        instance markers existed.

        Only mail that arrived within ``window`` is searched, so the header search never
        reads the years of mail behind it. YOUNGER (RFC 5032 WITHIN) is answered from the
        index: on Dovecot with 50,000 mails 27 ms, against 130 ms for the same SINCE.
        """
        if self.selected != folder:
            self._select(folder)
        self._refresh_timeout()
        uids = self.client.search([*self._recent(window), *self.provider.candidate_criteria(prefix)])
        if not uids:
            return []
        self._refresh_timeout()
        data = self.client.fetch(uids, ["INTERNALDATE", _GUARD_FETCH])
        now = time.time()
        stale = []
        for uid, item in data.items():
            probe = probe_headers(_header_bytes(item), prefix)
            received = item.get(b"INTERNALDATE")
            if probe is None or received is None:
                continue
            if foreign_older_than is None:
                sweep = now - _timestamp(received) > older_than
            else:
                sweep = is_stale(probe, now - _timestamp(received), instance=instance, own_after=older_than,
                                 foreign_after=foreign_older_than)
            if sweep:
                stale.append(int(uid))
        return stale

    def _recent(self, window: float) -> list[Any]:
        if self.client.has_capability("WITHIN"):
            return ["YOUNGER", int(window)]
        return ["SINCE", datetime.date.fromtimestamp(time.time() - window)]

    # -- bounces --------------------------------------------------------------------

    def find_bounce(self, token: str, prefix: str, *, instance: str | None = None,
                    folder: str = "INBOX", window: float = 86400.0) -> tuple[int, Bounce] | None:
        """A bounce of the probe ``token`` in ``folder`` (the sender's INBOX): its UID and report.

        Cheap: the server searches the text of what arrived since ``prepare`` (or within
        ``window``) for the token; only those candidates are fetched, each at most
        BOUNCE_FETCH_BYTES, and the guard in testmail decides.
        """
        if self.selected != folder:
            self._select(folder)
        watched = self._folders.get(folder)
        if watched is not None:
            return self._first_bounce(["UID", f"{watched.uidnext}:*"], watched.uidnext, token, prefix, instance)
        return self._first_bounce(self._recent(window), 0, token, prefix, instance)

    def delete_bounce(self, uid: int, token: str, prefix: str, *, instance: str | None = None,
                      folder: str = "INBOX") -> bool:
        """Delete the bounce ``uid`` if, fetched again, it is still a bounce of ``token``."""
        if self.selected != folder:
            self._select(folder)

        def bounces(uids: list[int], of: str) -> list[int]:
            """Only a bounce that returned the probe as a part of its own is ours to delete."""
            return [u for u, raw in self._fetch_bounded(uids)
                    if (bounce := bounce_for(raw, prefix, of, instance)) is not None and bounce.attached]

        return self._discard(bounces([uid], token), {token}, bounces) == 1

    def _fetch_bounded(self, uids: list[int]) -> list[tuple[int, bytes]]:
        if not uids:
            return []
        self._refresh_timeout()
        data = self.client.fetch(uids, [f"BODY.PEEK[]<0.{BOUNCE_FETCH_BYTES}>"])
        fetched = []
        for uid, item in data.items():
            raw = next((v for k, v in item.items() if k.startswith(b"BODY[]") and isinstance(v, bytes)), b"")
            fetched.append((int(uid), raw))
        return fetched

    @property
    def folders(self) -> list[str]:
        return list(self._folders)

    def find_tokens(self, tokens: Iterable[str], prefix: str, since: float) -> dict[str, Arrived]:
        """Where earlier probes (of an async route) arrived: one search and one fetch per folder.

        Only monitor mail (token header and subject prefix) that arrived since ``since``
        is searched, at most the newest ``MAX_COLLECT`` per folder.
        """
        wanted = set(tokens)
        found: dict[str, Arrived] = {}
        if not wanted:
            return found
        day = datetime.date.fromtimestamp(since - 86400)  # SINCE has a day's resolution, in server time
        for folder in self.folders:
            if self.selected != folder:
                self._select(folder)
            self._refresh_timeout()
            uids = self.client.search(["SINCE", day, *self.provider.candidate_criteria(prefix)])
            uids = sorted(int(u) for u in uids)[-MAX_COLLECT:]
            if not uids:
                continue
            self._refresh_timeout()
            for uid, item in self.client.fetch(uids, [_GUARD_FETCH, "INTERNALDATE"]).items():
                probe = probe_headers(_header_bytes(item), prefix)
                received = item.get(b"INTERNALDATE")
                if probe is not None and probe.token in wanted and probe.token not in found and received is not None:
                    found[probe.token] = Arrived(folder, int(uid), _timestamp(received))
        return found

    def fetch_message(self, folder: str, uid: int, limit: int) -> bytes:
        """The raw message, at most its first ``limit`` bytes (a partial FETCH: the server never
        sends more), for judging its signatures and Authentication-Results."""
        if self.selected != folder:
            self._select(folder)
        self._refresh_timeout()
        data = self.client.fetch([uid], [f"BODY.PEEK[]<0.{limit}>"])
        item = data.get(uid, {})
        return next((bytes(v) for k, v in item.items() if k.startswith(b"BODY[]") and v), b"")[:limit]


@dataclass(frozen=True)
class Arrived:
    """An earlier probe, found: where, and when the server says it arrived (INTERNALDATE, 1 s)."""

    folder: str
    uid: int
    at: float  # Unix time, truncated to the second by IMAP


class _Pacer:
    """Keeps the poll cadence and never lets more than 20 commands into any second."""

    def __init__(self, end: float) -> None:
        self.end = end
        self.count = 0
        self.started = time.monotonic()
        self._next = self.started
        self._recent: deque[float] = deque(maxlen=MAX_COMMANDS_PER_SECOND)

    def delay_start(self, seconds: float) -> None:
        self._next = time.monotonic() + seconds

    def wait(self, interval: float) -> bool:
        """Sleep until the next command may go out; False if that would pass ``end``.

        ``interval`` is the cadence to the *next* poll; follow-up commands pass 0 and
        go out at once, within the per-second budget.
        """
        now = time.monotonic()
        start = max(now, self._next) if interval else now
        if len(self._recent) == MAX_COMMANDS_PER_SECOND:
            start = max(start, self._recent[0] + 1.0)
        if start >= self.end:
            return False
        if start > now:
            time.sleep(start - now)
        self._recent.append(start)
        self._next = max(self._next, start + interval)
        self.count += 1
        return True


def _extra_folder_due(turn: int, elapsed: float) -> bool:
    """In the fast phase every Nth look also checks another folder; later every other one."""
    if elapsed <= FAST_PHASE:
        return turn % EXTRA_FOLDER_EVERY == 0
    return turn % 2 == 0


def _poll_interval(elapsed: float) -> float:
    if elapsed <= FAST_PHASE:
        return FAST_INTERVAL
    if elapsed >= BACKOFF_PHASE:
        return SLOW_INTERVAL
    share = (elapsed - FAST_PHASE) / (BACKOFF_PHASE - FAST_PHASE)
    return FAST_INTERVAL + share * (SLOW_INTERVAL - FAST_INTERVAL)


def _has_new(responses: Iterable[Any]) -> bool:
    for response in responses:
        if isinstance(response, tuple) and len(response) >= 2 and response[1] in (b"EXISTS", b"RECENT"):
            return True
    return False


def _sighting(folder: str, uid: int, last_miss: float, hit: float, pacer: _Pacer) -> Sighting:
    """The mail was not there when the last miss began, and was there when the hit ended."""
    return Sighting(folder, uid, (last_miss + hit) / 2, (hit - last_miss) / 2, pacer.count,
                    time.monotonic() - pacer.started)


def _header_bytes(item: dict[bytes, Any]) -> bytes:
    for key, value in item.items():
        if key.startswith(b"BODY[HEADER.FIELDS") and isinstance(value, bytes):
            return value
    return b""


def _timestamp(value: Any) -> float:
    if hasattr(value, "timestamp"):
        # imapclient returns naive local datetimes for INTERNALDATE by default.
        return float(value.timestamp())
    return time.time()


def _server_text(exc: BaseException) -> str:
    text = str(exc.args[0] if exc.args else exc)
    if text.startswith(("b'", 'b"')):
        text = text[2:-1]
    return " ".join(text.split()) or "authentication failed"


