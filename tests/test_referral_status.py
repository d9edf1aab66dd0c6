"""Which referral status is in force (fastpath/referral_status.py): manual over calendar,
the most restrictive calendar status, half-open boundaries, "until" across back-to-back
intervals."""
from __future__ import annotations

import pytest

from fastpath.records import ReferralInterval
from fastpath.referral_status import (DEFAULT_PRECEDENCE, in_force, is_calendar_source, split_layers, status_at,
                                      timeline, until)

CAL = "calendar:caldav"


def iv(start, end, status, source=CAL, reason=""):
    return ReferralInterval(start, end, status, reason, "", "everyone", source)


def by_source(*intervals):
    """Intervals grouped by their ``source``, as Store.referrals returns them."""
    out: dict[str, tuple[ReferralInterval, ...]] = {}
    for item in intervals:
        out[item.source] = out.get(item.source, ()) + (item,)
    return out


# --- one layer: the most restrictive ---------------------------------------------------------

def test_most_restrictive_wins():
    """Should pick sick > vacation > away > meeting > lunch among overlapping intervals."""
    items = [iv(0, 100, "lunch"), iv(0, 100, "meeting"), iv(0, 100, "away"), iv(0, 100, "vacation"),
             iv(0, 100, "sick")]
    order = []
    while items:
        chosen = in_force(items, 50)
        order.append(chosen.status)
        items.remove(chosen)
    assert tuple(order) == DEFAULT_PRECEDENCE


def test_boundaries_are_half_open():
    """Should be in force from start (inclusive) to end (exclusive)."""
    items = [iv(10, 20, "meeting")]
    assert in_force(items, 9) is None
    assert in_force(items, 10).status == "meeting"
    assert in_force(items, 19.999).status == "meeting"
    assert in_force(items, 20) is None
    held = by_source(*items)
    assert [status_at(held, t) for t in (9, 20)] == [None, None]
    assert status_at(held, 10).status == "meeting"


def test_ties_prefer_the_later_end_then_earlier_start_then_source():
    a, b = iv(0, 50, "meeting", reason="a"), iv(10, 80, "meeting", reason="b")
    assert in_force([a, b], 20) is b
    c, d = iv(0, 80, "meeting", reason="c"), iv(10, 80, "meeting", reason="d")
    assert in_force([d, c], 20) is c
    e, f = iv(0, 80, "meeting", "calendar:ews"), iv(0, 80, "meeting", "calendar:caldav")
    assert in_force([e, f], 20) is f and in_force([f, e], 20) is f


def test_company_statuses_and_available():
    """Unlisted statuses rank below listed ones (alphabetically), available last."""
    items = [iv(0, 10, "available"), iv(0, 10, "training"), iv(0, 10, "lunch")]
    assert in_force(items, 5).status == "lunch"
    assert in_force(items[:2], 5).status == "training"
    assert in_force(items, 5, ("training", "sick")).status == "training"
    assert in_force([iv(0, 10, "zeta"), iv(0, 10, "alpha")], 5).status == "alpha"


# --- two layers: manual over calendar -----------------------------------------------------------

@pytest.mark.parametrize("source, calendar", [
    ("calendar", True), ("calendar:caldav", True), ("calendar:ews", True), ("calendar:graph", True),
    ("manual", False), ("admin", False), ("feature-code", False), ("calendars", False), ("xcalendar:a", False),
])
def test_which_sources_are_calendar_sources(source, calendar):
    assert is_calendar_source(source) is calendar


def test_overlapping_calendar_entries_pick_the_most_restrictive():
    """Should pick the most restrictive status across calendar sources too."""
    held = by_source(iv(0, 100, "meeting", "calendar:caldav"), iv(50, 150, "vacation", "calendar:ews"),
                     iv(0, 200, "lunch", "calendar:graph"))
    assert status_at(held, 10).status == "meeting"
    assert status_at(held, 60).status == "vacation"
    assert status_at(held, 160).status == "lunch"
    assert status_at(held, 200) is None


def test_manual_status_overrides_the_calendar_until_it_ends():
    """A manual lunch beats a calendar vacation while the lunch lasts; then the calendar is back."""
    held = by_source(iv(0, 1000, "vacation"), iv(100, 200, "lunch", "manual", "back soon"))
    assert status_at(held, 99).status == "vacation"
    chosen = status_at(held, 100)
    assert (chosen.status, chosen.source, chosen.reason) == ("lunch", "manual", "back soon")
    assert status_at(held, 199).status == "lunch"
    assert status_at(held, 200).status == "vacation"
    assert until(held, 150) == 200
    assert until(held, 200) == 1000


def test_any_non_calendar_source_is_manual():
    held = by_source(iv(0, 100, "sick"), iv(0, 100, "meeting", "admin"))
    assert status_at(held, 50).source == "admin"


def test_manual_available_rings_despite_the_calendar():
    """A manual 'available' is returned as such (not None): the engine rings the phone."""
    held = by_source(iv(0, 100, "meeting"), iv(0, 50, "available", "manual"))
    assert status_at(held, 10).status == "available"
    assert status_at(held, 60).status == "meeting"


def test_cleared_manual_status_gives_the_calendar_back():
    held = by_source(iv(0, 100, "meeting"), iv(0, 100, "away", "manual"))
    assert status_at(held, 10).status == "away"
    del held["manual"]                     # what Store.clear_referrals(ext, "manual") does
    assert status_at(held, 10).status == "meeting"
    held["manual"] = ()                    # an empty entry is no status either
    assert status_at(held, 10).status == "meeting"


def test_the_newest_manual_status_wins_among_manual_ones():
    held = by_source(iv(0, 1000, "vacation", "manual"), iv(500, 600, "available", "feature-code"))
    assert status_at(held, 400).status == "vacation"
    assert status_at(held, 550).status == "available"
    same_start = by_source(iv(0, 100, "lunch", "manual"), iv(0, 50, "sick", "admin"))
    assert status_at(same_start, 10).status == "sick"


def test_the_layer_comes_from_the_source_key_not_the_interval():
    """An interval stored under a calendar key is calendar, whatever its own source field says."""
    stored = {"calendar:caldav": (iv(0, 100, "meeting", source="manual"),), "manual": (iv(0, 100, "lunch", "manual"),)}
    manual, calendar = split_layers(stored)
    assert [x.status for x in manual] == ["lunch"] and [x.status for x in calendar] == ["meeting"]
    assert status_at(stored, 10).status == "lunch"


def test_nothing_in_force():
    assert status_at({}, 0) is None and until({}, 0) is None and timeline({}, 0, 100) == []
    assert status_at(by_source(iv(10, 20, "meeting", "manual")), 5) is None


# --- until ------------------------------------------------------------------------------------

def test_until_follows_back_to_back_intervals_of_the_same_status():
    held = by_source(iv(0, 60, "meeting"), iv(60, 120, "meeting"), iv(100, 200, "meeting"), iv(300, 400, "meeting"),
                     iv(0, 500, "lunch"))
    assert until(held, 30) == 200
    assert until(held, 250) == 500            # lunch, the only thing in force then


def test_until_stops_where_a_more_restrictive_status_takes_over():
    held = by_source(iv(0, 60, "meeting"), iv(60, 120, "meeting"), iv(60, 90, "sick"))
    assert until(held, 30) == 60
    assert until(held, 60) == 90
    assert until(held, 90) == 120


def test_until_crosses_from_manual_to_calendar_when_the_status_is_the_same():
    held = by_source(iv(0, 60, "meeting", "manual"), iv(30, 120, "meeting"), iv(0, 300, "meeting", "calendar:ews"))
    assert until(held, 10) == 300
    gap = by_source(iv(0, 60, "meeting", "manual"), iv(61, 120, "meeting"))
    assert until(gap, 10) == 60               # a gap of one second ends it


def test_until_of_a_manual_status_stops_at_its_end_even_under_a_longer_calendar_one():
    held = by_source(iv(0, 60, "lunch", "manual"), iv(0, 500, "vacation"))
    assert until(held, 0) == 60


# --- timeline ---------------------------------------------------------------------------------

def test_timeline_pieces():
    held = by_source(iv(0, 100, "lunch"), iv(20, 40, "meeting"), iv(30, 60, "sick"))
    pieces = [(a, b, x.status) for a, b, x in timeline(held, 0, 120)]
    assert pieces == [(0, 20, "lunch"), (20, 30, "meeting"), (30, 60, "sick"), (60, 100, "lunch")]


def test_timeline_with_a_manual_status_and_gaps():
    held = by_source(iv(0, 100, "meeting"), iv(50, 70, "available", "manual"), iv(150, 200, "lunch"))
    pieces = [(a, b, x.status, x.source) for a, b, x in timeline(held, 10, 180)]
    assert pieces == [(10, 50, "meeting", CAL), (50, 70, "available", "manual"), (70, 100, "meeting", CAL),
                      (150, 180, "lunch", CAL)]
