"""YAML config documents -> validated :class:`~fastpath.model.Config`, or every problem.

Reading never stops at the first mistake: each bad value becomes a
:class:`~fastpath.errors.Problem` with its YAML path and line, reading goes on,
and :class:`~fastpath.errors.ConfigError` carries them all.  A config with
problems never yields a model, not even a partial one.

References between parts of a company (a number routed to ``ivr:main``, a
divert to ``extension:600``) are resolved against a directory of names
gathered before the details are read, so the YAML may use them in any order.
"""
from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import re
import unicodedata
from dataclasses import dataclass, replace
from typing import Callable, Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigError, PhoneNumberError, Problem
from .model import (DIVERT_CONDITIONS, ICM_RING, ICM_SOURCES, NUMBER_MODES, REFERRAL_ACTIONS,
                    REFERRAL_STATUSES, ROLES, STRATEGIES, WEEKDAYS, IcmStep, ReferralAction,
                    Company, Config, Department, Destination, Diverts, Employee,
                    IvrMenu, Number, Schedule)
from .emergency import is_emergency
from .phone import is_known_region, to_e164
from .yaml_source import DOCUMENT, YamlInt, load_yaml

HANGUP_CAUSES = ("NORMAL_CLEARING", "USER_BUSY", "NO_ANSWER", "CALL_REJECTED",
                 "UNALLOCATED_NUMBER", "NO_ROUTE_DESTINATION", "NORMAL_TEMPORARY_FAILURE")
IVR_DIGITS = "0123456789*#"

_COMPANY_KEYS = ("id", "name", "country", "timezone", "sip_domain", "city_code",
                 "outbound_caller_id", "defaults", "language", "referral", "employees",
                 "departments", "schedules", "numbers", "ivr")
_EMPLOYEE_KEYS = ("extension", "name", "role", "email", "mobile", "sip_password",
                  "sip_a1_hash", "mobile_after", "diverts", "referral", "status_delegates")
_REFERRAL_KEYS = ("statuses", "default_action", "actions")
_ICM_KEYS = ("sources", "max_age_days", "ring", "timeout", "on_failure", "default", "except")
_LANGUAGES = ("en", "de", "fr", "es", "it", "nl", "pt", "ru", "sv", "ja", "zh", "he", "hu", "pl", "th")
_DEPARTMENT_KEYS = ("extension", "name", "members", "strategy", "step_seconds",
                    "timeout", "no_answer")
_NUMBER_KEYS = ("number", "mode", "schedule", "route", "open", "closed", "icm")
_MENU_KEYS = ("greeting", "timeout", "retries", "options", "on_timeout", "on_invalid")
_TARGET_KINDS = ("employee", "department", "extension", "ivr", "voicemail",
                 "external", "fax", "hangup")

_IDENTIFIER = re.compile(r"[a-z0-9_-]+")
_EXTENSION = re.compile(r"[0-9]{2,6}")
_CITY_CODE = re.compile(r"[0-9]{1,6}")
_A1_HASH = re.compile(r"[0-9a-f]{32}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_HOST_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_TIME_RANGE = re.compile(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_MAX_HOLIDAY_RANGE = 366    # days; anything longer is a typo, not a holiday


# --------------------------------------------------------------------------
# Where things are, and collecting what is wrong with them


@dataclass(frozen=True)
class _At:
    """The place of a value: file, YAML path and line, for the problem report."""

    source: str
    path: str
    line: int | None

    def key(self, mapping: dict, key: object) -> _At:
        line = getattr(mapping, "key_lines", {}).get(key, getattr(mapping, "line", self.line))
        name = _key_name(key)
        return _At(self.source, f"{self.path}.{name}" if self.path else name, line)

    def item(self, sequence: list, index: int) -> _At:
        lines = getattr(sequence, "item_lines", None)
        return _At(self.source, f"{self.path}[{index}]", lines[index] if lines else self.line)

    def within(self, value: object) -> _At:
        """The place of a mapping or list's own first line (for "missing key")."""
        return replace(self, line=getattr(value, "line", self.line))

    def __str__(self) -> str:
        path = self.path or DOCUMENT
        return f"{path} (line {self.line})" if self.line is not None else path


class _Invalid(Exception):
    """A value is wrong; the message says what to write instead."""


class _Report:
    """Every problem found so far."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, at: _At, message: str) -> None:
        self.problems.append(Problem(at.path or DOCUMENT, message, at.line, at.source))

    def convert(self, at: _At, convert: Callable, value: object, *args: object):
        """``convert(value, *args)``, or ``None`` after recording why it failed."""
        try:
            return convert(value, *args)
        except _Invalid as exc:
            self.add(at, str(exc))
            return None


class _Fields:
    """One YAML mapping being read: flags unknown, repeated and missing keys."""

    def __init__(self, report: _Report, data: dict, at: _At, allowed: tuple[str, ...]):
        self.report, self.data, self.at = report, data, at.within(data)
        for key in data:
            if key not in allowed:
                name = _key_name(key)
                close = difflib.get_close_matches(name, allowed, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                report.add(at.key(data, key), f"unknown key '{name}'; {hint}"
                           f"expected one of: {', '.join(allowed)}")
        _report_duplicates(report, data, at)

    def given(self, key: str) -> bool:
        """Present and not null (an empty ``key:`` counts as not given)."""
        return self.data.get(key) is not None

    def where(self, key: str) -> _At:
        return self.at.key(self.data, key)

    def require(self, key: str, why: str = "") -> bool:
        """Whether ``key`` is given; if not, say that it is required."""
        if self.given(key):
            return True
        at, state = (self.where(key), "is empty") if key in self.data else (self.at, "is missing")
        self.report.add(at, f"required key '{key}' {state}{why}")
        return False

    def get(self, key: str, convert: Callable, *args: object,
            default: object = None, required: bool = False):
        """The converted value of ``key``, ``default`` if absent, ``None`` if invalid."""
        if not self.given(key):
            if required:
                self.require(key)
            return default
        return self.report.convert(self.where(key), convert, self.data[key], *args)

    def mapping(self, key: str, allowed: tuple[str, ...], what: str) -> _Fields | None:
        """The mapping under ``key``, ``None`` if absent or not a mapping."""
        if not self.given(key):
            return None
        return _mapping(self.report, self.data[key], self.where(key), allowed, what)

    def items(self, key: str, what: str) -> list[tuple[object, _At]]:
        """``(item, place)`` pairs of the list under ``key`` (none if absent)."""
        value, at = self.data.get(key), self.where(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.report.add(at, f"expected a list of {what}, got {_describe(value)}")
            return []
        return [(item, at.item(value, i)) for i, item in enumerate(value)]

    def entries(self, key: str, what: str) -> list[tuple[str, object, _At]]:
        """``(name, value, place)`` of a mapping of named things (menus, schedules)."""
        value, at = self.data.get(key), self.where(key)
        if value is None:
            return []
        if not isinstance(value, dict):
            self.report.add(at, f"expected {what}s by name (a mapping), got {_describe(value)}")
            return []
        _report_duplicates(self.report, value, at)
        result, seen = [], set()
        for key_value, item in value.items():
            item_at = at.key(value, key_value)
            name = self.report.convert(item_at, _identifier, key_value)
            if name is not None and name in seen:
                self.report.add(item_at, f"{what} '{name}' is defined twice")
            seen.add(name)
            result.append((name or _key_name(key_value), item, item_at))
        return result


def _a(noun: str) -> str:
    """The noun with its indefinite article, for messages."""
    return f"{'an' if noun[0] in 'aeiouAEIOU' else 'a'} {noun}"


def _key_name(key: object) -> str:
    """A mapping key as written, for paths and messages."""
    return _scalar_text(key) or str(key)


def _report_duplicates(report: _Report, data: dict, at: _At) -> None:
    for key, line in getattr(data, "duplicate_keys", ()):
        report.add(replace(at.key(data, key), line=line),
                   f"key '{_key_name(key)}' is given twice in the same mapping; "
                   "YAML would silently keep only the last one")


def _mapping(report: _Report, value: object, at: _At, allowed: tuple[str, ...],
             what: str) -> _Fields | None:
    """Read ``value`` as a mapping, or say it is not one and return ``None``."""
    if not isinstance(value, dict):
        report.add(at, f"expected {what} (a mapping), got {_describe(value)}")
        return None
    return _Fields(report, value, at, allowed)


class _Registry:
    """Names unique across the whole config: extensions, numbers, company ids."""

    def __init__(self, report: _Report):
        self.report = report
        self.first: dict[tuple[str, str], _At] = {}
        self.dialled: dict[str, tuple[str, str, _At]] = {}    # digits -> (space, name, where)

    def claim(self, space: str, name: str | None, at: _At) -> None:
        if name is None:
            return
        first = self.first.setdefault((space, name), at)
        if first is not at:
            self.report.add(at, f"{space} {name} is already used by {self._where(first, at)}; "
                            f"each {space} must be unique across all companies")
        elif space in ("extension", "number"):
            # What a caller dials names one thing: the engines may look a short
            # dialled string up as an extension first, a long one as a number first.
            digits = name.lstrip("+")
            other_space, other, where = self.dialled.setdefault(digits, (space, name, at))
            if other_space != space:
                self.report.add(at, f"{space} {name} has the same digits as {other_space} {other} at "
                                    f"{self._where(where, at)}; a dialled number must name one thing")

    @staticmethod
    def _where(first: _At, at: _At) -> str:
        return str(first) if first.source == at.source else f"{first} in {first.source}"


# --------------------------------------------------------------------------
# Scalar values: each returns the clean value or raises _Invalid


def _describe(value: object) -> str:
    """A value as the person wrote it, for "got ..." in messages."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return (f"{str(value).lower()} (YAML reads unquoted yes/no/on/off as true/false; "
                "put text in quotes)")
    if isinstance(value, YamlInt) and value.text != str(int(value)):
        return f"{value.text} (which YAML reads as the number {int(value)}; quote it)"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57]) + "..."
    if isinstance(value, dt.datetime):
        return f"the date and time {value.isoformat(' ')}"
    if isinstance(value, dt.date):
        return f"the date {value.isoformat()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _scalar_text(value: object) -> str | None:
    """Text of a string or integer as written (``0123`` stays "0123"), else ``None``."""
    if isinstance(value, str):
        return value
    if isinstance(value, YamlInt):
        return value.text
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _text(value: object) -> str:
    """One line of text: names and sound files end up in SIP headers and dialplans."""
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"expected text, got {_describe(value)}")
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise _Invalid(f"{_describe(value)} contains control characters (newline, tab, ...); "
                       "write it on one line")
    return value


def _identifier(value: object) -> str:
    text = _scalar_text(value)
    if text is None or not _IDENTIFIER.fullmatch(text):
        raise _Invalid(f"expected a name of lowercase letters, digits, '_' and '-', "
                       f"got {_describe(value)}")
    return text


def _extension(value: object, region: str | None = None) -> str:
    """2 to 6 digits; YAML ints are read as written, so 0123 stays '0123'.  With the company's
    ``region`` (for an employee or department of its own), never one of its country's
    emergency numbers: the dialplan sends those to the carrier before any extension."""
    text = _scalar_text(value)
    if text is None or not _EXTENSION.fullmatch(text):
        raise _Invalid(f"an extension is 2 to 6 digits, got {_describe(value)}")
    if is_emergency(text, region):
        raise _Invalid(f"{text} is an emergency number in {region}: phones dialling it reach the emergency "
                       f"services, so it cannot be an extension")
    return text


def _city_code(value: object) -> str:
    text = _scalar_text(value)
    if text is None or not _CITY_CODE.fullmatch(text):
        raise _Invalid(f"a city code is 1 to 6 digits, got {_describe(value)}")
    return text


def _whole(value: object, low: int, high: int, unit: str = "seconds") -> int:
    """An int in range; quoted numbers are refused, like every other wrong type."""
    if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
        return int(value)
    hint = "; remove the quotes" if isinstance(value, str) and value.strip().isdigit() else ""
    raise _Invalid(f"expected a whole number of {unit} from {low} to {high}, "
                   f"got {_describe(value)}{hint}")


def _choice(value: object, choices: tuple[str, ...]) -> str:
    if value not in choices or not isinstance(value, str):
        raise _Invalid(f"expected one of {', '.join(choices)}; got {_describe(value)}")
    return value


def _phone(value: object, region: str | None) -> str:
    """E.164 digits; national numbers are read in ``region`` (the company's country)."""
    text = _scalar_text(value)
    if text is None:
        raise _Invalid(f"expected a phone number, got {_describe(value)}")
    try:
        return to_e164(text, region)
    except PhoneNumberError as exc:
        raise _Invalid(str(exc)) from None


def _email(value: object) -> str:
    """Just enough to catch typos; deliverability is the mail server's business."""
    text = _text(value)
    if not _EMAIL.fullmatch(text):
        raise _Invalid("expected an e-mail address like 'anna@example.com', "
                       f"got {_describe(value)}")
    return text


def _password(value: object) -> str:
    """A clear SIP password; digits-only ones arrive as YAML ints and are kept as written."""
    text = _scalar_text(value)
    if text is None or len(text) < 8:
        raise _Invalid("a SIP password needs at least 8 characters"
                       + ("" if text is not None else f", got {_describe(value)}"))
    return text


def _a1_hash(value: object) -> str:
    if not isinstance(value, str) or not _A1_HASH.fullmatch(value):
        raise _Invalid("expected 32 lowercase hex digits, the md5 of "
                       f"'extension:sip_domain:password'; got {_describe(value)}")
    return value


def _country(value: object) -> str:
    if value is False:
        raise _Invalid("expected a two-letter ISO country code like GB, got false: YAML reads "
                       "an unquoted NO (Norway) as false; write it in quotes, 'NO'")
    code = value.upper() if isinstance(value, str) else None
    if code is None or not is_known_region(code):
        raise _Invalid(f"expected a two-letter ISO country code like GB, got {_describe(value)}")
    return code


def _timezone(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected an IANA time zone like Europe/London, got {_describe(value)}")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise _Invalid(f"unknown time zone {value!r}; use an IANA name like "
                       "Europe/London or America/New_York") from None
    return value


def _sip_domain(value: object) -> str:
    """A DNS name, lowercased: it is part of every A1 hash, so one spelling is used."""
    host = value.lower() if isinstance(value, str) else ""
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(part) for part in host.split(".")):
        raise _Invalid(f"expected a domain name like acme.example.com, got {_describe(value)}")
    return host


def _ivr_digit(value: object) -> str:
    text = _scalar_text(value)
    if text is None or len(text) != 1 or text not in IVR_DIGITS:
        raise _Invalid(f"an option is a single key 0-9, '*' or '#' (quote * and #), "
                       f"got {_describe(value)}")
    return text


# --------------------------------------------------------------------------
# Business hours and holidays


def _interval(value: object) -> tuple[int, int]:
    """'09:00-17:30' -> (540, 1050); the end may be 24:00."""
    match = _TIME_RANGE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise _Invalid(f"expected opening hours like '09:00-17:30', got {_describe(value)}")
    h1, m1, h2, m2 = map(int, match.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2):
        raise _Invalid(f"{value!r} is not between 00:00 and 24:00")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start >= end:
        raise _Invalid(f"{value!r} does not end after it starts; split hours past midnight "
                       "into '22:00-24:00' and the next day's '00:00-06:00'")
    return start, end


def _clock(interval: tuple[int, int]) -> str:
    return "-".join(f"{minute // 60:02d}:{minute % 60:02d}" for minute in interval)


def _day_hours(report: _Report, value: object, at: _At) -> tuple[tuple[int, int], ...]:
    """Sorted, non-overlapping intervals of one weekday; null, false or [] is closed."""
    if value is None or value is False:
        return ()
    if isinstance(value, str):
        items = [(value, at)]
    elif isinstance(value, list):
        items = [(item, at.item(value, i)) for i, item in enumerate(value)]
    else:
        report.add(at, "expected a list of opening hours like ['09:00-12:30', "
                   f"'13:30-17:30'], got {_describe(value)}")
        return ()
    found = [(interval, item_at) for item, item_at in items
             if (interval := report.convert(item_at, _interval, item)) is not None]
    found.sort(key=lambda pair: pair[0])
    for (earlier, _), (later, later_at) in zip(found, found[1:]):
        if later[0] < earlier[1]:
            report.add(later_at, f"{_clock(later)} overlaps {_clock(earlier)} on the same day")
    return tuple(interval for interval, _ in found)


def _date(value: object) -> dt.date:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value.strip()):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            raise _Invalid(f"{value!r} is not a day of the calendar") from None
    raise _Invalid(f"expected a date like 2026-12-25, got {_describe(value)}")


def _holiday(value: object) -> list[dt.date]:
    """One date, or a range '2026-12-24..2026-12-26' expanded day by day."""
    if not (isinstance(value, str) and ".." in value):
        return [_date(value)]
    first, last = map(_date, value.split("..", 1))
    days = (last - first).days
    if days < 0:
        raise _Invalid(f"{value!r} ends before it starts")
    if days >= _MAX_HOLIDAY_RANGE:
        raise _Invalid(f"{value!r} is longer than a year; is a year mistyped?")
    return [first + dt.timedelta(days=n) for n in range(days + 1)]


# --------------------------------------------------------------------------
# Destinations, resolved against the names a company defines


@dataclass(frozen=True)
class _Directory:
    """What one company's references may point at."""

    region: str | None
    employees: frozenset[str]
    departments: frozenset[str]
    menus: frozenset[str]
    schedules: frozenset[str]

    @classmethod
    def scan(cls, data: dict, region: str | None) -> _Directory:
        """Collect names leniently; their own problems are reported where they are read."""
        def extensions(key: str) -> frozenset[str]:
            items = data.get(key)
            if not isinstance(items, list):
                return frozenset()
            return frozenset(_scalar_text(item.get("extension")) for item in items
                             if isinstance(item, dict)) - {None}

        def names(key: str) -> frozenset[str]:
            named = data.get(key)
            return frozenset(map(_key_name, named)) if isinstance(named, dict) else frozenset()

        return cls(region, extensions("employees"), extensions("departments"),
                   names("ivr"), names("schedules"))

    def extension(self, ext: str, kinds: tuple[str, ...]) -> str:
        """The kind of ``ext`` ("employee" or "department"), which must be one of ``kinds``."""
        pools = {"employee": self.employees, "department": self.departments}
        kind = next((k for k, pool in pools.items() if ext in pool), None)
        if kind in kinds:
            return kind
        wanted = " or ".join(kinds)
        if kind is None:
            known = sorted(frozenset().union(*(pools[k] for k in kinds)))
            listing = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
            plural = " and ".join(k + "s" for k in kinds)
            raise _Invalid(f"unknown extension '{ext}' (no {wanted} has it); "
                           + (f"{plural}: {listing}" if known else f"there are no {plural}"))
        raise _Invalid(f"{ext} is {_a(kind)}, not {_a(wanted)}")

    def target(self, value: object) -> Destination:
        """'KIND:REF' as written in numbers, IVR options and departments."""
        if not isinstance(value, str):
            raise _Invalid("expected a destination like 'employee:2001', 'ivr:main' or "
                           f"'external:+44 20 7946 0123', got {_describe(value)}")
        kind, _, ref = (part.strip() for part in value.partition(":"))
        if kind == "hangup":
            cause = ref or "NORMAL_CLEARING"
            if cause not in HANGUP_CAUSES:
                raise _Invalid(f"unknown hangup cause '{cause}'; expected one of "
                               f"{', '.join(HANGUP_CAUSES)}")
            return Destination("hangup", cause)
        if kind not in _TARGET_KINDS:
            raise _Invalid(f"unknown destination {value!r}; expected KIND:REF with KIND "
                           f"one of {', '.join(_TARGET_KINDS)}")
        if not ref:
            example = {"ivr": "main", "external": "+44 20 7946 0123"}.get(kind, "2001")
            raise _Invalid(f"{value!r} does not say which {kind}: add it after a colon, "
                           f"e.g. '{kind}:{example}'")
        if kind == "external":
            return Destination(kind, _phone(ref, self.region))
        if kind == "ivr":
            if ref not in self.menus:
                known = ", ".join(sorted(self.menus)) or "none are defined"
                raise _Invalid(f"unknown IVR menu '{ref}'; menus: {known}")
            return Destination(kind, ref)
        if kind in ("extension", "voicemail"):
            found = self.extension(ref, ("employee", "department"))
            return Destination(found if kind == "extension" else kind, ref)
        self.extension(ref, ("department",) if kind == "department" else ("employee",))
        return Destination(kind, ref)

    def divert(self, value: object, own: str | None) -> Destination | None:
        """off | voicemail | extension:NNNN | external:NUMBER, for one employee."""
        if value is None or value is False or value == "off":
            return None
        if value == "voicemail":
            return Destination("voicemail", own)
        kind, _, ref = value.partition(":") if isinstance(value, str) else ("", "", "")
        if kind.strip() not in ("extension", "external"):
            raise _Invalid("expected off, voicemail, extension:NNNN or external:NUMBER, "
                           f"got {_describe(value)}")
        if kind.strip() == "extension" and ref.strip() == own:
            raise _Invalid(f"divert to itself: {own} cannot forward to {own}; "
                           "use voicemail or off")
        return self.target(value)


def _destination(report: _Report, value: object, at: _At,
                 directory: _Directory) -> Destination | None:
    """'KIND:REF' or {to: 'KIND:REF', greeting: 'file.wav'}."""
    if not isinstance(value, dict):
        return report.convert(at, directory.target, value)
    fields = _Fields(report, value, at, ("to", "greeting"))
    target = fields.get("to", directory.target, required=True)
    greeting = fields.get("greeting", _text)
    return Destination(target.kind, target.ref, greeting) if target else None


def _diverts(report: _Report, fields: _Fields | None, own: str | None,
             directory: _Directory, default_after: int) -> Diverts:
    """Call forwarding; ``no_answer`` alone may be ``{to: ..., after: seconds}``.

    Chains and loops between employees are allowed: the engine stops them at call time.
    """
    if fields is None:
        return Diverts(no_answer_after=default_after)
    found = {}
    after = default_after
    for condition in DIVERT_CONDITIONS:
        timed = condition == "no_answer" and isinstance(fields.data.get(condition), dict)
        if timed:
            timer = _Fields(report, fields.data[condition], fields.where(condition),
                            ("to", "after"))
            found[condition] = timer.get("to", directory.divert, own, required=True)
            after = timer.get("after", _whole, 5, 300, default=default_after)
        else:
            found[condition] = fields.get(condition, directory.divert, own)
    return Diverts(no_answer_after=after, **found)


# --------------------------------------------------------------------------
# The parts of a company


@dataclass(frozen=True)
class _Context:
    """What every part of one company is read against."""

    report: _Report
    registry: _Registry
    directory: _Directory
    company: str | None
    sip_domain: str | None
    no_answer_seconds: int | None
    ring_timeout: int | None
    statuses: tuple[str, ...] = REFERRAL_STATUSES
    referral_actions: tuple = ()        # (status, action or _MOBILE divert) company defaults
    referral_default: object = None

    def destination(self, fields: _Fields, key: str,
                    required: bool = False) -> Destination | None:
        if not (fields.require(key) if required else fields.given(key)):
            return None
        return _destination(self.report, fields.data[key], fields.where(key), self.directory)


def _employee(ctx: _Context, fields: _Fields) -> Employee:
    """One employee; a clear ``sip_password`` leaves the model only as its A1 hash."""
    ext = fields.get("extension", _extension, ctx.directory.region, required=True)
    ctx.registry.claim("extension", ext, fields.where("extension"))
    name = fields.get("name", _text, required=True)
    role = fields.get("role", _choice, ROLES, default="user")
    email = fields.get("email", _email)
    mobile = fields.get("mobile", _phone, ctx.directory.region)
    password = fields.get("sip_password", _password)
    a1_hash = fields.get("sip_a1_hash", _a1_hash)
    if fields.given("sip_password") and fields.given("sip_a1_hash"):
        ctx.report.add(fields.where("sip_a1_hash"),
                       "give either sip_password or sip_a1_hash, not both")
    elif password is not None:
        a1_hash = hashlib.md5(f"{ext}:{ctx.sip_domain}:{password}".encode()).hexdigest()
    mobile_after = fields.get("mobile_after", _whole, 5, 300)
    if fields.given("mobile_after") and not fields.given("mobile"):
        ctx.report.add(fields.where("mobile_after"), "mobile_after needs a mobile number to ring")
    diverts = _diverts(ctx.report, fields.mapping("diverts", DIVERT_CONDITIONS, "diverts"),
                       ext, ctx.directory, ctx.no_answer_seconds)
    own = _referral_actions(ctx, fields.mapping("referral", ctx.statuses, "status actions"), ext)
    actions = dict(ctx.referral_actions)
    actions.update(own)
    delegates: list[str] = []
    for item, at in fields.items("status_delegates", "employee extensions"):
        other = ctx.report.convert(at, _extension, item)
        if other is None or ctx.report.convert(at, ctx.directory.extension, other, ("employee",)) is None:
            continue
        if other == ext:
            ctx.report.add(at, f"{ext} may always set its own status; list others here")
        elif other in delegates:
            ctx.report.add(at, f"{other} is listed twice")
        else:
            delegates.append(other)
    resolve = _MobileResolver(mobile)
    return Employee(extension=ext, name=name, role=role, company=ctx.company, email=email,
                    mobile=mobile, a1_hash=a1_hash, mobile_after=mobile_after,
                    diverts=diverts,
                    referral=tuple((status, resolve(action)) for status, action in actions.items()),
                    referral_default=resolve(ctx.referral_default or ReferralAction("voicemail")),
                    status_delegates=tuple(delegates))


_MOBILE = Destination("mobile", "")     # "divert to the employee's own mobile", resolved per employee


class _MobileResolver:
    """Turns a divert "to mobile" into the employee's mobile (voicemail for who has none)."""

    def __init__(self, mobile: str | None):
        self.mobile = mobile

    def __call__(self, action: ReferralAction) -> ReferralAction:
        if action.to is not _MOBILE:
            return action
        if self.mobile is None:
            return ReferralAction("voicemail")
        return ReferralAction("divert", Destination("external", self.mobile))


def _referral_action(value: object, directory: _Directory, own: str | None) -> ReferralAction:
    """voicemail | ring | alternate | {action: divert, to: DEST or mobile}."""
    if isinstance(value, str) and value in ("voicemail", "ring", "alternate"):
        return ReferralAction(value)
    if not isinstance(value, dict) or set(value) - {"action", "to"} or value.get("action") not in REFERRAL_ACTIONS:
        raise _Invalid(f"expected voicemail, ring, alternate or {{action: divert, to: DEST}} (DEST: "
                       f"mobile, employee:NNNN, department:NNN, voicemail:NNNN, external:NUMBER), "
                       f"got {_describe(value)}")
    if value["action"] != "divert":
        if value.get("to") is not None:
            raise _Invalid(f"'to' goes with action divert, not {value['action']}")
        return ReferralAction(value["action"])
    to = value.get("to")
    if to == "mobile":
        return ReferralAction("divert", _MOBILE)
    if to is None:
        raise _Invalid("action divert needs 'to': mobile, employee:NNNN, department:NNN, voicemail:NNNN "
                       "or external:NUMBER")
    target = directory.target(to)
    if target.kind not in ("employee", "department", "voicemail", "external"):
        raise _Invalid(f"a status can divert to an employee, a department, a voicemail box, a mobile or "
                       f"an external number, not {target.kind}")
    if own is not None and target.kind == "employee" and target.ref == own:
        raise _Invalid(f"divert to itself: {own} cannot send its own callers back to {own}; use voicemail or ring")
    return ReferralAction("divert", target)


def _referral_actions(ctx: _Context, fields: _Fields | None, own: str | None) -> dict[str, ReferralAction]:
    """``status: action`` pairs (the allowed keys are the company's statuses)."""
    if fields is None:
        return {}
    found = {}
    for status in fields.data:
        if status == "available":
            ctx.report.add(fields.where(status), "available always rings: it has no action")
        elif status in ctx.statuses:
            action = fields.get(status, _referral_action, ctx.directory, own)
            if action is not None:
                found[status] = action
    return found


def _icm(ctx: _Context, fields: _Fields | None) -> IcmStep | None:
    """A number's ICM step (see model.IcmStep)."""
    if fields is None:
        return None
    sources: list[str] = []
    for item, at in fields.items("sources", "ICM sources"):
        source = ctx.report.convert(at, _choice, item, ICM_SOURCES)
        if source in sources:
            ctx.report.add(at, f"source {source} is listed twice")
        elif source is not None:
            sources.append(source)
    if fields.data.get("sources") == []:
        ctx.report.add(fields.where("sources"), f"list at least one of {', '.join(ICM_SOURCES)}")
    on_failure = ctx.destination(fields, "on_failure")
    if on_failure is not None and on_failure.kind != "department":
        ctx.report.add(fields.where("on_failure"), f"on_failure is a department (the queue that takes the call "
                       f"when the manager cannot), not {_a(on_failure.kind)}")
    exceptions: list[str] = []
    for item, at in fields.items("except", "employee extensions"):
        ext = ctx.report.convert(at, _extension, item)
        if ext is not None and ctx.report.convert(at, ctx.directory.extension, ext, ("employee",)) is not None:
            exceptions.append(ext)
    return IcmStep(
        sources=tuple(sources) or ICM_SOURCES,
        max_age_days=fields.get("max_age_days", _whole, 0, 3650, "days", default=0),
        ring=fields.get("ring", _choice, ICM_RING, default="manager"),
        timeout=fields.get("timeout", _whole, 5, 300, default=20),
        on_failure=on_failure,
        default=ctx.destination(fields, "default"),
        exceptions=tuple(exceptions),
    )


def _members(ctx: _Context, fields: _Fields) -> tuple[str, ...]:
    """Employee extensions in ring order; departments cannot nest."""
    if not fields.require("members", " (the extensions of the employees to ring)"):
        return ()
    items = fields.items("members", "employee extensions")
    if not items and isinstance(fields.data["members"], list):
        ctx.report.add(fields.where("members"), "a department needs at least one member")
    members: dict[str, _At] = {}
    for item, at in items:
        ext = ctx.report.convert(at, _extension, item)
        if ext is None or ctx.report.convert(at, ctx.directory.extension, ext,
                                             ("employee",)) is None:
            continue
        if ext in members:
            ctx.report.add(at, f"{ext} is already a member ({members[ext].path})")
        else:
            members[ext] = at
    return tuple(members)


def _department(ctx: _Context, fields: _Fields) -> Department:
    ext = fields.get("extension", _extension, ctx.directory.region, required=True)
    ctx.registry.claim("extension", ext, fields.where("extension"))
    return Department(
        extension=ext,
        name=fields.get("name", _text, required=True),
        company=ctx.company,
        members=_members(ctx, fields),
        strategy=fields.get("strategy", _choice, STRATEGIES, default="simultaneous"),
        step_seconds=fields.get("step_seconds", _whole, 1, 300, default=15),
        timeout=fields.get("timeout", _whole, 5, 600, default=ctx.ring_timeout),
        no_answer=ctx.destination(fields, "no_answer"),
    )


def _schedule(ctx: _Context, key: str, fields: _Fields) -> Schedule:
    """Opening hours per weekday (a missing day is closed) and closed holidays."""
    hours = fields.mapping("hours", WEEKDAYS, "opening hours per weekday (mon ... sun)")
    fields.require("hours")
    week = tuple(_day_hours(ctx.report, hours.data.get(day), hours.where(day)) if hours else ()
                 for day in WEEKDAYS)
    holidays: set[dt.date] = set()
    for item, at in fields.items("holidays", "dates like 2026-12-25"):
        holidays.update(ctx.report.convert(at, _holiday, item) or ())
    return Schedule(key, week, tuple(sorted(holidays)))


def _number(ctx: _Context, fields: _Fields) -> Number:
    """A DID: ``route`` with mode always, ``schedule`` + ``open``/``closed`` otherwise."""
    number = fields.get("number", _phone, ctx.directory.region, required=True)
    ctx.registry.claim("number", number and f"+{number}", fields.where("number"))
    mode = fields.get("mode", _choice, NUMBER_MODES,
                      default="schedule" if fields.given("schedule") else "always")
    schedule = fields.get("schedule", _identifier)
    if schedule is not None and schedule not in ctx.directory.schedules:
        known = ", ".join(sorted(ctx.directory.schedules)) or "none are defined"
        ctx.report.add(fields.where("schedule"),
                       f"unknown schedule '{schedule}'; schedules: {known}")
    if mode is not None:
        used = ("route",) if mode == "always" else ("schedule", "open", "closed")
        for key in ("route", "schedule", "open", "closed"):
            if key in used:
                fields.require(key, f" with mode {mode}")
            elif fields.given(key):
                ctx.report.add(fields.where(key), f"'{key}' is not used with mode {mode}, "
                               f"which takes {', '.join(used)}")
    route, open_, closed = (ctx.destination(fields, key) for key in ("route", "open", "closed"))
    icm = _icm(ctx, fields.mapping("icm", _ICM_KEYS, "an ICM step"))
    if mode == "always":
        return Number(number, ctx.company, mode, open=route, icm=icm)
    return Number(number, ctx.company, mode, open=open_, closed=closed, schedule=schedule, icm=icm)


def _options(ctx: _Context, fields: _Fields) -> tuple[tuple[str, Destination], ...]:
    """The menu's {key pressed: destination} mapping, in YAML order."""
    if not fields.require("options", " (key pressed: destination)"):
        return ()
    table, at = fields.data["options"], fields.where("options")
    if not isinstance(table, dict) or not table:
        ctx.report.add(at, "expected at least one option like {1: 'department:600'}, "
                       f"got {_describe(table)}")
        return ()
    _report_duplicates(ctx.report, table, at)
    options: dict[str, Destination | None] = {}
    for key, value in table.items():
        option_at = at.key(table, key)
        digit = ctx.report.convert(option_at, _ivr_digit, key)
        if digit in options:
            ctx.report.add(option_at, f"option {digit} is given twice")
        elif digit is not None:
            options[digit] = _destination(ctx.report, value, option_at, ctx.directory)
    return tuple(options.items())


def _menu(ctx: _Context, key: str, fields: _Fields) -> IvrMenu:
    """An IVR menu; menus may point at each other, the caller breaks any cycle."""
    greeting = fields.get("greeting", _text, required=True)
    timeout = fields.get("timeout", _whole, 1, 60, default=5)
    retries = fields.get("retries", _whole, 1, 10, "times", default=3)
    options = _options(ctx, fields)
    on_timeout = ctx.destination(fields, "on_timeout", required=True)
    on_invalid = ctx.destination(fields, "on_invalid") or on_timeout
    return IvrMenu(key, ctx.company, greeting, options, on_timeout, on_invalid,
                   timeout=timeout, retries=retries)


def _company(report: _Report, registry: _Registry, fields: _Fields) -> Company:
    """A company: its own settings first, as every part below is read against them."""
    company_id = fields.get("id", _identifier, required=True)
    registry.claim("company id", company_id, fields.where("id"))
    name = fields.get("name", _text, required=True)
    country = fields.get("country", _country, required=True)
    timezone = fields.get("timezone", _timezone, required=True)
    sip_domain = fields.get("sip_domain", _sip_domain,
                            default=f"{company_id}.switchboard.local")
    city_code = fields.get("city_code", _city_code)
    caller_id = fields.get("outbound_caller_id", _phone, country)
    no_answer_seconds, ring_timeout = 20, 60
    defaults = fields.mapping("defaults", ("no_answer_seconds", "ring_timeout"), "defaults")
    if defaults is not None:
        no_answer_seconds = defaults.get("no_answer_seconds", _whole, 5, 300, default=20)
        ring_timeout = defaults.get("ring_timeout", _whole, 5, 600, default=60)
    language = fields.get("language", _choice, _LANGUAGES, default="en")
    directory = _Directory.scan(fields.data, country)
    ctx = _Context(report, registry, directory, company_id, sip_domain, no_answer_seconds, ring_timeout)
    referral = fields.mapping("referral", _REFERRAL_KEYS, "referral statuses")
    statuses = list(REFERRAL_STATUSES)
    if referral is not None:
        for item, at in referral.items("statuses", "status names"):
            status = report.convert(at, _identifier, item)
            if status in statuses:
                report.add(at, f"status {status} is already defined" + (
                    " (built in)" if status in REFERRAL_STATUSES else ""))
            elif status is not None:
                statuses.append(status)
        ctx = replace(ctx, statuses=tuple(statuses))
        default = referral.get("default_action", _referral_action, directory, None)
        actions = _referral_actions(ctx, referral.mapping("actions", ctx.statuses, "status actions"), None)
        ctx = replace(ctx, referral_actions=tuple(actions.items()), referral_default=default)

    def listed(key: str, allowed: tuple[str, ...], what: str, read: Callable) -> tuple:
        return tuple(read(ctx, part) for item, at in fields.items(key, what + "s")
                     if (part := _mapping(report, item, at, allowed, _a(what))) is not None)

    def named(key: str, allowed: tuple[str, ...], what: str, read: Callable) -> tuple:
        return tuple(read(ctx, name, part) for name, value, at in fields.entries(key, what)
                     if (part := _mapping(report, value, at, allowed, _a(what))) is not None)

    return Company(
        id=company_id, name=name, country=country, timezone=timezone,
        sip_domain=sip_domain, no_answer_seconds=no_answer_seconds,
        ring_timeout=ring_timeout, outbound_caller_id=caller_id, city_code=city_code,
        language=language, statuses=ctx.statuses,
        employees=listed("employees", _EMPLOYEE_KEYS, "employee", _employee),
        departments=listed("departments", _DEPARTMENT_KEYS, "department", _department),
        schedules=named("schedules", ("hours", "holidays"), "schedule", _schedule),
        numbers=listed("numbers", _NUMBER_KEYS, "number", _number),
        ivr_menus=named("ivr", _MENU_KEYS, "IVR menu", _menu),
    )


# --------------------------------------------------------------------------
# Documents and files


def _companies_of(report: _Report, document: object, source: str) -> Iterator[_Fields]:
    """The companies of one document: ``companies: [...]`` or a single company."""
    root = _At(source, "", getattr(document, "line", None))
    if not isinstance(document, dict):
        got = "an empty file" if document is None else _describe(document)
        report.add(root, "expected a company (id:, name:, ...) or a list of them under "
                   f"companies:, got {got}")
        return
    if "companies" not in document:
        yield _Fields(report, document, root, _COMPANY_KEYS)
        return
    fields = _Fields(report, document, root, ("companies",))
    if document["companies"] is None or document["companies"] == []:
        report.add(fields.where("companies"), "expected at least one company")
    for item, at in fields.items("companies", "companies"):
        if (company := _mapping(report, item, at, _COMPANY_KEYS, "a company")) is not None:
            yield company


def validate(documents: list[tuple[object, str]]) -> Config:
    """Validate loaded YAML documents, each with its source name, into one :class:`Config`."""
    report = _Report()
    registry = _Registry(report)
    companies = tuple(_company(report, registry, fields) for document, source in documents
                      for fields in _companies_of(report, document, source))
    if not documents:
        report.add(_At("", "", None), "no config files given")
    if report.problems:
        raise ConfigError(report.problems)
    return Config(companies, source=", ".join(source for _, source in documents))


def _read(path: str) -> object:
    """One file's YAML document; unreadable files become a ConfigError like bad YAML."""
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except OSError as exc:
        raise ConfigError([Problem(DOCUMENT, f"cannot read the file: {exc.strerror or exc}",
                                   None, path)]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError([Problem(DOCUMENT, "the file is not UTF-8 text", line, path)]) from None
    return load_yaml(text, path)


def load_config(paths: list[str]) -> Config:
    """Read, parse and validate YAML files; every problem of every file is reported."""
    problems: list[Problem] = []
    documents = []
    for path in paths:
        try:
            documents.append((_read(path), path))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if documents or not problems:
        try:
            config = validate(documents)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:  # in the order of the files given
        raise ConfigError(sorted(problems, key=lambda p: paths.index(p.source)
                                 if p.source in paths else -1))
    return config
