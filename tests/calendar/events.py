"""Calendar events as the contract tests write them, whatever the server.

:class:`Event` is the source-neutral description a test puts into a
calendar: CalDAV gets it as iCalendar text (:func:`to_ics`, with VTIMEZONE
components as real clients send), the fake Exchange and Graph servers keep
it in a mailbox and expand it *server-side* (:func:`instances`) as those
servers do -- with ``recurring_ical_events``, not with the code under test.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field, replace
from zoneinfo import ZoneInfo

UTC = dt.timezone.utc


@dataclass(frozen=True)
class Override:
    """One occurrence of a series changed (``start``/``end``/``title``) or cancelled."""

    start: dt.datetime | None = None
    end: dt.datetime | None = None
    title: str | None = None
    cancelled: bool = False


@dataclass(frozen=True)
class Event:
    """``start``/``end``: aware datetimes in the event's zone, or dates (all-day, end exclusive)."""

    uid: str
    title: str
    start: dt.date | dt.datetime
    end: dt.date | dt.datetime
    rrule: str | None = None
    exdates: tuple[dt.datetime, ...] = ()
    overrides: tuple[tuple[dt.datetime, Override], ...] = ()   # (original start, change)
    private: bool = False
    free_busy: str = "busy"          # busy | free | tentative | oof
    cancelled: bool = False
    sequence: int = 0

    @property
    def all_day(self) -> bool:
        return not isinstance(self.start, dt.datetime)

    def edited(self, **changes) -> "Event":
        return replace(self, sequence=self.sequence + 1, **changes)

    def changekey(self) -> str:
        return hashlib.sha1(repr(self).encode()).hexdigest()[:16]


def local(text: str, zone: str = "Europe/London") -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))


def _component(event: Event, *, start, end, title, recurrence_id=None, cancelled=False):
    import icalendar

    vevent = icalendar.Event()
    vevent.add("uid", event.uid)
    vevent.add("dtstamp", dt.datetime(2026, 11, 1, tzinfo=UTC))
    vevent.add("sequence", event.sequence)
    vevent.add("summary", title)
    vevent.add("dtstart", start)
    vevent.add("dtend", end)
    if recurrence_id is not None:
        vevent.add("recurrence-id", recurrence_id)
    if event.private:
        vevent.add("class", "PRIVATE")
    if event.free_busy == "free":
        vevent.add("transp", "TRANSPARENT")
    elif event.free_busy in ("tentative", "oof"):
        vevent.add("x-microsoft-cdo-busystatus", {"tentative": "TENTATIVE", "oof": "OOF"}[event.free_busy])
    if cancelled or event.cancelled:
        vevent.add("status", "CANCELLED")
    return vevent


def to_ics(event: Event) -> str:
    """The event as one iCalendar object (VCALENDAR with VTIMEZONEs, master + overrides)."""
    import icalendar

    cal = icalendar.Calendar()
    cal.add("prodid", "-//switchboard tests//EN")
    cal.add("version", "2.0")
    master = _component(event, start=event.start, end=event.end, title=event.title)
    if event.rrule:
        master.add("rrule", icalendar.vRecur.from_ical(event.rrule))
        for exdate in event.exdates:
            master.add("exdate", exdate)
    cal.add_component(master)
    for original, change in event.overrides:
        duration = event.end - event.start
        start = change.start or original
        cal.add_component(_component(event, start=start, end=change.end or start + duration,
                                     title=change.title if change.title is not None else event.title,
                                     recurrence_id=original, cancelled=change.cancelled))
    if not event.all_day:
        cal.add_missing_timezones()
    return cal.to_ical().decode()


@dataclass(frozen=True)
class Instance:
    """One occurrence as an Exchange or Graph server would list it."""

    id: str
    uid: str
    start: dt.datetime | dt.date        # UTC datetime, or the date for all-day
    end: dt.datetime | dt.date
    all_day: bool
    title: str
    private: bool
    free_busy: str
    cancelled: bool
    kind: str                           # singleInstance | occurrence | exception
    zone: str = "UTC"                   # the event's own zone (EWS StartTimeZone)

    def version(self) -> str:
        return hashlib.sha1(repr(self).encode()).hexdigest()[:16]


def instances(event: Event, start: dt.datetime, end: dt.datetime) -> list[Instance]:
    """Server-side expansion: occurrences overlapping [start, end), cancelled ones left out
    (as Exchange calendar views and Graph calendarView do for deleted occurrences)."""
    import icalendar
    import recurring_ical_events

    cal = icalendar.Calendar.from_ical(to_ics(event))
    out = []
    for comp in recurring_ical_events.of(cal).between(start - dt.timedelta(days=1), end + dt.timedelta(days=1)):
        if str(comp.get("STATUS", "")).upper() == "CANCELLED" and event.rrule and not event.cancelled:
            continue            # a cancelled occurrence of a series: gone from the view
        s, e = comp.get("DTSTART").dt, comp.get("DTEND").dt
        if event.all_day:
            if not (dt.datetime.combine(s, dt.time(), UTC) < end and dt.datetime.combine(e, dt.time(), UTC) > start):
                continue
        else:
            s, e = s.astimezone(UTC), e.astimezone(UTC)
            if not (s < end and e > start):
                continue
        rid = comp.get("RECURRENCE-ID")
        key = (rid.dt if rid is not None else s)
        kind = "singleInstance" if not event.rrule else (
            "exception" if any(o[0] == key or o[0] == getattr(rid, "dt", None) for o in event.overrides)
            else "occurrence")
        zone = getattr(getattr(event.start, "tzinfo", None), "key", "UTC")
        ident = hashlib.sha1(f"{event.uid}|{key}".encode()).hexdigest()[:24]
        out.append(Instance(ident, event.uid, s, e, event.all_day, str(comp.get("SUMMARY", "")), event.private,
                            event.free_busy, event.cancelled or str(comp.get("STATUS", "")).upper() == "CANCELLED",
                            kind, zone))
    return out


@dataclass
class Mailbox:
    """A fake server's calendar: events by UID, plus the snapshots behind sync states."""

    events: dict[str, Event] = field(default_factory=dict)
    states: dict[str, dict] = field(default_factory=dict)
    counter: int = 0

    def new_state(self, snapshot: dict) -> str:
        self.counter += 1
        token = f"s{self.counter}-{hashlib.sha1(repr(sorted(snapshot.items())).encode()).hexdigest()[:8]}"
        self.states[token] = snapshot
        return token
