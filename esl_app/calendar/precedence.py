"""Which of several overlapping statuses is in force: the most restrictive one.

Pure and dependency-free (only :class:`fastpath.records.ReferralInterval`), so
the routing engine can reuse it as it is.  The default order, most
restrictive first::

    sick > vacation > away > meeting > lunch > <company-defined, in config order> > available

A company may give its own order (``precedence:`` in the calendar config);
statuses it does not list rank below every listed one, in alphabetical
order (so the outcome never depends on the order intervals were stored),
and ``available`` always ranks last.

Why this order: the caller is told the reason that lasts longest and that
no one can interrupt.  Someone off sick or on vacation will not come out of
a meeting for the call; someone "away" (out of the office for a few hours)
cannot be reached in a meeting either; lunch is the shortest interruption.

Among intervals of the same status, the one that ends last wins (the
caller hears the latest "back at"), then the earliest start, then the
source name -- every tie is broken, so two engines always agree.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from fastpath.records import ReferralInterval

DEFAULT_PRECEDENCE: tuple[str, ...] = ("sick", "vacation", "away", "meeting", "lunch")


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
    """The interval in force at ``at`` (``start <= at < end``), the most restrictive
    one if several overlap; ``None`` if there is none."""
    ranks = rank_table(precedence)
    best = None
    best_key = None
    for iv in intervals:
        if iv.start <= at < iv.end:
            key = _key(iv, ranks)
            if best_key is None or key < best_key:
                best, best_key = iv, key
    return best


def until(intervals: Iterable[ReferralInterval], at: float,
          precedence: Sequence[str] = DEFAULT_PRECEDENCE) -> int | None:
    """When the status in force at ``at`` stops being in force: the end of the
    chain of overlapping or back-to-back intervals with that same status (two
    meetings 10:00-11:00 and 11:00-12:00 make "in a meeting until 12:00").
    ``None`` if nothing is in force.  Bounded: each interval extends the chain
    at most once."""
    items = list(intervals)
    current = in_force(items, at, precedence)
    if current is None:
        return None
    end = current.end
    same = sorted((iv for iv in items if iv.status == current.status and iv.end > end), key=lambda iv: iv.start)
    for iv in same:
        if iv.start > end:
            break
        end = max(end, iv.end)
    return end


def timeline(intervals: Iterable[ReferralInterval], start: float, end: float,
             precedence: Sequence[str] = DEFAULT_PRECEDENCE) -> list[tuple[int, int, ReferralInterval]]:
    """The statuses in force between ``start`` and ``end`` as ``(from, to, interval)``
    pieces, in time order, with gaps where nothing is in force.  For "current and
    upcoming statuses" and the receptionist's next hour."""
    items = [iv for iv in intervals if iv.end > start and iv.start < end]
    cuts = sorted({int(start), int(end)} | {iv.start for iv in items if start < iv.start < end}
                  | {iv.end for iv in items if start < iv.end < end})
    pieces: list[tuple[int, int, ReferralInterval]] = []
    for left, right in zip(cuts, cuts[1:]):
        chosen = in_force(items, left, precedence)
        if chosen is None:
            continue
        if pieces and pieces[-1][2] == chosen and pieces[-1][1] == left:
            pieces[-1] = (pieces[-1][0], right, chosen)
        else:
            pieces.append((left, right, chosen))
    return pieces
