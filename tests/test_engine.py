"""Routing behaviour, run on both engines (the ``decide`` fixture).

Each test states a rule a PBX user relies on; the plans are compared in full
where the shape matters, and the reasons are checked for what a person needs
to read in ``switchboard explain``.
"""
from __future__ import annotations

import pytest

from fastpath.route_plan import Announce, Continue, Fax, Hangup, Ivr, Ring, Target, Voicemail, render_text, to_json

from .conftest import at

COMPANY = """
id: acme
name: Acme Ltd
country: GB
timezone: Europe/London
defaults: {no_answer_seconds: 20, ring_timeout: 45}
outbound_caller_id: "+442079460000"
employees:
  - {extension: 2001, name: Alice, role: admin, mobile: "+447400100001", sip_password: alice-secret-1}
  - {extension: 2002, name: Bob, mobile: "+447400100002", mobile_after: 15,
     diverts: {no_answer: voicemail}}
  - {extension: 2003, name: Carol, diverts: {always: "extension:2004"}}
  - {extension: 2004, name: Dan, diverts: {busy: voicemail, no_answer: {to: "extension:2005", after: 12}}}
  - {extension: 2005, name: Eve, diverts: {unreachable: "external:+447400100005", busy: "extension:2001"}}
  - {extension: 2006, name: Frank, diverts: {always: "extension:2007"}}
  - {extension: 2007, name: Grace, diverts: {always: "extension:2006"}}
  - {extension: 2008, name: Heidi, diverts: {always: voicemail}}
  - {extension: 2009, name: Ivan, diverts: {always: "external:+447400100009"}}
  - {extension: 2010, name: Judy, role: receptionist}
departments:
  - {extension: 600, name: Sales, strategy: simultaneous, members: [2001, 2010, 2005], timeout: 30,
     no_answer: "voicemail:600"}
  - {extension: 601, name: Support, strategy: sequential, members: [2001, 2010, 2005], step_seconds: 10,
     timeout: 25, no_answer: "department:602"}
  - {extension: 602, name: Escalation, strategy: cumulative, members: [2010, 2005, 2001], step_seconds: 8,
     timeout: 20, no_answer: "department:601"}
  - {extension: 603, name: Nobody home, members: [2005]}
schedules:
  office:
    hours:
      mon: ["09:00-12:30", "13:30-17:30"]
      tue: ["09:00-12:30", "13:30-17:30"]
      wed: ["09:00-12:30", "13:30-17:30"]
      thu: ["09:00-12:30", "13:30-17:30"]
      fri: ["09:00-12:30", "13:30-17:30"]
      sat: ["10:00-24:00"]
    holidays: ["2026-12-25", "2026-12-26", "2027-04-02..2027-04-05"]
numbers:
  - {number: "+44 20 7946 0000", schedule: office, open: {to: "ivr:main", greeting: welcome.wav},
     closed: {to: "voicemail:600", greeting: closed.wav}}
  - {number: "+442079460001", route: "department:600"}
  - {number: "+442079460002", route: "employee:2010"}
  - {number: "+442079460003", route: "fax:2001"}
  - {number: "+442079460004", route: "external:+447400100099"}
  - {number: "+442079460005", route: "hangup:CALL_REJECTED"}
ivr:
  main:
    greeting: main.wav
    options: {1: "department:600", 2: "department:601", 3: "ivr:sub", 8: "fax:2001", 9: "external:+447400100099"}
    on_timeout: "employee:2010"
    on_invalid: "voicemail:600"
  sub:
    greeting: sub.wav
    timeout: 3
    retries: 2
    options: {0: "ivr:main", 1: "employee:2002"}
    on_timeout: "ivr:main"
"""


@pytest.fixture
def store(make_store):
    return make_store(COMPANY)


MONDAY_10 = at("2026-11-23 10:00")


def ring_targets(step):
    return [(t.kind, t.number, t.delay, t.timeout) for t in step.targets]


# --- company numbers and schedules -----------------------------------------

def test_number_open_hours_goes_to_its_ivr_after_the_greeting(decide, store):
    """In business hours the number plays its greeting, then its IVR menu."""
    plan = decide(store, "+442079460000", "+447400999999", MONDAY_10)
    assert plan.company == "acme"
    assert plan.called == "442079460000" and plan.caller == "447400999999"
    greeting, menu = plan.steps
    assert greeting == Announce("welcome.wav", "greeting before IVR main")
    assert isinstance(menu, Ivr)
    assert menu.menu == "acme/main" and menu.greeting == "main.wav"
    assert (menu.timeout, menu.retries) == (5, 3)
    assert menu.options == (("1", "department:600"), ("2", "department:601"), ("3", "ivr:sub"),
                            ("8", "fax:2001"), ("9", "external:447400100099"))
    assert (menu.on_timeout, menu.on_invalid) == ("employee:2010", "voicemail:600")
    assert menu.reason == "Monday 10:00 in Europe/London: working hours of schedule 'office' → IVR main"


@pytest.mark.parametrize("local, open_", [
    ("2026-11-23 08:59", False), ("2026-11-23 09:00", True), ("2026-11-23 12:29", True),
    ("2026-11-23 12:30", False),  # lunch break
    ("2026-11-23 13:30", True), ("2026-11-23 17:29", True), ("2026-11-23 17:30", False),
    ("2026-11-22 11:00", False),  # Sunday: no hours
    ("2026-11-21 23:59", True),   # Saturday until midnight
])
def test_business_hours_boundaries(decide, store, local, open_):
    """Intervals include their start minute and exclude their end minute."""
    plan = decide(store, "442079460000", "", at(local))
    assert isinstance(plan.steps[-1], Ivr if open_ else Voicemail)


def test_closed_route_plays_closed_greeting_then_voicemail(decide, store):
    plan = decide(store, "442079460000", "", at("2026-11-22 11:00"))
    assert plan.steps == (
        Announce("closed.wav", "greeting before voicemail 600"),
        Voicemail("600", "Sunday 11:00 in Europe/London: outside working hours of schedule 'office', "
                         "non-working hours route → voicemail 600"))


@pytest.mark.parametrize("day", ["2026-12-25", "2026-12-26", "2027-04-02", "2027-04-05"])
def test_holiday_closes_a_working_day(decide, store, day):
    """Holidays, including each day of a range, use the non-working-hours route all day."""
    plan = decide(store, "442079460000", "", at(f"{day} 11:00"))
    assert isinstance(plan.steps[-1], Voicemail)
    assert f"{day} is a holiday in schedule 'office'" in plan.steps[-1].reason


def test_daylight_saving_time_is_respected(decide, store):
    """08:30 UTC is 09:30 in London summer (open) but 08:30 in winter (closed)."""
    summer = at("2027-06-14 08:30", "UTC")
    winter = at("2027-01-11 08:30", "UTC")
    assert isinstance(decide(store, "442079460000", "", summer).steps[-1], Ivr)
    assert "Monday 09:30 in Europe/London" in decide(store, "442079460000", "", summer).steps[-1].reason
    assert isinstance(decide(store, "442079460000", "", winter).steps[-1], Voicemail)


def test_dst_change_day_uses_the_new_offset_right_after_the_switch(decide, store):
    """On 2027-03-28 London jumps from 01:00 GMT to 02:00 BST."""
    before = at("2027-03-28 00:59:59", "UTC")   # 00:59 GMT
    after = at("2027-03-28 01:00:00", "UTC")    # 02:00 BST
    assert "Sunday 00:59" in decide(store, "442079460000", "", before).steps[-1].reason
    assert "Sunday 02:00" in decide(store, "442079460000", "", after).steps[-1].reason


def test_times_outside_the_compiled_zone_window_still_route(decide, store):
    """Far-future calls fall back to zoneinfo and agree with it (2150-01-05 is a Monday)."""
    plan = decide(store, "442079460000", "", at("2150-01-05 10:00"))
    assert "Monday 10:00 in Europe/London" in plan.steps[-1].reason


def test_always_number_routes_around_the_clock(decide, store):
    plan = decide(store, "442079460001", "", at("2026-12-25 03:00"))
    (ring,) = plan.steps
    assert ring.reason.startswith("number +442079460001 routes around the clock → dept 600 (Sales)")


@pytest.mark.parametrize("number, expected", [
    ("442079460003", Fax("2001", "number +442079460003 routes around the clock → fax for ext 2001")),
    ("442079460005", Hangup("CALL_REJECTED", "number +442079460005 routes around the clock → hang up")),
])
def test_number_to_fax_or_hangup(decide, store, number, expected):
    assert decide(store, number, "", MONDAY_10).steps == (expected,)


def test_number_to_external_rings_through_the_gateway_with_company_ring_timeout(decide, store):
    (ring,) = decide(store, "442079460004", "", MONDAY_10).steps
    assert ring.targets == (Target("external", "447400100099", "", 0, 45),)
    assert ring.timeout == 45


def test_number_to_secretary_rings_her_phone(decide, store):
    (ring,) = decide(store, "442079460002", "", MONDAY_10).steps
    assert ring.targets == (Target("extension", "2010", "Judy", 0, 45),)
    assert ring.on_busy == (Hangup("USER_BUSY", "ext 2010 is busy, no busy divert"),)
    assert ring.on_no_answer == (Hangup("NO_ANSWER", "ext 2010 no answer after 45 s, no no-answer divert"),)
    assert ring.on_unreachable == (
        Hangup("USER_NOT_REGISTERED", "ext 2010 is not reachable, no unreachable divert"),)


def test_unknown_number_is_unallocated(decide, store):
    plan = decide(store, "+15550100", "447400999999", MONDAY_10)
    assert plan.company == ""
    assert plan.steps == (Hangup("UNALLOCATED_NUMBER", "15550100 is neither a company number nor an extension"),)


# --- departments -------------------------------------------------------------

def test_simultaneous_department_rings_everyone_at_once(decide, store):
    (ring,) = decide(store, "600", "", MONDAY_10).steps
    assert ring.strategy == "simultaneous" and ring.timeout == 30
    assert ring_targets(ring) == [("extension", "2001", 0, 30), ("extension", "2010", 0, 30),
                                  ("extension", "2005", 0, 30)]
    assert ring.on_no_answer == (Voicemail("600", "dept 600 (Sales): nobody answered → voicemail 600"),)
    assert ring.on_busy == ring.on_no_answer == ring.on_unreachable


def test_sequential_department_rings_in_turn_within_its_timeout(decide, store):
    """Each member rings step_seconds; the last leg is cut to what is left of the timeout."""
    (ring,) = decide(store, "601", "", MONDAY_10).steps
    assert ring.strategy == "sequential"
    assert ring_targets(ring) == [("extension", "2001", 0, 10), ("extension", "2010", 10, 10),
                                  ("extension", "2005", 20, 5)]
    assert ring.timeout == 25


def test_cumulative_department_adds_phones_and_keeps_earlier_ones_ringing(decide, store):
    (ring,) = decide(store, "602", "", MONDAY_10).steps
    assert ring.strategy == "cumulative"
    assert ring_targets(ring) == [("extension", "2010", 0, 20), ("extension", "2005", 8, 12),
                                  ("extension", "2001", 16, 4)]


def test_department_skips_busy_and_unregistered_members(decide, store):
    store.call_started("2001")
    store.set_registered("2010", False)
    (ring,) = decide(store, "600", "", MONDAY_10).steps
    assert ring_targets(ring) == [("extension", "2005", 0, 30)]
    assert "skipped 2001 on a call, 2010 not registered" in ring.reason


def test_department_with_nobody_available_goes_straight_to_its_no_answer_route(decide, store):
    store.set_registered("2005", False)
    (step,) = decide(store, "603", "", MONDAY_10).steps
    assert step == Hangup("NO_ANSWER", "direct call to ext 603 → dept 603 (Nobody home), simultaneous; "
                                       "skipped 2005 not registered: nobody available, no destination configured")


def test_departments_that_overflow_into_each_other_stop_at_the_loop(decide, store):
    """601 → 602 → 601 would loop: the second overflow hangs up and says why."""
    (ring,) = decide(store, "601", "", MONDAY_10).steps
    (ring602,) = ring.on_no_answer
    assert ring602.reason.startswith("dept 601 (Support): nobody answered → dept 602")
    # A ring inside a fallback carries a continuation, resolved when it is reached.
    assert ring602.on_no_answer == (Continue(
        "then:602/nobody/601,602", "dept 602 (Escalation): nobody answered: next step decided then"),)
    assert decide(store, "then:602/nobody/601,602", "", MONDAY_10).steps == (Hangup(
        "NO_ANSWER", "dept 602 (Escalation): nobody answered; divert loop 601 → 602 → 601 ignored"),)


# --- IVR -----------------------------------------------------------------------

def test_ivr_choice_is_routed_by_address(decide, store):
    plan = decide(store, "ivr:acme/main/1", "447400999999", MONDAY_10)
    (ring,) = plan.steps
    assert ring.reason.startswith("IVR main: caller pressed 1 → dept 600 (Sales)")


def test_ivr_submenu_and_back(decide, store):
    (sub,) = decide(store, "ivr:acme/main/3", "", MONDAY_10).steps
    assert sub.menu == "acme/sub" and (sub.timeout, sub.retries) == (3, 2)
    assert sub.on_invalid == "ivr:main"   # defaults to on_timeout
    (main,) = decide(store, "ivr:acme/sub/0", "", MONDAY_10).steps
    assert main.menu == "acme/main"


def test_ivr_timeout_and_invalid_choice(decide, store):
    (ring,) = decide(store, "ivr:acme/main/timeout", "", MONDAY_10).steps
    assert ring.reason.startswith("IVR main: no choice made → ext 2010 (Judy)")
    assert decide(store, "ivr:acme/main/7", "", MONDAY_10).steps == (
        Voicemail("600", "IVR main: invalid choice → voicemail 600"),)


def test_ivr_menu_itself_and_unknown_menus(decide, store):
    (menu,) = decide(store, "ivr:acme/sub", "", MONDAY_10).steps
    assert menu.reason == "IVR sub"
    assert decide(store, "ivr:acme/nope", "", MONDAY_10).steps == (
        Hangup("UNALLOCATED_NUMBER", "no IVR menu acme/nope"),)
    assert decide(store, "ivr:acme", "", MONDAY_10).steps == (
        Hangup("UNALLOCATED_NUMBER", "ivr:acme is not an IVR address"),)


def test_ivr_fax_and_external_choices(decide, store):
    assert decide(store, "ivr:acme/main/8", "", MONDAY_10).steps == (
        Fax("2001", "IVR main: caller pressed 8 → fax for ext 2001"),)
    (ring,) = decide(store, "ivr:acme/main/9", "", MONDAY_10).steps
    assert ring.targets == (Target("external", "447400100099", "", 0, 45),)


# --- diverts -------------------------------------------------------------------

def test_always_divert_chain_is_followed(decide, store):
    """2003 always → 2004; 2004's own busy / no-answer diverts then apply."""
    (ring,) = decide(store, "2003", "", MONDAY_10).steps
    assert ring.targets == (Target("extension", "2004", "Dan", 0, 12),)
    assert ring.reason == "direct call to ext 2003 → ext 2003 (Carol) diverts all calls → ext 2004 (Dan)"
    assert ring.on_busy == (Voicemail("2004", "ext 2004 is busy, busy divert → voicemail 2004"),)
    (eve,) = ring.on_no_answer
    assert eve.reason == "ext 2004 no answer after 12 s, no-answer divert → ext 2005 (Eve)"
    assert eve.on_busy == (Continue("then:2005/busy/2003,2004,2005", "ext 2005 is busy: next step decided then"),)
    # Eve is busy-diverted to 2001, who is not on the path: followed when it happens.
    plan = decide(store, eve.on_busy[0].address, "", MONDAY_10)
    assert plan.company == "acme"
    (alice,) = plan.steps
    assert alice.reason == "ext 2005 is busy, busy divert → ext 2001 (Alice)"
    assert isinstance(alice.on_busy[0], Hangup)     # a fresh plan expands its first level again


def test_divert_loop_is_detected_and_ignored(decide, store):
    (ring,) = decide(store, "2006", "", MONDAY_10).steps
    assert ring.targets[0].number == "2007"
    assert ring.reason == ("direct call to ext 2006 → ext 2006 (Frank) diverts all calls → ext 2007 (Grace); "
                           "divert loop 2006 → 2007 → 2006 ignored")


def test_divert_chain_stops_after_five_hops(decide, make_store):
    employees = "\n".join(
        f"  - {{extension: {3000 + i}, name: E{i}, diverts: {{always: \"extension:{3001 + i}\"}}}}"
        for i in range(7)) + "\n  - {extension: 3007, name: Last}\n"
    store = make_store(f"id: hops\nname: Hops\ncountry: GB\ntimezone: UTC\nemployees:\n{employees}")
    (ring,) = decide(store, "3000", "", MONDAY_10).steps
    assert ring.targets[0].number == "3005"     # 3000→3001→…→3005 is five hops
    assert ring.reason.endswith("divert chain longer than 5 hops stopped at ext 3005")


@pytest.mark.parametrize("ext, expected", [
    ("2008", (Voicemail("2008", "direct call to ext 2008 → ext 2008 (Heidi) diverts all calls → voicemail 2008"),)),
])
def test_always_divert_to_voicemail(decide, store, ext, expected):
    assert decide(store, ext, "", MONDAY_10).steps == expected


def test_always_divert_to_external_number(decide, store):
    (ring,) = decide(store, "2009", "", MONDAY_10).steps
    assert ring.targets == (Target("external", "447400100009", "", 0, 45),)
    assert ring.reason.endswith("diverts all calls → +447400100009")


def test_busy_divert_applies_at_once_when_the_phone_is_on_a_call(decide, store):
    store.call_started("2004")
    assert decide(store, "2004", "", MONDAY_10).steps == (Voicemail(
        "2004", "direct call to ext 2004 → ext 2004 (Dan) is on a call, busy divert → voicemail 2004"),)
    store.call_ended("2004")
    assert isinstance(decide(store, "2004", "", MONDAY_10).steps[0], Ring)


def test_busy_without_busy_divert_rings_anyway_as_call_waiting(decide, store):
    store.call_started("2010")
    (ring,) = decide(store, "2010", "", MONDAY_10).steps
    assert ring.reason.endswith("; on a call, no busy divert: ringing anyway (call waiting)")


def test_unreachable_divert_applies_at_once_when_not_registered(decide, store):
    store.set_registered("2005", False)
    (ring,) = decide(store, "2005", "", MONDAY_10).steps
    assert ring.targets == (Target("external", "447400100005", "", 0, 45),)
    assert ring.reason == ("direct call to ext 2005 → ext 2005 (Eve) is not registered, unreachable divert "
                           "→ +447400100005")
    store.set_registered("2005", True)
    assert decide(store, "2005", "", MONDAY_10).steps[0].targets[0].number == "2005"


def test_unregistered_without_divert_tries_the_mobile_when_configured(decide, store):
    store.set_registered("2002", False)
    (ring,) = decide(store, "2002", "", MONDAY_10).steps
    assert ring.targets == (Target("external", "447400100002", "Bob (mobile)", 0, 20),)
    assert ring.on_no_answer == (Voicemail("2002", "mobile of ext 2002 did not answer, no-answer divert → "
                                                   "voicemail 2002"),)


def test_unregistered_without_divert_or_mobile_hangs_up_not_registered(decide, store):
    store.set_registered("2010", False)
    assert decide(store, "2010", "", MONDAY_10).steps == (Hangup(
        "USER_NOT_REGISTERED", "direct call to ext 2010 → ext 2010 (Judy) is not registered, no unreachable divert"),)


def test_no_answer_goes_to_the_mobile_after_n_seconds_then_the_divert(decide, store):
    (ring,) = decide(store, "2002", "", MONDAY_10).steps
    assert ring.targets == (Target("extension", "2002", "Bob", 0, 15),)
    (mobile,) = ring.on_no_answer
    assert mobile.reason == "ext 2002 no answer after 15 s → mobile +447400100002"
    assert mobile.targets == (Target("external", "447400100002", "Bob (mobile)", 0, 20),)
    assert mobile.on_busy == mobile.on_no_answer == mobile.on_unreachable == (
        Continue("then:2002/mobile/2002", "mobile of ext 2002 did not answer: next step decided then"),)
    assert decide(store, "then:2002/mobile/2002", "", MONDAY_10).steps == (
        Voicemail("2002", "mobile of ext 2002 did not answer, no-answer divert → voicemail 2002"),)


@pytest.mark.parametrize("address, reason", [
    ("then:2002/busy", "then:2002/busy is not a fallback address"),
    ("then:2002/busy/2001", "then:2002/busy/2001 is not a fallback address"),
    ("then:2999/busy/2999", "then:2999/busy/2999: ext 2999 no longer exists"),
    ("then:2002/sideways/2002", "then:2002/sideways/2002: no fallback 'sideways' for ext 2002"),
    ("then:600/busy/600", "then:600/busy/600: no fallback 'busy' for ext 600"),
])
def test_malformed_fallback_addresses_are_refused(decide, store, address, reason):
    assert decide(store, address, "", MONDAY_10).steps == (Hangup("UNALLOCATED_NUMBER", reason),)


def test_plans_stay_small_whatever_the_divert_chains(decide, store):
    """At most a ring, its fallbacks and their continuations: never a tree of every path."""
    def count(steps):
        return sum(1 + sum(count(getattr(s, o) or ()) for o in ("on_busy", "on_no_answer", "on_unreachable"))
                   if s.action == "ring" else 1 for s in steps)
    for called in ("2001", "2002", "2003", "2004", "2005", "2006", "600", "601", "602", "442079460001"):
        assert count(decide(store, called, "", MONDAY_10).steps) <= 13


def test_no_answer_timer_uses_the_company_default(decide, store):
    """Bob's no-answer divert has no `after`; the company default (20 s) rings his mobile."""
    (ring,) = decide(store, "2002", "", MONDAY_10).steps
    assert ring.on_no_answer[0].timeout == 20


def test_live_state_changes_are_seen_without_reopening(decide, store):
    store.call_started("2004")
    store.call_started("2004")
    store.call_ended("2004")
    assert isinstance(decide(store, "2004", "", MONDAY_10).steps[0], Voicemail)
    store.replace_live({"2004"}, {})
    assert isinstance(decide(store, "2004", "", MONDAY_10).steps[0], Ring)


# --- internal and outbound calls ---------------------------------------------

def test_internal_call_between_extensions(decide, store):
    (ring,) = decide(store, "2010", "2001", MONDAY_10).steps
    assert ring.reason == "internal call from ext 2001 → ext 2010 (Judy)"


def test_calling_your_own_extension_reaches_your_voicemail(decide, store):
    assert decide(store, "2001", "2001", MONDAY_10).steps == (
        Voicemail("2001", "ext 2001 called itself: own voicemail"),)


def test_extensions_of_another_company_cannot_be_dialled(decide, make_store):
    other = make_store("""
    companies:
      - id: acme
        name: Acme
        country: GB
        timezone: Europe/London
        employees: [{extension: 2001, name: Alice}]
      - id: beta
        name: Beta
        country: DE
        timezone: Europe/Berlin
        employees: [{extension: 4001, name: Bernd}]
    """)
    assert decide(other, "4001", "2001", MONDAY_10).steps == (Hangup(
        "CALL_REJECTED", "ext 2001 (acme) may not dial ext 4001 of company beta; call its public number"),)


def test_outbound_call_in_national_format_uses_the_company_caller_id(decide, store):
    (ring,) = decide(store, "020 7946 0999", "2001", MONDAY_10).steps
    assert ring.targets == (Target("external", "442079460999", "", 0, 45),)
    assert ring.caller_id == "442079460000"
    assert ring.reason == "outbound call from ext 2001 to +442079460999"


def test_outbound_call_to_an_invalid_number_is_unallocated(decide, store):
    (hangup,) = decide(store, "0123", "2001", MONDAY_10).steps
    assert hangup.cause == "UNALLOCATED_NUMBER"
    assert hangup.reason.startswith("ext 2001 dialled 0123: ")


# --- plans as output ------------------------------------------------------------

def test_plan_renders_as_text_and_json(decide, store):
    plan = decide(store, "2002", "447400999999", MONDAY_10)
    text = render_text(plan)
    assert "ring simultaneous for 15 s: ext 2002 (Bob) 15 s" in text
    assert "if busy / no answer / unreachable:" in text      # identical mobile fallbacks shown once
    data = to_json(plan)
    assert '"action": "ring"' in data and '"caller": "447400999999"' in data


def test_a_reload_that_renames_or_renumbers_is_seen_by_the_next_call(decide, tmp_path):
    """Names and extensions in plans come from the snapshot, never from what an earlier call saw
    (the fast path keeps decoded names per presence slot and must notice when they change)."""
    from fastpath.store import Store
    from .conftest import config_from_yaml

    before = COMPANY
    after = COMPANY.replace("name: Alice", "name: Alicia").replace("{extension: 2010, name: Judy",
                                                                  "{extension: 2011, name: Judy")
    after = after.replace("2010", "2011")
    with Store(str(tmp_path / "store")) as store:
        store.load_config(config_from_yaml(before))
        first = decide(store, "+442079460001", "+447700900123", at("2026-11-23 10:00")).steps[0]
        assert [(t.number, t.name) for t in first.targets] == [("2001", "Alice"), ("2010", "Judy"),
                                                                ("2005", "Eve")]
        store.load_config(config_from_yaml(after))
        again = decide(store, "+442079460001", "+447700900123", at("2026-11-23 10:00")).steps[0]
        assert [(t.number, t.name) for t in again.targets] == [("2001", "Alicia"), ("2011", "Judy"),
                                                                ("2005", "Eve")]
        alone = decide(store, "2001", "", at("2026-11-23 10:00")).steps[0]
        assert alone.targets[0].name == "Alicia" and "ext 2001 (Alicia)" in alone.reason
