"""Compile an IANA zone into a table of UTC-offset transitions.

The compiled engine cannot afford ``zoneinfo`` on every call, so the store keeps,
for each schedule, the zone's transitions over a window of years; a decision is
then a binary search.  Outside the window both engines fall back to ``zoneinfo``.
The reference engine always uses ``zoneinfo``, which is what keeps this table honest
(the property test compares the two).
"""
from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo

from .records import TzTable

#: The window compiled into the store, in UTC years [FIRST_YEAR, LAST_YEAR).
FIRST_YEAR = 2020
LAST_YEAR = 2050
_STEP = 6 * 3600   # no zone has changed its offset twice within six hours


def _offset(zone: ZoneInfo, when: int) -> int:
    # Not zone.utcoffset(utc_moment): that reads the moment as local wall time.
    return int(dt.datetime.fromtimestamp(when, zone).utcoffset().total_seconds())


@lru_cache(maxsize=64)
def compile_zone(name: str, first_year: int = FIRST_YEAR, last_year: int = LAST_YEAR) -> TzTable:
    """Every instant in the window at which ``name`` changes its UTC offset."""
    zone = ZoneInfo(name)
    start = int(dt.datetime(first_year, 1, 1, tzinfo=dt.timezone.utc).timestamp())
    end = int(dt.datetime(last_year, 1, 1, tzinfo=dt.timezone.utc).timestamp())
    transitions = [(start, _offset(zone, start))]
    current = transitions[0][1]
    t = start
    while t < end:
        nxt = min(t + _STEP, end)
        off = _offset(zone, nxt)
        if off != current:
            lo, hi = t, nxt            # offset(lo) == current, offset(hi) != current
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset(zone, mid) == current:
                    lo = mid
                else:
                    hi = mid
            transitions.append((hi, off))
            current = off
        t = nxt
    return TzTable(name, start, end, tuple(transitions))


def offset_at(table: TzTable, when: int) -> int | None:
    """UTC offset at ``when`` from the table, or None outside its window."""
    if not table.valid_from <= when < table.valid_until:
        return None
    lo, hi = 0, len(table.transitions)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if table.transitions[mid][0] <= when:
            lo = mid
        else:
            hi = mid
    return table.transitions[lo][1]
