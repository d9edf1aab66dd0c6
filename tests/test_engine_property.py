"""The compiled engine and the reference agree on random companies, presence, calls and times.

Companies are built as validated models directly (any shape the validator can
produce: divert chains and loops, departments overflowing into each other,
schedules across DST, holidays, IVR menus), presence is random, and calls hit
every kind of address the engine accepts.  Times include instants outside the
compiled zone window, where both engines must fall back to zoneinfo.
"""
from __future__ import annotations

import datetime as dt
import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastpath import engine
from fastpath.model import (Company, Config, Department, Destination, Diverts, Employee, IvrMenu, Number,
                            IcmStep, ReferralAction, Schedule)
from fastpath import records as rec
from fastpath.records import ReferralInterval
from fastpath.store import Store

pytestmark = pytest.mark.skipif(os.environ.get("SWITCHBOARD_NO_CYTHON") == "1",
                                reason="nothing to compare: deliberately built without Cython")

ZONES = ["Europe/London", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "UTC"]
EMPLOYEES = [str(2000 + i) for i in range(8)]
DEPARTMENTS = ["600", "601", "602"]
NUMBERS = [f"4420794601{i:02d}" for i in range(5)]
MOBILES = [f"4474001000{i:02d}" for i in range(10)]


@pytest.fixture(scope="module")
def store():
    with tempfile.TemporaryDirectory() as path:
        with Store(path) as s:
            yield s


def destinations(draw, employees, departments, menus):
    options = [st.builds(Destination, st.just("voicemail"), st.sampled_from(employees + departments)),
               st.builds(Destination, st.just("external"), st.sampled_from(MOBILES)),
               st.builds(Destination, st.just("hangup"), st.sampled_from(["NORMAL_CLEARING", "USER_BUSY"])),
               st.builds(Destination, st.just("fax"), st.sampled_from(employees)),
               st.builds(Destination, st.just("employee"), st.sampled_from(employees))]
    if departments:
        options.append(st.builds(Destination, st.just("department"), st.sampled_from(departments)))
    if menus:
        options.append(st.builds(Destination, st.just("ivr"), st.sampled_from(menus)))
    dest = draw(st.one_of(options))
    if draw(st.booleans()) and dest.kind != "hangup":
        return Destination(dest.kind, dest.ref, "greeting.wav")
    return dest


@st.composite
def companies(draw):
    n_emp = draw(st.integers(1, len(EMPLOYEES)))
    employees = EMPLOYEES[:n_emp]
    departments = DEPARTMENTS[:draw(st.integers(0, len(DEPARTMENTS)))]
    menus = ["main", "sub"][:draw(st.integers(0, 2))]
    zone = draw(st.sampled_from(ZONES))

    def divert(ext):
        if draw(st.integers(0, 2)) == 0:
            return None
        choice = draw(st.integers(0, 3))
        if choice == 0:
            return Destination("voicemail", ext)
        if choice == 1:
            return Destination("external", draw(st.sampled_from(MOBILES)))
        others = [e for e in employees if e != ext] + departments
        if not others:
            return None
        target = draw(st.sampled_from(others))
        return Destination("department" if target in departments else "employee", target)

    def action(ext):
        kind = draw(st.sampled_from(["voicemail", "ring", "alternate", "divert"]))
        if kind != "divert":
            return ReferralAction(kind)
        to = draw(st.sampled_from([e for e in employees + departments if e != ext] or ["x"]))
        if to == "x" or draw(st.integers(0, 3)) == 0:
            return ReferralAction("divert", Destination("external", draw(st.sampled_from(MOBILES))))
        return ReferralAction("divert", Destination("department" if to in departments else "employee", to))

    staff = []
    for ext in employees:
        mobile = draw(st.sampled_from([None] + MOBILES))
        staff.append(Employee(
            ext, f"Person {ext}", "user", "c", mobile=mobile,
            mobile_after=draw(st.sampled_from([None, 10, 15])) if mobile else None,
            diverts=Diverts(divert(ext), divert(ext), divert(ext), draw(st.sampled_from([12, 20, 30])),
                            divert(ext)),
            referral=tuple((status, action(ext)) for status in draw(st.lists(
                st.sampled_from(["meeting", "vacation", "sick", "training"]), unique=True, max_size=3))),
            referral_default=action(ext)))
    groups = []
    for ext in departments:
        members = draw(st.lists(st.sampled_from(employees), min_size=1, max_size=6, unique=True))
        no_answer = draw(st.one_of(st.none(), st.just(None).map(lambda _: destinations(
            draw, employees, departments, menus))))
        groups.append(Department(ext, f"Dept {ext}", "c", tuple(members),
                                 draw(st.sampled_from(["simultaneous", "sequential", "cumulative"])),
                                 draw(st.integers(1, 30)), draw(st.integers(5, 90)), no_answer))
    hours = []
    for _ in range(7):
        start = draw(st.integers(0, 1400))
        end = draw(st.integers(start + 1, 1440))
        hours.append(((start, end),) if draw(st.booleans()) else ())
    holidays = tuple(sorted(set(draw(st.lists(
        st.dates(dt.date(2024, 1, 1), dt.date(2027, 12, 31)), max_size=20)))))
    schedule = Schedule("office", tuple(hours), holidays)
    def icm():
        if draw(st.booleans()):
            return None
        return IcmStep(draw(st.sampled_from([("history", "crm"), ("crm", "history"), ("history",), ("crm",)])),
                       draw(st.sampled_from([0, 1, 30])), draw(st.sampled_from(["manager", "manager_and_mobile"])),
                       draw(st.sampled_from([10, 20])),
                       Destination("department", draw(st.sampled_from(departments))) if departments
                       and draw(st.booleans()) else None,
                       destinations(draw, employees, departments, menus) if draw(st.booleans()) else None,
                       tuple(draw(st.lists(st.sampled_from(employees), unique=True, max_size=2))))

    numbers = []
    for number in NUMBERS[:draw(st.integers(1, len(NUMBERS)))]:
        if draw(st.booleans()):
            numbers.append(Number(number, "c", "always", destinations(draw, employees, departments, menus),
                                  icm=icm()))
        else:
            numbers.append(Number(number, "c", "schedule", destinations(draw, employees, departments, menus),
                                  destinations(draw, employees, departments, menus), "office", icm=icm()))
    ivr = [IvrMenu(key, "c", f"{key}.wav",
                   tuple((digit, destinations(draw, employees, departments, menus)) for digit in "129"),
                   destinations(draw, employees, departments, menus),
                   destinations(draw, employees, departments, menus),
                   draw(st.integers(1, 10)), draw(st.integers(1, 5))) for key in menus]
    return Company("c", "C", "GB", zone, "c.example", draw(st.sampled_from([10, 20])),
                   draw(st.sampled_from([30, 60])), "442079460199", None,
                   tuple(staff), tuple(groups), (schedule,), tuple(numbers), tuple(ivr))


@st.composite
def scenarios(draw):
    company = draw(companies())
    exts = [e.extension for e in company.employees]
    registered = set(draw(st.lists(st.sampled_from(exts), unique=True)))
    calls = {e: draw(st.integers(0, 2)) for e in exts}
    known = set(draw(st.lists(st.sampled_from(exts), unique=True)))
    menus = [m.key for m in company.ivr_menus]
    called_pool = ([n.number for n in company.numbers] + exts + [d.extension for d in company.departments]
                   + [f"ivr:c/{m}" for m in menus] + [f"ivr:c/{m}/{d}" for m in menus for d in "1279"]
                   + [f"ivr:c/{m}/timeout" for m in menus] + [f"ivr:c/{m}/invalid" for m in menus]
                   + [f"normal:{n.number}" for n in company.numbers]
                   + ["15550100", "ivr:c", "then:2000/busy/2000", "then:2001/no_answer/2000,2001",
                      "then:600/nobody/600", "then:2000/mobile/2000", "then:2000/unreachable/2000",
                      "then:2000/busy", "then:2000/sideways/2000"])
    anchor = draw(st.integers(1_700_000_000, 1_900_000_000))   # statuses are in force around it
    statuses = draw(st.lists(st.tuples(
        st.sampled_from(exts), st.sampled_from(["calendar", "calendar:ews", "manual"]),
        st.sampled_from(["meeting", "vacation", "lunch", "available", "sick", "training"]),
        st.integers(-90_000, 0), st.integers(1, 200_000), st.sampled_from(["everyone", "receptionists"]),
        st.sampled_from(["", "2001", "600", "+44 7400 100003", "not a number"])), max_size=5))
    call_list = draw(st.lists(st.tuples(
        st.sampled_from(called_pool),
        st.sampled_from(["", "447400999999", "02079460123", "anonymous"] + exts),
        st.one_of(st.integers(1_577_836_800, 2_524_608_000),        # 2020 .. 2050: inside the zone table
                  st.integers(2_524_608_000, 4_102_444_800),        # 2050 .. 2100: zoneinfo fallback
                  st.integers(anchor - 100_000, anchor + 200_000),
                  st.sampled_from([anchor, anchor + 1, anchor + 3600]))),  # when statuses are in force
        min_size=1, max_size=12))
    intervals = {}
    for ext, source, status, start, length, visibility, alternate in statuses:
        intervals.setdefault((ext, source), []).append(ReferralInterval(
            anchor + start, anchor + start + length, status, "subject", alternate, visibility, source))
    managers = draw(st.lists(st.tuples(
        st.sampled_from(["447400999999", "442079460123"]), st.sampled_from(["history", "crm"]),
        st.sampled_from(exts + ["2999"]), st.integers(-200_000, 0)), max_size=3))
    return company, registered, known, calls, call_list, intervals, managers


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_fastpath_matches_the_reference(store, scenario):
    company, registered, known, calls, call_list, intervals, managers = scenario
    for ext, sources in store.referral_sources().items():
        for source in sources:
            store.clear_referrals(ext, source)
    store.load_config(Config((company,)))
    store.replace_live(registered, calls)
    for (ext, source), held in intervals.items():
        store.put_referrals(ext, source, held)
    for phone in ("447400999999", "442079460123"):
        store.erase_caller(phone)
    for phone, source, ext, ago in managers:
        when = call_list[0][2] + ago
        if source == "history":
            store.record_call(phone, ext, when, "in")
        else:
            store.put_crm_answer("c", phone, rec.CrmAnswerRec(rec.CRM_FOUND, ext, "bitrix24", when, when + 60,
                                                              when + 86_400))
    for ext in set(e.extension for e in company.employees) - known:
        store.set_registered(ext, True)          # a mix of fresh and known presence
    fast = engine.IMPLEMENTATIONS["fastpath"]
    ref = engine.IMPLEMENTATIONS["reference"]
    for called, caller, now in call_list:
        assert fast(store, called, caller, now) == ref(store, called, caller, now), (called, caller, now)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["020 7946 0999", "+1 212 555 0100", "0123", "00 33 1 23 45 67 89", "garbage"]))
def test_outbound_dialling_matches(store, dialled):
    company = Company("c", "C", "GB", "UTC", "c.example", employees=(Employee("2000", "A", "user", "c"),))
    store.load_config(Config((company,)))
    assert (engine.IMPLEMENTATIONS["fastpath"](store, dialled, "2000", 1_790_000_000)
            == engine.IMPLEMENTATIONS["reference"](store, dialled, "2000", 1_790_000_000))
