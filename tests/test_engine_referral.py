"""Referral (availability) statuses at call time, on both engines.

Statuses are written the way the workers write them (``Store.put_referrals``);
the clock is injected through ``now``, never slept: a status starts and ends
by itself at its boundaries.
"""
from __future__ import annotations

import pytest

from fastpath.records import ReferralInterval
from fastpath.route_plan import Hangup, Ring, Say, Voicemail

from .conftest import at

COMPANY = """
id: acme
name: Acme Ltd
country: GB
timezone: Europe/London
language: en
defaults: {no_answer_seconds: 20, ring_timeout: 45}
referral:
  statuses: [training]
  actions:
    meeting: {action: divert, to: "employee:2010"}
    vacation: alternate
    away: ring
employees:
  - {extension: 2001, name: Alice, mobile: "+447400100001"}
  - {extension: 2002, name: Bob, referral: {meeting: voicemail, training: {action: divert, to: mobile}}}
  - {extension: 2003, name: Carol, referral: {meeting: {action: divert, to: "employee:2004"}}}
  - {extension: 2004, name: Dan, diverts: {always: "extension:2003"}}
  - {extension: 2010, name: Judy, role: receptionist}
departments:
  - {extension: 600, name: Sales, members: [2001, 2002, 2010], timeout: 30, no_answer: "voicemail:600"}
numbers:
  - {number: "+442079460001", route: "employee:2001"}
  - {number: "+442079460002", route: "department:600"}
"""
CALLER = "+447700900123"


@pytest.fixture
def store(make_store):
    return make_store(COMPANY)


def meeting(start="2026-11-23 14:00", end="2026-11-23 14:30", **kw) -> ReferralInterval:
    fields = dict(status="meeting", reason="m Board meeting", source="calendar:caldav")
    fields.update(kw)
    return ReferralInterval(int(at(start)), int(at(end)), **fields)


def test_a_meeting_is_announced_then_diverted_to_the_receptionist(decide, store):
    store.put_referrals("2001", "calendar", [meeting()])
    plan = decide(store, "+442079460001", CALLER, at("2026-11-23 14:10"))
    say, ring = plan.steps
    assert say == Say("referral_status", f"2001:meeting:{int(at('2026-11-23 14:30'))}", "en", "Europe/London",
                      "tell the caller: ext 2001 is in a meeting until 14:30")
    assert isinstance(ring, Ring) and [t.number for t in ring.targets] == ["2010"]
    assert ("ext 2001 (Alice) is in a meeting until 14:30 (calendar:caldav: 'm Board meeting'), "
            "status divert → ext 2010 (Judy)") in ring.reason


def test_the_status_starts_and_ends_by_itself(decide, store):
    store.put_referrals("2001", "calendar", [meeting()])
    before = decide(store, "+442079460001", CALLER, at("2026-11-23 13:59"))
    start = decide(store, "+442079460001", CALLER, at("2026-11-23 14:00"))
    end = decide(store, "+442079460001", CALLER, at("2026-11-23 14:30"))
    assert before.steps[0].targets[0].number == "2001"
    assert start.steps[0].action == "say"
    assert end.steps[0].targets[0].number == "2001" and "meeting" not in end.steps[0].reason


def test_a_manual_status_overrides_the_calendar_until_cleared(decide, store):
    store.put_referrals("2001", "calendar", [meeting()])
    store.put_referrals("2001", "manual", [ReferralInterval(int(at("2026-11-23 14:05")),
                                                            int(at("2026-11-23 18:00")), "available")])
    assert decide(store, "+442079460001", CALLER, at("2026-11-23 14:10")).steps[0].targets[0].number == "2001"
    store.clear_referrals("2001", "manual")
    assert decide(store, "+442079460001", CALLER, at("2026-11-23 14:10")).steps[0].action == "say"
    store.clear_referrals("2001", "calendar")
    assert decide(store, "+442079460001", CALLER, at("2026-11-23 14:10")).steps[0].action == "ring"


def test_vacation_goes_to_the_alternate_number_and_says_the_day(decide, store):
    store.put_referrals("2001", "manual", [ReferralInterval(
        int(at("2026-11-20 00:00")), int(at("2026-11-30 00:00")), "vacation", "", "+44 7400 100077",
        source="manual")])
    say, ring = decide(store, "+442079460001", CALLER, at("2026-11-23 10:00")).steps
    assert say.data == f"2001:vacation:{int(at('2026-11-30 00:00'))}"
    assert "is on vacation until Monday 30 November (manual)" in ring.reason
    assert ring.targets[0].kind == "external" and ring.targets[0].number == "447400100077"


def test_an_alternate_extension_rings_the_colleague(decide, store):
    store.put_referrals("2001", "manual", [ReferralInterval(
        int(at("2026-11-23 09:00")), int(at("2026-11-23 17:00")), "vacation", "", "2002")])
    say, ring = decide(store, "+442079460001", CALLER, at("2026-11-23 10:00")).steps
    assert ring.targets[0].number == "2002" and "alternate ext 2002" in ring.reason


def test_without_an_alternate_number_the_caller_reaches_voicemail(decide, store):
    store.put_referrals("2001", "manual", [ReferralInterval(
        int(at("2026-11-23 09:00")), int(at("2026-11-23 17:00")), "vacation")])
    say, vm = decide(store, "+442079460001", CALLER, at("2026-11-23 10:00")).steps
    assert vm == Voicemail("2001", "number +442079460001 routes around the clock → ext 2001 (Alice) is on vacation until 17:00 "
                                   "(manual); no alternate number given → voicemail 2001")


def test_a_private_status_shows_only_busy(decide, store):
    store.put_referrals("2002", "calendar", [meeting(visibility="nobody", reason="m Interview with a rival")])
    say, vm = decide(store, "2002", "2001", at("2026-11-23 14:10")).steps
    assert say.data.startswith("2002:busy:")
    assert "rival" not in vm.reason and "busy until 14:30 (private calendar status)" in vm.reason
    assert vm.box == "2002"


def test_ring_anyway_keeps_the_call_and_says_why(decide, store):
    store.put_referrals("2001", "manual", [ReferralInterval(
        int(at("2026-11-23 09:00")), int(at("2026-11-23 17:00")), "away", "dentist")])
    (ring,) = decide(store, "2001", "2010", at("2026-11-23 10:00")).steps
    assert ring.targets[0].number == "2001"
    assert "; away until 17:00 (manual: 'dentist'): ringing anyway" in ring.reason


def test_company_status_diverts_to_the_own_mobile(decide, store):
    store.put_referrals("2002", "manual", [ReferralInterval(
        int(at("2026-11-23 09:00")), int(at("2026-11-23 17:00")), "training")])
    say, hang = decide(store, "2002", "2001", at("2026-11-23 10:00")).steps
    # Bob has no mobile: his "divert to mobile" became voicemail at load
    assert say.data.startswith("2002:training:") and hang == Voicemail("2002", hang.reason)
    assert "status training until 17:00" in hang.reason


def test_a_status_divert_loop_ends_in_voicemail(decide, store):
    """Carol in a meeting diverts to Dan, who diverts everything back to Carol."""
    store.put_referrals("2003", "calendar", [meeting()])
    say, ring = decide(store, "2003", "2001", at("2026-11-23 14:10")).steps
    assert ring.targets[0].number == "2004" or ring.action == "voicemail"
    steps = decide(store, "2004", "2001", at("2026-11-23 14:10")).steps
    assert steps[0].action == "say" and steps[-1].action == "voicemail"
    assert "divert loop 2004 → 2003 → 2004 ignored" in steps[-1].reason


def test_department_skips_members_with_a_status(decide, store):
    store.put_referrals("2001", "calendar", [meeting()])
    (ring,) = decide(store, "+442079460002", CALLER, at("2026-11-23 14:10")).steps
    assert [t.number for t in ring.targets] == ["2002", "2010"]
    assert "skipped 2001 in a meeting" in ring.reason


def test_a_status_of_someone_removed_from_the_config_is_harmless(decide, make_store):
    store = make_store(COMPANY)
    store.put_referrals("2999", "calendar", [meeting()])
    assert decide(store, "+442079460001", CALLER, at("2026-11-23 14:10")).steps[0].action == "ring"
