"""Who may set an employee's status, and what a manual status does to the next call."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from esl_app.cli import main
from esl_app.status_setting import BadStatus, NotAllowed, clear_status, end_at_time_of_day, set_status
from fastpath import engine

from .conftest import at

COMPANY = """
id: acme
name: Acme
country: GB
timezone: Europe/London
referral: {statuses: [training]}
employees:
  - {extension: 2001, name: Alice, role: admin}
  - {extension: 2002, name: Bob, status_delegates: [2010]}
  - {extension: 2003, name: Carol}
  - {extension: 2010, name: Judy, role: receptionist}
  - {extension: 2011, name: Ken, role: receptionist}
"""
OTHER = """
id: globex
name: Globex
country: GB
timezone: Europe/London
employees:
  - {extension: 3001, name: Zed, role: admin}
"""
T0 = int(at("2026-11-23 10:00"))


@pytest.fixture
def store(tmp_path):
    from fastpath.store import Store
    from fastpath.validate import validate
    from fastpath.yaml_source import load_yaml
    s = Store(str(tmp_path / "store"))
    s.load_config(validate([(load_yaml(COMPANY, "a.yaml"), "a.yaml"), (load_yaml(OTHER, "b.yaml"), "b.yaml")]))
    yield s
    s.close()


@pytest.mark.parametrize("actor", ["2002", "2001", "2010"])
def test_the_employee_an_admin_and_whom_they_authorised_may_set_it(store, actor):
    set_status(store, actor, "2002", "meeting", start=T0, end=T0 + 1800)
    assert store.referrals("2002")["manual"][0].status == "meeting"
    assert clear_status(store, actor, "2002") == ["manual"]
    assert store.referrals("2002") == {}


@pytest.mark.parametrize("actor, why", [
    ("2003", "ext 2003 (user) may not set the status of ext 2002: only ext 2002, an admin, or those "
             "ext 2002 authorised (2010)"),
    ("2011", "ext 2011 (receptionist) may not set the status of ext 2002"),
    ("3001", "ext 3001 (globex) may not set the status of ext 2002 of company acme"),
    ("9999", "ext 9999 is no employee"),
])
def test_everybody_else_is_refused_and_nothing_is_stored(store, actor, why):
    set_status(store, "2002", "2002", "lunch", start=T0, end=T0 + 3600)
    with pytest.raises(NotAllowed, match=why.replace("(", r"\(").replace(")", r"\)")):
        set_status(store, actor, "2002", "vacation", start=T0, end=T0 + 86400)
    with pytest.raises(NotAllowed):
        clear_status(store, actor, "2002")
    assert [iv.status for iv in store.referrals("2002")["manual"]] == ["lunch"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(status="snoozing"), "unknown status 'snoozing'; company acme has available, meeting"),
    (dict(end=T0 - 1), "ends before it starts"),
    (dict(visibility="friends"), "visibility 'friends'"),
    (dict(reason="two\nlines"), "reason must be one line"),
    (dict(every="FREQ=SOMETIMES", duration=600), "recurrence rule 'FREQ=SOMETIMES'"),
    (dict(every="FREQ=WEEKLY"), "needs a duration"),
])
def test_bad_statuses_are_refused_with_the_reason(store, kwargs, message):
    args = dict(status="meeting", start=T0, end=T0 + 60)
    args.update(kwargs)
    status = args.pop("status")
    with pytest.raises(BadStatus, match=message):
        set_status(store, "2002", "2002", status, **args)
    assert store.referrals("2002") == {}


def test_company_statuses_are_accepted(store):
    set_status(store, "2001", "2003", "training", start=T0, end=T0 + 60)
    assert store.referrals("2003")["manual"][0].status == "training"


def test_a_recurring_status_repeats_on_local_time_across_dst(store):
    monday = int(at("2026-03-23 09:00"))          # the Monday before British Summer Time starts
    written = set_status(store, "2002", "2002", "meeting", start=monday, every="FREQ=WEEKLY;BYDAY=MO",
                         duration=3600, reason="weekly sync")
    assert len(written) == 53 and {iv.end - iv.start for iv in written} == {3600}
    assert written[1].start == int(at("2026-03-30 09:00"))        # still 09:00 local after the change
    decide = engine.decide
    assert decide(store, "2002", "2003", at("2026-03-30 09:30")).steps[0].action == "say"
    assert decide(store, "2002", "2003", at("2026-03-30 10:00")).steps[0].action == "ring"
    assert decide(store, "2002", "2003", at("2026-03-31 09:30")).steps[0].action == "ring"


def test_a_manual_status_overrides_the_calendar_on_the_next_call(store):
    from fastpath.records import ReferralInterval
    store.put_referrals("2002", "calendar", [ReferralInterval(T0, T0 + 3600, "meeting", "m Board")])
    assert engine.decide(store, "2002", "2003", T0 + 60).steps[0].action == "say"
    set_status(store, "2002", "2002", "available", start=T0 + 30, end=T0 + 3600)
    assert engine.decide(store, "2002", "2003", T0 + 60).steps[0].action == "ring"
    clear_status(store, "2002", "2002")
    assert engine.decide(store, "2002", "2003", T0 + 60).steps[0].action == "say"


def test_the_cli_sets_and_clears_and_refuses(store, capsys):
    path = store.path
    store.close()
    assert main(["--store", path, "set-status", "2002", "vacation", "--by", "2010", "--from",
                 "2026-11-23T09:00", "--until", "2026-11-30T00:00", "--alternate", "2003"]) == 0
    assert "ext 2002: vacation from 2026-11-23 09:00 until 2026-11-30 00:00, set by ext 2010" in capsys.readouterr().out
    assert main(["--store", path, "clear-status", "2002", "--by", "2011"]) == 1
    assert "ext 2011 (receptionist) may not set the status of ext 2002" in capsys.readouterr().err
    assert main(["--store", path, "set-status", "2002", "meeting", "--until", "25:00"]) == 1
    assert "--until '25:00'" in capsys.readouterr().err
    assert main(["--store", path, "clear-status", "2002"]) == 0
    assert "cleared manual status" in capsys.readouterr().out


@pytest.mark.parametrize("after, hhmm, expected", [
    ("2026-11-23 22:00", (6, 0), "2026-11-24 06:00"),       # past today: tomorrow's
    ("2026-11-23 10:00", (14, 30), "2026-11-23 14:30"),     # still ahead today
    ("2026-11-23 14:30", (14, 30), "2026-11-24 14:30"),     # now is no end: the next one
    ("2026-03-28 22:00", (6, 0), "2026-03-29 06:00"),       # over the spring change: wall-clock 06:00 (BST)
    ("2026-10-24 22:00", (6, 0), "2026-10-25 06:00"),       # over the autumn change (GMT again)
])
def test_an_end_time_of_day_is_the_next_one_in_the_companys_zone(after, hhmm, expected):
    assert end_at_time_of_day(*hhmm, "Europe/London", at(after)) == int(at(expected))


def test_the_cli_reads_until_hh_mm_like_the_phone_code_tomorrows_if_past(store, capsys):
    path = store.path
    store.close()
    assert main(["--store", path, "set-status", "2002", "away", "--from", "22:00", "--until", "06:00"]) == 0
    today = dt.datetime.now(ZoneInfo("Europe/London")).date()
    assert f"away from {today} 22:00 until {today + dt.timedelta(days=1)} 06:00" in capsys.readouterr().out
    with pytest.raises(BadStatus, match="25:00 is no time of day"):
        end_at_time_of_day(25, 0, "Europe/London", T0)
