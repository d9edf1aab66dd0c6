"""Keyword rules (esl_app/calendar/keywords.py) and precedence (precedence.py)."""
from __future__ import annotations

import pytest

from esl_app.calendar.keywords import (DEFAULT_KEYWORDS, KeywordRules, classify, clean_title, find_keyword,
                                       merge_keywords)
from esl_app.calendar.precedence import DEFAULT_PRECEDENCE, in_force, timeline, until
from fastpath.records import ReferralInterval

RULES = KeywordRules()


@pytest.mark.parametrize("title, status, how", [
    ("m Board meeting", "meeting", "first-word"),
    ("M: Board meeting", "meeting", "first-word"),
    ("m- standup", "meeting", "first-word"),
    ("Lunch with Bob", "lunch", "first-word"),
    ("LUNCH", "lunch", "first-word"),
    ("va", "vacation", "first-word"),
    ("Vacation, Spain", "vacation", "first-word"),
    ("Sick", "sick", "first-word"),
    ("away", "away", "first-word"),
    ("Board meeting [m]", "meeting", "tag"),
    ("[VA] Spain", "vacation", "tag"),
    ("Trip [ va ] to Spain", "vacation", "tag"),
    ("[draft] [m] plan", "meeting", "tag"),
    ("lunch [va]", "vacation", "tag"),                 # a tag wins over the first word
])
def test_keywords_are_found(title, status, how):
    match = find_keyword(title, RULES.keywords)
    assert (match.status, match.how) == (status, how)


@pytest.mark.parametrize("title", [
    "Marketing sync", "M&A review", "mm weekly", "Board meeting m", "[draft] plan", "", "   ",
    "[m", "m]", "Meetings", "Lunchtime talk", "[]",
])
def test_no_keyword(title):
    """Should not match inside words, at the end, or in broken tags."""
    assert find_keyword(title, RULES.keywords).status is None


def test_personal_keywords_overlay_the_company_map():
    merged = merge_keywords({"m": "meeting", "tr": "training"}, {"M": "away", "dr": "away"})
    assert merged == {"m": "away", "tr": "training", "dr": "away"}
    assert find_keyword("dr Dentist", merged).status == "away"


def test_company_defined_status_through_a_keyword():
    rules = KeywordRules(keywords={**DEFAULT_KEYWORDS, "tr": "training"})
    assert classify("tr Fire safety", rules).status == "training"


def test_event_without_keyword_takes_the_configured_status():
    assert classify("Dentist", RULES) .status == "meeting"
    assert classify("Dentist", KeywordRules(without_keyword="away")).status == "away"
    assert classify("Dentist", KeywordRules(without_keyword=None)).status is None


def test_free_events_need_a_keyword():
    """Free events without a keyword are no status; with one they are (Outlook makes all-day events free)."""
    assert classify("Reminder", RULES, free_busy="free").status is None
    assert classify("va", RULES, free_busy="free").status == "vacation"


def test_out_of_office_and_tentative():
    assert classify("Trade fair", RULES, free_busy="oof").status == "away"
    assert classify("Trade fair", KeywordRules(out_of_office="vacation"), free_busy="oof").status == "vacation"
    assert classify("Trade fair", KeywordRules(out_of_office=None), free_busy="oof").status is None
    assert classify("m Trade fair", RULES, free_busy="oof").status == "meeting"
    assert classify("Maybe", RULES, free_busy="tentative").status == "meeting"
    assert classify("Elsewhere", RULES, free_busy="elsewhere").status == "meeting"


def test_cancelled_events_never_count():
    assert classify("m Board", RULES, cancelled=True).status is None


def test_private_events_keep_status_but_not_title():
    result = classify("sick Oncology appointment", RULES, private=True)
    assert (result.status, result.reason, result.visibility) == ("sick", "", "nobody")
    assert classify("Dentist", RULES, private=True).visibility == "nobody"


def test_visibility_of_ordinary_events():
    assert classify("m Board", RULES).visibility == "everyone"
    assert classify("m Board", KeywordRules(visibility="receptionists")).visibility == "receptionists"


def test_reason_is_one_clean_line():
    assert classify("m  Board\nmeeting\t(room 4)", RULES).reason == "m Board meeting (room 4)"
    assert clean_title("a\x00b\x07c") == "abc"
    long = clean_title("m " + "x" * 500)
    assert len(long) == 200 and long.endswith("…")


def test_bad_rules_are_refused():
    with pytest.raises(ValueError):
        KeywordRules(keywords={"M": "meeting"})
    with pytest.raises(ValueError):
        KeywordRules(keywords={"two words": "meeting"})
    with pytest.raises(ValueError):
        KeywordRules(visibility="nobody")
    with pytest.raises(ValueError):
        classify("x", RULES, free_busy="maybe")


# --- precedence ------------------------------------------------------------------------------

def iv(start, end, status, source="calendar:caldav", reason=""):
    return ReferralInterval(start, end, status, reason, "", "everyone", source)


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
    items = [iv(10, 20, "meeting")]
    assert in_force(items, 9) is None
    assert in_force(items, 10).status == "meeting"
    assert in_force(items, 19.999).status == "meeting"
    assert in_force(items, 20) is None


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


def test_until_follows_back_to_back_intervals_of_the_same_status():
    items = [iv(0, 60, "meeting"), iv(60, 120, "meeting"), iv(100, 200, "meeting"), iv(300, 400, "meeting"),
             iv(0, 500, "lunch")]
    assert until(items, 30) == 200
    assert until(items, 250) == 500            # lunch, the only thing in force then
    assert until([], 0) is None


def test_timeline_pieces():
    items = [iv(0, 100, "lunch"), iv(20, 40, "meeting"), iv(30, 60, "sick")]
    pieces = [(a, b, x.status) for a, b, x in timeline(items, 0, 120)]
    assert pieces == [(0, 20, "lunch"), (20, 30, "meeting"), (30, 60, "sick"), (60, 100, "lunch")]
