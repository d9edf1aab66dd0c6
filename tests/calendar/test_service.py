"""What the CLI calls (esl_app/calendar/service.py): status of an employee, one-off sync."""
from __future__ import annotations

import os

from esl_app.calendar.service import render_status, run_sync, status_report
from esl_app.calendar.worker import write_status
from fastpath.records import ReferralInterval

from .test_worker import COMPANY

T = 1_792_000_000


def test_status_report_current_upcoming_and_sources(make_store):
    store = make_store(COMPANY)
    store.put_referrals("2001", "calendar:caldav", [
        ReferralInterval(T - 600, T + 1800, "meeting", "m Board", "", "everyone", "calendar:caldav"),
        ReferralInterval(T + 1800, T + 3600, "meeting", "m Next", "", "everyone", "calendar:caldav"),
        ReferralInterval(T + 7200, T + 9000, "lunch", "", "", "nobody", "calendar:caldav")])
    store.put_referrals("2001", "manual", [ReferralInterval(T + 8000, T + 20000, "sick", source="manual")])
    write_status(os.path.join(store.path, "calendar-status.json"), {"calendars": {"2001": {
        "source": "calendar:caldav", "state": "failing", "last_success": T - 3600, "last_error": "down",
        "last_error_at": T - 60, "next_attempt": T + 60, "last_sync": "incremental", "where": "https://dav/"}}})
    report = status_report(store, "2001", T)
    assert report["current"]["status"] == "meeting" and report["current"]["until"] == T + 3600
    assert [(u["status"], u["from"]) for u in report["upcoming"]] == [
        ("meeting", T + 1800), ("lunch", T + 7200), ("sick", T + 8000)]
    assert report["sources"]["calendar:caldav"]["state"] == "failing"
    assert report["sources"]["manual"] == {"intervals": 1, "future": 1}
    text = render_status(report, "Europe/London")
    assert "now: meeting 'm Board' until" in text and "sync failing" in text and "down" in text
    assert "available" in render_status(status_report(store, "2002", T))


def test_run_sync_once_with_a_bad_server_reports_failure(make_store, tmp_path, monkeypatch):
    store = make_store(COMPANY)
    path = tmp_path / "cal.yaml"
    path.write_text('servers: {dav: {kind: caldav, url: "http://127.0.0.1:9/", credentials: dav}}\n'
                    'employees: [{extension: "2001", server: dav, calendar: x/}]\n')
    monkeypatch.setenv("SWITCHBOARD_CALENDAR_DAV_USERNAME", "u")
    monkeypatch.setenv("SWITCHBOARD_CALENDAR_DAV_PASSWORD", "p")
    assert run_sync(store, str(path), once=True) == 1
    report = status_report(store, "2001", T)
    assert report["sources"]["calendar:caldav"]["state"] == "failing"
