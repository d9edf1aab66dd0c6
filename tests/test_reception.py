"""The receptionist's view (esl_app/reception.py) and `switchboard reception`: statuses,
until when, the coming hour's bookings, who may see what, and the phones' state."""
from __future__ import annotations

import json

import pytest

from esl_app import cli
from esl_app.calendar.worker import default_status_path
from esl_app.reception import BOOKINGS_AHEAD, reception_view, render_reception, reception_report
from fastpath.errors import SwitchboardError
from fastpath.records import ReferralInterval

from .conftest import at

TWO_COMPANIES = """
companies:
  - id: acme
    name: Acme Widgets Ltd
    country: GB
    timezone: Europe/London
    employees:
      - {extension: 2003, name: Cat Jones}
      - {extension: 2001, name: Ann Smith, role: admin}
      - {extension: 2002, name: Ben Brown, role: receptionist}
    departments:
      - {extension: 600, name: Sales, members: [2001, 2003]}
  - id: other
    name: Other Ltd
    country: DE
    timezone: Europe/Berlin
    employees:
      - {extension: 3001, name: Dora Klein}
"""

NOW = int(at("2026-11-23 10:00"))


def iv(start, end, status, reason="", visibility="everyone", source="calendar:caldav", alternate=""):
    return ReferralInterval(NOW + start, NOW + end, status, reason, alternate, visibility, source)


@pytest.fixture
def store(make_store):
    return make_store(TWO_COMPANIES)


def row(store, ext, viewer="receptionist", now=NOW):
    rows = {r["extension"]: r for r in reception_view(store, "acme" if ext < "3" else "other", now, viewer)}
    return rows[ext]


def test_every_employee_of_the_company_by_extension(store):
    """Should list the company's employees only (no departments, no other company), in order."""
    rows = reception_view(store, "acme", NOW)
    assert [(r["extension"], r["name"], r["role"]) for r in rows] == [
        ("2001", "Ann Smith", "admin"), ("2002", "Ben Brown", "receptionist"), ("2003", "Cat Jones", "user")]
    assert [r["extension"] for r in reception_view(store, "other", NOW)] == ["3001"]


def test_nothing_in_force_is_available(store):
    r = row(store, "2001")
    assert (r["status"], r["reason"], r["until"], r["since"], r["source"], r["bookings"]) == (
        "available", None, None, None, None, [])
    assert (r["registered"], r["busy"], r["phone"], r["calendar_sync"]) == (None, False, "unknown", None)


def test_current_status_until_and_source(store):
    """Back-to-back meetings make one 'until'; the source of the one in force is named."""
    store.put_referrals("2001", "calendar:caldav", [iv(-600, 1800, "meeting", "Board", alternate="2002"),
                                                    iv(1800, 5400, "meeting", "Budget")])
    r = row(store, "2001")
    assert (r["status"], r["reason"], r["alternate"], r["since"], r["until"], r["source"]) == (
        "meeting", "Board", "2002", NOW - 600, NOW + 5400, "calendar:caldav")
    assert [(b["from"], b["to"], b["status"], b["reason"]) for b in r["bookings"]] == [
        (NOW + 1800, NOW + 5400, "meeting", "Budget")]


def test_manual_status_overrides_the_calendar(store):
    store.put_referrals("2001", "calendar:caldav", [iv(-600, 3000, "meeting", "Board")])
    store.put_referrals("2001", "manual", [iv(-60, 900, "lunch", "Canteen", source="manual")])
    r = row(store, "2001")
    assert (r["status"], r["reason"], r["until"], r["source"]) == ("lunch", "Canteen", NOW + 900, "manual")
    store.clear_referrals("2001", "manual")
    assert row(store, "2001")["status"] == "meeting"


def test_manual_available_is_shown_as_available_from_its_source(store):
    store.put_referrals("2001", "calendar:caldav", [iv(-600, 3000, "meeting", "Board")])
    store.put_referrals("2001", "manual", [iv(-60, 900, "available", visibility="nobody", source="manual")])
    r = row(store, "2001")
    assert (r["status"], r["until"], r["source"]) == ("available", NOW + 900, "manual")     # not "busy"


@pytest.mark.parametrize("visibility, viewer, status, reason", [
    ("everyone", "receptionist", "meeting", "Board"),
    ("everyone", "user", "meeting", "Board"),
    ("everyone", "admin", "meeting", "Board"),
    ("receptionists", "receptionist", "meeting", "Board"),
    ("receptionists", "user", "meeting", None),
    ("receptionists", "admin", "meeting", None),
    ("nobody", "receptionist", "busy", None),
    ("nobody", "admin", "busy", None),
    ("nobody", "user", "busy", None),
])
def test_visibility_of_the_current_status_and_of_bookings(store, visibility, viewer, status, reason):
    """everyone: reason shown; receptionists: to a receptionist only; nobody: only 'busy'."""
    store.put_referrals("2003", "calendar:caldav", [iv(-60, 600, "meeting", "Board", visibility, alternate="2002"),
                                                    iv(900, 1200, "meeting", "Board", visibility, alternate="2002")])
    r = row(store, "2003", viewer)
    assert (r["status"], r["reason"], r["alternate"]) == (status, reason, reason and "2002")
    (booking,) = r["bookings"]
    assert (booking["status"], booking["reason"], booking["alternate"]) == (status, reason, reason and "2002")
    text = render_reception(reception_report(store, "acme", lambda zone: NOW, viewer))
    assert ("Board" in text) is (reason is not None)


def test_unknown_viewer_role_is_refused(store):
    with pytest.raises(ValueError, match="unknown viewer role 'boss'; one of admin, receptionist, user"):
        reception_view(store, "acme", NOW, "boss")


def test_the_60_minute_window_boundaries(store):
    """Bookings start in [now, now + 60 min): an hour ahead is out, one that runs already is
    not a booking, one starting now that is not in force is."""
    assert BOOKINGS_AHEAD == 3600
    store.put_referrals("2003", "calendar:caldav", [
        iv(-300, 60, "meeting", "running"),              # started before now: not a booking
        iv(0, 120, "lunch", "starts now, overridden"),   # starts now, but the meeting is in force
        iv(3599, 4000, "meeting", "last second"),
        iv(3600, 4000, "meeting", "an hour ahead"),
        iv(7200, 8000, "vacation", "later"),
    ])
    r = row(store, "2003")
    assert (r["status"], r["reason"]) == ("meeting", "running")
    assert [b["reason"] for b in r["bookings"]] == ["starts now, overridden", "last second"]


def test_the_status_in_force_is_not_repeated_as_a_booking(store):
    store.put_referrals("2003", "calendar:caldav", [iv(0, 600, "meeting", "Board"), iv(0, 300, "lunch", "Snack")])
    r = row(store, "2003")
    assert (r["status"], r["since"]) == ("meeting", NOW)
    assert [b["reason"] for b in r["bookings"]] == ["Snack"]


def test_bookings_from_every_source_in_time_order(store):
    store.put_referrals("2003", "calendar:ews", [iv(1200, 1500, "meeting", "B", source="calendar:ews")])
    store.put_referrals("2003", "manual", [iv(600, 900, "away", "A", source="manual")])
    assert [(b["reason"], b["source"]) for b in row(store, "2003")["bookings"]] == [
        ("A", "manual"), ("B", "calendar:ews")]


def test_phone_state_from_the_live_presence(store):
    store.set_registered("2001", True)
    store.set_registered("2002", False)
    store.set_registered("2003", True)
    store.call_started("2003")
    states = {r["extension"]: (r["registered"], r["busy"], r["active_calls"], r["phone"])
              for r in reception_view(store, "acme", NOW)}
    assert states == {"2001": (True, False, 0, "registered"), "2002": (False, False, 0, "not registered"),
                      "2003": (True, True, 1, "on a call")}


def test_calendar_sync_state_from_the_worker_status_file(store):
    with open(default_status_path(store.path), "w", encoding="utf-8") as handle:
        json.dump({"calendars": {"2001": {"source": "calendar:caldav", "state": "failing"}}}, handle)
    assert {r["extension"]: r["calendar_sync"] for r in reception_view(store, "acme", NOW)} == {
        "2001": "failing", "2002": None, "2003": None}


def test_unknown_company_names_the_known_ones(store):
    with pytest.raises(SwitchboardError, match="no company 'nope' in the store; companies: acme, other"):
        reception_view(store, "nope", NOW)


# --- switchboard reception --------------------------------------------------------------------

def run_cli(store, *args):
    path = store.path
    store.close()
    return cli.main(["--store", path, "reception", *args])


def test_cli_text_for_one_company_at_local_time(store, capsys):
    store.put_referrals("2001", "calendar:caldav", [iv(-600, 1800, "meeting", "Board")])
    store.put_referrals("2002", "calendar:caldav", [iv(1800, 2400, "lunch", "Canteen", "receptionists")])
    assert run_cli(store, "--company", "acme", "--at", "2026-11-23T10:00") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Acme Widgets Ltd (acme) at Mon 23 Nov 2026 10:00 Europe/London, as seen by a receptionist"
    assert out[1].split() == ["2001", "Ann", "Smith", "unknown", "meeting", "'Board'", "until", "10:30",
                              "[calendar:caldav]"]
    assert out[2].split() == ["2002", "Ben", "Brown", "unknown", "available"]
    assert out[3].split() == ["next:", "10:30-10:40", "lunch", "'Canteen'", "[calendar:caldav]"]
    assert out[4].split() == ["2003", "Cat", "Jones", "unknown", "available"]
    assert len(out) == 5


def test_cli_json_for_every_company_as_a_user(store, capsys):
    store.put_referrals("2002", "calendar:caldav", [iv(0, 600, "lunch", "Canteen", "receptionists")])
    assert run_cli(store, "--at", "2026-11-23T10:00Z", "--json", "--viewer", "user") == 0
    report = json.loads(capsys.readouterr().out)
    assert [(s["company"], s["timezone"], s["at"], s["viewer"]) for s in report] == [
        ("acme", "Europe/London", NOW, "user"), ("other", "Europe/Berlin", NOW, "user")]
    ben = report[0]["employees"][1]
    assert (ben["extension"], ben["status"], ben["reason"], ben["until"]) == ("2002", "lunch", None, NOW + 600)


def test_cli_at_without_offset_is_each_company_local_time(store, capsys):
    assert run_cli(store, "--at", "2026-11-23T10:00", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert [s["at"] for s in report] == [NOW, NOW - 3600]       # 10:00 in Berlin is 09:00 in London


def test_cli_unknown_company_and_bad_time(store, capsys):
    assert run_cli(store, "--company", "nope") == 1
    assert "switchboard: no company 'nope' in the store; companies: acme, other" in capsys.readouterr().err
    assert cli.main(["--store", store.path, "reception", "--at", "tomorrow"]) == 1
    assert "--at 'tomorrow' is not an ISO 8601 time" in capsys.readouterr().err
