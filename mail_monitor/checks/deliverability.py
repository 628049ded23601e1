"""The deliverability checks on the engine: the probe's verdicts, DNS posture, blocklists.

The logic lives in :mod:`mail_monitor.deliverability`; this module only declares the
steps and what they share within one run:

- one resolver (:class:`RunDns`), created on the first question, so a configuration
  without these checks never imports dnspython, dkimpy or pyspf;
- per judged route, one evaluation of the received probe (:class:`ProbeJudgement`):
  the route's ``spf``, ``dkim`` and ``dmarc`` steps all need ``receive`` and start
  together; the first to run evaluates the probe (DKIM, SPF and DMARC depend on each
  other's lookups, and evaluating three times would triple the DNS and the RSA work),
  the others wait for that result. Three steps rather than one keep three results, three
  alerts and three metrics, and let each fail on its own;
- per domain, its sending IPs (:class:`SendingIps`), read by ``spf``, ``ptr`` and
  ``blocklists``.

Nothing here is on the roundtrip's critical path. The posture and blocklist steps need
no route step; they start once every route's probe is on its way (``after`` each
``send``), so the ~120 ms of CPU their first imports cost (dnspython, pyspf) do not
compete for the GIL with the logins and the submission but fill the wait for the mail,
and they import what the probe verdicts will need too (:meth:`RunDns.warm`), so the
verdict steps that follow ``receive`` find everything loaded (docs/performance.md has
the numbers). Only the probe verdicts (which need the received mail) and the domain's
``dkim`` (which runs after them, to say whether the probe's signature verified) wait for
``receive``.
"""

from __future__ import annotations

import importlib
import ipaddress
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mail_monitor.checks.routes import ToDelete, judges_probe
from mail_monitor.config import Config, DnsServer, DomainSettings, Route
from mail_monitor.deliverability.model import Finding as Observation
from mail_monitor.engine import CheckFailed, Finding, Step, StepContext, StepId
from mail_monitor.results import (
    AuthVerdict,
    AuthVerdicts,
    BlocklistEntry,
    BlocklistLookups,
    DnsFacts,
    History,
    Outcome,
    Subject,
)

if TYPE_CHECKING:
    from mail_monitor.deliverability.dmarc import OrgDomain
    from mail_monitor.deliverability.dns import Resolver
    from mail_monitor.deliverability.mta_sts import PolicyFetcher
    from mail_monitor.deliverability.probe import ProbeAuth

PROBE_CHECKS = ("spf", "dkim", "dmarc")
PROBE_LIBRARIES = ("dns.resolver", "spf", "dkim", "dkim.util", "authres", "mail_monitor.deliverability.probe")
# RFC 8461 fetches the policy from port 443; test worlds serve it elsewhere.
MTA_STS_PORT_VARIABLE = "MAIL_MONITOR_MTA_STS_PORT"


def deliverability_steps(config: Config, history: History, dns: RunDns | None = None) -> Iterator[Step]:
    """The probe verdicts of judged routes, the posture of each ``[[domains]]`` entry, the blocklists.

    ``dns`` is the seam for tests (a :class:`RunDns` over a static resolver and fetcher).
    """
    dns = dns or RunDns(config.monitor.resolver, config.monitor.timeout)
    judgements = {route.name: ProbeJudgement(route, dns) for route in config.routes if judges_probe(route)}
    dns.judging = bool(judgements)
    mail_first = tuple(StepId(Subject.route(route.name), "send") for route in config.routes)
    for judgement in judgements.values():
        yield from judgement.steps()
    ips = {domain.name: SendingIps(domain, config, dns) for domain in config.domains}
    for domain in config.domains:
        senders = [j for j in judgements.values() if _domain_of(j.route.sender.address) == domain.name.lower()]
        yield from DomainPosture(domain, dns, ips[domain.name], tuple(senders), mail_first).steps()
    if config.blocklists is not None:
        sources = list(ips.values()) or [SendingIps(None, config, dns)]
        yield Step(StepId(Subject.host(), "blocklists"), _blocklists(config, dns, sources), after=mail_first,
                   interval=config.blocklists.interval)


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2].rstrip(".").lower()


class RunDns:
    """The run's DNS: one caching resolver and one Public Suffix List, made on first use.

    ``resolver`` and ``fetcher`` replace the network for tests; the cache is always there.
    """

    def __init__(self, server: DnsServer | None, timeout: float, *, resolver: Resolver | None = None,
                 fetcher: Callable[[DomainSettings], PolicyFetcher] | None = None) -> None:
        self._server = server
        self._timeout = timeout
        self._lock = threading.Lock()
        self._resolver = resolver
        self._cached: Resolver | None = None
        self._org_domain: OrgDomain | None = None
        self._fetcher = fetcher
        self._warm = False
        self.judging = False  # some route's probe is judged this run: warm() loads its libraries

    @property
    def resolver(self) -> Resolver:
        with self._lock:
            if self._cached is None:
                from mail_monitor.deliverability.dns import CachingResolver, DnspythonResolver

                inner = self._resolver
                if inner is None:
                    server = None
                    if self._server is not None:
                        address = self._server.address
                        host = f"[{address}]" if ":" in address else address
                        server = f"{host}:{self._server.port}"
                    inner = DnspythonResolver(server, timeout=self._timeout)
                self._cached = CachingResolver(inner)
            return self._cached

    def warm(self) -> None:
        """Load the libraries of the probe verdicts now, while the run waits for the mail."""
        with self._lock:
            if self._warm or not self.judging:
                return
            self._warm = True
        for module in PROBE_LIBRARIES:
            importlib.import_module(module)

    def fetcher(self, domain: DomainSettings) -> PolicyFetcher:
        """How the MTA-STS policy of ``domain`` is fetched: HTTPS, trusting its ``ca_file``."""
        if self._fetcher is not None:
            return self._fetcher(domain)
        from mail_monitor.deliverability.mta_sts import HttpsFetcher

        port = int(os.environ.get(MTA_STS_PORT_VARIABLE, "443"))
        ca_file = str(domain.ca_file) if domain.ca_file is not None else None
        return HttpsFetcher(self.resolver, port=port, ca_file=ca_file)

    def org_domain(self, domain: str) -> str:
        with self._lock:
            if self._org_domain is None:
                from mail_monitor.deliverability.dmarc import public_suffix_org_domain

                org_domain = public_suffix_org_domain()
                org_domain("example.org")  # parse the list now, under the lock, once
                self._org_domain = org_domain
        return self._org_domain(domain)


# --------------------------------------------------------------------------- the probe


@dataclass
class ProbeJudgement:
    """One route's received probe, evaluated once by whichever verdict step runs first."""

    route: Route
    dns: RunDns
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _auth: ProbeAuth | None = None
    _evaluated: bool = False

    def id(self, check: str) -> StepId:
        return StepId(Subject.route(self.route.name), check)

    def steps(self) -> Iterator[Step]:
        for method in PROBE_CHECKS:
            yield Step(self.id(method), self._check(method), needs=(self.id("receive"),))

    @property
    def verdict_steps(self) -> tuple[StepId, ...]:
        return tuple(self.id(method) for method in PROBE_CHECKS)

    def latest(self) -> ProbeAuth | None:
        """The evaluation, if one ran this run (read after the verdict steps finished)."""
        with self._lock:
            return self._auth

    def evaluate(self, raw: bytes) -> ProbeAuth:
        with self._lock:
            if not self._evaluated:
                from mail_monitor.deliverability.probe import evaluate_probe

                self._evaluated = True  # an evaluation that raised is not tried again by the next step
                self._auth = evaluate_probe(raw, resolver=self.dns.resolver,
                                            trusted_authserv_ids=self.route.trusted_authserv_ids,
                                            sending_ips=[str(ip) for ip in self.route.sending_ips] or None,
                                            org_domain=self.dns.org_domain)
            if self._auth is None:
                raise CheckFailed("the probe could not be evaluated (see the other verdict checks)")
            return self._auth

    def _check(self, method: str) -> Callable[[StepContext], Finding]:
        def run(ctx: StepContext) -> Finding:
            from mail_monitor.deliverability.probe import judge

            received = ctx.value(self.id("receive"), ToDelete)
            if received.raw is None:
                message = f"{method.upper()} of the probe not checked: the received probe could not be read"
                if method in self.route.require:
                    raise CheckFailed(message)
                return Finding(Outcome.WARNING, message)
            auth = self.evaluate(received.raw)
            check = next(c for c in judge(auth, self.route.require) if c.method == method)
            verdicts = AuthVerdicts(tuple(AuthVerdict(v.method, v.source.value, v.verdict.value, v.authserv_id)
                                          for v in check.verdicts))
            return Finding(check.outcome, check.message, verdicts)

        return run


# --------------------------------------------------------------------------- DNS posture


@dataclass
class SendingIps:
    """A domain's sending IPs: configured, else the A/AAAA of its accounts' SMTP hosts.

    ``domain`` None stands for every account that sends a probe (the blocklists of a
    setup without ``[[domains]]``).
    """

    domain: DomainSettings | None
    config: Config
    dns: RunDns
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _found: tuple[tuple[str, ...], tuple[str, ...]] | None = None

    def hosts(self) -> list[str]:
        name = self.domain.name.lower() if self.domain is not None else None
        accounts = ([a for a in self.config.accounts.values() if _domain_of(a.address) == name]
                    if name is not None else [r.sender for r in self.config.routes])
        return list(dict.fromkeys(a.smtp.host for a in accounts if a.smtp is not None))

    def get(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(ips, problems): the addresses, and the SMTP hosts that did not resolve."""
        with self._lock:
            if self._found is None:
                self._found = self._find()
            return self._found

    def _find(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        if self.domain is not None and self.domain.sending_ips:
            return tuple(str(ip) for ip in self.domain.sending_ips), ()
        literal, names = [], []
        for host in self.hosts():
            try:
                literal.append(str(ipaddress.ip_address(host.strip("[]"))))
            except ValueError:
                names.append(host)
        if not names:
            return tuple(literal), ()
        from mail_monitor.deliverability.posture import sending_ips

        found = sending_ips(names, self.dns.resolver)
        return tuple(dict.fromkeys([*literal, *found.ips])), found.problems


def _finding(observation: Observation) -> Finding:
    detail = DnsFacts(observation.details) if observation.details else None
    return Finding(observation.outcome, observation.message, detail)


def _with_ip_problems(observation: Observation, problems: Sequence[str]) -> Observation:
    """A check over sending IPs also says which SMTP hosts gave none (a warning at least)."""
    if not problems:
        return observation
    outcome = observation.outcome if observation.outcome is Outcome.FAILED else Outcome.WARNING
    note = "sending IPs incomplete: " + "; ".join(problems) + " (set sending_ips)"
    return Observation(observation.check, outcome, f"{observation.message}; {note}", observation.details)


@dataclass(frozen=True)
class DomainPosture:
    """The checks of one ``[[domains]]`` entry, each its own step on the domain's interval."""

    domain: DomainSettings
    dns: RunDns
    ips: SendingIps
    senders: tuple[ProbeJudgement, ...]  # judged routes sending from this domain
    mail_first: tuple[StepId, ...] = ()  # the routes' send steps: DNS starts once the probes are out

    def steps(self) -> Iterator[Step]:
        subject = Subject.domain(self.domain.name)
        checks: list[tuple[str, Callable[[], Observation]]] = [
            ("mx", self.mx), ("spf", self.spf), ("dkim", self.dkim), ("dmarc", self.dmarc)]
        if self.domain.mta_sts:
            checks += [("mta_sts", self.mta_sts), ("tls_rpt", self.tls_rpt)]
        checks.append(("ptr", self.ptr))
        probe_steps = tuple(s for judgement in self.senders for s in judgement.verdict_steps)
        for name, check in checks:
            after = probe_steps if name == "dkim" else ()
            yield Step(StepId(subject, name), _observe(check, self.dns), after=(*self.mail_first, *after),
                       interval=self.domain.interval)

    def mx(self) -> Observation:
        from mail_monitor.deliverability import posture

        return posture.check_mx(self.domain.name, self.dns.resolver)

    def spf(self) -> Observation:
        from mail_monitor.deliverability import posture

        ips, problems = self.ips.get()
        return _with_ip_problems(posture.check_spf(self.domain.name, ips, self.dns.resolver), problems)

    def dkim(self) -> Observation:
        from mail_monitor.deliverability import posture

        signatures = tuple(s for j in self.senders if (auth := j.latest()) is not None for s in auth.dkim)
        return posture.check_dkim(self.domain.name, self.domain.dkim_selectors, self.dns.resolver, signatures)

    def dmarc(self) -> Observation:
        from mail_monitor.deliverability import posture

        return posture.check_dmarc(self.domain.name, self.dns.resolver, self.dns.org_domain)

    def mta_sts(self) -> Observation:
        from mail_monitor.deliverability import posture

        return posture.check_mta_sts(self.domain.name, self.dns.resolver, self.dns.fetcher(self.domain))

    def tls_rpt(self) -> Observation:
        from mail_monitor.deliverability import posture

        return posture.check_tls_rpt(self.domain.name, self.dns.resolver)

    def ptr(self) -> Observation:
        from mail_monitor.deliverability import posture

        ips, problems = self.ips.get()
        return _with_ip_problems(posture.check_ptr(ips, self.dns.resolver), problems)


def _observe(check: Callable[[], Observation], dns: RunDns) -> Callable[[StepContext], Finding]:
    def run(ctx: StepContext) -> Finding:
        dns.warm()
        return _finding(check())

    return run


# --------------------------------------------------------------------------- blocklists


def _blocklists(config: Config, dns: RunDns, sources: Sequence[SendingIps]) -> Callable[[StepContext], Finding]:
    settings = config.blocklists
    assert settings is not None

    def run(ctx: StepContext) -> Finding:
        from mail_monitor.deliverability.blocklists import check_blocklists

        dns.warm()
        ips: list[str] = []
        problems: list[str] = []
        for source in sources:
            found, missing = source.get()
            ips += [ip for ip in found if ip not in ips]
            problems += missing
        report = check_blocklists(ips, settings.zones, settings.fail_on, dns.resolver)
        entries = BlocklistLookups(tuple(BlocklistEntry(x.ip, x.zone, x.listed, x.reason or x.error)
                                         for x in report.listings))
        observation = _with_ip_problems(report.finding, list(dict.fromkeys(problems)))
        return Finding(observation.outcome, observation.message, entries)

    return run
