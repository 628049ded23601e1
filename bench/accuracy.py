#!/usr/bin/env python3
"""How truthful is the reported roundtrip? Compare receive strategies side by side.

For each delivery delay (held back by a relay in front of Dovecot's LMTP), one real
``mail-monitor run`` sends and watches for its test mail, while in the same mailbox,
at the same time, three more observers watch for the same mail:

- ideal: already logged in, NOOP every 10 ms (the floor: what could be known at best),
- idle-only: IMAP IDLE and nothing else (Dovecot pushes about 0.5 s late),
- poll-2s: NOOP every 2 s, as the existing monitors do.

Error = a strategy's moment of "seen" minus the ideal observer's. Reported as
min / median / max in milliseconds over the repetitions, with IMAP commands per second
sent while waiting, and for mail-monitor how often the reported uncertainty contained
the relay's delivery time (the truth).

Long delays (15 s and more) are slow to measure: they run ``--long-repeat`` times.
"""

from __future__ import annotations

import ssl
import statistics
import threading
import time
from dataclasses import dataclass, field

from common import bench_arguments, environment_line, mail_stack, run_monitor, summary, write_config
from imapclient import IMAPClient


@dataclass
class Observer:
    name: str
    interval: float | None  # None: IDLE
    midpoint: bool
    seen: float | None = None
    commands: int = 0
    started: float = 0.0
    ready: threading.Event = field(default_factory=threading.Event)

    def watch(self, host: str, port: int, ca_file: str, user: str, password: str, stop: threading.Event) -> None:
        context = ssl.create_default_context(cafile=ca_file)
        client = IMAPClient(host, port=port, ssl=True, ssl_context=context, timeout=30)
        client.login(user, password)
        exists = client.select_folder("INBOX")[b"EXISTS"]
        self.ready.set()
        self.started = time.time()
        try:
            if self.interval is None:
                client.idle()
                self.commands += 1
                while not stop.is_set() and self.seen is None:
                    for response in client.idle_check(timeout=0.5):
                        if response[1] == b"EXISTS" and response[0] > exists:
                            self.seen = time.time()
                client.idle_done()
                return
            last_miss = time.time()
            while not stop.is_set():
                before = time.time()
                responses = client.noop()[1]
                after = time.time()
                self.commands += 1
                if any(r[1] == b"EXISTS" and r[0] > exists for r in responses):
                    hit = (before + after) / 2
                    self.seen = (last_miss + hit) / 2 if self.midpoint else after
                    return
                last_miss = (before + after) / 2
                time.sleep(max(0.0, self.interval - (time.time() - before)))
        finally:
            client.logout()


LONG = 15.0  # delays from here on are "long": fewer repetitions, a longer receive_timeout


def one_round(stack, relay, config, delay: float) -> tuple[dict[str, tuple[float | None, float]], bool]:  # type: ignore[no-untyped-def]
    observers = [Observer("ideal", 0.01, True), Observer("idle-only", None, False),
                 Observer("poll-2s", 2.0, False)]
    stop = threading.Event()
    threads = [threading.Thread(target=o.watch, args=("localhost", stack.imaps_port, str(stack.ca.ca_file),
                                                      "monitor@example.test", "pw-monitor", stop), daemon=True)
               for o in observers]
    for thread in threads:
        thread.start()
    for observer in observers:
        observer.ready.wait(10)
    delivered_before = len(relay.deliveries)
    report = run_monitor(config, timeout=delay + 120)
    route = report["routes"][0]
    deadline = time.time() + 10
    while time.time() < deadline and any(o.seen is None for o in observers):
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join(5)
    ideal = observers[0].seen
    assert ideal is not None and len(relay.deliveries) > delivered_before
    # Each command owns a slot of at least 50 ms (the pacer's spacing): rate over those slots.
    rate = route["imap_commands_while_waiting"] / (route["imap_wait_seconds"] + 0.05)
    truth = relay.deliveries[-1]
    covered = abs(route["seen_at"] - truth) <= route["roundtrip_uncertainty_seconds"]
    results = {
        "mail-monitor": (route["seen_at"] - ideal, rate),
        "relay delivery": (truth - ideal, 0.0),
    }
    for observer in observers[1:]:
        spent = (observer.seen or time.time()) - observer.started
        results[observer.name] = ((observer.seen - ideal) if observer.seen else None, observer.commands / spent)
    return results, covered


def main() -> None:
    parser = bench_arguments(__doc__, repeat=7, delay=False)
    parser.add_argument("--delays", type=float, nargs="+", default=[0.2, 1.0, 3.0, 20.0, 60.0])
    parser.add_argument("--long-repeat", type=int, default=3, help=f"runs per delay of {LONG:g} s or more")
    args = parser.parse_args()
    print(f"# receive accuracy ({environment_line()}), {args.repeat} runs per delay "
          f"({args.long_repeat} from {LONG:g} s)")
    print("| delay | strategy | error vs. ideal observer, ms (min / median / max) | median \\|error\\|, ms "
          "| max \\|error\\|, ms | IMAP commands/s while waiting | truth within reported uncertainty |")
    print("|---|---|---|---|---|---|---|")
    with mail_stack(relay_delay=0.0) as (stack, relay):
        assert relay is not None
        # Keep the test mails so the other observers see them too.
        longest = max(args.delays)
        config = write_config(stack, delete=False, deadline=longest + 60, receive_timeout=longest + 30)
        for delay in args.delays:
            relay.delay = delay
            collected: dict[str, list[tuple[float | None, float]]] = {}
            coverage: list[bool] = []
            for _ in range(args.long_repeat if delay >= LONG else args.repeat):
                results, covered = one_round(stack, relay, config, delay)
                coverage.append(covered)
                for name, value in results.items():
                    collected.setdefault(name, []).append(value)
            for name in ("mail-monitor", "idle-only", "poll-2s", "relay delivery"):
                errors = [e for e, _ in collected[name] if e is not None]
                rates = [r for _, r in collected[name]]
                missed = len(collected[name]) - len(errors)
                rate = f"{statistics.median(rates):.1f}" if name != "relay delivery" else "(truth)"
                note = f" ({missed} missed)" if missed else ""
                absolute = f"{statistics.median(abs(e) for e in errors) * 1000:.0f}" if errors else "n/a"
                worst = f"{max(abs(e) for e in errors) * 1000:.0f}" if errors else "n/a"
                within = f"{sum(coverage)}/{len(coverage)}" if name == "mail-monitor" else ""
                print(f"| {delay:g} s | {name} | {summary(errors, 1000)}{note} | {absolute} | {worst} | {rate} "
                      f"| {within} |", flush=True)


if __name__ == "__main__":
    main()
