#!/usr/bin/env python3
"""What one healthy run costs as a whole process: wall time, CPU (user + sys), peak RSS.

Delivery is held back 1 s by the relay, as on a real server with a short queue; each
run is a fresh ``mail-monitor run`` process under ``/usr/bin/time -v``, as the systemd
timer starts it. Also reports the CLI's import time (``python -X importtime``).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time

from common import ROOT, environment_line, mail_stack, summary, write_config


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--delay", type=float, default=1.0)
    args = parser.parse_args()
    # As any real installation (pip, Nix) has them: byte-compiled modules. This sandbox sets
    # PYTHONDONTWRITEBYTECODE, which would otherwise make every run compile from source.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "mail_monitor")], check=True)
    with mail_stack(relay_delay=args.delay) as (stack, _relay):
        config = write_config(stack)
        command = [sys.executable, "-m", "mail_monitor", "run", "-c", str(config), "--no-state"]
        timed_run(command)  # warm the page cache and Dovecot's index once
        walls, cpus, rsses = [], [], []
        for _ in range(args.repeat):
            wall, cpu, rss, stdout = timed_run(command)
            assert stdout.startswith("MAIL-MONITOR OK"), stdout
            walls.append(wall)
            cpus.append(cpu)
            rsses.append(rss)
    startup = [timed_run([sys.executable, "-c", "pass"])[0] for _ in range(args.repeat)]
    print(f"# cost of one healthy run, delivery delayed {args.delay:g} s ({environment_line()}), "
          f"{args.repeat} runs")
    print("| measure | min / median / max |")
    print("|---|---|")
    print(f"| wall time, s | {summary(walls, digits=3)} |")
    print(f"| CPU user+sys, s | {summary(cpus, digits=3)} |")
    print(f"| peak RSS, MiB | {summary(rsses, digits=1)} |")
    print(f"| import of mail_monitor.cli, ms | {summary(import_time('mail_monitor.cli', args.repeat), 1000)} |")
    print(f"| for scale: `python3 -c pass`, s | {summary(startup, digits=3)} |")


if __name__ == "__main__":
    main()
