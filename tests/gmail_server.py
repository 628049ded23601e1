"""A loopback IMAP server that behaves like Gmail where the monitor can tell: a stand-in,
since nothing real that speaks Gmail's dialect exists here.

What it keeps of Gmail: the capability set (X-GM-EXT-1, MOVE, UIDPLUS, AUTH=XOAUTH2, no
WITHIN), the folders INBOX, ``[Gmail]/Spam``, ``[Gmail]/Trash`` and ``[Gmail]/All Mail``,
X-GM-RAW searches (quoted phrases match anywhere in the mail, ``subject:"..."`` the
subject), and labels: an EXPUNGE in INBOX only removes the label, the mail stays in All
Mail; a MOVE to Trash takes it out of All Mail; an EXPUNGE in Trash deletes it. XOAUTH2
answers a bad token like Gmail (a base64 JSON challenge, then NO), and with ``echo`` it
repeats the token in its refusal, as a careless server might. SEARCH keys other than
X-GM-RAW, UID, SINCE and ALL are refused: the monitor must not depend on them here.
Every command line is recorded.
"""

from __future__ import annotations

import base64
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser

CAPABILITIES = "IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 UIDPLUS MOVE " \
               "AUTH=XOAUTH2 AUTH=PLAIN"
INBOX, SPAM, TRASH, ALL = "INBOX", "[Gmail]/Spam", "[Gmail]/Trash", "[Gmail]/All Mail"
FOLDERS = (INBOX, SPAM, TRASH, ALL)
_TOKEN = re.compile(rb'"((?:[^"\\]|\\.)*)"|\(|\)|[^\s()"]+')


@dataclass
class Mail:
    raw: bytes
    labels: set[str]  # INBOX, SPAM or TRASH; All Mail shows what is in neither Spam nor Trash
    arrived: float = field(default_factory=time.time)
    uids: dict[str, int] = field(default_factory=dict)  # per folder, as Gmail gives each label view its own
    deleted_in: set[str] = field(default_factory=set)  # folders where it is flagged \Deleted


@dataclass
class FakeGmail:
    username: str = "someone@gmail.com"
    token: str = "ya29.good-token"
    password: str | None = None
    echo: bool = False  # repeat the offered token in the refusal
    mails: list[Mail] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    sasl: list[bytes] = field(default_factory=list)  # the client's lines within AUTHENTICATE

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._next_uid = dict.fromkeys(FOLDERS, 1)
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._closing = False
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()

    # -- the test's side --------------------------------------------------------------

    def deliver(self, raw: bytes, folder: str = INBOX) -> Mail:
        """A mail arrives with the label of ``folder`` (INBOX or Spam)."""
        with self._lock:
            mail = Mail(raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"), {folder})
            self.mails.append(mail)
            self._number(mail)
            return mail

    def in_folder(self, folder: str) -> list[Mail]:
        with self._lock:
            return [m for m in self.mails if self._visible(m, folder)]

    def close(self) -> None:
        self._closing = True
        self._sock.close()

    # -- labels -----------------------------------------------------------------------

    @staticmethod
    def _visible(mail: Mail, folder: str) -> bool:
        if folder == ALL:
            return not mail.labels & {SPAM, TRASH}
        return folder in mail.labels

    def _number(self, mail: Mail) -> None:
        """Give the mail a UID in every view it newly shows up in."""
        for folder in FOLDERS:
            if self._visible(mail, folder) and folder not in mail.uids:
                mail.uids[folder] = self._next_uid[folder]
                self._next_uid[folder] += 1

    def _view(self, folder: str) -> list[Mail]:
        return sorted((m for m in self.mails if self._visible(m, folder)), key=lambda m: m.uids[folder])

    # -- the connection ----------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closing:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        session = _Session(self, conn)
        try:
            session.run()
        except (OSError, ValueError):
            pass
        finally:
            conn.close()


class _Session:
    def __init__(self, server: FakeGmail, conn: socket.socket) -> None:
        self.server = server
        self.file = conn.makefile("rwb")
        self.selected: str | None = None
        self.reported = 0  # EXISTS last told for the selected folder
        self.authenticated = False

    def send(self, line: str | bytes) -> None:
        self.file.write((line.encode() if isinstance(line, str) else line) + b"\r\n")
        self.file.flush()

    def readline(self) -> bytes:
        line = self.file.readline(65536)
        if not line:
            raise ValueError("closed")
        return line.rstrip(b"\r\n")

    def run(self) -> None:
        self.send(f"* OK [CAPABILITY {CAPABILITIES}] Gimap ready for requests")
        while True:
            line = self.readline()
            with self.server._lock:
                self.server.commands.append(line.decode("utf-8", "replace"))
            tag, _, rest = line.partition(b" ")
            words = [w.decode() if isinstance(w, bytes) else w for w in _parse(rest)]
            if not words:
                self.send(tag + b" BAD empty command")
                continue
            name, args = str(words[0]).upper(), words[1:]
            uid = name == "UID"
            if uid:
                name, args = str(args[0]).upper(), args[1:]
            handler = getattr(self, f"do_{name.lower()}", None)
            if handler is None:
                self.send(tag + f" BAD {name} not supported here".encode())
                continue
            with self.server._lock:
                result = handler(args, uid) if name not in ("AUTHENTICATE", "LOGOUT") else None
            if name == "AUTHENTICATE":
                result = self.do_authenticate(args)
            elif name == "LOGOUT":
                self.send("* BYE LOGOUT Requested")
                self.send(tag + b" OK 73 good day (Success)")
                return
            self.send(tag + b" " + (result or "OK Success").encode())

    # -- commands (called with the server's lock held, except AUTHENTICATE) ------------

    def do_capability(self, args: list[object], uid: bool) -> str:
        self.send(f"* CAPABILITY {CAPABILITIES}")
        return "OK Thats all she wrote!"

    def do_noop(self, args: list[object], uid: bool) -> str:
        self._report_exists()
        return "OK Success"

    def do_id(self, args: list[object], uid: bool) -> str:
        self.send('* ID ("name" "GImap" "vendor" "Google, Inc.")')
        return "OK Success"

    def do_login(self, args: list[object], uid: bool) -> str:
        if self.server.password is not None and args == [self.server.username, self.server.password]:
            self.authenticated = True
            return "OK someone authenticated (Success)"
        return "NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)"

    def do_authenticate(self, args: list[object]) -> str:
        if str(args[0]).upper() != "XOAUTH2":
            return "NO unsupported mechanism"
        self.send("+ ")
        line = self.readline()
        self.server.sasl.append(line)
        response = base64.b64decode(line).decode("utf-8", "replace")
        match = re.fullmatch(r"user=([^\x01]*)\x01auth=Bearer ([^\x01]*)\x01\x01", response)
        if match and match.group(1) == self.server.username and match.group(2) == self.server.token:
            self.authenticated = True
            return f"OK {self.server.username} authenticated (Success)"
        error = b'{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}'
        self.send(b"+ " + base64.b64encode(error))
        self.server.sasl.append(self.readline())  # the client's answer: empty
        offered = f" for {match.group(2)}" if self.server.echo and match else ""
        return f"NO [AUTHENTICATIONFAILED] Invalid credentials{offered} (Failure)"

    def do_select(self, args: list[object], uid: bool) -> str:
        folder = str(args[0])
        if folder not in FOLDERS:
            return "NO [NONEXISTENT] Unknown Mailbox"
        self.selected = folder
        view = self.server._view(folder)
        self.reported = len(view)
        self.send(r"* FLAGS (\Answered \Flagged \Draft \Deleted \Seen)")
        self.send(f"* OK [UIDVALIDITY {FOLDERS.index(folder) + 1}] UIDs valid.")
        self.send(f"* {len(view)} EXISTS")
        self.send("* 0 RECENT")
        self.send(f"* OK [UIDNEXT {self.server._next_uid[folder]}] Predicted next UID.")
        return "OK [READ-WRITE] " + folder + " selected. (Success)"

    do_examine = do_select

    def do_status(self, args: list[object], uid: bool) -> str:
        folder = str(args[0])
        if folder not in FOLDERS:
            return "NO [NONEXISTENT] Unknown Mailbox"
        self.send(f'* STATUS "{folder}" (UIDNEXT {self.server._next_uid[folder]})')
        return "OK Success"

    def do_search(self, args: list[object], uid: bool) -> str:
        view = self._selected_view()
        keys = list(args)
        hits = view
        while keys:
            key = str(keys.pop(0)).upper()
            if key == "ALL":
                continue
            if key == "UID":
                low, _, high = str(keys.pop(0)).partition(":")
                top = max([m.uids[self.selected] for m in view], default=0)  # type: ignore[index]
                first = int(low)
                last = top if high == "*" else int(high or low)
                if high == "*" and first > top:
                    first = top  # "n:*" means the highest UID when n is above it (RFC 3501)
                hits = [m for m in hits if first <= m.uids[self.selected] <= last]  # type: ignore[index]
            elif key == "SINCE":
                since = time.mktime(time.strptime(str(keys.pop(0)), "%d-%b-%Y"))
                hits = [m for m in hits if m.arrived >= since]
            elif key == "X-GM-RAW":
                query = str(keys.pop(0))
                hits = [m for m in hits if _gmail_matches(m, query)]
            else:
                return f"BAD Could not parse command: {key} is not used with this fake Gmail"
        self.send("* SEARCH " + " ".join(str(m.uids[self.selected]) for m in hits))  # type: ignore[index]
        return "OK SEARCH completed (Success)"

    def do_fetch(self, args: list[object], uid: bool) -> str:
        view = self._selected_view()
        wanted = _uid_set(str(args[0]))
        items = args[1] if isinstance(args[1], list) else [args[1]]
        for number, mail in enumerate(view, 1):
            mail_uid = mail.uids[self.selected]  # type: ignore[index]
            if mail_uid not in wanted:
                continue
            parts = [f"UID {mail_uid}".encode()]
            for item in _fetch_items(items):
                upper = item.upper()
                if upper == "INTERNALDATE":
                    date = time.strftime("%d-%b-%Y %H:%M:%S +0000", time.gmtime(mail.arrived))
                    parts.append(f'INTERNALDATE "{date}"'.encode())
                elif upper.startswith("BODY.PEEK[HEADER.FIELDS"):
                    fields = upper[upper.index("(") + 1:upper.index(")")].split()
                    data = _header_fields(mail.raw, fields)
                    name = "BODY[HEADER.FIELDS (" + " ".join(fields) + ")]"
                    parts.append(f"{name} {{{len(data)}}}\r\n".encode() + data)
                elif upper.startswith("BODY.PEEK[]"):
                    limit = int(upper.rpartition(".")[2].rstrip(">")) if "<" in upper else len(mail.raw)
                    data = mail.raw[:limit]
                    parts.append(f"BODY[]<0> {{{len(data)}}}\r\n".encode() + data)
            self.send(f"* {number} FETCH (".encode() + b" ".join(parts) + b")")
        return "OK Success"

    def do_store(self, args: list[object], uid: bool) -> str:
        wanted = _uid_set(str(args[0]))
        flags = args[2] if len(args) > 2 and isinstance(args[2], list) else args[2:]
        if str(args[1]).upper().startswith("+FLAGS") and "\\Deleted" in flags:
            for mail in self._selected_view():
                if mail.uids[self.selected] in wanted:  # type: ignore[index]
                    mail.deleted_in.add(str(self.selected))
        return "OK Success"

    def do_expunge(self, args: list[object], uid: bool) -> str:
        wanted = _uid_set(str(args[0])) if uid and args else None
        folder = str(self.selected)
        for number, mail in reversed(list(enumerate(self._selected_view(), 1))):
            if folder in mail.deleted_in and (wanted is None or mail.uids[folder] in wanted):
                mail.deleted_in.discard(folder)
                if folder == TRASH:
                    self.server.mails.remove(mail)  # gone for good
                elif folder == ALL:
                    mail.labels.clear()  # Gmail: out of every label, still in All Mail
                else:
                    mail.labels.discard(folder)  # Gmail: only the label goes
                self.send(f"* {number} EXPUNGE")
        self.reported = len(self._selected_view())
        return "OK Success"

    def do_move(self, args: list[object], uid: bool) -> str:
        wanted = _uid_set(str(args[0]))
        target = str(args[1])
        folder = str(self.selected)
        moved = []
        for number, mail in reversed(list(enumerate(self._selected_view(), 1))):
            if mail.uids[folder] in wanted:
                moved.append(mail.uids[folder])
                mail.labels = {target} if target in (TRASH, SPAM) else (mail.labels - {folder}) | {target}
                for view in [f for f in mail.uids if not self.server._visible(mail, f)]:
                    del mail.uids[view]
                self.server._number(mail)
                self.send(f"* {number} EXPUNGE")
        self.reported = len(self._selected_view())
        return "OK [COPYUID 1 {}] Success".format(",".join(map(str, sorted(moved))))

    def do_close(self, args: list[object], uid: bool) -> str:
        self.selected = None
        return "OK Success"

    do_unselect = do_close

    def _selected_view(self) -> list[Mail]:
        return self.server._view(str(self.selected)) if self.selected else []

    def _report_exists(self) -> None:
        count = len(self._selected_view())
        if self.selected and count != self.reported:
            self.reported = count
            self.send(f"* {count} EXISTS")


def _parse(data: bytes) -> list[object]:
    """IMAP arguments: atoms, quoted strings, parenthesised lists (flattened into a list)."""
    stack: list[list[object]] = [[]]
    for match in _TOKEN.finditer(data):
        text = match.group(0)
        if text == b"(":
            stack.append([])
        elif text == b")":
            inner = stack.pop()
            stack[-1].append(inner)
        elif match.group(1) is not None:
            stack[-1].append(re.sub(rb"\\(.)", rb"\1", match.group(1)).decode("utf-8", "replace"))
        else:
            stack[-1].append(text.decode("utf-8", "replace"))
    return stack[0]


def _fetch_items(items: list[object]) -> list[str]:
    """FETCH items; a section's field list comes back as the next list, folded in again."""
    out: list[str] = []
    for item in items:
        if isinstance(item, list):
            out[-1] += "(" + " ".join(map(str, item)) + ")"
        elif out and out[-1].count("[") > out[-1].count("]"):
            out[-1] += str(item)
        else:
            out.append(str(item))
    return out


def _uid_set(text: str) -> set[int]:
    found: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition(":")
        found.update(range(int(low), int(high or low) + 1) if high != "*" else range(int(low), 10**6))
    return found


def _header_fields(raw: bytes, fields: list[str]) -> bytes:
    head = raw.split(b"\r\n\r\n", 1)[0]
    lines = head.split(b"\r\n")
    kept: list[bytes] = []
    keep = False
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if keep:
                kept.append(line)
            continue
        keep = line.split(b":", 1)[0].strip().upper().decode("ascii", "replace") in fields
        if keep:
            kept.append(line)
    return b"\r\n".join(kept) + b"\r\n\r\n"


def _gmail_matches(mail: Mail, query: str) -> bool:
    """A sliver of Gmail's query language: "phrases" anywhere, subject:"..." in the subject."""
    text = mail.raw.decode("utf-8", "replace").lower()
    subject = str(BytesHeaderParser().parsebytes(mail.raw).get("Subject", "")).lower()
    terms = re.findall(r'(subject:)?"([^"]*)"', query)
    if not terms:
        return False
    return all((phrase.lower() in subject) if field_ else (phrase.lower() in text) for field_, phrase in terms)

