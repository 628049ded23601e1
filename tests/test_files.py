"""Atomic writes and the sweep of what interrupted writes leave behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from mail_monitor.files import LEFTOVER_AGE, remove_leftovers, write_atomic

ROOT = Path(__file__).resolve().parent.parent

# A process killed with SIGKILL between writing its temp file and the rename.
KILLED_MID_WRITE = """
import os, signal, sys
from pathlib import Path
from mail_monitor import files
files.os.replace = lambda *_: os.kill(os.getpid(), signal.SIGKILL)
files.write_atomic(Path(sys.argv[1]), b"never renamed")
"""


def leave_temp_file(target: Path) -> Path:
    before = set(target.parent.iterdir())
    done = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(target)], cwd=ROOT, timeout=60)
    assert done.returncode == -9
    (left,) = set(target.parent.iterdir()) - before
    return left


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_write_replaces_the_file_and_keeps_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_atomic(target, b"one", mode=0o600)
    write_atomic(target, b"two", mode=0o600)
    assert target.read_bytes() == b"two"
    assert target.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_write_removes_what_a_killed_write_left_and_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    old_leftover = leave_temp_file(target)
    fresh_leftover = leave_temp_file(target)  # maybe another run's write in progress
    age(old_leftover, LEFTOVER_AGE + 5)
    foreign = [tmp_path / name for name in (
        ".state.json.tmp", ".state.json.abcdefgh.tmp.bak", "state.json.abcdefgh.tmp",
        ".state.json.abcdefghi.tmp", ".other.json.abcdefgh.tmp", ".state.jsonXabcdefgh.tmp",
    )]
    for path in foreign:
        path.write_text("not ours")
        age(path, 3600)
    link = tmp_path / ".state.json.symlnk_8.tmp"  # our name, but not a file we wrote
    link.symlink_to(foreign[0])
    then = time.time() - 3600
    os.utime(link, (then, then), follow_symlinks=False)

    write_atomic(target, b"new state")

    assert target.read_bytes() == b"new state"
    assert not old_leftover.exists()
    assert fresh_leftover.read_bytes() == b"never renamed"
    assert all(path.read_text() == "not ours" for path in foreign)
    assert link.is_symlink()


def test_the_sweep_reports_what_it_removed(tmp_path: Path) -> None:
    target = tmp_path / "mail_monitor.prom"
    leftover = leave_temp_file(target)
    assert remove_leftovers(target) == []  # too young yet
    assert remove_leftovers(target, older_than=-1.0) == [leftover]
    assert remove_leftovers(tmp_path / "missing-dir" / "x.prom") == []
