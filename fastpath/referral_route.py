"""The referral status of an employee at call time, as both engines route it.

The engines differ in how they read records and build steps, not in what a
status means; that part is here, once: which status is in force
(:mod:`fastpath.referral_status`), until when, how it reads in a plan's reason
("meeting until 14:30 (calendar: 'm Board meeting')"), what the caller is told
(the ``referral_status`` phrase macro of ``freeswitch_conf/``), and where a
status's alternate number leads.

It runs only for employees whose presence entry carries ``LIVE_REFERRAL``
(set by the store whenever statuses are stored for them), so the common call
pays nothing for it.  Privacy: a status whose visibility is not ``everyone`` is
said and explained as plain "busy", without its reason or alternate.
"""
from __future__ import annotations

import datetime as dt
import struct
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo

from . import records as rec
from .errors import PhoneNumberError
from .model import Destination
from .phone import to_e164
from .referral_status import status_at, until as status_until
from .route_plan import Say

PHRASE = "referral_status"
_U16 = struct.Struct("<H")
_SPAN = struct.Struct("<qq")
#: How a status reads in a reason; company-defined ones read as their name.
WORDS = {"meeting": "in a meeting", "lunch": "at lunch", "vacation": "on vacation", "sick": "off sick",
         "away": "away", "busy": "busy"}


class Referral(NamedTuple):
    interval: rec.ReferralInterval
    until: int | None          # when the status in force ends (None: open-ended)
    shown: str                 # the status as callers and the plan see it ("busy" when private)
    text: str                  # for reasons: "in a meeting until 14:30 (calendar: 'm Board meeting')"
    say: Say                   # the announcement step


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _until_text(until: int | None, at: int, zone: str) -> str:
    if until is None:
        return "until further notice"
    tz = _zone(zone)
    end, now = dt.datetime.fromtimestamp(until, tz), dt.datetime.fromtimestamp(at, tz)
    if end.date() == now.date():
        return f"until {end:%H:%M}"
    day = f"{end:%A} {end.day} {end:%B}" + (f" {end.year}" if end.year != now.year else "")
    return f"until {day}" if (end.hour, end.minute) == (0, 0) else f"until {day} {end:%H:%M}"


def _spans(raw) -> list[tuple[int, int, int]]:
    """``(start, end, offset)`` of every interval of a referral record, strings skipped."""
    data = memoryview(raw)
    rec.Reader(data, rec.REC_REFERRAL)                  # checks the header
    count = _U16.unpack_from(data, 2)[0]
    out, pos = [], 4
    for _ in range(count):
        start, end = _SPAN.unpack_from(data, pos)
        here, pos = pos, pos + 16
        for _ in range(3):                              # status, reason, alternate
            pos += 2 + _U16.unpack_from(data, pos)[0]
        pos += 1                                        # visibility
        pos += 2 + _U16.unpack_from(data, pos)[0]       # source
        out.append((start, end, here))
    return out


def relevant(records: list[tuple[str, object]], at: int) -> dict | None:
    """The intervals that decide the status at ``at`` and until when, by source; None if none is in force.

    A calendar synced for a year holds hundreds of intervals, of which only these matter:
    those in force at ``at`` and those starting before the in-force chain ends.  ``status_at``
    and ``until`` give the same answers on them as on all (``until`` only looks at instants up
    to the chain's end).  The compiled engine has its own twin of this (``_engine.pyx``).
    """
    spans = [(source, raw, _spans(raw)) for source, raw in records]
    bound = max((end for _, _, items in spans for start, end, _ in items if start <= at < end), default=None)
    if bound is None:
        return None
    changed = True
    while changed:
        changed = False
        for _, _, items in spans:
            for start, end, _ in items:
                if end > bound and start <= bound:
                    bound, changed = end, True
    out = {}
    for source, raw, items in spans:
        chosen = tuple(_interval_at(raw, pos) for start, end, pos in items if end > at and start <= bound)
        if chosen:
            out[source] = chosen
    return out


def _interval_at(raw, pos: int) -> rec.ReferralInterval:
    r = rec.Reader(raw, rec.REC_REFERRAL)
    r.pos = pos
    return rec.ReferralInterval(r.i64(), r.i64(), r.str(), r.str(), r.str(), rec.VISIBILITY_NAMES[r.u8()], r.str())


def in_force(txn, referral_db, company_db, extension: str, company: str, at: int,
             select=relevant) -> Referral | None:
    """The status ``extension`` has at ``at`` (None when none or ``available``).

    ``select(records, at)`` narrows ``(source, raw record)`` pairs to the intervals that
    matter (:func:`relevant`; the compiled engine passes its own twin)."""
    prefix = extension.encode() + b"/"
    records = []
    cursor = txn.cursor(db=referral_db)
    if cursor.set_range(prefix):
        for key, value in cursor:
            if not bytes(key).startswith(prefix):
                break
            records.append((bytes(key[len(prefix):]).decode(), bytes(value)))   # buffers may be reused
    by_source = select(records, at)
    if not by_source:
        return None
    interval = status_at(by_source, at)
    if interval is None or interval.status == "available":
        return None
    ends = status_until(by_source, at)
    info = rec.decode_company(txn.get(company.encode(), db=company_db))
    visible = interval.visibility == "everyone"
    shown = interval.status if visible else "busy"
    when = _until_text(ends, at, info.timezone)
    word = WORDS.get(shown, f"status {shown}")
    source = interval.source or "manual"
    detail = f"{source}: '{interval.reason}'" if visible and interval.reason else source
    text = f"{word} {when} ({detail})" if visible else f"{word} {when} (private {source.split(':')[0]} status)"
    say = Say(PHRASE, f"{extension}:{shown}:{ends or 0}", info.language, info.timezone,
              f"tell the caller: ext {extension} is {word} {when}")
    return Referral(interval, ends, shown, text, say)


def alternate(txn, ext_db, company_db, referral: Referral, company: str) -> tuple[Destination | None, str]:
    """Where the status's alternate number leads: an extension of the company or an external number.

    Returns ``(destination, note)``; None (with why) when there is none or it is unusable.
    """
    number = referral.interval.alternate.strip()
    if not number or referral.shown == "busy":
        return None, "no alternate number given"
    raw = txn.get(number.encode(), db=ext_db) if number.isdigit() and len(number) <= 6 else None
    if raw is not None:
        found = rec.decode_extension(number, raw)
        if found.company == company:
            kind = "department" if raw[0] == rec.REC_DEPARTMENT else "employee"
            return Destination(kind, number), f"alternate ext {number}"
    country = rec.decode_company(txn.get(company.encode(), db=company_db)).country
    try:
        return Destination("external", to_e164(number, country)), f"alternate +{to_e164(number, country)}"
    except PhoneNumberError as exc:
        return None, f"alternate {number!r} unusable: {exc}"
