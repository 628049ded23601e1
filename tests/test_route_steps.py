"""The route checks on the engine, against fake sessions: milliseconds, no network."""

from __future__ import annotations

import imaplib
import ssl
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from mail_monitor.checks.routes import CLEANUP_RESERVE, MAX_SESSIONS_PER_MAILBOX, Sessions, route_steps
from mail_monitor.config import Account, Config, Endpoint, ImapEndpoint, MonitorSettings, Route, Secret
from mail_monitor.deadline import Deadline
from mail_monitor.engine import Engine
from mail_monitor.probes.imap import Arrived, Bounced, ImapLoginError, Sighting
from mail_monitor.probes.tls import describe_error
from mail_monitor.results import Arrival, Certificate, CleanupReport, History, Outcome, RunResult, Status
from mail_monitor.testmail import Bounce

NOT_AFTER = time.time() + 90 * 86400


@dataclass
class World:
    """What the fake servers do, and what the fakes saw."""

    delay: float = 0.05  # seconds from submission to the mail being visible
    folder: str = "INBOX"
    imap_login_error: Exception | None = None
    imap_connect_error: Exception | None = None
    smtp_connect_error: Exception | None = None
    cleanup_error: Exception | None = None
    wait_timeouts: list[float] = field(default_factory=list)
    deleted: list[tuple[str, list[int]]] = field(default_factory=list)
    arrived: dict[str, Arrived] = field(default_factory=dict)  # async probes the server has
    bounce: Bounce | None = None  # a bounce of the probe arrives instead of the probe
    bounces_deleted: list[tuple[str, int, str]] = field(default_factory=list)
    sweeps: list[tuple[str | None, float, float | None]] = field(default_factory=list)
    raw: bytes = b""  # the received probe as fetch_message returns it
    fetched: list[int] = field(default_factory=list)  # limits fetch_message was called with
    open_imap: int = 0
    peak_imap: int = 0
    logins: list[tuple[str, str, str, str]] = field(default_factory=list)  # (protocol, how, user, secret)
    oauth2_error: Exception | None = None  # what both servers say to any XOAUTH2 login
    missing_folders: tuple[str, ...] = ()  # extra folders the IMAP server does not have
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeImap:
    def __init__(self, world: World, endpoint: ImapEndpoint, deadline: Deadline) -> None:
        if world.imap_connect_error is not None:
            raise world.imap_connect_error
        self.world = world
        self.certificate = Certificate(endpoint.label, NOT_AFTER, tls_version="TLSv1.3")
        self.folders: list[str] = ["INBOX", *endpoint.extra_folders]
        with world.lock:
            world.open_imap += 1
            world.peak_imap = max(world.peak_imap, world.open_imap)

    def login(self, username: str, password: Secret) -> None:
        self.world.logins.append(("imap", "password", username, password.reveal()))
        if self.world.imap_login_error is not None:
            raise self.world.imap_login_error

    def login_oauth2(self, username: str, token: Secret) -> None:
        self.world.logins.append(("imap", "xoauth2", username, token.reveal()))
        if self.world.oauth2_error is not None:
            raise self.world.oauth2_error

    def prepare(self, extra_folders: Sequence[str]) -> tuple[str, ...]:
        return tuple(f for f in extra_folders if f in self.world.missing_folders)

    def wait_for(self, token: str, sent: float, timeout: float) -> Sighting | None:
        self.world.wait_timeouts.append(timeout)
        if self.world.delay > timeout:
            return None
        time.sleep(0.01)  # hold the session a moment, as a real wait would
        return Sighting(self.world.folder, 7, sent + self.world.delay, 0.01, 12, self.world.delay)

    def delivery_seconds(self, folder: str, uid: int) -> float | None:
        return 0.0

    def fetch_message(self, folder: str, uid: int, limit: int) -> bytes:
        self.world.fetched.append(limit)
        return self.world.raw[:limit]

    def wait_for_probe_or_bounce(self, token: str, sent: float, timeout: float, *, prefix: str,
                                 instance: str | None = None) -> Sighting | Bounced | None:
        if self.world.bounce is not None:
            return Bounced("INBOX", 99, self.world.bounce, 3, 0.2)
        return self.wait_for(token, sent, timeout)

    def find_bounce(self, token: str, prefix: str, *, instance: str | None = None,
                    folder: str = "INBOX", window: float = 86400.0) -> tuple[int, Bounce] | None:
        return None

    def delete_bounce(self, uid: int, token: str, prefix: str, *, instance: str | None = None,
                      folder: str = "INBOX") -> bool:
        self.world.bounces_deleted.append((folder, uid, token))
        return True

    def delete_own(self, folder: str, uids: Iterable[int], prefix: str, token: str | None = None) -> int:
        if self.world.cleanup_error is not None:
            raise self.world.cleanup_error
        uids = list(uids)
        self.world.deleted.append((folder, uids))
        return len(uids)

    def find_stale(self, folder: str, prefix: str, older_than: float, window: float, *,
                   instance: str | None = None, foreign_older_than: float | None = None) -> list[int]:
        self.world.sweeps.append((instance, older_than, foreign_older_than))
        return []

    def find_tokens(self, tokens: Iterable[str], prefix: str, since: float) -> dict[str, Arrived]:
        return {t: self.world.arrived[t] for t in tokens if t in self.world.arrived}

    def close(self) -> None:
        with self.world.lock:
            self.world.open_imap -= 1


class FakeSmtp:
    def __init__(self, world: World, endpoint: Endpoint, deadline: Deadline, name: str) -> None:
        if world.smtp_connect_error is not None:
            raise world.smtp_connect_error
        self.certificate = Certificate(endpoint.label, NOT_AFTER, tls_version="TLSv1.3")
        self.world = world

    def login(self, username: str, password: Secret) -> None:
        self.world.logins.append(("smtp", "password", username, password.reveal()))

    def login_oauth2(self, username: str, token: Secret) -> None:
        self.world.logins.append(("smtp", "xoauth2", username, token.reveal()))
        if self.world.oauth2_error is not None:
            raise self.world.oauth2_error

    def send(self, message: object, sender: str, recipient: str) -> float:
        return time.monotonic()

    def close(self) -> None:
        pass


def config(routes: int = 1, **monitor: object) -> Config:
    smtp = Endpoint("mx.example.org", 587, "starttls")
    imap = ImapEndpoint("mx.example.org", 993, "implicit", extra_folders=("Junk",))
    account = Account("self", "monitor@example.org", "monitor@example.org", "/run/pw", Secret("pw"), smtp, imap)
    settings = replace(MonitorSettings(state_file=None, instance="mx"), **monitor)  # type: ignore[arg-type]
    route_list = tuple(Route(f"r{n}", account, account, receive_timeout=60.0, slow_after=30.0) for n in range(routes))
    return Config(settings, {"self": account}, route_list)


def run(world: World, cfg: Config | None = None, seconds: float = 30.0, history: History | None = None) -> RunResult:
    cfg = cfg or config()
    sessions = Sessions(imap=lambda e, d: FakeImap(world, e, d),  # type: ignore[arg-type,return-value]
                        smtp=lambda e, d, n: FakeSmtp(world, e, d, n))  # type: ignore[arg-type,return-value]
    started = time.time()
    steps = list(route_steps(cfg, history or History(), sessions))
    results = Engine(describe=describe_error).run(steps, Deadline(seconds))
    return RunResult(started, 0.1, tuple(results), "mx")


def outcomes(result: RunResult, route: str = "r0") -> dict[str, Outcome]:
    return {c.name: c.outcome for c in result.checks if c.subject.name == route}


def test_a_healthy_route_passes_every_check_and_reports_its_roundtrip() -> None:
    world = World(delay=0.25)
    result = run(world)
    assert outcomes(result) == dict.fromkeys(("imap_auth", "smtp_auth", "send", "receive", "cleanup", "tls"),
                                             Outcome.OK)
    route = result.routes[0]
    arrival = route.detail(Arrival)
    assert arrival is not None and abs(arrival.roundtrip - 0.25) < 1e-6 and arrival.folder == "INBOX"
    receive = route.check("receive")
    assert receive is not None and receive.duration is not None and receive.duration < 0.25  # its own time
    assert [d for d in world.deleted if d[1]] == [("INBOX", [7])]  # only the test mail
    assert route.detail(CleanupReport) == CleanupReport(True, 0)
    assert world.open_imap == 0  # every session was closed


def test_an_extra_folder_the_server_lacks_is_named_but_fails_nothing() -> None:
    # The NixOS module watches "Junk" by default; a server without one must not page every run.
    result = run(World(missing_folders=("Junk",)))
    assert set(outcomes(result).values()) == {Outcome.OK}
    imap_auth = result.routes[0].check("imap_auth")
    assert imap_auth is not None and imap_auth.message == "not watched, the server has no such folder: 'Junk'"
    assert result.routes[0].check("smtp_auth").message == ""  # type: ignore[union-attr]


def test_tls_with_no_endpoint_reached_could_not_look_rather_than_had_nothing_to_check() -> None:
    down = ConnectionRefusedError(111, "Connection refused")
    result = run(World(imap_connect_error=down, smtp_connect_error=down))
    tls = result.routes[0].check("tls")
    assert tls is not None and tls.outcome is Outcome.SKIPPED and "no TLS session" in tls.message
    assert tls.unchecked  # an alert about an expired certificate stays open: nothing was learnt


def test_tls_on_plain_text_endpoints_by_choice_had_nothing_to_check() -> None:
    cfg = config()
    account = cfg.routes[0].sender
    plain = replace(account, smtp=replace(account.smtp, tls="none", allow_plaintext=True),  # type: ignore[type-var]
                    imap=replace(account.imap, tls="none", allow_plaintext=True))  # type: ignore[type-var]
    cfg = replace(cfg, accounts={"self": plain}, routes=tuple(replace(r, sender=plain, recipient=plain)
                                                              for r in cfg.routes))
    tls = run(World(), cfg).routes[0].check("tls")
    assert tls is not None and tls.outcome is Outcome.SKIPPED and "no TLS (allow_plaintext)" in tls.message
    assert not tls.unchecked


def test_mail_in_spam_and_slow_mail_are_warnings() -> None:
    spam = run(World(folder="Junk"))
    assert outcomes(spam)["receive"] is Outcome.WARNING and spam.status is Status.WARNING
    assert "landed in Junk (spam)" in (spam.routes[0].check("receive") or _never()).message
    slow = run(World(delay=0.5), config(), 30.0)
    assert outcomes(slow)["receive"] is Outcome.OK
    slow_cfg = replace(config(), routes=tuple(replace(r, slow_after=0.1) for r in config().routes))
    slower = run(World(delay=0.5), slow_cfg)
    assert outcomes(slower)["receive"] is Outcome.WARNING
    assert "slow delivery: 0.50s (slow_after is 0.1s)" in (slower.routes[0].check("receive") or _never()).message


def test_the_wait_is_capped_by_the_run_deadline_and_leaves_time_for_cleanup() -> None:
    world = World(delay=50.0)  # the mail would come after receive_timeout (60 s) fits, but not the deadline
    result = run(world, seconds=5.0)
    assert world.wait_timeouts and max(world.wait_timeouts) <= 5.0 - CLEANUP_RESERVE
    receive = result.routes[0].check("receive")
    assert receive is not None and receive.outcome is Outcome.FAILED
    assert "(the run deadline)" in receive.message
    assert outcomes(result)["cleanup"] is Outcome.OK  # it still ran, in the time kept for it


def test_a_failed_cleanup_warns_instead_of_paging() -> None:
    result = run(World(cleanup_error=imaplib.IMAP4.error("EXPUNGE failed")))
    assert outcomes(result)["cleanup"] is Outcome.WARNING
    assert result.status is Status.WARNING


def test_a_refused_login_skips_what_needs_it_and_keeps_the_certificate() -> None:
    result = run(World(imap_login_error=ImapLoginError("login refused: [AUTHENTICATIONFAILED]")))
    got = outcomes(result)
    assert got["imap_auth"] is Outcome.FAILED
    assert (got["send"], got["receive"], got["cleanup"]) == (Outcome.SKIPPED,) * 3
    assert (result.routes[0].check("send") or _never()).message == "imap_auth failed"
    assert got["tls"] is Outcome.OK
    # The handshake happened: the certificate (and so its expiry metric) does not vanish.
    assert set(result.certificates()) == {"mx.example.org:993", "mx.example.org:587"}


def test_a_certificate_that_does_not_verify_fails_tls_too() -> None:
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_code, error.verify_message = 10, "certificate has expired"
    result = run(World(smtp_connect_error=error))
    got = outcomes(result)
    assert got["smtp_auth"] is Outcome.FAILED and got["tls"] is Outcome.FAILED
    assert "SMTP mx.example.org:587: TLS certificate verification failed: certificate has expired" in (
        result.routes[0].check("tls") or _never()).message
    assert got["send"] is Outcome.SKIPPED and (result.routes[0].check("send") or _never()).message == "smtp_auth failed"


def test_many_routes_into_one_mailbox_respect_its_session_limit() -> None:
    world = World()
    result = run(world, config(routes=10))
    assert all(c.outcome is Outcome.OK for c in result.checks)
    assert 1 < world.peak_imap <= MAX_SESSIONS_PER_MAILBOX


def _never() -> object:
    raise AssertionError("missing check")


def test_a_server_echoing_the_password_never_gets_it_into_a_result() -> None:
    cfg = config()
    echo = ImapLoginError('login refused: NO [AUTHENTICATIONFAILED] LOGIN monitor@example.org "pw-s3cret!"')
    world = World(imap_login_error=echo)
    cfg = replace(cfg, accounts={"self": replace(cfg.accounts["self"], password=Secret("pw-s3cret!"))})
    sessions = Sessions(imap=lambda e, d: FakeImap(world, e, d),  # type: ignore[arg-type,return-value]
                        smtp=lambda e, d, n: FakeSmtp(world, e, d, n))  # type: ignore[arg-type,return-value]
    cfg = replace(cfg, routes=tuple(replace(r, sender=cfg.accounts["self"], recipient=cfg.accounts["self"])
                                    for r in cfg.routes))
    steps = list(route_steps(cfg, History(), sessions))
    results = Engine(describe=describe_error, scrub=cfg.scrubber()).run(steps, Deadline(30.0))
    login = next(r for r in results if r.name == "imap_auth")
    assert login.outcome is Outcome.FAILED
    assert "pw-s3cret!" not in login.message and "<redacted>" in login.message


def test_a_bounce_fails_receive_with_its_status_and_is_cleaned_up_like_a_probe() -> None:
    bounce = Bounce("tok", status="5.1.1", diagnostic="smtp; 550 5.1.1 <nobody@example.org>: User unknown",
                    recipient="nobody@example.org", action="failed")
    world = World(bounce=bounce)
    result = run(world)
    receive = result.routes[0].check("receive")
    assert receive is not None and receive.outcome is Outcome.FAILED
    assert "bounced for nobody@example.org with status 5.1.1" in receive.message
    assert result.routes[0].arrival() is None  # a bounce is never the probe's arrival
    assert outcomes(result)["cleanup"] is Outcome.OK
    [(folder, uid, token)] = world.bounces_deleted
    assert (folder, uid) == ("INBOX", 99) and token  # through the bounce guard, with the probe's token
    assert [d for d in world.deleted if d[1]] == []  # no probe was there to delete


def test_the_stale_sweep_spares_other_instances_much_longer() -> None:
    world = World()
    run(world, config(instance="mx", stale_after=3600.0))
    assert world.sweeps and all(s == ("mx", 3600.0, 86400.0) for s in world.sweeps)


def test_a_handshake_that_fails_for_want_of_tls_1_2_fails_tls_not_ok_from_the_other_endpoint() -> None:
    error = ssl.SSLError(1, "[SSL: TLSV1_ALERT_PROTOCOL_VERSION] tlsv1 alert protocol version")
    error.reason = "TLSV1_ALERT_PROTOCOL_VERSION"
    result = run(World(smtp_connect_error=error))
    got = outcomes(result)
    assert got["smtp_auth"] is Outcome.FAILED and got["tls"] is Outcome.FAILED
    assert "SMTP mx.example.org:587" in (result.routes[0].check("tls") or _never()).message
