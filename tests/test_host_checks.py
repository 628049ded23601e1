"""The host checks on the engine with fakes: reports counted under the lock and filed on the
next run (never lost, never counted twice, also across a crash), and the queue check."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from report_samples import (
    EXPECTED_DMARC,
    Aggregate,
    Row,
    google_mail,
    microsoft_mail,
    report_mail,
    tls_mail,
    yahoo_mail,
    zipped,
)
from test_reports_mailbox import BROKEN, FakeImap

from mail_monitor.alerts import AlertPolicy, evaluate
from mail_monitor.checks.reports import HostSeams, host_steps
from mail_monitor.config import (
    Account,
    Config,
    Endpoint,
    ImapEndpoint,
    MonitorSettings,
    PostfixQueueSettings,
    ReportsSettings,
    Secret,
)
from mail_monitor.deadline import Deadline
from mail_monitor.engine import Engine
from mail_monitor.metrics import render_metrics
from mail_monitor.probes.tls import describe_error
from mail_monitor.reports import TlsKey
from mail_monitor.results import Outcome, QueueDepth, ReportsRead, RunResult
from mail_monitor.state import State

MAILS = [google_mail(), microsoft_mail(), yahoo_mail(), tls_mail(), BROKEN]


class Folders(FakeImap):
    """The mailbox fake with a UIDVALIDITY, which a real server reports on SELECT."""

    uidvalidity = 7

    def select_folder(self, folder: str) -> dict[bytes, Any]:
        super().select_folder(folder)
        return {b"UIDVALIDITY": self.uidvalidity}


class Session:
    def __init__(self, client: Folders) -> None:
        self.client = client
        self.logins: list[str] = []

    def login(self, username: str, password: Secret) -> None:
        assert password.reveal() == "pw"
        self.logins.append(username)

    def close(self) -> None:
        pass


def config(done: str | None = "DMARC.done", error: str | None = "DMARC.error", **reports: Any) -> Config:
    imap = ImapEndpoint("mx.example.org", 993, "implicit")
    account = Account("self", "dmarc@example.org", "dmarc@example.org", "/run/pw", Secret("pw"),
                      Endpoint("mx.example.org", 587, "starttls"), imap)
    settings = ReportsSettings(account, folder="DMARC", done_folder=done, error_folder=error, interval=0.0,
                               **reports)
    return Config(MonitorSettings(state_file=None, instance="mx"), {"self": account}, (), reports=settings)


def run(imap: Folders, cfg: Config, state: State, batch_size: int = 200) -> tuple[RunResult, State]:
    """One run: the checks against the history of ``state``, then the state as saved afterwards."""
    seams = HostSeams(imap=lambda e, d: Session(imap), batch_size=batch_size)  # type: ignore[arg-type,return-value]
    steps = list(host_steps(cfg, state.history(), seams))
    result = RunResult(time.time(), 0.1, tuple(Engine(describe=describe_error).run(steps, Deadline(30.0))), "mx")
    new_state, _ = evaluate(state, result, AlertPolicy(enabled=False), time.time())
    return result, saved(new_state)


def saved(state: State) -> State:
    return State.from_json(state.to_json())


def dmarc_totals(state: State) -> dict[Any, Any]:
    return dict(state.report_totals().dmarc)


def test_reports_are_counted_first_and_filed_by_the_next_run() -> None:
    imap = Folders({"DMARC": list(MAILS)})
    result, state = run(imap, config(), State())
    check = result.checks[0]
    assert check.outcome is Outcome.OK, check.message
    assert check.message.startswith("3 DMARC and 1 TLS reports read, 1 unreadable mail counted as invalid")
    assert dmarc_totals(state) == EXPECTED_DMARC
    assert state.report_totals().tls == {TlsKey("google.com", "example.test", "success"): 100,
                                         TlsKey("google.com", "example.test", "failure"): 2}
    assert state.report_totals().invalid == 1
    assert len(imap.folders["DMARC"]) == 5, "nothing moves before the counts are saved"
    assert state.reports_cursor is not None and state.reports_cursor.done == (1, 2, 3, 4)
    assert state.reports_cursor.error == (5,) and state.reports_cursor.next_uid == 6

    result, state = run(imap, config(), state)
    assert result.checks[0].message == ("0 DMARC and 0 TLS reports read; "
                                        "5 mails counted earlier filed away")
    assert imap.folders["DMARC"] == {}
    assert sorted(imap.folders["DMARC.done"].values()) == sorted(MAILS[:4])
    assert list(imap.folders["DMARC.error"].values()) == [BROKEN]
    assert dmarc_totals(state) == EXPECTED_DMARC and state.report_totals().invalid == 1


def test_a_crash_before_the_state_is_saved_loses_nothing_and_counts_once() -> None:
    imap = Folders({"DMARC": list(MAILS)})
    run(imap, config(), State())  # counted, then the process dies: its state never reaches the disk
    assert len(imap.folders["DMARC"]) == 5
    _, state = run(imap, config(), State())
    assert dmarc_totals(state) == EXPECTED_DMARC and state.report_totals().invalid == 1
    _, state = run(imap, config(), state)
    assert dmarc_totals(state) == EXPECTED_DMARC and state.report_totals().invalid == 1
    assert len(imap.folders["DMARC.done"]) == 4 and len(imap.folders["DMARC.error"]) == 1


def test_a_crash_after_filing_but_before_saving_counts_nothing_twice() -> None:
    imap = Folders({"DMARC": list(MAILS)})
    _, counted = run(imap, config(), State())
    run(imap, config(), counted)  # files the mails, then dies before its state is saved
    assert imap.folders["DMARC"] == {}
    imap.folders["DMARC"][6] = report_mail(zipped(Aggregate("late.example", "l1", (Row("192.0.2.9", 4),)).xml()),
                                           "late.zip", "application/zip")
    result, state = run(imap, config(), counted)  # the saved cursor again: its mails are gone already
    assert result.checks[0].outcome is Outcome.OK
    totals = dmarc_totals(state)
    assert sum(c.total for c in totals.values()) == sum(c.total for c in EXPECTED_DMARC.values()) + 4
    assert state.report_totals().invalid == 1
    assert len(imap.folders["DMARC.done"]) == 4 and len(imap.folders["DMARC.error"]) == 1


def test_a_backlog_drains_in_batches_across_runs() -> None:
    mails = [report_mail(zipped(Aggregate(f"r{i}.example", f"id{i}", (Row("192.0.2.1", 1),)).xml()),
                         f"r{i}.zip", "application/zip") for i in range(7)]
    imap = Folders({"DMARC": mails})
    state = State()
    messages = []
    for _ in range(4):
        result, state = run(imap, config(), state, batch_size=3)
        messages.append(result.checks[0].message)
    assert messages[0] == "3 DMARC and 0 TLS reports read, 4 left for later runs"
    assert messages[2] == "1 DMARC and 0 TLS reports read; 3 mails counted earlier filed away"
    assert sum(c.total for c in dmarc_totals(state).values()) == 7
    assert imap.folders["DMARC"] == {} and len(imap.folders["DMARC.done"]) == 7


def test_without_done_folders_mails_stay_and_are_not_read_again() -> None:
    imap = Folders({"DMARC": list(MAILS)})
    _, state = run(imap, config(done=None, error=None), State())
    result, state = run(imap, config(done=None, error=None), state)
    assert result.checks[0].message == "0 DMARC and 0 TLS reports read"
    assert dmarc_totals(state) == EXPECTED_DMARC and state.report_totals().invalid == 1
    assert len(imap.folders["DMARC"]) == 5 and set(imap.folders) == {"DMARC"}


def test_a_new_uidvalidity_reads_the_folder_again_and_dedup_keeps_counts() -> None:
    imap = Folders({"DMARC": list(MAILS[:4])})
    _, state = run(imap, config(done=None), State())
    imap.uidvalidity = 8  # the folder was recreated: every UID means something else now
    result, state = run(imap, config(done=None), state)
    assert result.checks[0].message == "0 DMARC and 0 TLS reports read, 4 duplicates skipped"
    assert dmarc_totals(state) == EXPECTED_DMARC


def test_a_reporter_under_min_compliance_is_a_warning_naming_it() -> None:
    imap = Folders({"DMARC": [google_mail(), yahoo_mail()]})
    result, state = run(imap, config(min_compliance=0.9), State())
    check = result.checks[0]
    assert check.outcome is Outcome.WARNING
    assert check.message.startswith("google.com: 52.6% of 19 mails DMARC-compliant; failing dkim 73.7%, spf 52.6%")
    assert "Yahoo" not in check.message
    assert state.checks["host"]["reports"].outcome is Outcome.WARNING


def test_a_carried_result_counts_nothing_again() -> None:
    imap = Folders({"DMARC": [google_mail()]})
    result, state = run(imap, config(), State())
    carried = RunResult(time.time(), 0.1, (replace(result.checks[0], carried=True),), "mx")
    again, _ = evaluate(state, carried, AlertPolicy(enabled=False), time.time())
    assert dmarc_totals(again) == dmarc_totals(state)
    kept = state.last_results()["host/reports"].detail
    assert isinstance(kept, ReportsRead) and kept.dmarc_reports == 1
    assert kept.new == (), "the increments live in the totals, not twice in the state"


def test_a_missing_folder_fails_the_check_with_its_name() -> None:
    imap = Folders({"INBOX": []})
    result, state = run(imap, config(), State())
    assert result.checks[0].outcome is Outcome.FAILED
    assert "cannot open folder 'DMARC'" in result.checks[0].message
    assert state.reports == {} and state.reports_cursor is None


def test_report_counters_are_real_counters_in_the_textfile() -> None:
    imap = Folders({"DMARC": list(MAILS)})
    result, state = run(imap, config(), State())
    text = render_metrics(result, state).decode()
    assert ('mail_monitor_dmarc_total{dkim_domain="example.test",from_domain="example.test",'
            'reporter="google.com",spf_domain="example.test"} 13.0') in text
    assert ('mail_monitor_dmarc_compliant_total{dkim_domain="",from_domain="example.test",'
            'reporter="Outlook.com",spf_domain="example.test"} 1.0') in text
    assert ('mail_monitor_dmarc_dkim_aligned_total{dkim_domain="example.test",from_domain="example.test",'
            'reporter="google.com",spf_domain="bounce.example.test"} 4.0') in text
    assert ('mail_monitor_tlsrpt_sessions_total{policy_domain="example.test",reporter="google.com",'
            'result="failure"} 2.0') in text
    assert "mail_monitor_reports_invalid_total 1.0" in text
    assert "# TYPE mail_monitor_dmarc_total counter" in text
    result, state = run(imap, config(), state)
    assert "mail_monitor_reports_invalid_total 1.0" in render_metrics(result, state).decode()


def test_no_report_metrics_without_reports() -> None:
    result = RunResult(time.time(), 0.1, (), "mx")
    text = render_metrics(result, State()).decode()
    assert "mail_monitor_dmarc" not in text and "mail_monitor_reports_invalid" not in text
    assert "mail_monitor_postfix" not in text


def test_state_keeps_totals_and_cursor_and_older_files_have_none() -> None:
    imap = Folders({"DMARC": list(MAILS)})
    _, state = run(imap, config(), State())
    again = State.from_json(state.to_json())
    assert again.reports == state.reports and again.reports_cursor == state.reports_cursor
    older = State.from_json(b'{"version": 2, "status": "OK"}')
    assert older.reports == {} and older.reports_cursor is None and older.report_totals().invalid == 0
    broken = state.to_json().replace(b'"invalid": 1', b'"invalid": -1')
    with pytest.raises(ValueError, match=r"^reports: invalid: expected a whole number"):
        State.from_json(broken)


# -- the queue ------------------------------------------------------------------------


def postqueue(tmp_path: Path, lines: list[str], code: int = 0, stderr: str = "") -> str:
    script = tmp_path / "postqueue"
    body = "".join(f"echo '{line}'\n" for line in lines)
    script.write_text(f"#!/bin/sh\n{body}" + (f"echo '{stderr}' >&2\n" if stderr else "") + f"exit {code}\n")
    script.chmod(0o755)
    return str(script)


def queue_config(**settings: Any) -> Config:
    queue = PostfixQueueSettings(enable=True, **settings)
    return Config(MonitorSettings(state_file=None, instance="mx"), {}, (), postfix_queue=queue)


def run_queue(cfg: Config, program: str) -> RunResult:
    steps = list(host_steps(cfg, State().history(), HostSeams(postqueue=program)))
    return RunResult(time.time(), 0.1, tuple(Engine().run(steps, Deadline(30.0))), "mx")


def entry(queue: str, age: float) -> str:
    return f'{{"queue_name": "{queue}", "queue_id": "X{age:g}", "arrival_time": {int(time.time() - age)}}}'


def test_queue_depth_and_age_become_a_detail_and_gauges(tmp_path: Path) -> None:
    program = postqueue(tmp_path, [entry("deferred", 7200), entry("deferred", 60), entry("hold", 90000),
                                   entry("active", 1)])
    result = run_queue(queue_config(warn_deferred=5, crit_deferred=10, warn_oldest_age=86400.0), program)
    check = result.checks[0]
    assert (check.name, check.outcome) == ("postfix_queue", Outcome.OK), check.message
    detail = check.detail
    assert isinstance(detail, QueueDepth)
    assert detail.depth == {"active": 1, "deferred": 2, "hold": 1, "incoming": 0, "maildrop": 0}
    assert detail.oldest_deferred_seconds is not None and 7199 <= detail.oldest_deferred_seconds <= 7230
    state, _ = evaluate(State(), result, AlertPolicy(enabled=False), time.time())
    text = render_metrics(result, state).decode()
    assert 'mail_monitor_postfix_queue_messages{queue="deferred"} 2.0' in text
    assert 'mail_monitor_postfix_queue_messages{queue="incoming"} 0.0' in text
    assert "mail_monitor_postfix_oldest_deferred_seconds 72" in text
    assert 'mail_monitor_host_check_success{check="postfix_queue"} 1.0' in text


@pytest.mark.parametrize(("settings", "outcome", "words"), [
    ({"warn_deferred": 2, "crit_deferred": 3}, Outcome.WARNING, "2 deferred (warning at 2)"),
    ({"warn_deferred": 1, "crit_deferred": 2}, Outcome.FAILED, "2 deferred (critical at 2)"),
    ({"warn_oldest_age": 3600.0}, Outcome.WARNING, "oldest deferred mail waits 2h"),
])
def test_queue_thresholds(tmp_path: Path, settings: dict[str, Any], outcome: Outcome, words: str) -> None:
    program = postqueue(tmp_path, [entry("deferred", 7200), entry("deferred", 60)])
    check = run_queue(queue_config(**settings), program).checks[0]
    assert check.outcome is outcome and words in check.message


def test_a_failing_postqueue_fails_the_check_with_its_last_error_line(tmp_path: Path) -> None:
    program = postqueue(tmp_path, [], code=75, stderr="postqueue: fatal: Connect to the Postfix showq service: "
                                                       "Permission denied")
    check = run_queue(queue_config(), program).checks[0]
    assert check.outcome is Outcome.FAILED
    assert check.message == "postqueue: fatal: Connect to the Postfix showq service: Permission denied"
    assert check.detail is None


def test_no_host_checks_unless_configured() -> None:
    cfg = queue_config()
    assert [s.id.check for s in host_steps(replace(cfg, postfix_queue=None), State().history())] == []
    off = replace(cfg, postfix_queue=PostfixQueueSettings(enable=False))
    assert [s.id.check for s in host_steps(off, State().history())] == []


# -- output and status ----------------------------------------------------------------


def test_output_and_status_show_reports_and_queue(tmp_path: Path) -> None:
    from mail_monitor.cli import _host_lines
    from mail_monitor.output import to_dict, to_influx

    imap = Folders({"DMARC": list(MAILS)})
    reports, state = run(imap, config(), State())
    queue = run_queue(queue_config(), postqueue(tmp_path, [entry("deferred", 7200), entry("hold", 5)]))
    result = RunResult(time.time(), 0.1, reports.checks + queue.checks, "mx")
    # The same reports folded in a second time (two runs that read the same batch) count once.
    state, _ = evaluate(state, result, AlertPolicy(enabled=False), time.time())
    host = to_dict(result)["subjects"][0]
    assert host["subject"] == "host" and set(host["checks"]) == {"reports", "postfix_queue"}
    assert host["reports"] == {"dmarc_reports": 3, "tls_reports": 1, "duplicates": 0, "unreadable": 1,
                               "filed": 0, "left": 0}
    assert host["postfix_queue"]["messages"]["deferred"] == 1 and host["postfix_queue"]["messages"]["hold"] == 1
    influx = to_influx(result)
    assert "mail_monitor_postfix_queue,instance=mx,queue=deferred messages=1i " in influx
    assert "mail_monitor_reports,instance=mx dmarc_reports=3i,tls_reports=1i,unreadable=1i,left=0i " in influx
    assert _host_lines(state) == [
        "reports: 32 mails in DMARC reports from 3 reporter(s) (71.9% compliant); 102 TLS sessions; "
        "1 unreadable report mail(s)",
        "postfix queue: queue: 1 deferred, 1 hold; oldest deferred 2h",
    ]


def test_two_runs_reading_the_same_batch_count_it_once() -> None:
    imap = Folders({"DMARC": list(MAILS)})
    seams = HostSeams(imap=lambda e, d: Session(imap))  # type: ignore[arg-type,return-value]
    results = []
    for _ in range(2):  # both start from the same saved state, before either saved
        steps = list(host_steps(config(), State().history(), seams))
        results.append(RunResult(time.time(), 0.1, tuple(Engine().run(steps, Deadline(30.0))), "mx"))
    state = State()
    for result in results:  # each folds into the state the other saved, under the lock
        state, _ = evaluate(saved(state), result, AlertPolicy(enabled=False), time.time())
    assert dmarc_totals(state) == EXPECTED_DMARC and state.report_totals().invalid == 1
