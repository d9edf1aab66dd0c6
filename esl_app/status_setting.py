"""Setting and clearing an employee's status by hand: who may, and what gets stored.

A manual status is stored under the source ``manual`` (one-off, from-to) or
``recurring`` (occurrences of an RRULE, a year ahead); both are manual for
:mod:`fastpath.referral_status`, so they override the calendar until they end or
are cleared.  Used by the CLI (``switchboard set-status`` / ``clear-status``)
and by the phone feature codes (the executor), so both refuse the same people:

* the employee themself;
* an admin of the same company;
* an employee the target listed in ``status_delegates`` (their boss, a receptionist);

and nobody else -- not even a receptionist the employee did not authorise.
"""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from dateutil.rrule import rrulestr

from fastpath.errors import SwitchboardError
from fastpath.records import VISIBILITY_CODES, ReferralInterval

MANUAL = "manual"
RECURRING = "recurring"
RECURRING_AHEAD = 366 * 86400      # how far ahead the occurrences of a recurring status are written
MAX_OCCURRENCES = 1000


class NotAllowed(SwitchboardError):
    """Someone tried to set or clear a status they have no right to."""


class BadStatus(SwitchboardError):
    """The status asked for cannot be stored (unknown status, times, rule, visibility)."""


def end_at_time_of_day(hours: int, minutes: int, zone: str, after: float) -> int:
    """The first HH:MM in ``zone`` later than ``after`` (POSIX seconds): that day's, or the next
    day's if it has passed -- what "until 06:00" means to someone setting a status at 22:00,
    whether by phone (``*30SHHMM``) or with ``switchboard set-status --until HH:MM``."""
    if not (0 <= hours <= 23 and 0 <= minutes <= 59):
        raise BadStatus(f"{hours:02d}:{minutes:02d} is no time of day")
    local = dt.datetime.fromtimestamp(after, ZoneInfo(zone))
    end = local.replace(hour=hours, minute=minutes, second=0, microsecond=0)
    if end.timestamp() <= after:
        end = (local + dt.timedelta(days=1)).replace(hour=hours, minute=minutes, second=0, microsecond=0)
    return int(end.timestamp())


def check_allowed(store, actor: str, target: str) -> None:
    """Raise NotAllowed unless ``actor`` may set or clear ``target``'s status."""
    employee = store.employee(target)
    if employee is None:
        raise BadStatus(f"ext {target} is no employee of the loaded config")
    if actor == target:
        return
    who = store.employee(actor)
    if who is None:
        raise NotAllowed(f"ext {actor} is no employee: it may not set the status of ext {target}")
    if who.company != employee.company:
        raise NotAllowed(f"ext {actor} ({who.company}) may not set the status of ext {target} of "
                         f"company {employee.company}")
    if who.role == "admin" or actor in employee.status_delegates:
        return
    allowed = ", ".join(employee.status_delegates) or "nobody else"
    raise NotAllowed(f"ext {actor} ({who.role}) may not set the status of ext {target}: only ext {target}, "
                     f"an admin, or those ext {target} authorised ({allowed})")


def _company_of(store, target: str):
    return next(c for c in store.companies() if c.id == store.employee(target).company)


def set_status(store, actor: str, target: str, status: str, *, start: int, end: int | None = None,
               reason: str = "", alternate: str = "", visibility: str = "everyone",
               every: str | None = None, duration: int | None = None) -> list[ReferralInterval]:
    """Store a manual status; returns the intervals written.

    One-off: from ``start`` to ``end`` (None: for a year, until cleared).  Recurring:
    ``every`` is an RFC 5545 RRULE (``FREQ=WEEKLY;BYDAY=MO``) starting at ``start``
    in the company's time zone, each occurrence lasting ``duration`` seconds.
    """
    check_allowed(store, actor, target)
    company = _company_of(store, target)
    if status not in company.statuses:
        raise BadStatus(f"unknown status {status!r}; company {company.id} has {', '.join(company.statuses)}")
    if visibility not in VISIBILITY_CODES:
        raise BadStatus(f"visibility {visibility!r}: expected one of {', '.join(VISIBILITY_CODES)}")
    for name, text in (("reason", reason), ("alternate", alternate)):
        if any(ord(c) < 32 for c in text) or len(text) > 200:
            raise BadStatus(f"{name} must be one line of at most 200 characters")
    if every is None:
        end = start + RECURRING_AHEAD if end is None else end
        if end <= start:
            raise BadStatus("the status ends before it starts")
        intervals = [ReferralInterval(start, end, status, reason, alternate, visibility, MANUAL)]
        source = MANUAL
    else:
        if not duration or duration <= 0:
            raise BadStatus("a recurring status needs a duration (how long each occurrence lasts)")
        intervals = _occurrences(every, start, duration, company.timezone, status, reason, alternate, visibility)
        source = RECURRING
    store.put_referrals(target, source, intervals)
    return intervals


def _occurrences(rule: str, start: int, duration: int, zone: str, status: str, reason: str, alternate: str,
                 visibility: str) -> list[ReferralInterval]:
    tz = ZoneInfo(zone)
    first = dt.datetime.fromtimestamp(start, tz).replace(tzinfo=None)     # wall clock: DST-correct repeats
    try:
        rule_set = rrulestr(rule.removeprefix("RRULE:"), dtstart=first)
    except (ValueError, TypeError) as exc:
        raise BadStatus(f"recurrence rule {rule!r}: {exc}") from None
    out = []
    horizon = start + RECURRING_AHEAD
    for when in rule_set:
        begin = int(when.replace(tzinfo=tz).timestamp())
        if begin >= horizon or len(out) >= MAX_OCCURRENCES:
            break
        out.append(ReferralInterval(begin, begin + duration, status, reason, alternate, visibility, RECURRING))
    if not out:
        raise BadStatus(f"recurrence rule {rule!r} has no occurrence in the coming year")
    return out


def clear_status(store, actor: str, target: str) -> list[str]:
    """Remove the manual statuses of ``target`` (one-off and recurring); returns the sources cleared."""
    check_allowed(store, actor, target)
    return [source for source in (MANUAL, RECURRING) if store.clear_referrals(target, source)]
