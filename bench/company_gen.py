"""A large, deterministic company for benchmarks, and the mixed call set to route.

The company is written as the YAML document a customer would write, so the
benchmarks go through the real path: YAML -> validation -> store -> engine.

Sizes follow the routing-core issue: 10,000 employees, 1,000 departments and
5,000 numbers with schedules, IVR menus and divert chains.
"""
from __future__ import annotations

import datetime as dt
import random

EMPLOYEE_BASE = 100000        # employees are 100000..109999
DEPARTMENT_BASE = 5000        # departments are 5000..5999
NUMBER_BASE = 442030000000    # London numbers +44 20 3000 0000 ...
MOBILE_BASE = 447400000000    # UK mobiles +44 7400 000000 ...


def generate_company(employees: int = 10_000, departments: int = 1_000, numbers: int = 5_000,
                     menus: int = 200, seed: int = 7) -> dict:
    """The company as a YAML-ready mapping."""
    rnd = random.Random(seed)
    emp_ext = [str(EMPLOYEE_BASE + i) for i in range(employees)]
    dep_ext = [str(DEPARTMENT_BASE + i) for i in range(departments)]

    staff = []
    for i, ext in enumerate(emp_ext):
        e = {"extension": ext, "name": f"Employee {i}", "role": "user",
             "email": f"e{i}@big.example", "sip_password": f"secret-{i:06d}"}
        if rnd.random() < 0.6:
            e["mobile"] = f"+{MOBILE_BASE + i}"
            if rnd.random() < 0.5:
                e["mobile_after"] = rnd.choice((10, 15, 20))
        diverts = {}
        if rnd.random() < 0.15:       # always-divert chains: to a nearby colleague, sometimes looping
            diverts["always"] = f"extension:{emp_ext[(i + rnd.randint(1, 3)) % employees]}"
        if rnd.random() < 0.5:
            diverts["busy"] = "voicemail"
        roll = rnd.random()
        if roll < 0.4:
            diverts["no_answer"] = {"to": "voicemail", "after": rnd.choice((15, 20, 25))}
        elif roll < 0.6:
            diverts["no_answer"] = f"extension:{emp_ext[(i + 7) % employees]}"
        if "mobile" in e and rnd.random() < 0.3:
            diverts["unreachable"] = f"external:{e['mobile']}"
        if diverts:
            e["diverts"] = diverts
        staff.append(e)
    staff[0]["role"] = "admin"
    staff[1]["role"] = "receptionist"

    groups = []
    per = max(1, employees // departments)
    for d, ext in enumerate(dep_ext):
        members = emp_ext[d * per:(d + 1) * per] or emp_ext[:per]
        group = {"extension": ext, "name": f"Department {d}", "members": members,
                 "strategy": ("simultaneous", "sequential", "cumulative")[d % 3],
                 "step_seconds": 10, "timeout": 60}
        group["no_answer"] = rnd.choice(
            (f"voicemail:{ext}", f"department:{dep_ext[(d + 1) % departments]}", f"employee:{members[0]}"))
        groups.append(group)

    ivr = {}
    for m in range(menus):
        options = {str(k): f"department:{dep_ext[(m * 5 + k) % departments]}" for k in range(1, 6)}
        options["9"] = f"employee:{emp_ext[m]}"
        options["0"] = f"ivr:menu{(m + 1) % menus}"
        ivr[f"menu{m}"] = {"greeting": f"menu{m}.wav", "timeout": 5, "retries": 3, "options": options,
                           "on_timeout": f"department:{dep_ext[m % departments]}",
                           "on_invalid": f"voicemail:{dep_ext[m % departments]}"}

    schedules = {
        "office": {"hours": {d: ["09:00-12:30", "13:30-18:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
                   "holidays": ["2026-12-25", "2026-12-26", "2027-01-01", "2027-04-02..2027-04-05"]},
        "shop": {"hours": {d: ["08:00-20:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat")},
                 "holidays": ["2026-12-25"]},
        "support": {"hours": {d: ["00:00-24:00"] for d in ("mon", "tue", "wed", "thu", "fri")}},
    }

    dids = []
    for n in range(numbers):
        roll = rnd.random()
        if roll < 0.4:
            route = f"department:{dep_ext[n % departments]}"
        elif roll < 0.7:
            route = f"employee:{emp_ext[(n * 2) % employees]}"
        elif roll < 0.9:
            route = {"to": f"ivr:menu{n % menus}", "greeting": "welcome.wav"}
        else:
            route = f"voicemail:{dep_ext[n % departments]}"
        number = {"number": f"+{NUMBER_BASE + n}"}
        if rnd.random() < 0.7:
            number.update(schedule=rnd.choice(tuple(schedules)), open=route,
                          closed=f"voicemail:{dep_ext[n % departments]}")
        else:
            number["route"] = route
        dids.append(number)

    return {"id": "big", "name": "Big Carrier Customer", "country": "GB", "timezone": "Europe/London",
            "outbound_caller_id": f"+{NUMBER_BASE}",
            "referral": {"actions": {"meeting": {"action": "divert", "to": f"department:{dep_ext[0]}"},
                                     "lunch": "ring", "vacation": "alternate"}},
            "employees": staff, "departments": groups, "schedules": schedules,
            "numbers": dids, "ivr": ivr}


def live_state(store, employees: int = 10_000, seed: int = 11) -> None:
    """A busy afternoon: 30 % of phones on a call, 5 % not registered."""
    rnd = random.Random(seed)
    registered, calls = set(), {}
    for i in range(employees):
        ext = str(EMPLOYEE_BASE + i)
        roll = rnd.random()
        if roll >= 0.05:
            registered.add(ext)
        if roll >= 0.70:
            calls[ext] = 1
    store.replace_live(registered, calls)


def referral_state(store, employees: int = 10_000, share: float = 0.1, seed: int = 13) -> int:
    """Statuses as calendar sync and people write them: for ``share`` of the employees a
    year of weekly one-hour meetings (calendar), for a third of those also two weeks of
    vacation (manual, with an alternate number).  Returns how many employees have some."""
    rnd = random.Random(seed)
    from fastpath.records import ReferralInterval
    start = int(dt.datetime(2026, 11, 2, 9, tzinfo=dt.timezone.utc).timestamp())
    week = 7 * 86400
    flagged = 0
    for i in range(employees):
        if rnd.random() >= share:
            continue
        ext = str(EMPLOYEE_BASE + i)
        offset = rnd.randrange(5) * 86400 + rnd.randrange(8) * 3600
        store.put_referrals(ext, "calendar:caldav", [
            ReferralInterval(start + offset + w * week, start + offset + w * week + 3600, "meeting", "m Weekly sync",
                             source="calendar:caldav") for w in range(52)])
        if rnd.random() < 1 / 3:
            begin = start + rnd.randrange(300) * 86400
            store.put_referrals(ext, "manual", [ReferralInterval(begin, begin + 14 * 86400, "vacation", "",
                                                                 f"+{MOBILE_BASE + i}")])
        flagged += 1
    return flagged


def call_mix(count: int = 1_000, employees: int = 10_000, departments: int = 1_000, numbers: int = 5_000,
             menus: int = 200, seed: int = 3) -> list[tuple[str, str, float]]:
    """``(called, caller, now)`` triples in the proportions a PBX sees.

    55 % calls to company numbers from outside, 25 % internal calls, 10 % IVR
    choices, 5 % outbound calls dialled in national format, 5 % unknown numbers;
    times spread over a year, day and night.
    """
    rnd = random.Random(seed)
    start = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc).timestamp()
    calls = []
    for _ in range(count):
        now = start + rnd.randrange(365 * 86400)
        caller = f"+4479{rnd.randrange(10**8, 10**9)}"
        roll = rnd.random()
        if roll < 0.55:
            called = f"+{NUMBER_BASE + rnd.randrange(numbers)}"
        elif roll < 0.80:
            called = str(EMPLOYEE_BASE + rnd.randrange(employees)) if rnd.random() < 0.8 \
                else str(DEPARTMENT_BASE + rnd.randrange(departments))
            caller = str(EMPLOYEE_BASE + rnd.randrange(employees))
        elif roll < 0.90:
            called = f"ivr:big/menu{rnd.randrange(menus)}/{rnd.choice('1234590#')}"
        elif roll < 0.95:
            called = f"020 7946 {rnd.randrange(10000):04d}"
            caller = str(EMPLOYEE_BASE + rnd.randrange(employees))
        else:
            called = f"+4420999{rnd.randrange(10**5):05d}"
        calls.append((called, caller, now))
    return calls
