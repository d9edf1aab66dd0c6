"""End to end through the fake switch: referral statuses and the phone feature codes.

A call to an employee in a meeting is told why and diverted as configured; once the
meeting is over (the injected clock moves, nothing sleeps) the call rings the phone.
"""
from __future__ import annotations

import pytest

from fastpath.records import ReferralInterval
from tests.conftest import at
from tests.test_outbound_e2e import (ACME_HEAD, Clock, Dialler, LogWatch, field, logs, start_server,  # noqa: F401
                                     wire, fake)

D = "acme.example"
COMPANY = ACME_HEAD + """\
referral:
  actions:
    meeting: {action: divert, to: "employee:2010"}
employees:
  - {extension: 2001, name: Alice, status_delegates: [2010]}
  - {extension: 2002, name: Bob}
  - {extension: 2010, name: Judy, role: receptionist}
numbers:
  - {number: "+442079460001", route: "employee:2001"}
"""
START, END = at("2026-11-23 14:00"), at("2026-11-23 14:30")
PHONE = {"sip_authorized": "true", "user_name": "2001"}


@pytest.fixture
def store(make_store):
    s = make_store(COMPANY)
    s.put_referrals("2001", "calendar", [ReferralInterval(int(START), int(END), "meeting", "m Board meeting",
                                                          source="calendar:caldav")])
    return s


@pytest.fixture
def clock():
    return Clock(at("2026-11-23 14:10"))


@pytest.fixture
def dial(fake, start_server, logs):          # noqa: F811
    return Dialler(fake, start_server()[0], logs).call


def test_a_call_in_a_meeting_is_told_why_and_diverted_then_rings_after_it(dial, clock):
    call, line = dial("442079460001")
    apps = [app for app, _ in call.executed]
    assert ("multiset", "timezone=Europe/London default_language=en") in call.executed
    assert ("phrase", f"referral_status,2001:meeting:{int(END)}") in call.executed
    assert apps.index("phrase") < apps.index("bridge")
    assert [b.dial_string.endswith(f"user/2010@{D}") for b in call.bridges] == [True]
    assert "is in a meeting until 14:30 (calendar:caldav: 'm Board meeting')" in field(line, "reasons")
    clock.now = END
    call, line = dial("442079460001")
    assert "phrase" not in [app for app, _ in call.executed]
    assert call.bridges[0].dial_string.endswith(f"user/2001@{D}")


def test_feature_codes_set_read_back_and_clear_a_status(dial, store, clock):
    call, line = dial("*3021500", caller="2001", channel_vars=PHONE)             # lunch until 15:00
    until = int(at("2026-11-23 15:00"))
    assert ("phrase", f"referral_status,2001:lunch:{until}") in call.executed
    assert call.hangup_cause == "NORMAL_CLEARING" and not call.bridges
    assert [iv.status for iv in store.referrals("2001")["manual"]] == ["lunch"]
    call, _ = dial("442079460001")
    assert ("phrase", f"referral_status,2001:lunch:{until}") in call.executed        # manual beats the meeting
    call, _ = dial("*31", caller="2001", channel_vars=PHONE)
    assert ("phrase", "referral_status,2001:available:0") in call.executed
    assert "manual" not in store.referrals("2001")


def test_a_receptionist_may_set_a_status_only_for_who_authorised_her(dial, store):
    judy = {"sip_authorized": "true", "user_name": "2010"}
    call, _ = dial("*322001*3", caller="2010", channel_vars=judy)
    assert any(app == "phrase" and arg.startswith("referral_status,2001:vacation:") for app, arg in call.executed)
    call, line = dial("*322002*3", caller="2010", channel_vars=judy)
    assert ("playback", "ivr/ivr-that_was_an_invalid_entry.wav") in call.executed
    assert "may not set the status of ext 2002" in field(line, "reasons")
    assert store.referrals("2002") == {}


@pytest.mark.parametrize("code", ["*309", "*3012", "*3012999", "*32*1", "*3399999999"])
def test_invalid_codes_get_the_error_prompt(dial, store, code):
    call, line = dial(code, caller="2001", channel_vars=PHONE)
    assert ("playback", "ivr/ivr-that_was_an_invalid_entry.wav") in call.executed
    assert call.hangup_cause == "NORMAL_CLEARING" and "manual" not in store.referrals("2001")


def test_feature_codes_need_a_registered_phone(dial, store):
    call, line = dial("*3011500", caller="2001")              # caller ID only: not authenticated
    assert ("playback", "ivr/ivr-that_was_an_invalid_entry.wav") in call.executed
    assert "only from a registered phone" in field(line, "reasons")
    assert "manual" not in store.referrals("2001")
