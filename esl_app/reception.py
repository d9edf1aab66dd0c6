"""The receptionist's view of a company: for every employee, the referral status
in force (with until when and from which source), the bookings of the coming
hour and whether the phone is registered or on a call.

Read from one store, never from a calendar server; what is in force is decided
by :func:`fastpath.referral_status.status_at`, as the routing engines decide it.

Who sees what (the interval's ``visibility``, set per employee or per event):

* ``everyone`` -- the reason (event title) and alternate are shown to every viewer;
* ``receptionists`` -- shown to a viewer of role ``receptionist``; others see the
  status ("meeting") without its reason;
* ``nobody`` -- nobody sees more than ``busy`` (private events): the status
  itself is replaced by ``busy``, with no reason.

``switchboard reception`` prints it (:func:`render_reception`); the HTTP API
will serve the same dicts.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from zoneinfo import ZoneInfo

from fastpath import records as rec
from fastpath.errors import SwitchboardError
from fastpath.referral_status import DEFAULT_PRECEDENCE, status_at, until

from .calendar.worker import default_status_path, read_status
from .fs_conf import read_store

#: How far ahead bookings are listed: the coming 60 minutes.
BOOKINGS_AHEAD = 3600
#: Interval visibility -> the viewer roles who see its reason and alternate.
SHOWN_TO: dict[str, frozenset[str]] = {
    "everyone": frozenset(rec.ROLE_CODES),
    "receptionists": frozenset({"receptionist"}),
    "nobody": frozenset(),
}
HIDDEN_STATUS = "busy"


def _shown(iv: rec.ReferralInterval, viewer_role: str) -> dict:
    """Status, reason and alternate of ``iv`` as ``viewer_role`` may see them."""
    visible = viewer_role in SHOWN_TO[iv.visibility]
    hidden = iv.visibility == "nobody" and iv.status != "available"
    return {"status": HIDDEN_STATUS if hidden else iv.status, "reason": (iv.reason or None) if visible else None,
            "alternate": (iv.alternate or None) if visible else None}


def _presence(live: rec.LiveRec | None) -> dict:
    if live is None or not live.registered_known:
        return {"registered": None, "busy": live is not None and live.active_calls > 0,
                "active_calls": live.active_calls if live else 0, "phone": "unknown"}
    phone = "on a call" if live.active_calls else ("registered" if live.registered else "not registered")
    return {"registered": live.registered, "busy": live.active_calls > 0, "active_calls": live.active_calls,
            "phone": phone}


def employee_view(store, employee: rec.EmployeeRec, now: float, viewer_role: str = "receptionist", *,
                  precedence: Sequence[str] = DEFAULT_PRECEDENCE, sync: dict | None = None) -> dict:
    """One employee's row of :func:`reception_view`."""
    held = store.referrals(employee.extension)
    current = status_at(held, now, precedence)
    # a manual "available" (it overrides the calendar) is shown as such, with its source
    row = (_shown(current, viewer_role) if current is not None
           else {"status": "available", "reason": None, "alternate": None})
    bookings = sorted((iv for items in held.values() for iv in items
                       if now <= iv.start < now + BOOKINGS_AHEAD and iv is not current),
                      key=lambda iv: (iv.start, iv.end, iv.source, iv.status))
    state = (sync or {}).get(employee.extension)
    return {
        "extension": employee.extension, "name": employee.name, "role": employee.role,
        **row,
        "since": None if current is None else current.start,
        "until": until(held, now, precedence),
        "source": None if current is None else current.source,
        "bookings": [{"from": iv.start, "to": iv.end, "source": iv.source, **_shown(iv, viewer_role)}
                     for iv in bookings],
        **_presence(store.live(employee.extension)),
        "calendar_sync": None if state is None else state.get("state"),
    }


def reception_view(store, company: str, now: float, viewer_role: str = "receptionist", *,
                   precedence: Sequence[str] = DEFAULT_PRECEDENCE) -> list[dict]:
    """Every employee of ``company``, by extension: ``status`` (``available`` when nothing
    is in force; ``busy`` when its details are hidden from everyone), ``reason`` and
    ``alternate`` (None when there are none or the viewer may not see them), ``since``,
    ``until``, ``source``; ``bookings``: the intervals starting in the coming 60 minutes
    (``now <= start < now + 3600``, except the one in force) as ``{from, to, source,
    status, reason, alternate}``; ``registered`` (None: unknown), ``busy``,
    ``active_calls``, ``phone`` (``on a call`` / ``registered`` / ``not registered`` /
    ``unknown``) and ``calendar_sync`` (the sync state of the employee's calendar:
    ``ok`` / ``failing`` / ``pending``, None without one).

    ``viewer_role`` is the role of who is looking (``receptionist``, ``admin``, ``user``).
    Raises SwitchboardError for an unknown company, ValueError for an unknown role."""
    _check_role(viewer_role)
    return _view(store, _company(read_store(store).companies, company), now, viewer_role, precedence)


def _check_role(viewer_role: str) -> None:
    if viewer_role not in rec.ROLE_CODES:
        raise ValueError(f"reception view: unknown viewer role {viewer_role!r}; "
                         f"one of {', '.join(sorted(rec.ROLE_CODES))}")


def _company(companies: dict, company: str):
    conf = companies.get(company)
    if conf is None:
        raise SwitchboardError(f"no company {company!r} in the store; companies: "
                               f"{', '.join(sorted(companies)) or '(none loaded)'}")
    return conf


def _view(store, conf, now, viewer_role, precedence) -> list[dict]:
    sync = (read_status(default_status_path(store.path)) or {}).get("calendars", {})
    return [employee_view(store, emp, now, viewer_role, precedence=precedence, sync=sync)
            for _, emp in sorted(conf.employees.items())]


def reception_report(store, company: str | None, at, viewer_role: str = "receptionist") -> list[dict]:
    """``switchboard reception``: one ``{company, name, timezone, at, employees}`` per
    company (``company`` None: every company).  ``at(zone) -> POSIX time`` gives the
    moment in the company's zone (``--at`` without an offset is its local time)."""
    _check_role(viewer_role)
    companies = read_store(store).companies
    chosen = [_company(companies, company)] if company is not None else [c for _, c in sorted(companies.items())]
    out = []
    for conf in chosen:
        now = at(conf.company.timezone)
        out.append({"company": conf.company.id, "name": conf.company.name, "timezone": conf.company.timezone,
                    "at": now, "viewer": viewer_role,
                    "employees": _view(store, conf, now, viewer_role, DEFAULT_PRECEDENCE)})
    return out


def _status_text(item: dict) -> str:
    reason = f" '{item['reason']}'" if item.get("reason") else ""
    alternate = f" (alternate {item['alternate']})" if item.get("alternate") else ""
    return f"{item['status']}{reason}{alternate}"


def render_reception(report: list[dict]) -> str:
    """:func:`reception_report` as text, times in each company's zone."""
    lines = []
    for section in report:
        tz = ZoneInfo(section["timezone"])
        day = dt.datetime.fromtimestamp(section["at"], tz).date()

        def when(t, tz=tz, day=day):
            moment = dt.datetime.fromtimestamp(t, tz)
            return moment.strftime("%H:%M") if moment.date() == day else moment.strftime("%a %d %b %H:%M")

        stamp = dt.datetime.fromtimestamp(section["at"], tz).strftime("%a %d %b %Y %H:%M")
        lines.append(f"{section['name']} ({section['company']}) at {stamp} {section['timezone']}, "
                     f"as seen by a{'n' if section['viewer'][0] in 'aeiou' else ''} {section['viewer']}")
        if not section["employees"]:
            lines.append("  no employees")
        width = max((len(e["name"]) for e in section["employees"]), default=0)
        for emp in section["employees"]:
            status = _status_text(emp)
            if emp["until"] is not None:
                status += f" until {when(emp['until'])}"
            if emp["source"]:
                status += f"  [{emp['source']}]"
            sync = f", calendar sync {emp['calendar_sync']}" if emp["calendar_sync"] not in (None, "ok") else ""
            lines.append(f"  {emp['extension']:>6}  {emp['name']:<{width}}  {emp['phone']:<14}  {status}{sync}")
            for item in emp["bookings"]:
                lines.append(f"  {'':>6}  {'':<{width}}  {'':<14}  next: {when(item['from'])}-{when(item['to'])} "
                             f"{_status_text(item)}  [{item['source']}]")
    return "\n".join(lines)
