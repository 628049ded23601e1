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

``--baseline DIR`` also runs another checkout (a ``git worktree`` of an older commit)
the same way, as ``python3 -m mail_monitor`` with that tree first on the path,
interleaved with this one against the same stack, and adds a table of the differences
of the medians: the comparison behind docs/performance.md.

``--deliverability`` instead runs against the DNS world of the tests (scripts/dnsstack.py:
Knot, OpenDKIM signing, policyd-spf/OpenDMARC, nginx for MTA-STS) and compares a run of
the route alone with a run where every deliverability family is due (probe verdicts with
``require``, the posture of example.test with MTA-STS, a blocklist): what those add to
the wall time, the CPU and the roundtrip.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    ROOT,
    LmtpDelayRelay,
    bench_arguments,
    byte_compile,
    environment_line,
    mail_stack,
    summary,
    write_config,
)


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


def deliverability(repeat: int, delay: float) -> None:
    import json
    import shutil

    from dnsstack import AUTHSERV_ID, BLOCKLIST_ZONE, DOMAIN, DnsWorld
    from mailstack import MailStack

    root = Path(tempfile.mkdtemp(prefix="dnsworld-bench-"))
    stack = MailStack(root)
    stack.add_user("monitor", "pw-monitor")
    (root / "monitor.password").write_text("pw-monitor\n")
    relay = LmtpDelayRelay(stack.lmtp_port, delay)
    stack.lmtp_target_port = relay.port
    world = DnsWorld(root / "world", stack.ca)
    world.attach(stack)
    world.start()
    try:
        stack.start()
        route = f'require = ["spf", "dkim", "dmarc"]\ntrusted_authserv_ids = ["{AUTHSERV_ID}"]\n' \
                'sending_ips = ["127.0.0.1"]\n'
        plain = write_config(stack, name="plain.toml", extra_monitor=f'resolver = "{world.resolver}"')
        text = plain.read_text().replace('receive_timeout = "30s"\n', 'receive_timeout = "30s"\n' + route)
        text += (f'[[domains]]\nname = "{DOMAIN}"\ndkim_selectors = ["{world.selector}"]\n'
                 f'sending_ips = ["127.0.0.1"]\nmta_sts = true\nca_file = "{stack.ca.ca_file}"\n\n'
                 f'[blocklists]\nzones = ["{BLOCKLIST_ZONE}"]\n')
        full = root / "deliverability.toml"
        full.write_text(text)
        env_prefix = ["env", f"MAIL_MONITOR_MTA_STS_PORT={world.https_port}"]
        variants = {"route only": plain, "route + every deliverability family due": full}
        measured: dict[str, tuple[list[float], list[float], list[float]]] = {n: ([], [], []) for n in variants}
        for config in variants.values():  # warm up
            timed_run([*env_prefix, sys.executable, "-m", "mail_monitor", "run", "-c", str(config), "--no-state"])
        for _ in range(repeat):
            for name, config in variants.items():
                wall, cpu, _rss, stdout = timed_run([*env_prefix, sys.executable, "-m", "mail_monitor", "run", "-c",
                                                     str(config), "--no-state", "--format", "json"])
                report = json.loads(stdout)
                assert report["status"] == "OK", json.dumps(report, indent=1)
                assert (config == full) == any(s["subject"].startswith("domain:") for s in report["subjects"])
                measured[name][0].append(wall)
                measured[name][1].append(cpu)
                measured[name][2].append(report["routes"][0]["roundtrip_seconds"])
    finally:
        stack.stop()
        world.stop()
        relay.close()
        shutil.rmtree(root, ignore_errors=True)
    print(f"# deliverability families against the DNS world, delivery delayed {delay:g} s "
          f"({environment_line()}), {repeat} runs each, min / median / max")
    print("| run | wall time, s | CPU user+sys, s | roundtrip, s |")
    print("|---|---|---|---|")
    for name, (walls, cpus, trips) in measured.items():
        print(f"| {name} | {summary(walls, digits=3)} | {summary(cpus, digits=3)} | {summary(trips, digits=3)} |")


def main() -> None:
    parser = bench_arguments(__doc__, repeat=10)
    parser.add_argument("--deliverability", action="store_true",
                        help="compare a run with and without the deliverability families (DNS world)")
    parser.add_argument("--baseline", type=Path, metavar="DIR",
                        help="another checkout to compare with (interleaved, same stack)")
    args = parser.parse_args()
    byte_compile()
    if args.baseline is not None:
        byte_compile(args.baseline)
    if args.deliverability:
        deliverability(args.repeat, args.delay)
        return
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
        if args.baseline is not None:
            # Its own state and metrics files: an older version must not read (or refuse) ours.
            theirs = stack.root / "baseline.toml"
            theirs.write_text(full.read_text().replace("state.json", "baseline-state.json")
                              .replace("mail_monitor.prom", "baseline.prom"))
            # Started in that tree: ``-m`` puts the working directory first on the path.
            start = ["env", "-C", str(args.baseline.resolve()), f"PYTHONPATH={args.baseline.resolve()}",
                     sys.executable, "-m", "mail_monitor"]
            variants["baseline `python3 -m mail_monitor` | as the timer runs it (state + metrics)"] = \
                [*start, "run", "-c", str(theirs)]
            variants["baseline `python3 -m mail_monitor` | checks only (--no-state, no metrics)"] = \
                [*start, "run", "-c", str(checks_only), "--no-state"]
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
    if args.baseline is not None:
        compare(measured, args.baseline)


def compare(measured: dict[str, tuple[list[float], list[float], list[float]]], baseline: Path) -> None:
    """This checkout against the baseline, both started as ``python3 -m``: medians and change."""
    print()
    print(f"# this checkout against {baseline} (medians, `python3 -m mail_monitor`)")
    print("| run | wall time, s | CPU user+sys, s | peak RSS, MiB |")
    print("|---|---|---|---|")
    for run in ("as the timer runs it (state + metrics)", "checks only (--no-state, no metrics)"):
        ours = measured[f"`python3 -m mail_monitor` from the clone | {run}"]
        theirs = measured[f"baseline `python3 -m mail_monitor` | {run}"]
        cells = []
        for values, before, digits in zip(ours, theirs, (3, 3, 1), strict=True):
            now, then = statistics.median(values), statistics.median(before)
            cells.append(f"{then:.{digits}f} → {now:.{digits}f} ({(now - then) / then:+.0%})")
        print(f"| {run} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
