"""iCalendar expansion and intervals (esl_app/calendar/expand.py), on hand-written iCalendar."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from esl_app.calendar import expand
from esl_app.calendar.expand import (CalendarDataError, Occurrence, Window, all_day_span, expand_ical,
                                     to_intervals, window)
from esl_app.calendar.keywords import KeywordRules

LONDON = ZoneInfo("Europe/London")
NOW = dt.datetime(2026, 10, 15, 12, 0, tzinfo=dt.timezone.utc).timestamp()
HORIZON = window(NOW)


def utc(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp())


def ics(*events: str, extra: str = "") -> str:
    body = "".join(f"BEGIN:VEVENT\r\nDTSTAMP:20261001T000000Z\r\n{e.strip()}\r\nEND:VEVENT\r\n".replace("\n    ", "\n")
                   for e in events)
    return f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n{extra}{body}END:VCALENDAR\r\n"


def spans(text: str, zone=LONDON, horizon=HORIZON):
    return [(o.start, o.end, o.title) for o in sorted(expand_ical(text, horizon, zone), key=lambda o: o.start)]


def test_window_is_whole_utc_days():
    w = window(NOW)
    assert w == Window(utc("2026-10-14 00:00"), utc("2026-12-15 00:00"))
    assert window(NOW + 3600) == w
    assert window(NOW, past_days=0, horizon_days=1) == Window(utc("2026-10-15 00:00"), utc("2026-10-17 00:00"))


def test_recurring_series_with_exdate_override_and_cancelled_occurrence():
    text = ics("""UID:w
DTSTART;TZID=Europe/Berlin:20261019T090000
DTEND;TZID=Europe/Berlin:20261019T100000
RRULE:FREQ=WEEKLY;COUNT=6
EXDATE;TZID=Europe/Berlin:20261102T090000
SUMMARY:m Team""", """UID:w
RECURRENCE-ID;TZID=Europe/Berlin:20261109T090000
DTSTART;TZID=Europe/Berlin:20261109T140000
DTEND;TZID=Europe/Berlin:20261109T150000
SUMMARY:m Team (moved)""", """UID:w
RECURRENCE-ID;TZID=Europe/Berlin:20261116T090000
DTSTART;TZID=Europe/Berlin:20261116T090000
DTEND;TZID=Europe/Berlin:20261116T100000
STATUS:CANCELLED
SUMMARY:m Team""")
    occ = sorted(expand_ical(text, HORIZON, LONDON), key=lambda o: o.start)
    assert [(o.start, o.title, o.cancelled) for o in occ] == [
        (utc("2026-10-19 07:00"), "m Team", False),            # CEST
        (utc("2026-10-26 08:00"), "m Team", False),            # CET: wall clock kept across DST
        (utc("2026-11-09 13:00"), "m Team (moved)", False),
        (utc("2026-11-16 08:00"), "m Team", True),             # cancelled: returned, marked
        (utc("2026-11-23 08:00"), "m Team", False),
    ]
    intervals = to_intervals(occ, KeywordRules(), "calendar:caldav")
    assert [iv.start for iv in intervals] == [utc("2026-10-19 07:00"), utc("2026-10-26 08:00"),
                                             utc("2026-11-09 13:00"), utc("2026-11-23 08:00")]


def test_all_day_events_are_local_days_of_the_employee():
    text = ics("UID:a\nDTSTART;VALUE=DATE:20261021\nDTEND;VALUE=DATE:20261023\nSUMMARY:va")
    assert spans(text) == [(utc("2026-10-20 23:00"), utc("2026-10-22 23:00"), "va")]
    assert spans(text, ZoneInfo("America/New_York")) == [(utc("2026-10-21 04:00"), utc("2026-10-23 04:00"), "va")]


def test_all_day_event_without_dtend_is_one_day_and_spans_dst_change():
    one = ics("UID:a\nDTSTART;VALUE=DATE:20261028\nSUMMARY:sick")
    assert spans(one) == [(utc("2026-10-28 00:00"), utc("2026-10-29 00:00"), "sick")]
    across = ics("UID:b\nDTSTART;VALUE=DATE:20261024\nDTEND;VALUE=DATE:20261027\nSUMMARY:va")
    # 24 Oct 00:00 BST .. 27 Oct 00:00 GMT: 73 hours, the day of the change has 25
    assert spans(across) == [(utc("2026-10-23 23:00"), utc("2026-10-27 00:00"), "va")]


def test_recurring_all_day_event():
    text = ics("UID:r\nDTSTART;VALUE=DATE:20261019\nRRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=3\nSUMMARY:away")
    assert [s[0] for s in spans(text)] == [utc("2026-10-18 23:00"), utc("2026-10-26 00:00"), utc("2026-11-02 00:00")]


def test_time_zones_utc_floating_and_vtimezone():
    text = ics("UID:u\nDTSTART:20261020T100000Z\nDTEND:20261020T110000Z\nSUMMARY:utc",
               "UID:f\nDTSTART:20261021T100000\nDTEND:20261021T110000\nSUMMARY:floating",
               "UID:n\nDTSTART;TZID=America/New_York:20261103T090000\nDURATION:PT90M\nSUMMARY:ny")
    assert spans(text) == [(utc("2026-10-20 10:00"), utc("2026-10-20 11:00"), "utc"),
                           (utc("2026-10-21 09:00"), utc("2026-10-21 10:00"), "floating"),
                           (utc("2026-11-03 14:00"), utc("2026-11-03 15:30"), "ny")]


def test_custom_vtimezone_definition_is_used():
    """A TZID that is no IANA name works through the VTIMEZONE sent with it."""
    vtimezone = ("BEGIN:VTIMEZONE\r\nTZID:Custom Central\r\nBEGIN:STANDARD\r\nDTSTART:19701025T030000\r\n"
                 "RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nEND:STANDARD\r\n"
                 "BEGIN:DAYLIGHT\r\nDTSTART:19700329T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\n"
                 "TZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\nEND:DAYLIGHT\r\nEND:VTIMEZONE\r\n")
    text = ics("UID:c\nDTSTART;TZID=Custom Central:20261020T090000\nDTEND;TZID=Custom Central:20261020T100000\n"
               "RRULE:FREQ=WEEKLY;COUNT=2\nSUMMARY:m x", extra=vtimezone)
    assert [s[0] for s in spans(text)] == [utc("2026-10-20 07:00"), utc("2026-10-27 08:00")]


def test_windows_zone_name_from_outlook():
    text = ics("UID:w\nDTSTART;TZID=W. Europe Standard Time:20261020T090000\n"
               "DTEND;TZID=W. Europe Standard Time:20261020T100000\nSUMMARY:m outlook")
    assert spans(text) == [(utc("2026-10-20 07:00"), utc("2026-10-20 08:00"), "m outlook")]


def test_spring_forward_gap_and_fall_back_fold():
    """Wall-clock times in a DST gap take the offset before the gap (RFC 5545 3.3.5, and
    zoneinfo's fold=0); in a fold, the first of the two."""
    horizon = Window(utc("2027-03-01 00:00"), utc("2027-04-01 00:00"))
    gap = ics("UID:g\nDTSTART:20270328T013000\nDTEND:20270328T033000\nSUMMARY:floating gap")
    assert spans(gap, horizon=horizon) == [(utc("2027-03-28 01:30"), utc("2027-03-28 02:30"), "floating gap")]
    horizon = Window(utc("2026-10-20 00:00"), utc("2026-10-30 00:00"))
    fold = ics("UID:f\nDTSTART:20261025T013000\nDTEND:20261025T020000\nSUMMARY:fold")
    assert spans(fold, horizon=horizon)[0][0] == utc("2026-10-25 00:30")     # first 01:30 (BST)


def test_private_cancelled_free_and_tentative_flags():
    text = ics("UID:p\nDTSTART:20261020T100000Z\nDTEND:20261020T110000Z\nCLASS:PRIVATE\nSUMMARY:sick x",
               "UID:c\nDTSTART:20261020T120000Z\nDTEND:20261020T130000Z\nSTATUS:CANCELLED\nSUMMARY:m c",
               "UID:t\nDTSTART:20261020T140000Z\nDTEND:20261020T150000Z\nTRANSP:TRANSPARENT\nSUMMARY:free",
               "UID:o\nDTSTART:20261020T160000Z\nDTEND:20261020T170000Z\nX-MICROSOFT-CDO-BUSYSTATUS:OOF\nSUMMARY:o",
               "UID:q\nDTSTART:20261020T180000Z\nDTEND:20261020T190000Z\nSTATUS:TENTATIVE\nSUMMARY:q",
               "UID:k\nDTSTART:20261020T200000Z\nDTEND:20261020T210000Z\nCLASS:CONFIDENTIAL\nSUMMARY:k")
    occ = {o.uid: o for o in expand_ical(text, HORIZON, LONDON)}
    assert occ["p"].private and occ["k"].private and not occ["o"].private
    assert occ["c"].cancelled
    assert (occ["t"].free_busy, occ["o"].free_busy, occ["q"].free_busy) == ("free", "oof", "tentative")
    intervals = to_intervals(occ.values(), KeywordRules(), "calendar:caldav")
    assert [(iv.status, iv.reason, iv.visibility) for iv in intervals] == [
        ("sick", "", "nobody"), ("away", "o", "everyone"), ("meeting", "q", "everyone"),
        ("meeting", "", "nobody")]


def test_zero_length_and_missing_dtstart_are_no_status():
    text = ics("UID:z\nDTSTART:20261020T100000Z\nSUMMARY:no end",
               "UID:y\nDTSTART:20261020T100000Z\nDTEND:20261020T100000Z\nSUMMARY:zero",
               "UID:x\nSUMMARY:no start")
    assert expand_ical(text, HORIZON, LONDON) == []


def test_only_the_horizon_is_kept_with_true_times():
    text = ics("UID:long\nDTSTART:20261001T000000Z\nDTEND:20261101T000000Z\nSUMMARY:va long",
               "UID:old\nDTSTART:20261001T000000Z\nDTEND:20261002T000000Z\nSUMMARY:old",
               "UID:r\nDTSTART:20261001T090000Z\nDTEND:20261001T100000Z\nRRULE:FREQ=DAILY\nSUMMARY:daily")
    occ = expand_ical(text, HORIZON, LONDON)
    titles = [o.title for o in occ]
    assert "old" not in titles and "va long" in titles
    assert next(o for o in occ if o.title == "va long").start == utc("2026-10-01 00:00")
    daily = [o for o in occ if o.title == "daily"]
    assert len(daily) == 62 and daily[0].start == utc("2026-10-14 09:00")     # infinite RRULE, bounded


def test_bad_data():
    with pytest.raises(CalendarDataError):
        expand_ical("this is not iCalendar", HORIZON, LONDON)
    with pytest.raises(CalendarDataError):
        expand_ical("BEGIN:VEVENT\r\nUID:x\r\nEND:VEVENT\r\n", HORIZON, LONDON)


def test_a_broken_series_is_skipped_not_fatal(caplog):
    text = ics("UID:b\nDTSTART:20261020T100000Z\nDTEND:20261020T110000Z\nRRULE:FREQ=SOMETIMES\nSUMMARY:bad")
    assert expand_ical(text, HORIZON, LONDON) == []


def test_intervals_are_sorted_deduplicated_and_bounded(monkeypatch):
    occ = [Occurrence(200, 300, "m b"), Occurrence(100, 200, "m a"), Occurrence(100, 200, "m a"),
           Occurrence(50, 40, "m backwards")]
    intervals = to_intervals(occ, KeywordRules(), "calendar:ews")
    assert [(iv.start, iv.reason, iv.source) for iv in intervals] == [(100, "m a", "calendar:ews"),
                                                                      (200, "m b", "calendar:ews")]
    monkeypatch.setattr(expand, "MAX_INTERVALS", 1)
    assert len(to_intervals(occ, KeywordRules(), "calendar:ews")) == 1


def test_all_day_span_helper():
    assert all_day_span(dt.date(2026, 10, 28), None, LONDON) == (utc("2026-10-28 00:00"), utc("2026-10-29 00:00"))
    assert all_day_span(dt.date(2026, 10, 28), dt.date(2026, 10, 28), LONDON)[1] == utc("2026-10-29 00:00")
