"""The test stack itself: several stacks on one machine never touch each other's daemons."""

from __future__ import annotations

import imaplib
import os
import shutil
import ssl
import subprocess
import tempfile
from pathlib import Path

import pytest
from mailstack import MailStack

# Dovecot processes that live as long as the master (login and imap processes come and go).
LONG_LIVED = (b"/anvil", b"/auth", b"/config", b"/log", b"/stats")


def process_group(pgid: int, long_lived_only: bool = False) -> set[int]:
    members = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getpgid(int(proc.name)) != pgid:
                continue
            title = (proc / "cmdline").read_bytes().rstrip(b"\0")
        except (ProcessLookupError, FileNotFoundError):
            continue
        if not long_lived_only or int(proc.name) == pgid or title.endswith(LONG_LIVED):
            members.add(int(proc.name))
    return members


def imap_login(stack: MailStack, password: str) -> None:
    context = ssl.create_default_context(cafile=str(stack.ca.ca_file))
    with imaplib.IMAP4_SSL(stack.host, stack.imaps_port, ssl_context=context, timeout=10) as imap:
        imap.login(stack.accounts["monitor"].address, password)
        imap.logout()


@pytest.mark.mailstack
def test_stopping_a_stack_leaves_another_with_the_same_base_name_serving() -> None:
    # The same directory name under two parents: same Dovecot instance_name, same process titles.
    # (Not pytest's tmp_path: Dovecot's socket paths must stay short.)
    base = Path(tempfile.mkdtemp(prefix="mailstack-twins-"))
    stacks = [MailStack(base / parent / "stack") for parent in ("one", "two")]
    try:
        for stack in stacks:
            stack.add_user("monitor", "pw-" + stack.root.parent.name)
            stack.write_config()
            stack.start_dovecot()
        stopped, survivor = stacks
        stopped_master = stopped._dovecot_pid
        survivor_master = survivor._dovecot_pid
        assert stopped_master is not None and survivor_master is not None
        imap_login(survivor, "pw-two")  # starts auth
        survivor_processes = process_group(survivor_master, long_lived_only=True)
        assert len(survivor_processes) == 1 + len(LONG_LIVED)

        stopped.stop()

        assert process_group(stopped_master) == set()
        assert survivor_processes <= process_group(survivor_master)  # none of them was signalled
        imap_login(survivor, "pw-two")
    finally:
        for stack in stacks:
            stack.destroy()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.mailstack
def test_the_readme_demo_runs_with_the_clone_virtualenv() -> None:
    # What a new user types after `bash .ci/run`, with nothing on PATH but the system's tools.
    root = Path(__file__).resolve().parent.parent
    if not (root / ".venv" / "bin" / "python").exists():
        pytest.skip("no .venv in the clone: .ci/run makes it")
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    done = subprocess.run([str(root / "scripts" / "mailstack"), "demo"], cwd=root, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("MAIL-MONITOR OK - 1 route(s) ok")
