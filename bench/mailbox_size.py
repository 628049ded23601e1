#!/usr/bin/env python3
"""Does a run cost the same whatever the size of the mailbox? 0, 10,000 and 50,000 mails.

The receiving INBOX is filled by writing Maildir files directly (ordinary mails, some
with subjects that look like ours but without the monitor's header), Dovecot indexes
them once in a warm-up run, then runs are timed. Afterwards every ordinary mail must
still be there: cleanup never touches them.
"""

from __future__ import annotations

import imaplib
import os
import pwd
import resource
import ssl
import statistics
import sys
import time
from pathlib import Path

from common import bench_arguments, byte_compile, environment_line, mail_stack, run_monitor, summary, write_config
from mailstack import MailStack


def fill(maildir: Path, count: int, uid: int, gid: int) -> None:
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
        os.chown(maildir / sub, uid, gid)
    os.chown(maildir, uid, gid)
    existing = len(os.listdir(maildir / "cur"))
    base = int(time.time()) - 86400 * 30
    for index in range(existing, count):
        subject = f"[mail-monitor] look-alike {index}" if index % 100 == 0 else f"Ordinary mail {index}"
        body = (f"From: sender{index % 50}@example.org\r\nTo: monitor@example.test\r\nSubject: {subject}\r\n"
                f"Date: Mon, 2 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{index}@bench>\r\n\r\n"
                f"Hello {index}, this is an ordinary message.\r\n")
        path = maildir / "cur" / f"{base + index}.M{index}P1.bench,S={len(body)}:2,S"
        path.write_text(body)
        os.chown(path, uid, gid)
        os.utime(path, (base + index / 1000, base + index / 1000))  # arrived a month ago


def server_floor(stack: MailStack, user: str, repeat: int = 3) -> tuple[float, float]:
    """What any client pays on this mailbox, in ms: SELECT, and deleting one new mail.

    Plain imaplib, no mail-monitor: one session selects INBOX, appends a mail, and
    removes it with STORE \\Deleted + UID EXPUNGE, as every careful client must.
    """
    context = ssl.create_default_context(cafile=str(stack.ca.ca_file))
    selects, deletes = [], []
    for attempt in range(repeat):
        client = imaplib.IMAP4_SSL(stack.host, stack.imaps_port, ssl_context=context, timeout=30)
        try:
            client.login(stack.accounts[user].address, f"pw-{user}")
            started = time.perf_counter()
            client.select("INBOX")
            selects.append(time.perf_counter() - started)
            mail = f"Subject: floor {attempt}\r\nX-Floor: {attempt}\r\n\r\nfloor\r\n".encode()
            client.append("INBOX", "", imaplib.Time2Internaldate(time.time()), mail)
            _, found = client.uid("SEARCH", "HEADER", "X-Floor", str(attempt))
            uid = found[0].split()[-1].decode()
            started = time.perf_counter()
            client.uid("STORE", uid, "+FLAGS.SILENT", "(\\Deleted)")
            client.uid("EXPUNGE", uid)
            deletes.append(time.perf_counter() - started)
        finally:
            client.logout()
    return statistics.median(selects) * 1000, statistics.median(deletes) * 1000


def count_mails(maildir: Path) -> int:
    return sum(len(os.listdir(maildir / sub)) for sub in ("cur", "new"))


def main() -> None:
    parser = bench_arguments(__doc__, repeat=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 10_000, 50_000])
    args = parser.parse_args()
    byte_compile()
    mail = pwd.getpwnam("mail")
    rows = []
    with mail_stack(relay_delay=args.delay) as (stack, _relay):
        config = write_config(stack)
        maildir = stack.maildir("monitor")
        for size in sorted(args.sizes):
            fill(maildir, size, mail.pw_uid, mail.pw_gid)
            started = time.perf_counter()
            run_monitor(config)  # Dovecot indexes the new files once, as it would on delivery
            indexing = time.perf_counter() - started
            walls, runs, cleanups, cpus = [], [], [], []
            for _ in range(args.repeat):
                started = time.perf_counter()
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                report = run_monitor(config)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                walls.append(time.perf_counter() - started)
                cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
                route = report["routes"][0]
                assert route["status"] == "OK", route
                runs.append(report["duration_seconds"])
                cleanups.append(route["checks"]["cleanup"]["duration_seconds"])
            floor = server_floor(stack, "monitor")
            remaining = count_mails(maildir)
            rows.append((size, walls, cpus, cleanups, indexing, floor, remaining))
    base = statistics.median(rows[0][1])
    print(f"# scaling with mailbox size, delivery delayed {args.delay:g} s ({environment_line()}), "
          f"{args.repeat} runs each")
    print("| mails in INBOX | wall time, s (min / median / max) | vs. empty | monitor CPU, s (median) "
          "| cleanup check, ms (median) | any client: SELECT / delete one mail, ms | first (indexing) run, s "
          "| mails left after all runs |")
    print("|---|---|---|---|---|---|---|---|")
    for size, walls, cpus, cleanups, indexing, (select_ms, delete_ms), remaining in rows:
        print(f"| {size:,} | {summary(walls, digits=3)} | {statistics.median(walls) / base:.2f}x "
              f"| {statistics.median(cpus):.3f} | {statistics.median(cleanups) * 1000:.1f} "
              f"| {select_ms:.0f} / {delete_ms:.0f} | {indexing:.2f} | {remaining:,} |")
        if remaining != size:
            print(f"ERROR: {size - remaining} ordinary mails were deleted", file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()
