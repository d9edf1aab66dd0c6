"""Keyword rules (esl_app/calendar/keywords.py); precedence is in tests/test_referral_status.py."""
from __future__ import annotations

import pytest

from esl_app.calendar.keywords import (DEFAULT_KEYWORDS, KeywordRules, classify, clean_title, find_keyword,
                                       merge_keywords)

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
