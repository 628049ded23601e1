"""postqueue -j parsing, thresholds and running the command, with stand-in postqueue scripts."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from mail_monitor.postfix_queue import (
    MAX_LINE_BYTES,
    QueueError,
    QueueSnapshot,
    QueueThresholds,
    evaluate,
    parse_postqueue,
    postqueue_command,
    read_queue,
)
from mail_monitor.results import Outcome

NOW = 1_700_000_000.0


def line(queue: str, arrival: float, queue_id: str = "4SbV9G2Fjhz1") -> bytes:
    """One line as Postfix 3.7's postqueue -j prints it."""
    return json.dumps({
        "queue_name": queue, "queue_id": queue_id, "arrival_time": int(arrival), "message_size": 1834,
        "forced_expire": False, "sender": "monitor@example.test",
        "recipients": [{"address": "someone@example.org",
                        "delay_reason": "host mx.example.org[192.0.2.4] said: 451 4.7.1 try later"}],
    }).encode()


SAMPLE = [
    line("active", NOW - 5),
    line("deferred", NOW - 7200),
    line("deferred", NOW - 90_000),
    line("deferred", NOW - 60),
    line("hold", NOW - 400_000),  # old, but held on purpose: not the oldest *deferred*
    line("incoming", NOW - 1),
    b"",
]


def test_depth_per_queue_and_oldest_deferred() -> None:
    snapshot = parse_postqueue(SAMPLE, NOW)
    assert dict(snapshot.depth) == {"active": 1, "deferred": 3, "hold": 1, "incoming": 1, "maildrop": 0}
    assert snapshot.oldest_deferred_seconds == 90_000
    assert snapshot.total == 6


def test_an_empty_queue_has_every_queue_at_zero_and_no_age() -> None:
    snapshot = parse_postqueue([], NOW)
    assert dict(snapshot.depth) == {"active": 0, "deferred": 0, "hold": 0, "incoming": 0, "maildrop": 0}
    assert snapshot.oldest_deferred_seconds is None
    assert evaluate(snapshot, QueueThresholds(warn_deferred=1, warn_oldest_age=1)) == (Outcome.OK, "queue: empty")


def test_lines_that_are_not_postqueue_json_are_an_error() -> None:
    with pytest.raises(QueueError, match="line 2 is not JSON"):
        parse_postqueue([SAMPLE[0], b"Mail queue is empty"], NOW)
    with pytest.raises(QueueError, match="line 1 has no queue_name"):
        parse_postqueue([b'{"queue_id": "X"}'], NOW)


@pytest.mark.parametrize(("thresholds", "outcome", "message"), [
    (QueueThresholds(), Outcome.OK, "queue: 1 active, 3 deferred, 1 hold, 1 incoming; oldest deferred 1d 1h"),
    (QueueThresholds(warn_deferred=4, crit_deferred=10, warn_oldest_age=2 * 86400), Outcome.OK, "queue: "),
    (QueueThresholds(warn_deferred=3, crit_deferred=10), Outcome.WARNING, "3 deferred (warning at 3) (queue: "),
    (QueueThresholds(warn_deferred=1, crit_deferred=3), Outcome.FAILED, "3 deferred (critical at 3) (queue: "),
    (QueueThresholds(warn_oldest_age=86400), Outcome.WARNING,
     "oldest deferred mail waits 1d 1h (warning at 1d) (queue: "),
    (QueueThresholds(warn_oldest_age=90_000), Outcome.WARNING,
     "oldest deferred mail waits 1d 1h (warning at 1d 1h) (queue: "),
    (QueueThresholds(crit_deferred=2, warn_oldest_age=3600), Outcome.FAILED,
     "3 deferred (critical at 2); oldest deferred mail waits 1d 1h (warning at 1h) (queue: "),
], ids=["no-thresholds", "under", "warn-count", "crit-count", "warn-age", "warn-age-at", "both"])
def test_thresholds(thresholds: QueueThresholds, outcome: Outcome, message: str) -> None:
    got_outcome, got_message = evaluate(parse_postqueue(SAMPLE, NOW), thresholds)
    assert got_outcome is outcome
    assert got_message.startswith(message)


def test_command_line() -> None:
    assert postqueue_command() == ["postqueue", "-j"]
    assert postqueue_command("/etc/postfix-out") == ["postqueue", "-c", "/etc/postfix-out", "-j"]


def fake_postqueue(tmp_path: Path, script: str) -> str:
    path = tmp_path / "postqueue"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_reads_the_command_output_and_passes_the_config_directory(tmp_path: Path) -> None:
    (tmp_path / "out.jsonl").write_bytes(b"\n".join(SAMPLE[:4]) + b"\n")
    command = fake_postqueue(tmp_path, f'echo "$@" > {tmp_path}/args\nexec cat {tmp_path}/out.jsonl\n')
    snapshot = read_queue("/srv/postfix", postqueue=command, now=NOW)
    assert snapshot == QueueSnapshot(
        {"active": 1, "deferred": 3, "hold": 0, "incoming": 0, "maildrop": 0}, 90_000)
    assert (tmp_path / "args").read_text().split() == ["-c", "/srv/postfix", "-j"]


def test_a_failing_postqueue_reports_its_last_stderr_line(tmp_path: Path) -> None:
    command = fake_postqueue(tmp_path, f"cat {tmp_path}/nothing 2>/dev/null\n"
                             "echo 'postqueue: warning: Mail system is down -- accessing queue directly' >&2\n"
                             "echo 'postqueue: fatal: Queue report unavailable - mail system is down' >&2\n"
                             "exit 75\n")
    with pytest.raises(QueueError, match=r"^postqueue: fatal: Queue report unavailable - mail system is down$"):
        read_queue(postqueue=command)


def test_a_hanging_postqueue_is_killed_at_the_timeout(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    command = fake_postqueue(tmp_path, f"echo $$ > {pid_file}\nexec sleep 600\n")
    with pytest.raises(QueueError, match=r"no complete answer within 0\.5s"):
        read_queue(postqueue=command, timeout=0.5)
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped, not left behind


def test_an_endless_line_is_refused_with_bounded_memory(tmp_path: Path) -> None:
    command = fake_postqueue(tmp_path, "exec yes '{\"queue_name\": \"deferred\"' | tr -d '\\n'\n")
    with pytest.raises(QueueError, match=f"line over {MAX_LINE_BYTES} bytes"):
        read_queue(postqueue=command, timeout=30)


def test_a_missing_postqueue_is_named(tmp_path: Path) -> None:
    with pytest.raises(QueueError, match=r"^cannot run .*/nope: No such file or directory$"):
        read_queue(postqueue=str(tmp_path / "nope"))
