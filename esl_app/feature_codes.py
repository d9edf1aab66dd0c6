"""Phone feature codes: set or clear a referral status from the desk phone.

=====================  ==========================================================
dial                   does
=====================  ==========================================================
``*30S``               set your status S until you clear it
``*30SHHMM``           set your status S until HH:MM (today, or tomorrow if past)
``*31``                clear your status (the calendar applies again)
``*32EXT*S[HHMM]``     set the status of EXT (you must be allowed: see below)
``*33EXT``             clear the status of EXT
=====================  ==========================================================

S is one digit: 0 available, 1 meeting, 2 lunch, 3 vacation, 4 sick, 5 away.
Who may set whose status is :mod:`esl_app.status_setting`'s rule (the employee,
an admin, or whom the employee authorised).  Only authenticated phones may use
the codes; the caller hears the new status read back ("extension 2001 is in a
meeting until 14:30"), or the error prompt and the reason goes to the call log.

The handler returns a plan like the engine's (say/announce, then hang up), so
the executor runs it the usual way; unlike a routing decision it writes the
store, which is why it lives here and not in ``fastpath/``.
"""
from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

from fastpath.errors import SwitchboardError
from fastpath.route_plan import Announce, Hangup, RoutePlan, Say

from .status_setting import clear_status, end_at_time_of_day, set_status

STATUS_DIGITS = {"0": "available", "1": "meeting", "2": "lunch", "3": "vacation", "4": "sick", "5": "away"}
ERROR_SOUND = "ivr/ivr-that_was_an_invalid_entry.wav"
_CODE = re.compile(r"\*3[0-3][0-9*]*")
_SET_OWN = re.compile(r"\*30(?P<status>[0-9])(?P<until>[0-9]{4})?")
_SET_OTHER = re.compile(r"\*32(?P<ext>[0-9]{2,6})\*(?P<status>[0-9])(?P<until>[0-9]{4})?")
_CLEAR_OTHER = re.compile(r"\*33(?P<ext>[0-9]{2,6})")


def is_feature_code(called: str) -> bool:
    return bool(_CODE.fullmatch(called))


def _until(hhmm: str | None, now: float, zone: str) -> int | None:
    if hhmm is None:
        return None
    hours, minutes = int(hhmm[:2]), int(hhmm[2:])
    if hours > 23 or minutes > 59:
        raise SwitchboardError(f"{hhmm} is no time of day (HHMM)")
    return end_at_time_of_day(hours, minutes, zone, now)


def handle(store, called: str, caller: str, authenticated: bool, now: float) -> RoutePlan:
    """Apply a feature code for ``caller``; the plan that tells them the result."""
    at = int(now)
    try:
        if not authenticated or not caller:
            raise SwitchboardError("feature codes work only from a registered phone")
        target, status, hhmm, clear = _parse(called, caller)
        employee = store.employee(target)
        if employee is None:
            raise SwitchboardError(f"ext {target} is no employee")
        company = next(c for c in store.companies() if c.id == employee.company)
        if clear:
            cleared = clear_status(store, caller, target)
            status, until = "available", None
            why = f"ext {caller} cleared the status of ext {target}" + ("" if cleared else " (none was set)")
        else:
            until = _until(hhmm, now, company.timezone)
            set_status(store, caller, target, status, start=at, end=until)
            why = f"ext {caller} set the status of ext {target} to {status}" + (
                f" until {dt.datetime.fromtimestamp(until, ZoneInfo(company.timezone)):%H:%M}" if until else "")
    except SwitchboardError as exc:
        return RoutePlan(called, caller, at, "", (
            Announce(ERROR_SOUND, f"feature code {called} refused: {exc}"),
            Hangup("NORMAL_CLEARING", "feature code refused")))
    return RoutePlan(called, caller, at, company.id, (
        Say("referral_status", f"{target}:{status}:{until or 0}", company.language, company.timezone,
            f"feature code {called}: {why}; read back to the caller"),
        Hangup("NORMAL_CLEARING", "feature code done")))


def _parse(called: str, caller: str) -> tuple[str, str, str | None, bool]:
    """``(target, status, HHMM or None, clear)``; SwitchboardError for what is no valid code."""
    if called == "*31":
        return caller, "", None, True
    if m := _CLEAR_OTHER.fullmatch(called):
        return m["ext"], "", None, True
    m = _SET_OWN.fullmatch(called) or _SET_OTHER.fullmatch(called)
    if m is None:
        raise SwitchboardError(f"{called} is no feature code (*30S[HHMM], *31, *32EXT*S[HHMM], *33EXT)")
    if m["status"] not in STATUS_DIGITS:
        raise SwitchboardError(f"status digit {m['status']} means nothing (0-5)")
    target = m.groupdict().get("ext") or caller
    return target, STATUS_DIGITS[m["status"]], m["until"], False
