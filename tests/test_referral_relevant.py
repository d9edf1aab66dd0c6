"""Only a few of an employee's stored intervals decide the status at a call's time.

``referral_route.relevant`` (and its compiled twin in ``_engine.pyx``) keeps those; the
status in force and its end must be exactly what all intervals give.
"""
from __future__ import annotations

import os

import pytest
from hypothesis import given, settings, strategies as st

from fastpath import records as rec
from fastpath.referral_route import relevant
from fastpath.referral_status import status_at, until

SOURCES = ["calendar", "calendar:ews", "manual", "recurring"]
intervals = st.builds(
    lambda start, length, status, vis: rec.ReferralInterval(start, start + length, status, "r", "", vis, "s"),
    st.integers(0, 200), st.integers(1, 60), st.sampled_from(["meeting", "lunch", "sick", "available", "x"]),
    st.sampled_from(["everyone", "nobody"]))
stored = st.dictionaries(st.sampled_from(SOURCES), st.lists(intervals, min_size=1, max_size=8), max_size=4)
IMPLEMENTATIONS = [relevant]
if os.environ.get("SWITCHBOARD_NO_CYTHON") != "1":
    from fastpath import _engine
    IMPLEMENTATIONS.append(_engine.relevant)


@pytest.mark.parametrize("select", IMPLEMENTATIONS)
@settings(max_examples=300, deadline=None)
@given(stored, st.integers(0, 260))
def test_the_selected_intervals_decide_like_all_of_them(select, by_source, at):
    records = [(source, rec.encode_referrals(tuple(items))) for source, items in by_source.items()]
    chosen = select(records, at)
    if chosen is None:
        assert status_at(by_source, at) is None
    else:
        assert status_at(chosen, at) == status_at(by_source, at)
        assert until(chosen, at) == until(by_source, at)
        assert all(iv in by_source[source] for source, items in chosen.items() for iv in items)


def test_a_year_of_weekly_meetings_is_narrowed_to_the_one_in_force():
    week = 7 * 86400
    meetings = tuple(rec.ReferralInterval(w * week, w * week + 3600, "meeting") for w in range(52))
    for select in IMPLEMENTATIONS:
        chosen = select([("calendar", rec.encode_referrals(meetings))], 10 * week + 60)
        assert chosen == {"calendar": (meetings[10],)}
        assert select([("calendar", rec.encode_referrals(meetings))], 10 * week + 7200) is None


def test_both_refuse_a_truncated_record():
    raw = rec.encode_referrals((rec.ReferralInterval(0, 10, "meeting"),))[:-3]
    for select in IMPLEMENTATIONS:
        with pytest.raises(Exception, match="truncated"):
            select([("calendar", raw)], 5)
