#!/usr/bin/env python3
"""What one healthy run costs as a whole process: wall time, CPU (user + sys), peak RSS.

Delivery is held back 1 s by the relay, as on a real server with a short queue; each
run is a fresh ``mail-monitor run`` process under ``/usr/bin/time -v``, as the systemd
timer starts it: with a state file and a metrics textfile, as the NixOS module
configures it, and for comparison the checks alone (``--no-state``, no metrics).

Each is started two ways: through the console script of a throw-away virtualenv that
pip installed the package into (as pipx installs it, and like the wrapped interpreter
of the Nix package, it sees no other site-packages), and as ``python3 -m
mail_monitor`` from the clone with the interpreter the benchmark runs under (whatever
that interpreter loads at start-up, such as ``.pth`` hooks in its site-packages,
counts too). Also reports the CLI's import time (``python -X importtime``).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, bench_arguments, byte_compile, environment_line, mail_stack, summary, write_config


def timed_run(command: list[str]) -> tuple[float, float, float, str]:
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    stats = done.stderr

    def field(name: str) -> float:
        match = re.search(rf"{re.escape(name)}: ([\d.]+)", stats)
        assert match, stats
        return float(match.group(1))

    cpu = field("User time (seconds)") + field("System time (seconds)")
    rss = field("Maximum resident set size (kbytes)") / 1024
    return wall, cpu, rss, done.stdout


def import_time(module: str, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        done = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"],
                              capture_output=True, text=True, cwd=ROOT)
        last = done.stderr.strip().splitlines()[-1]
        times.append(int(last.split("|")[1]) / 1e6)
    return times


def install_in_venv(directory: Path) -> Path | None:
    """The package installed as users install it; None if pip cannot fetch what it needs."""
    subprocess.run([sys.executable, "-m", "venv", str(directory)], check=True)
    done = subprocess.run([str(directory / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                           str(ROOT)], capture_output=True, text=True)
    if done.returncode != 0:
        print(f"note: no virtualenv rows, pip could not install the package:\n{done.stderr[-500:]}",
              file=sys.stderr)
        return None
    return directory / "bin" / "mail-monitor"


def main() -> None:
    args = bench_arguments(__doc__, repeat=10).parse_args()
    byte_compile()
    with tempfile.TemporaryDirectory(prefix="mail-monitor-venv-") as venv, \
            mail_stack(relay_delay=args.delay) as (stack, _relay):
        (stack.root / "textfiles").mkdir()
        full = write_config(stack, name="timer.toml", extra_monitor=f'state_file = "{stack.root / "state.json"}"',
                            extra=f'[metrics]\ntextfile = "{stack.root / "textfiles" / "mail_monitor.prom"}"\n')
        checks_only = write_config(stack)
        starts = {"`python3 -m mail_monitor` from the clone": [sys.executable, "-m", "mail_monitor"]}
        console_script = install_in_venv(Path(venv))
        if console_script is not None:
            starts = {"console script in a virtualenv": [str(console_script)], **starts}
        variants = {}
        for how, start in starts.items():
            variants[f"{how} | as the timer runs it (state + metrics)"] = [*start, "run", "-c", str(full)]
            variants[f"{how} | checks only (--no-state, no metrics)"] = [*start, "run", "-c", str(checks_only),
                                                                         "--no-state"]
        measured: dict[str, tuple[list[float], list[float], list[float]]] = {}
        for command in variants.values():
            timed_run(command)  # warm the page cache and Dovecot's index once
        for name in variants:
            measured[name] = ([], [], [])
        for _ in range(args.repeat):  # interleaved, so drift in the machine hits all alike
            for name, command in variants.items():
                wall, cpu, rss, stdout = timed_run(command)
                assert stdout.startswith("MAIL-MONITOR OK"), stdout
                for values, value in zip(measured[name], (wall, cpu, rss), strict=True):
                    values.append(value)
    startup = [timed_run([sys.executable, "-c", "pass"])[0] for _ in range(args.repeat)]
    print(f"# cost of one healthy run, delivery delayed {args.delay:g} s ({environment_line()}), "
          f"{args.repeat} runs each")
    print("| started as | run | wall time, s | CPU user+sys, s | peak RSS, MiB |")
    print("|---|---|---|---|---|")
    for name, (walls, cpus, rsses) in measured.items():
        print(f"| {name} | {summary(walls, digits=3)} | {summary(cpus, digits=3)} | {summary(rsses, digits=1)} |")
    print()
    print(f"import of mail_monitor.cli, ms: {summary(import_time('mail_monitor.cli', args.repeat), 1000)}; "
          f"for scale, `python3 -c pass`, s: {summary(startup, digits=3)}")


if __name__ == "__main__":
    main()
