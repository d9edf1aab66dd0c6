"""The sync worker (esl_app/calendar/worker.py) with scripted sources and a real store."""
from __future__ import annotations

import logging
import threading

import pytest

from esl_app.calendar.caldav_source import CalDavSource
from esl_app.calendar.config import CalendarConfig, EmployeeCalendar, Secrets, ServerConfig
from esl_app.calendar.ews_source import EwsSource
from esl_app.calendar.expand import Occurrence
from esl_app.calendar.graph_source import GraphSource
from esl_app.calendar.keywords import KeywordRules
from esl_app.calendar.source import AuthError, CalendarSource, SyncResult, Throttled, Unavailable
from esl_app.calendar.worker import RETRY_AFTER_CAP, CalendarWorker, SourceFactory, read_status, write_status
from fastpath.records import ReferralInterval

COMPANY = """
id: acme
name: Acme
country: GB
timezone: Europe/London
employees:
  - {extension: "2001", name: Anna Smith, role: user}
  - {extension: "2002", name: Bob Jones, role: user}
"""
NOW = 1_792_000_000.0
MEETING = Occurrence(int(NOW) + 3600, int(NOW) + 7200, "m Board")


class ScriptedSource(CalendarSource):
    """Returns or raises what the test queues; the last entry repeats."""

    kind = "caldav"

    def __init__(self, *script):
        self.script = list(script)
        self.calls = 0
        self.zones = []

    def sync(self, horizon, zone):
        self.calls += 1
        self.zones.append(str(zone))
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Exception):
            raise step
        return step

    def describe(self):
        return "https://dav.example/anna/"


def config(employees=("2001",), **options):
    server = ServerConfig(name="dav", kind="caldav", url="https://dav.example/")
    return CalendarConfig(servers={"dav": server},
                          employees=tuple(EmployeeCalendar(e, "dav", rules=KeywordRules()) for e in employees),
                          **{"backoff_initial": 30.0, "backoff_max": 600.0, **options})


class Clock:
    def __init__(self, now=NOW):
        self.now = now

    def __call__(self):
        return self.now


def make_worker(store, sources, clock=None, **options):
    sources = dict(sources)
    return CalendarWorker(store, config(tuple(sources), **options),
                          source_factory=lambda server, emp, creds: sources[emp.extension],
                          clock=clock or Clock(), jitter=lambda: 0.5)


@pytest.fixture
def store(make_store):
    return make_store(COMPANY)


def test_writes_intervals_and_reports_ok(store):
    source = ScriptedSource(SyncResult([MEETING], changed=True, kind="full"))
    worker = make_worker(store, {"2001": source})
    summary = worker.run_once()
    assert summary["ok"] == 1 and summary["full"] == 1
    assert store.referrals("2001") == {"calendar:caldav": (ReferralInterval(
        MEETING.start, MEETING.end, "meeting", "m Board", "", "everyone", "calendar:caldav"),)}
    status = worker.status()["calendars"]["2001"]
    assert status["state"] == "ok" and status["last_success"] == NOW and status["intervals"] == 1
    assert status["next_attempt"] == pytest.approx(NOW + 300)          # interval × (0.9 + 0.2 × 0.5)
    assert source.zones == ["Europe/London"]                            # the company's zone, from the store


def test_unchanged_results_are_not_written_again(store, monkeypatch):
    source = ScriptedSource(SyncResult([MEETING], changed=True), SyncResult([MEETING], changed=False,
                                                                           kind="incremental"))
    worker = make_worker(store, {"2001": source})
    worker.run_once()
    writes = []
    monkeypatch.setattr(store, "put_referrals", lambda *a: writes.append(a))
    worker.run_once()
    worker.run_once()
    assert writes == [] and source.calls == 3


def test_same_intervals_after_a_change_are_not_rewritten(store, monkeypatch):
    source = ScriptedSource(SyncResult([MEETING]), SyncResult([MEETING, Occurrence(1, 2, "free", free_busy="free")]))
    worker = make_worker(store, {"2001": source})
    worker.run_once()
    writes = []
    monkeypatch.setattr(store, "put_referrals", lambda *a: writes.append(a))
    worker.run_once()
    assert writes == []


def test_failures_back_off_exponentially_up_to_the_cap_and_keep_statuses(store):
    clock = Clock()
    source = ScriptedSource(SyncResult([MEETING]), Unavailable("down"))
    worker = make_worker(store, {"2001": source}, clock)
    worker.run_once()
    before = store.referrals("2001")
    delays = []
    for _ in range(7):
        worker.run_once()
        delays.append(worker.status()["calendars"]["2001"]["next_attempt"] - clock.now)
    # ceilings 30, 60, 120, 240, 480, 600, 600; jitter 0.5 draws 3/4 of each
    assert delays == pytest.approx([22.5, 45, 90, 180, 360, 450, 450])
    assert store.referrals("2001") == before
    status = worker.status()["calendars"]["2001"]
    assert status["state"] == "failing" and status["failures"] == 7 and status["last_error"] == "down"
    assert worker.status()["failing"] == ["2001"]


def test_server_back_off_hint_is_honoured_and_capped(store):
    clock = Clock()
    source = ScriptedSource(Throttled("busy", retry_after=900), Throttled("busy", retry_after=10 ** 6),
                            Throttled("busy", retry_after=1))
    worker = make_worker(store, {"2001": source}, clock)
    worker.run_once()
    assert worker.status()["calendars"]["2001"]["next_attempt"] == pytest.approx(NOW + 900)
    worker.run_once()
    assert worker.status()["calendars"]["2001"]["next_attempt"] == pytest.approx(NOW + RETRY_AFTER_CAP)
    worker.run_once()           # a short hint does not shorten our own backoff (120 × 0.75)
    assert worker.status()["calendars"]["2001"]["next_attempt"] == pytest.approx(NOW + 90)


def test_recovery_resets_the_backoff_and_keeps_the_last_error(store, caplog):
    source = ScriptedSource(AuthError("refused: check the credentials entry"), SyncResult([MEETING]))
    worker = make_worker(store, {"2001": source})
    with caplog.at_level(logging.INFO, logger="esl_app.calendar.worker"):
        worker.run_once()
        worker.run_once()
    status = worker.status()["calendars"]["2001"]
    assert status["state"] == "ok" and status["failures"] == 0
    assert status["last_error"] == "refused: check the credentials entry"
    assert "ERROR" in caplog.text and "works again" in caplog.text


def test_a_repeated_error_is_logged_once(store, caplog):
    worker = make_worker(store, {"2001": ScriptedSource(Unavailable("down"))})
    with caplog.at_level(logging.WARNING, logger="esl_app.calendar.worker"):
        for _ in range(4):
            worker.run_once()
    assert caplog.text.count("calendar sync failed") == 1


def test_a_bug_in_one_source_does_not_stop_the_others(store, caplog):
    worker = make_worker(store, {"2001": ScriptedSource(ZeroDivisionError("bug")),
                                 "2002": ScriptedSource(SyncResult([MEETING]))})
    summary = worker.run_once()
    assert summary["ok"] == 1 and summary["failed"] == 1
    assert "calendar:caldav" in store.referrals("2002")
    assert "ZeroDivisionError" in worker.status()["calendars"]["2001"]["last_error"]


def test_other_calendar_sources_of_the_employee_are_cleared_once(store):
    store.put_referrals("2001", "calendar:ews", [ReferralInterval(1, 2, "meeting", source="calendar:ews")])
    store.put_referrals("2001", "manual", [ReferralInterval(1, 2, "away", source="manual")])
    worker = make_worker(store, {"2001": ScriptedSource(SyncResult([MEETING]))})
    worker.run_once()
    assert set(store.referrals("2001")) == {"calendar:caldav", "manual"}


def test_after_a_restart_identical_intervals_are_not_rewritten(store, monkeypatch):
    make_worker(store, {"2001": ScriptedSource(SyncResult([MEETING]))}).run_once()
    writes = []
    real = store.put_referrals
    monkeypatch.setattr(store, "put_referrals", lambda *a: (writes.append(a), real(*a)))
    make_worker(store, {"2001": ScriptedSource(SyncResult([MEETING]))}).run_once()
    assert writes == []


def test_status_file_round_trip_has_no_secrets(store, tmp_path):
    path = str(tmp_path / "calendar-status.json")
    worker = CalendarWorker(store, config(), Secrets({"SWITCHBOARD_CALENDAR_X_PASSWORD": "pw-value"}),
                            source_factory=lambda *a: ScriptedSource(AuthError("refused")), status_path=path,
                            clock=Clock())
    worker.run_once()
    status = read_status(path)
    assert status["calendars"]["2001"]["state"] == "failing"
    assert "pw-value" not in open(path).read()
    assert read_status(str(tmp_path / "none.json")) is None
    write_status(path, {"x": 1})
    assert read_status(path) == {"x": 1}


def test_the_scheduler_runs_syncs_on_its_own_and_stops(store, tmp_path):
    """Should sync again and again at the interval, in threads, and stop within its timeout."""
    source = ScriptedSource(SyncResult([MEETING]))
    path = str(tmp_path / "status.json")
    worker = CalendarWorker(store, config(interval=0.2, parallel=2), source_factory=lambda *a: source,
                            status_path=path, status_every=0.05)
    worker.start()
    try:
        worker.wait_until(lambda: source.calls >= 3, timeout=10)
        assert worker.running
    finally:
        assert worker.stop(timeout=5)
    assert not worker.running
    assert read_status(path)["calendars"]["2001"]["syncs"] >= 3
    assert "calendar:caldav" in store.referrals("2001")


def test_stop_waits_for_a_sync_in_progress(store):
    entered, release = threading.Event(), threading.Event()

    class Slow(ScriptedSource):
        def sync(self, horizon, zone):
            entered.set()
            release.wait(5)
            return SyncResult([MEETING])

    worker = CalendarWorker(store, config(), source_factory=lambda *a: Slow())
    worker.start()
    assert entered.wait(5)
    assert worker.stop(timeout=0.2) is False       # still running
    release.set()
    worker.wait_until(lambda: not any(j.running for j in worker.jobs.values()), timeout=5)


def test_source_factory_builds_each_kind_with_its_credentials():
    secrets = Secrets({"SWITCHBOARD_CALENDAR_DAV_USERNAME": "anna", "SWITCHBOARD_CALENDAR_DAV_PASSWORD": "p1",
                       "SWITCHBOARD_CALENDAR_EX_USERNAME": "svc", "SWITCHBOARD_CALENDAR_EX_PASSWORD": "p2",
                       "SWITCHBOARD_CALENDAR_APP_CLIENT_SECRET": "p3"})
    factory = SourceFactory(secrets)
    rules = KeywordRules()
    dav = factory(ServerConfig("d", "caldav", "https://dav.example/", sync="ctag"),
                  EmployeeCalendar("2001", "d", calendar="https://dav.example/anna/cal", rules=rules), "dav")
    ews = factory(ServerConfig("e", "ews", "https://mail.example/EWS/Exchange.asmx", auth="basic"),
                  EmployeeCalendar("2002", "e", mailbox="b@example.com", rules=rules), "ex")
    server = ServerConfig("g", "graph", "https://graph.microsoft.com/v1.0", tenant="t.example",
                          client_id="6731de76-14a6-49ae-97bc-6eba6914391e")
    g1 = factory(server, EmployeeCalendar("2003", "g", mailbox="c@example.com", rules=rules), "app")
    g2 = factory(server, EmployeeCalendar("2004", "g", mailbox="d@example.com", rules=rules), "app")
    assert isinstance(dav, CalDavSource) and dav.mode == "ctag" and dav.url.endswith("/cal/")
    assert isinstance(ews, EwsSource) and ews.auth == "basic" and ews.mailbox == "b@example.com"
    assert isinstance(g1, GraphSource) and g1.auth is g2.auth          # one token cache per application
    for source in (dav, ews, g1):
        assert "p1" not in repr(source) and "p2" not in repr(source) and "p3" not in repr(source)
    assert dav.name == "calendar:caldav" and ews.name == "calendar:ews" and g1.name == "calendar:graph"
    factory.close()
