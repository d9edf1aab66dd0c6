"""ICM steps at call time, on both engines: returning callers reach their manager.

The call history and the CRM cache are written the way the presence listener and
the CRM refresher write them; the clock is injected.
"""
from __future__ import annotations

import pytest

from fastpath import records as rec
from fastpath.records import ReferralInterval
from fastpath.route_plan import Continue, Ring, Voicemail

from .conftest import at

COMPANY = """
id: acme
name: Acme Ltd
country: GB
timezone: Europe/London
employees:
  - {extension: 2001, name: Alice, role: admin}
  - {extension: 2002, name: Bob, mobile: "+447400100002", diverts: {no_answer: voicemail}}
  - {extension: 2003, name: Carol, diverts: {always: "extension:2002"}}
  - {extension: 2004, name: Dan}
  - {extension: 2010, name: Judy, role: receptionist}
departments:
  - {extension: 600, name: Reception, members: [2010], timeout: 20, no_answer: "voicemail:600"}
  - {extension: 601, name: Sales queue, members: [2004, 2001], timeout: 30, no_answer: "voicemail:601"}
schedules:
  office: {hours: {mon: ["09:00-17:00"], tue: ["09:00-17:00"]}}
numbers:
  - number: "+442079460001"
    schedule: office
    open: "department:600"
    closed: "voicemail:600"
    icm: {on_failure: "department:601", except: [2001], ring: manager_and_mobile, timeout: 25}
  - number: "+442079460002"
    route: "department:600"
    icm: {sources: [crm, history], max_age_days: 30, default: "employee:2004"}
"""
CALLER = "+447911123456"
OPEN = at("2026-11-23 10:00")      # a Monday


@pytest.fixture
def store(make_store):
    s = make_store(COMPANY)
    s.replace_live({"2001", "2002", "2003", "2004", "2010"}, {})
    return s


def talked(store, ext, days_ago=2, caller="447911123456"):
    store.record_call(caller, ext, int(OPEN) - days_ago * 86400, "in")


def test_a_returning_caller_rings_the_manager_and_mobile(decide, store):
    talked(store, "2002")
    (ring,) = decide(store, "+442079460001", CALLER, OPEN).steps
    assert [(t.kind, t.number, t.timeout) for t in ring.targets] == [
        ("extension", "2002", 25), ("external", "447400100002", 25)]
    assert "ICM: last talked to ext 2002 on 2026-11-21 via call history → ext 2002 (Bob)" in ring.reason
    queue = ring.on_no_answer[0]
    assert ring.on_busy == ring.on_no_answer == ring.on_unreachable
    assert [t.number for t in queue.targets] == ["2004", "2001"] and "ICM queue" in queue.reason
    assert queue.on_no_answer == (Continue("normal:442079460001", "ICM: ext 2002 did not take the call: "
                                                                  "back to the normal route of +442079460001"),)


def test_national_caller_ids_find_the_same_history(decide, store):
    talked(store, "2002", caller="442079460999")
    (ring,) = decide(store, "+442079460001", "02079460999", OPEN).steps      # as a UK trunk sends it
    assert ring.targets[0].number == "2002"


def test_manager_busy_goes_to_the_queue_then_back_to_the_normal_route(decide, store):
    talked(store, "2002")
    store.call_started("2002")
    (queue,) = decide(store, "+442079460001", CALLER, OPEN).steps
    assert [t.number for t in queue.targets] == ["2004", "2001"]
    assert "→ ext 2002 (Bob) is on a call → ICM queue → dept 601 (Sales queue)" in queue.reason
    (back,) = queue.on_busy
    assert back.address == "normal:442079460001"
    normal = decide(store, back.address, CALLER, OPEN)
    assert [t.number for t in normal.steps[0].targets] == ["2010"] and "ICM" not in normal.steps[0].reason


def test_queue_with_nobody_available_goes_straight_back(decide, store):
    talked(store, "2002")
    store.set_registered("2002", False)
    store.call_started("2004")
    store.set_registered("2001", False)
    (back,) = decide(store, "+442079460001", CALLER, OPEN).steps
    assert back == Continue("normal:442079460001", back.reason) and "is not registered" in back.reason


def test_an_exception_extension_follows_the_normal_route(decide, store):
    talked(store, "2001")
    (ring,) = decide(store, "+442079460001", CALLER, OPEN).steps
    assert [t.number for t in ring.targets] == ["2010"]
    assert "ICM: last talked to ext 2001 on 2026-11-21 via call history, an ICM exception: normal route" in ring.reason


def test_unknown_caller_follows_the_normal_route_or_the_default(decide, store):
    (ring,) = decide(store, "+442079460001", CALLER, OPEN).steps
    assert [t.number for t in ring.targets] == ["2010"]
    assert "ICM: no manager known for this caller, normal route" in ring.reason
    (ring,) = decide(store, "+442079460002", CALLER, OPEN).steps
    assert [t.number for t in ring.targets] == ["2004"] and "no manager known for this caller, default" in ring.reason


def test_anonymous_callers_take_the_normal_route(decide, store):
    (ring,) = decide(store, "+442079460001", "anonymous", OPEN).steps
    assert [t.number for t in ring.targets] == ["2010"]


def test_the_crm_answers_first_where_configured_and_old_history_is_ignored(decide, store):
    talked(store, "2002", days_ago=40)                  # older than max_age_days: 30
    (ring,) = decide(store, "+442079460002", CALLER, OPEN).steps
    assert ring.targets[0].number == "2004" and "default" in ring.reason
    fetched = int(OPEN) - 3600
    store.put_crm_answer("acme", "447911123456", rec.CrmAnswerRec(
        rec.CRM_FOUND, "2003", "amocrm", fetched, fetched + 600, fetched + 86400, "7", "Carol C"))
    (ring,) = decide(store, "+442079460002", CALLER, OPEN).steps
    # Carol diverts every call to Bob: the manager's own divert is respected
    assert ring.targets[0].number == "2002"
    assert "ICM: ext 2003 is responsible for this caller in amoCRM (checked 2026-11-23) → ext 2003 (Carol) " \
           "diverts all calls → ext 2002 (Bob)" in ring.reason


def test_an_expired_crm_answer_is_passed_over(decide, store):
    fetched = int(OPEN) - 90000
    store.put_crm_answer("acme", "447911123456", rec.CrmAnswerRec(
        rec.CRM_FOUND, "2003", "amocrm", fetched, fetched + 600, fetched + 86400))
    (ring,) = decide(store, "+442079460002", CALLER, OPEN).steps
    assert ring.targets[0].number == "2004"


def test_outside_working_hours_icm_does_not_ring_managers(decide, store):
    talked(store, "2002")
    (vm,) = decide(store, "+442079460001", CALLER, at("2026-11-23 20:00")).steps
    assert vm.action == "voicemail" and vm.box == "600"


def test_the_managers_status_is_respected(decide, store):
    talked(store, "2002")
    store.put_referrals("2002", "calendar", [ReferralInterval(int(OPEN) - 60, int(OPEN) + 1800, "meeting", "m 1:1")])
    say, vm = decide(store, "+442079460001", CALLER, OPEN).steps
    assert say.action == "say" and say.data.startswith("2002:meeting:")
    assert vm == Voicemail("2002", vm.reason) and "ICM: last talked to ext 2002" in vm.reason


def test_a_manager_who_left_the_company_is_not_routed_to(decide, make_store):
    store = make_store(COMPANY)
    store.record_call("447911123456", "2999", int(OPEN) - 60, "in")
    (ring,) = decide(store, "+442079460001", CALLER, OPEN).steps
    assert [t.number for t in ring.targets] == ["2010"]


def test_normal_addresses_are_checked(decide, store):
    for address in ("normal:", "normal:12", "normal:+442079460001", "normal:x"):
        (hang,) = decide(store, address, CALLER, OPEN).steps
        assert hang.cause == "UNALLOCATED_NUMBER", address
