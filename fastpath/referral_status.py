"""Which referral status is in force: pure functions over :class:`ReferralInterval`.

Both routing engines, the calendar service and the receptionist view use these,
so they always agree.  Statuses live in the store per ``<extension>/<source>``;
:meth:`fastpath.store.Store.referrals` returns them as ``by_source``, a mapping
source -> intervals.  The source *key* (not ``ReferralInterval.source``) decides
which layer an interval belongs to.

The rule, in two layers:

1. **Manual beats calendar.**  A status from a non-calendar source (``manual``,
   ``admin``, ``feature-code``… -- anything but ``calendar`` / ``calendar:<kind>``)
   overrides every calendar status while it is in force: until it ends, or until
   it is cleared (the source's entry removed from the store).  Among several
   manual statuses in force, the one that started last wins (a newer decision
   replaces an older one: a manual ``available`` from today ends a manual
   week of ``vacation`` for today), then the ranking below.  A manual
   ``available`` is returned like any status: "ring the phone, whatever the
   calendar says".
2. **Calendar: the most restrictive.**  Among overlapping calendar intervals
   the most restrictive status wins.  The default order, most restrictive first::

       sick > vacation > away > meeting > lunch > <company-defined> > available

   A company may give its own order (``precedence:`` in the calendar config);
   statuses it does not list rank below every listed one, in alphabetical order
   (so the outcome never depends on the order intervals were stored), and
   ``available`` always ranks last.  Why this order: the caller is told the
   reason that lasts longest and that no one can interrupt -- someone off sick
   or on vacation will not come out of a meeting for the call; lunch is the
   shortest interruption.  Among intervals of the same status the one that ends
   last wins (the caller hears the latest "back at"), then the earliest start,
   then the source name, then the reason -- every tie is broken, so two engines
   always agree.

Intervals are half-open: in force from ``start`` (inclusive) to ``end`` (exclusive).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from fastpath.records import ReferralInterval

DEFAULT_PRECEDENCE: tuple[str, ...] = ("sick", "vacation", "away", "meeting", "lunch")

CALENDAR_SOURCE = "calendar"

BySource = Mapping[str, Iterable[ReferralInterval]]


def is_calendar_source(source: str) -> bool:
    """``calendar`` or ``calendar:<kind>`` (what the sync workers write); every other
    source is manual."""
    return source == CALENDAR_SOURCE or source.startswith(CALENDAR_SOURCE + ":")


def rank_table(precedence: Sequence[str] = DEFAULT_PRECEDENCE) -> dict[str, int]:
    """Status -> rank (0 = most restrictive) for the listed statuses."""
    return {status: i for i, status in enumerate(precedence)}


def _key(iv: ReferralInterval, ranks: dict[str, int]):
    unlisted = len(ranks) + (1 if iv.status == "available" else 0)
    rank = ranks.get(iv.status, unlisted)
    # sort ascending: lower rank first, later end first, earlier start first, then names
    return (rank, iv.status if rank >= len(ranks) else "", -iv.end, iv.start, iv.source, iv.reason)


def in_force(intervals: Iterable[ReferralInterval], at: float,
             precedence: Sequence[str] = DEFAULT_PRECEDENCE) -> ReferralInterval | None:
    """The most restrictive interval in force at ``at`` (``start <= at < end``) among
    ``intervals``, all in one layer (no manual/calendar distinction); ``None`` if none is."""
    ranks = rank_table(precedence)
    best = None
    best_key = None
    for iv in intervals:
        if iv.start <= at < iv.end:
            key = _key(iv, ranks)
            if best_key is None or key < best_key:
                best, best_key = iv, key
    return best


def split_layers(by_source: BySource) -> tuple[list[ReferralInterval], list[ReferralInterval]]:
    """``(manual, calendar)`` intervals of ``by_source``, by the source key."""
    manual: list[ReferralInterval] = []
    calendar: list[ReferralInterval] = []
    for source, intervals in by_source.items():
        (calendar if is_calendar_source(source) else manual).extend(intervals)
    return manual, calendar


def _manual_in_force(manual: list[ReferralInterval], at: float,
                     ranks: dict[str, int]) -> ReferralInterval | None:
    best = None
    best_key = None
    for iv in manual:
        if iv.start <= at < iv.end:
            key = (-iv.start, _key(iv, ranks))
            if best_key is None or key < best_key:
                best, best_key = iv, key
    return best


def _status_at(manual, calendar, at, precedence) -> ReferralInterval | None:
    return _manual_in_force(manual, at, rank_table(precedence)) or in_force(calendar, at, precedence)


def status_at(by_source: BySource, at: float,
              precedence: Sequence[str] = DEFAULT_PRECEDENCE) -> ReferralInterval | None:
    """The status in force at ``at``: a manual one if any is in force, else the most
    restrictive calendar one; ``None`` if nothing is (the employee is available).
    ``by_source`` is what ``Store.referrals(extension)`` returns."""
    manual, calendar = split_layers(by_source)
    return _status_at(manual, calendar, at, precedence)


def _until(manual, calendar, at, precedence) -> int | None:
    current = _status_at(manual, calendar, at, precedence)
    if current is None:
        return None
    end = current.end
    # each step moves ``end`` to a later interval end, so this runs at most once per interval
    while (nxt := _status_at(manual, calendar, end, precedence)) is not None and nxt.status == current.status:
        end = nxt.end
    return end


def until(by_source: BySource, at: float, precedence: Sequence[str] = DEFAULT_PRECEDENCE) -> int | None:
    """When the status in force at ``at`` (:func:`status_at`) stops being in force:
    followed across back-to-back and overlapping intervals as long as what is in
    force keeps the same status (meetings 10:00-11:00 and 11:00-12:00 make "in a
    meeting until 12:00"; a sick day from 11:00 makes it "until 11:00").  ``None``
    if nothing is in force."""
    manual, calendar = split_layers(by_source)
    return _until(manual, calendar, at, precedence)


def timeline(by_source: BySource, start: float, end: float,
             precedence: Sequence[str] = DEFAULT_PRECEDENCE) -> list[tuple[int, int, ReferralInterval]]:
    """The statuses in force (:func:`status_at`) between ``start`` and ``end`` as
    ``(from, to, interval)`` pieces in time order, with gaps where nothing is in
    force.  For "current and upcoming statuses" and the receptionist's next hour."""
    manual, calendar = ([iv for iv in layer if iv.end > start and iv.start < end]
                        for layer in split_layers(by_source))
    items = manual + calendar
    cuts = sorted({int(start), int(end)} | {iv.start for iv in items if start < iv.start < end}
                  | {iv.end for iv in items if start < iv.end < end})
    pieces: list[tuple[int, int, ReferralInterval]] = []
    for left, right in zip(cuts, cuts[1:]):
        chosen = _status_at(manual, calendar, left, precedence)
        if chosen is None:
            continue
        if pieces and pieces[-1][2] == chosen and pieces[-1][1] == left:
            pieces[-1] = (pieces[-1][0], right, chosen)
        else:
            pieces.append((left, right, chosen))
    return pieces
