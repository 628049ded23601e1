"""The local Postfix queue: how many mails wait in each queue, and for how long.

``postqueue -j`` (Postfix 3.1+) asks the showq service for one JSON object per queued
mail. Its output is read as a stream and only counted, so memory stays flat however
long the queue; a timeout kills postqueue if showq hangs. How this works for an
unprivileged service user is in docs/queue.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import time
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass

from mail_monitor.config import human_duration
from mail_monitor.results import Outcome

QUEUES: tuple[str, ...] = ("active", "deferred", "hold", "incoming", "maildrop")
POSTQUEUE = "postqueue"
MAX_LINE_BYTES = 4 * 1024 * 1024  # one mail's line; a mail with 50,000 recipients stays well under
MAX_STDERR_BYTES = 4096
DEFAULT_TIMEOUT = 20.0


class QueueError(Exception):
    """postqueue could not report the queue; one line for the user."""


@dataclass(frozen=True)
class QueueSnapshot:
    """Queue depths and the oldest deferred mail, at the moment showq answered."""

    depth: Mapping[str, int]  # every name in QUEUES, zero when empty
    oldest_deferred_seconds: float | None  # None when nothing is deferred

    @property
    def total(self) -> int:
        return sum(self.depth.values())


@dataclass(frozen=True)
class QueueThresholds:
    warn_deferred: int | None = None  # WARNING at this many deferred mails or more
    crit_deferred: int | None = None  # FAILED at this many or more
    warn_oldest_age: float | None = None  # WARNING when the oldest deferred mail is this old (seconds)


def postqueue_command(config_directory: str | None = None, postqueue: str = POSTQUEUE) -> list[str]:
    command = [postqueue, "-j"]
    if config_directory:
        command[1:1] = ["-c", config_directory]
    return command


def read_queue(config_directory: str | None = None, *, timeout: float = DEFAULT_TIMEOUT,
               postqueue: str = POSTQUEUE, now: float | None = None) -> QueueSnapshot:
    """Run postqueue -j and count what it lists."""
    with contextlib.closing(_run_lines(postqueue_command(config_directory, postqueue), timeout)) as lines:
        return parse_postqueue(lines, time.time() if now is None else now)


def parse_postqueue(lines: Iterable[bytes], now: float) -> QueueSnapshot:
    """Count JSON lines of ``postqueue -j``; unknown queue names count under their own name."""
    depth = dict.fromkeys(QUEUES, 0)
    oldest: float | None = None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            raise QueueError(f"postqueue -j line {number} is not JSON") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("queue_name"), str):
            raise QueueError(f"postqueue -j line {number} has no queue_name")
        queue = entry["queue_name"]
        depth[queue] = depth.get(queue, 0) + 1
        arrival = entry.get("arrival_time")
        if queue == "deferred" and isinstance(arrival, int | float) and not isinstance(arrival, bool):
            oldest = arrival if oldest is None else min(oldest, arrival)
    return QueueSnapshot(depth, None if oldest is None else max(0.0, now - oldest))


def evaluate(snapshot: QueueSnapshot, thresholds: QueueThresholds) -> tuple[Outcome, str]:
    """The check's outcome and a message naming every threshold crossed."""
    deferred = snapshot.depth.get("deferred", 0)
    age = snapshot.oldest_deferred_seconds
    summary = ", ".join(f"{n} {q}" for q, n in snapshot.depth.items() if n) or "empty"
    if age is not None:
        summary += f"; oldest deferred {human_duration(age)}"
    problems: list[tuple[Outcome, str]] = []
    if thresholds.crit_deferred is not None and deferred >= thresholds.crit_deferred:
        problems.append((Outcome.FAILED, f"{deferred} deferred (critical at {thresholds.crit_deferred})"))
    elif thresholds.warn_deferred is not None and deferred >= thresholds.warn_deferred:
        problems.append((Outcome.WARNING, f"{deferred} deferred (warning at {thresholds.warn_deferred})"))
    if thresholds.warn_oldest_age is not None and age is not None and age >= thresholds.warn_oldest_age:
        problems.append((Outcome.WARNING, f"oldest deferred mail waits {human_duration(age)} "
                                          f"(warning at {human_duration(thresholds.warn_oldest_age)})"))
    if not problems:
        return Outcome.OK, f"queue: {summary}"
    outcome = Outcome.FAILED if any(o is Outcome.FAILED for o, _ in problems) else Outcome.WARNING
    return outcome, "; ".join(text for _, text in problems) + f" (queue: {summary})"


def _run_lines(command: Sequence[str], timeout: float) -> Generator[bytes, None, None]:
    """The command's stdout lines as they come; killed at ``timeout``; each line bounded in length.

    The last line is only yielded once the command exited successfully, so a failing
    postqueue raises instead of ending the stream early.
    """
    try:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, env=_environment())
    except OSError as exc:
        raise QueueError(f"cannot run {command[0]}: {exc.strerror or exc}") from None
    assert process.stdout is not None and process.stderr is not None
    end = time.monotonic() + timeout
    partial = bytearray()
    errors = bytearray()
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ, "out")
            selector.register(process.stderr, selectors.EVENT_READ, "err")
            open_streams = 2
            while open_streams:
                left = end - time.monotonic()
                if left <= 0:
                    raise QueueError(f"postqueue gave no complete answer within {timeout:g}s")
                for key, _ in selector.select(left):
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        selector.unregister(key.fileobj)
                        open_streams -= 1
                    elif key.data == "err":
                        errors += chunk[: max(0, MAX_STDERR_BYTES - len(errors))]
                    else:
                        partial += chunk
                        *complete, rest = bytes(partial).split(b"\n")
                        partial = bytearray(rest)
                        yield from complete
                        if len(partial) > MAX_LINE_BYTES:
                            raise QueueError(f"postqueue -j printed a line over {MAX_LINE_BYTES} bytes")
            code = process.wait(max(0.1, end - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise QueueError(f"postqueue did not exit within {timeout:g}s") from None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()
    if code != 0:
        raise QueueError(_stderr_line(bytes(errors)) or f"postqueue exited with status {code}")
    if partial.strip():
        yield bytes(partial)


def _environment() -> dict[str, str]:
    """PATH only: postqueue, being set-gid, ignores most of the environment anyway."""
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}


def _stderr_line(errors: bytes) -> str:
    text = errors.decode("utf-8", "replace").strip().splitlines()
    return " ".join(text[-1].split())[:300] if text else ""
