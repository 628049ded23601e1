"""Atomic file writes: readers see the old file or the new one, never half of either."""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
import time
from pathlib import Path

# A write takes milliseconds; a temp file this much older was left by a process that died
# mid-write (kill -9, power loss) and will never be renamed.
LEFTOVER_AGE = 60.0


def _temp_affixes(path: Path) -> tuple[str, str]:
    return f".{path.name}.", ".tmp"


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Temp file in the same directory, fsync, rename over the target, fsync the directory.

    Afterwards, remove what earlier interrupted writes of ``path`` left behind.
    """
    directory = path.parent
    prefix, suffix = _temp_affixes(path)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    remove_leftovers(path)


def remove_leftovers(path: Path, older_than: float = LEFTOVER_AGE) -> list[Path]:
    """Delete the temp files of ``path`` that interrupted writes left; return what was deleted.

    Only regular files of ours whose name is exactly what ``write_atomic`` gives its temp
    file for this target (``tempfile.mkstemp``'s eight random characters) and that are
    older than ``older_than`` seconds: another process's write in progress is never touched.
    Best effort: a file that cannot be read or removed is left where it is.
    """
    prefix, suffix = _temp_affixes(path)
    pattern = re.compile(re.escape(prefix) + r"[a-z0-9_]{8}" + re.escape(suffix))
    cutoff = time.time() - older_than
    removed = []
    with contextlib.suppress(OSError), os.scandir(path.parent) as entries:
        for entry in entries:
            if not pattern.fullmatch(entry.name):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and info.st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
            except OSError:
                continue
    return removed
