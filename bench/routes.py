#!/usr/bin/env python3
"""Does a run stay about as long as its slowest route? 1, 10 and 50 routes, one account each.

Every route sends from its own account to itself, against the same local Postfix +
Dovecot (Dovecot's default per-user connection limit of 10 stays in force), with
delivery held back by the relay as in the cost benchmark.
"""

from __future__ import annotations

import statistics
import time

from common import bench_arguments, byte_compile, environment_line, mail_stack, run_monitor, summary, write_config


def main() -> None:
    parser = bench_arguments(__doc__, repeat=5)
    parser.add_argument("--routes", type=int, nargs="+", default=[1, 10, 50])
    args = parser.parse_args()
    byte_compile()
    users = [f"user{i:02d}" for i in range(max(args.routes))]
    results: dict[int, tuple[list[float], list[float], int]] = {}
    with mail_stack(users=users, relay_delay=args.delay) as (stack, _relay):
        for count in args.routes:
            config = write_config(stack, routes=count, name=f"routes-{count}.toml")
            run_monitor(config)  # warm up: first logins create the mailboxes
            walls, slowest, failures = [], [], 0
            for _ in range(args.repeat):
                started = time.perf_counter()
                report = run_monitor(config)
                walls.append(time.perf_counter() - started)
                slowest.append(max(r["roundtrip_seconds"] or 0 for r in report["routes"]))
                failures += sum(r["status"] != "OK" for r in report["routes"])
            results[count] = (walls, slowest, failures)
    base = statistics.median(results[args.routes[0]][0])
    print(f"# scaling with routes, delivery delayed {args.delay:g} s ({environment_line()}), {args.repeat} runs each")
    print("| routes | wall time of the run, s (min / median / max) | vs. 1 route | slowest roundtrip, s (median) "
          "| routes not OK |")
    print("|---|---|---|---|---|")
    for count, (walls, slowest, failures) in results.items():
        print(f"| {count} | {summary(walls, digits=3)} | {statistics.median(walls) / base:.2f}x "
              f"| {statistics.median(slowest):.3f} | {failures} |")


if __name__ == "__main__":
    main()
