"""Calendar events -> concrete status intervals within a horizon.

Every source ends in the same two steps:

1. **Occurrences**: one :class:`Occurrence` per concrete time an event takes
   place, in POSIX seconds.  iCalendar data (CalDAV) is expanded here, with
   ``recurring_ical_events`` (RRULE, RDATE, EXDATE, RECURRENCE-ID overrides,
   cancelled occurrences) on ``icalendar``'s parser (VTIMEZONE / TZID,
   including Windows zone names).  Exchange (EWS ``CalendarView``) and
   Microsoft Graph (``calendarView``) expand series on the server and hand
   over occurrences already; their all-day events still go through
   :func:`all_day_span`.
2. **Intervals**: :func:`to_intervals` applies the employee's keyword rules
   (:mod:`.keywords`) and makes :class:`fastpath.records.ReferralInterval`\\ s
   with the source name, sorted, duplicates removed.

Times:

* a date-time with a zone (``TZID`` with or without a ``VTIMEZONE``, or UTC)
  is that instant; a **floating** date-time (no zone) is wall-clock time in
  the employee's zone;
* an **all-day** event (``VALUE=DATE``) runs from midnight to midnight in the
  employee's zone, so "vacation on 24 November" means the whole of that
  local day wherever the calendar server is; a missing ``DTEND`` means one
  day; multi-day events span all their days (``DTEND`` is exclusive);
* a date-time event without ``DTEND``/``DURATION`` lasts zero time (RFC 5545)
  and is no status;
* wall-clock times that do not exist (spring-forward gap) or exist twice
  (fall-back) resolve as Python's ``zoneinfo`` does (``fold=0``).

The horizon is :func:`window` (default one day back, 60 days ahead); an
occurrence is kept when it overlaps the horizon, with its true start and end.
"""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from fastpath.records import ReferralInterval

from .keywords import KeywordRules, classify

log = logging.getLogger(__name__)

UTC = dt.timezone.utc
DAY = 86400
#: Most intervals written for one employee and source (the record counts them in a u16).
MAX_INTERVALS = 5000

__all__ = [
    "Occurrence", "Window", "window", "CalendarDataError", "parse_ical", "expand_ical",
    "expand_calendar", "all_day_span", "to_intervals", "instant",
]


class CalendarDataError(ValueError):
    """iCalendar data that cannot be read."""


@dataclass(frozen=True, slots=True)
class Window:
    """The horizon: occurrences overlapping ``[start, end)`` (POSIX seconds) are kept."""

    start: int
    end: int

    def overlaps(self, start: float, end: float) -> bool:
        return start < self.end and end > self.start


def window(now: float, *, past_days: int = 1, horizon_days: int = 60) -> Window:
    """From midnight UTC ``past_days`` before ``now`` to midnight UTC ``horizon_days + 1``
    days after it: whole days, so the horizon (and so what is expanded and written)
    moves once a day, not at every sync."""
    day = int(now) // DAY * DAY
    return Window(day - past_days * DAY, day + (horizon_days + 1) * DAY)


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One concrete time an event takes place.

    ``free_busy`` is one of :data:`.keywords.FREE_BUSY`; ``uid`` identifies the
    event (series) it came from, for logs and tests.
    """

    start: int
    end: int
    title: str
    private: bool = False
    free_busy: str = "busy"
    cancelled: bool = False
    uid: str = ""


# --- instants --------------------------------------------------------------------------------

def instant(value: dt.date | dt.datetime, zone: dt.tzinfo) -> int:
    """POSIX seconds of an iCalendar DATE or DATE-TIME: aware as it is, floating and
    dates (midnight) in ``zone``."""
    if not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time(0, 0))
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        value = value.replace(tzinfo=zone)
    return int(value.timestamp())


def all_day_span(first: dt.date, end: dt.date | None, zone: dt.tzinfo) -> tuple[int, int]:
    """An all-day event from ``first`` up to ``end`` (exclusive; ``None``: one day) as
    midnight-to-midnight in ``zone``."""
    if end is None or end <= first:
        end = first + dt.timedelta(days=1)
    return instant(first, zone), instant(end, zone)


# --- iCalendar -----------------------------------------------------------------------------

def parse_ical(text: str | bytes):
    """An ``icalendar.Calendar`` from text; :class:`CalendarDataError` if it is not one."""
    import icalendar

    try:
        cal = icalendar.Calendar.from_ical(text)
    except Exception as exc:       # icalendar raises ValueError, IndexError, KeyError… on bad data
        raise CalendarDataError(f"not iCalendar data: {exc}") from None
    if getattr(cal, "name", "") != "VCALENDAR":
        raise CalendarDataError(f"expected a VCALENDAR, got {getattr(cal, 'name', '?')}")
    return cal


_FREE_BUSY_CDO = {"FREE": "free", "TENTATIVE": "tentative", "BUSY": "busy", "OOF": "oof",
                  "WORKINGELSEWHERE": "elsewhere"}


def _text(component, name: str) -> str:
    value = component.get(name)
    return str(value) if value is not None else ""


def _free_busy(component) -> str:
    cdo = _text(component, "X-MICROSOFT-CDO-BUSYSTATUS").upper()
    if cdo in _FREE_BUSY_CDO:
        return _FREE_BUSY_CDO[cdo]
    if _text(component, "TRANSP").upper() == "TRANSPARENT":
        return "free"
    if _text(component, "STATUS").upper() == "TENTATIVE":
        return "tentative"
    return "busy"


def _occurrence(component, zone: dt.tzinfo) -> Occurrence | None:
    start_prop = component.get("DTSTART")
    if start_prop is None:
        return None
    start_value = start_prop.dt
    end_prop = component.get("DTEND")
    end_value = end_prop.dt if end_prop is not None else None
    if end_value is None and component.get("DURATION") is not None:
        end_value = start_value + component.get("DURATION").dt
    if not isinstance(start_value, dt.datetime):          # all-day
        end_date = end_value if isinstance(end_value, dt.date) and not isinstance(end_value, dt.datetime) else None
        start, end = all_day_span(start_value, end_date, zone)
    else:
        start = instant(start_value, zone)
        end = instant(end_value, zone) if end_value is not None else start
    if end <= start:
        return None
    return Occurrence(
        start=start, end=end, title=_text(component, "SUMMARY"),
        private=_text(component, "CLASS").upper() in ("PRIVATE", "CONFIDENTIAL"),
        free_busy=_free_busy(component),
        cancelled=_text(component, "STATUS").upper() == "CANCELLED",
        uid=_text(component, "UID"),
    )


def _is_plain(events: list) -> bool:
    """One VEVENT, no recurrence: no expansion library needed."""
    if len(events) != 1:
        return False
    event = events[0]
    return all(event.get(name) is None for name in ("RRULE", "RDATE", "RECURRENCE-ID"))


def expand_calendar(cal, horizon: Window, zone: dt.tzinfo) -> list[Occurrence]:
    """Every occurrence of every VEVENT of a parsed VCALENDAR that overlaps ``horizon``.

    Cancelled occurrences are returned (``cancelled=True``) so the caller sees
    them; :func:`to_intervals` drops them.  A broken series is skipped with a
    warning, the rest of the calendar still counts.
    """
    events = [c for c in cal.walk("VEVENT")]
    if not events:
        return []
    if _is_plain(events):
        occ = _occurrence(events[0], zone)
        return [occ] if occ is not None and horizon.overlaps(occ.start, occ.end) else []
    import recurring_ical_events

    # One day of slack each side: floating and all-day events are compared in the
    # library's terms first, then exactly, in the employee's zone, below.
    lo = dt.datetime.fromtimestamp(horizon.start - DAY, UTC)
    hi = dt.datetime.fromtimestamp(horizon.end + DAY, UTC)
    out = []
    try:
        found = recurring_ical_events.of(cal, skip_bad_series=True).between(lo, hi)
        for component in found:
            occ = _occurrence(component, zone)
            if occ is not None and horizon.overlaps(occ.start, occ.end):
                out.append(occ)
    except Exception as exc:           # the library raises its own and icalendar's errors
        uids = sorted({_text(e, "UID") for e in events})
        log.warning("calendar object %s: cannot expand its recurrence (%s: %s); skipped",
                    ", ".join(uids)[:200], type(exc).__name__, exc)
        return []
    return out


def expand_ical(text: str | bytes, horizon: Window, zone: dt.tzinfo | str) -> list[Occurrence]:
    """:func:`expand_calendar` of iCalendar text."""
    if isinstance(zone, str):
        zone = ZoneInfo(zone)
    return expand_calendar(parse_ical(text), horizon, zone)


# --- intervals ---------------------------------------------------------------------------

def to_intervals(occurrences: Iterable[Occurrence], rules: KeywordRules, source: str) -> list[ReferralInterval]:
    """The status intervals these occurrences make under ``rules``: sorted by start,
    identical ones once, at most :data:`MAX_INTERVALS` (the earliest)."""
    seen = set()
    for occ in occurrences:
        counted = classify(occ.title, rules, private=occ.private, free_busy=occ.free_busy,
                           cancelled=occ.cancelled)
        if counted.status is None or occ.end <= occ.start:
            continue
        seen.add(ReferralInterval(int(occ.start), int(occ.end), counted.status, counted.reason, "",
                                  counted.visibility, source))
    intervals = sorted(seen, key=lambda iv: (iv.start, iv.end, iv.status, iv.reason, iv.visibility))
    if len(intervals) > MAX_INTERVALS:
        log.warning("%s: %d status intervals in the horizon, keeping the first %d",
                    source, len(intervals), MAX_INTERVALS)
        del intervals[MAX_INTERVALS:]
    return intervals
