"""The contract every calendar source keeps, written once (vdirsyncer's ``StorageTests`` style).

``tests/calendar/test_sources.py`` runs :class:`SourceContract` against each
source: CalDAV against a real Radicale server, EWS and Graph against local
servers speaking their protocols.  A backend fixture gives the contract a
calendar it can write into (:class:`Backend`); every check reads what the
worker wrote into a real store (``Store.referrals``), so the whole path --
server, source, expansion, keywords, store -- is under test.

The clock is fixed at :data:`NOW` (15 October 2026): the horizon then
covers the end of summer time in Europe (25 October) and the US (1 November).
"""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from esl_app.calendar.config import CalendarConfig, EmployeeCalendar, ServerConfig
from esl_app.calendar.expand import window
from esl_app.calendar.keywords import KeywordRules
from esl_app.calendar.source import AuthError, CalendarSource, Throttled, Unavailable
from esl_app.calendar.worker import CalendarWorker

from .events import Event, Override, local

NOW = dt.datetime(2026, 10, 15, 12, 0, tzinfo=dt.timezone.utc).timestamp()
EXT = "2001"
COMPANY = """
id: acme
name: Acme
country: GB
timezone: Europe/London
employees:
  - {extension: "2001", name: Anna Smith, role: user}
"""
LONDON = ZoneInfo("Europe/London")


def utc(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp())


class Backend:
    """What a contract test needs from a server.  ``capabilities``: the failures it can
    be made to show (``throttle``, ``token-expiry``, ``state-expiry``)."""

    kind = ""
    capabilities: frozenset = frozenset()

    def put(self, event: Event) -> None:
        raise NotImplementedError

    def delete(self, uid: str) -> None:
        raise NotImplementedError

    def source(self, *, good_password: bool = True) -> CalendarSource:
        raise NotImplementedError

    def unreachable_source(self) -> CalendarSource:
        raise NotImplementedError

    def throttle(self, count: int, seconds: int) -> None:
        raise NotImplementedError

    def expire_token(self) -> None:
        raise NotImplementedError

    def expire_state(self) -> None:
        raise NotImplementedError

    secret = "not-a-secret"


def worker_for(store, source: CalendarSource, **options) -> CalendarWorker:
    """A worker with one employee (2001, Europe/London) whose calendar is ``source``."""
    server = ServerConfig(name="test", kind=source.kind, url="https://calendar.invalid/")
    config = CalendarConfig(servers={"test": server},
                            employees=(EmployeeCalendar(EXT, "test", rules=KeywordRules()),),
                            timezone="Europe/London", backoff_initial=30, backoff_max=600, **options)
    return CalendarWorker(store, config, source_factory=lambda *_: source, clock=lambda: NOW,
                          jitter=lambda: 0.5)


def statuses(store, kind: str) -> list[tuple]:
    """What the store holds for 2001 from this source: (start, end, status, reason, visibility)."""
    return [(iv.start, iv.end, iv.status, iv.reason, iv.visibility)
            for iv in store.referrals(EXT).get(f"calendar:{kind}", ())]


class SourceContract:
    """Subclasses provide the ``backend`` fixture."""

    @pytest.fixture
    def store(self, make_store):
        return make_store(COMPANY)

    def sync(self, store, backend, source=None):
        source = source or backend.source()
        worker = worker_for(store, source)
        summary = worker.run_once(now=NOW)
        return worker, summary

    # -- what is written -------------------------------------------------------------------

    def test_a_single_event_gives_its_status_reason_and_times(self, backend, store):
        """Should write the keyword's status, the title as reason, and the event's times."""
        backend.put(Event("single", "m Board meeting", local("2026-10-20 10:00"), local("2026-10-20 11:30")))
        _, summary = self.sync(store, backend)
        assert summary["ok"] == 1 and summary["full"] == 1
        assert statuses(store, backend.kind) == [
            (utc("2026-10-20 09:00"), utc("2026-10-20 10:30"), "meeting", "m Board meeting", "everyone")]

    def test_a_recurring_series_with_exceptions_across_dst(self, backend, store):
        """Should expand a weekly series (09:00 Berlin wall-clock across the end of summer
        time), leave out a deleted and a cancelled occurrence and move a modified one."""
        series = Event("weekly", "m Team", local("2026-10-19 09:00", "Europe/Berlin"),
                       local("2026-10-19 10:00", "Europe/Berlin"), rrule="FREQ=WEEKLY;COUNT=6",
                       exdates=(local("2026-11-02 09:00", "Europe/Berlin"),),
                       overrides=((local("2026-11-09 09:00", "Europe/Berlin"),
                                   Override(start=local("2026-11-09 14:00", "Europe/Berlin"),
                                            end=local("2026-11-09 15:00", "Europe/Berlin"), title="m Team (moved)")),
                                  (local("2026-11-16 09:00", "Europe/Berlin"), Override(cancelled=True))))
        backend.put(series)
        self.sync(store, backend)
        assert statuses(store, backend.kind) == [
            (utc("2026-10-19 07:00"), utc("2026-10-19 08:00"), "meeting", "m Team", "everyone"),
            (utc("2026-10-26 08:00"), utc("2026-10-26 09:00"), "meeting", "m Team", "everyone"),
            (utc("2026-11-09 13:00"), utc("2026-11-09 14:00"), "meeting", "m Team (moved)", "everyone"),
            (utc("2026-11-23 08:00"), utc("2026-11-23 09:00"), "meeting", "m Team", "everyone"),
        ]

    def test_all_day_and_multi_day_events_cover_whole_local_days(self, backend, store):
        """Should lay all-day events on the employee's zone, midnight to midnight (London is
        on summer time until 25 October, so the days start at 23:00 UTC)."""
        backend.put(Event("trip", "va Spain", dt.date(2026, 10, 21), dt.date(2026, 10, 23)))
        backend.put(Event("day", "Sick", dt.date(2026, 10, 28), dt.date(2026, 10, 29)))
        self.sync(store, backend)
        assert statuses(store, backend.kind) == [
            (utc("2026-10-20 23:00"), utc("2026-10-22 23:00"), "vacation", "va Spain", "everyone"),
            (utc("2026-10-28 00:00"), utc("2026-10-29 00:00"), "sick", "Sick", "everyone"),
        ]

    def test_events_in_other_time_zones_keep_their_instant(self, backend, store):
        """Should place events written in New York and Tokyo time at their true instants,
        including New York's own end of summer time on 1 November."""
        backend.put(Event("ny1", "m NY call", local("2026-10-27 09:00", "America/New_York"),
                          local("2026-10-27 10:00", "America/New_York")))
        backend.put(Event("ny2", "m NY call 2", local("2026-11-03 09:00", "America/New_York"),
                          local("2026-11-03 10:00", "America/New_York")))
        backend.put(Event("tokyo", "lunch Tokyo", local("2026-10-22 12:00", "Asia/Tokyo"),
                          local("2026-10-22 13:00", "Asia/Tokyo")))
        self.sync(store, backend)
        assert statuses(store, backend.kind) == [
            (utc("2026-10-22 03:00"), utc("2026-10-22 04:00"), "lunch", "lunch Tokyo", "everyone"),
            (utc("2026-10-27 13:00"), utc("2026-10-27 14:00"), "meeting", "m NY call", "everyone"),
            (utc("2026-11-03 14:00"), utc("2026-11-03 15:00"), "meeting", "m NY call 2", "everyone"),
        ]

    def test_private_events_show_only_busy(self, backend, store):
        """Should keep a private event's status but store no title, visible to nobody."""
        backend.put(Event("doctor", "sick Doctor Jones, oncology", local("2026-10-20 14:00"),
                          local("2026-10-20 15:00"), private=True))
        self.sync(store, backend)
        assert statuses(store, backend.kind) == [
            (utc("2026-10-20 13:00"), utc("2026-10-20 14:00"), "sick", "", "nobody")]

    def test_free_busy_and_cancelled_events(self, backend, store):
        """Should ignore free and cancelled events without a keyword, count tentative ones
        as meetings and out-of-office ones as away; a keyword counts even when free."""
        backend.put(Event("free", "Reminder: call Bob", local("2026-10-20 08:00"), local("2026-10-20 08:30"),
                          free_busy="free"))
        backend.put(Event("tent", "Dentist?", local("2026-10-20 09:00"), local("2026-10-20 10:00"),
                          free_busy="tentative"))
        backend.put(Event("oof", "Trade fair", local("2026-10-21 09:00"), local("2026-10-21 17:00"),
                          free_busy="oof"))
        backend.put(Event("freeva", "[va] Long weekend", dt.date(2026, 10, 30), dt.date(2026, 10, 31),
                          free_busy="free"))
        backend.put(Event("gone", "m Cancelled review", local("2026-10-22 09:00"), local("2026-10-22 10:00"),
                          cancelled=True))
        self.sync(store, backend)
        assert statuses(store, backend.kind) == [
            (utc("2026-10-20 08:00"), utc("2026-10-20 09:00"), "meeting", "Dentist?", "everyone"),
            (utc("2026-10-21 08:00"), utc("2026-10-21 16:00"), "away", "Trade fair", "everyone"),
            (utc("2026-10-30 00:00"), utc("2026-10-31 00:00"), "vacation", "[va] Long weekend", "everyone"),
        ]

    def test_events_outside_the_horizon_are_not_written(self, backend, store):
        """Should keep only what overlaps yesterday .. 60 days ahead."""
        backend.put(Event("old", "m Long ago", local("2026-10-01 10:00"), local("2026-10-01 11:00")))
        backend.put(Event("far", "m Far ahead", local("2027-03-01 10:00"), local("2027-03-01 11:00")))
        backend.put(Event("near", "m Soon", local("2026-10-16 10:00"), local("2026-10-16 11:00")))
        self.sync(store, backend)
        assert [s[3] for s in statuses(store, backend.kind)] == ["m Soon"]

    # -- incremental sync --------------------------------------------------------------------

    def test_incremental_sync_sees_edits(self, backend, store):
        """Should pick up an edited title and time on the next, incremental, sync."""
        event = Event("edit", "m Planning", local("2026-10-20 10:00"), local("2026-10-20 11:00"))
        backend.put(event)
        backend.put(Event("other", "lunch", local("2026-10-20 12:00"), local("2026-10-20 13:00")))
        source = backend.source()
        worker = worker_for(store, source)
        worker.run_once(now=NOW)
        backend.put(event.edited(title="va Planning moved", start=local("2026-10-21 10:00"),
                                 end=local("2026-10-21 12:00")))
        worker.run_once(now=NOW)
        assert worker.status()["calendars"][EXT]["last_sync"] == "incremental"
        assert statuses(store, backend.kind) == [
            (utc("2026-10-20 11:00"), utc("2026-10-20 12:00"), "lunch", "lunch", "everyone"),
            (utc("2026-10-21 09:00"), utc("2026-10-21 11:00"), "vacation", "va Planning moved", "everyone"),
        ]

    def test_incremental_sync_sees_deletions(self, backend, store):
        """Should drop a deleted event (and a deleted series) on the next, incremental, sync."""
        backend.put(Event("keep", "m Keep", local("2026-10-20 10:00"), local("2026-10-20 11:00")))
        backend.put(Event("drop", "m Drop", local("2026-10-20 14:00"), local("2026-10-20 15:00")))
        backend.put(Event("series", "lunch", local("2026-10-19 12:00"), local("2026-10-19 13:00"),
                          rrule="FREQ=DAILY;COUNT=5"))
        source = backend.source()
        worker = worker_for(store, source)
        worker.run_once(now=NOW)
        assert len(statuses(store, backend.kind)) == 7
        backend.delete("drop")
        backend.delete("series")
        worker.run_once(now=NOW)
        assert worker.status()["calendars"][EXT]["last_sync"] == "incremental"
        assert statuses(store, backend.kind) == [
            (utc("2026-10-20 09:00"), utc("2026-10-20 10:00"), "meeting", "m Keep", "everyone")]

    def test_a_sync_without_changes_reports_none(self, backend, store):
        """Should say nothing changed when nothing did, so the worker does no further work."""
        backend.put(Event("same", "m Same", local("2026-10-20 10:00"), local("2026-10-20 11:00")))
        source = backend.source()
        first = source.sync(window(NOW), LONDON)
        second = source.sync(window(NOW), LONDON)
        assert first.changed and first.kind == "full"
        assert not second.changed and second.kind == "incremental" and second.fetched == 0
        assert second.occurrences == first.occurrences

    def test_emptied_calendar_clears_the_statuses(self, backend, store):
        """Should clear the store entry when the last event goes."""
        backend.put(Event("only", "m Only", local("2026-10-20 10:00"), local("2026-10-20 11:00")))
        worker = worker_for(store, backend.source())
        worker.run_once(now=NOW)
        backend.delete("only")
        worker.run_once(now=NOW)
        assert statuses(store, backend.kind) == []
        assert f"calendar:{backend.kind}" not in store.referrals(EXT)

    # -- failures ------------------------------------------------------------------------------

    def test_wrong_credentials_fail_clearly_and_keep_the_last_statuses(self, backend, store, caplog):
        """Should report refused credentials as such, keep what was written before, and
        never put the password into the status or the logs."""
        backend.put(Event("kept", "m Kept", local("2026-10-20 10:00"), local("2026-10-20 11:00")))
        self.sync(store, backend)
        before = statuses(store, backend.kind)
        bad = backend.source(good_password=False)
        with pytest.raises(AuthError):
            bad.sync(window(NOW), LONDON)
        worker, summary = self.sync(store, backend, bad)
        status = worker.status()["calendars"][EXT]
        assert summary["failed"] == 1 and status["state"] == "failing"
        assert statuses(store, backend.kind) == before
        text = repr(status) + caplog.text + repr(bad)
        assert backend.secret not in text and "wrong-" not in text

    def test_an_unreachable_server_keeps_the_last_statuses(self, backend, store):
        """Should keep the statuses in force and schedule a retry when the server is down."""
        backend.put(Event("kept", "m Kept", local("2026-10-20 10:00"), local("2026-10-20 11:00")))
        self.sync(store, backend)
        before = statuses(store, backend.kind)
        dead = backend.unreachable_source()
        with pytest.raises(Unavailable):
            dead.sync(window(NOW), LONDON)
        worker, _ = self.sync(store, backend, dead)
        status = worker.status()["calendars"][EXT]
        assert status["state"] == "failing" and status["next_attempt"] > NOW
        assert statuses(store, backend.kind) == before

    def test_throttling_is_honoured(self, backend, store):
        """Should wait at least as long as the server asks before trying again."""
        if "throttle" not in backend.capabilities:
            pytest.skip(f"{backend.kind} cannot be made to throttle here")
        backend.put(Event("t", "m Throttled", local("2026-10-20 10:00"), local("2026-10-20 11:00")))
        backend.throttle(1, 900)
        source = backend.source()
        with pytest.raises(Throttled) as caught:
            source.sync(window(NOW), LONDON)
        assert caught.value.retry_after == pytest.approx(900)
        backend.throttle(1, 900)
        worker = worker_for(store, source)
        worker.run_once(now=NOW)
        status = worker.status()["calendars"][EXT]
        assert status["state"] == "failing" and status["next_attempt"] >= NOW + 900
        worker.run_once(now=NOW)          # the server is fine again
        assert worker.status()["calendars"][EXT]["state"] == "ok"
        assert [s[3] for s in statuses(store, backend.kind)] == ["m Throttled"]

    def test_an_expired_token_is_renewed(self, backend, store):
        """Should fetch a new access token when the server rejects the cached one."""
        if "token-expiry" not in backend.capabilities:
            pytest.skip(f"{backend.kind} uses no expiring tokens")
        backend.put(Event("tok", "m Token", local("2026-10-20 10:00"), local("2026-10-20 11:00")))
        source = backend.source()
        source.sync(window(NOW), LONDON)
        backend.expire_token()
        backend.put(Event("tok2", "lunch", local("2026-10-20 12:00"), local("2026-10-20 13:00")))
        result = source.sync(window(NOW), LONDON)
        assert result.kind == "incremental" and len(result.occurrences) == 2

    def test_an_expired_sync_state_restarts_in_full(self, backend, store):
        """Should start over with a full sync when the server forgot our sync state, and
        still see deletions that happened meanwhile."""
        if "state-expiry" not in backend.capabilities:
            pytest.skip(f"{backend.kind} cannot be made to forget sync states here")
        backend.put(Event("a", "m A", local("2026-10-20 10:00"), local("2026-10-20 11:00")))
        backend.put(Event("b", "m B", local("2026-10-20 12:00"), local("2026-10-20 13:00")))
        worker = worker_for(store, backend.source())
        worker.run_once(now=NOW)
        backend.expire_state()
        backend.delete("b")
        for _attempt in range(2):          # EWS reports the expiry once, then starts over
            worker.run_once(now=NOW)
            if worker.status()["calendars"][EXT]["state"] == "ok":
                break
        assert worker.status()["calendars"][EXT]["state"] == "ok"
        assert [s[3] for s in statuses(store, backend.kind)] == ["m A"]

    def test_the_horizon_moving_brings_new_occurrences(self, backend, store):
        """Should expand a long series further as days pass, without anything changing on the server."""
        backend.put(Event("daily", "lunch", local("2026-10-15 12:00"), local("2026-10-15 13:00"),
                          rrule="FREQ=DAILY;COUNT=200"))
        source = backend.source()
        worker = worker_for(store, source)
        worker.run_once(now=NOW)
        first = statuses(store, backend.kind)
        worker.run_once(now=NOW + 10 * 86400)
        later = statuses(store, backend.kind)
        assert later[-1][0] > first[-1][0] and later[0][0] > first[0][0]
