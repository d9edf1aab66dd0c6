"""The validated company model: what YAML becomes once every check has passed.

Everything here is immutable and already normalised (E.164 numbers without ``+``,
minutes since midnight, IANA zone names), so the store writer never has to
re-check or re-parse anything.  Data flows one way: YAML -> this model -> store.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field

#: Where a call can be sent.  ``extension`` is resolved by the validator to
#: ``employee`` or ``department``, so it never reaches the store.
DESTINATION_KINDS = (
    "employee",    # ring one employee, following their diverts
    "department",  # ring a department (ring group) with its strategy
    "ivr",         # an IVR menu of the same company
    "voicemail",   # the voicemail box of an employee or department
    "external",    # an E.164 number through the outbound gateway
    "fax",         # receive a fax for an employee (delivered by e-mail)
    "hangup",      # end the call with a Q.850 cause name (ref)
)

ROLES = ("admin", "receptionist", "user")
STRATEGIES = ("simultaneous", "sequential", "cumulative")
NUMBER_MODES = ("always", "schedule")
DIVERT_CONDITIONS = ("always", "busy", "no_answer", "unreachable")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

#: Availability ("referral") statuses every company has; companies may add their own.
#: ``available`` means "ring as usual" (a manual available overrides the calendar).
REFERRAL_STATUSES = ("available", "meeting", "lunch", "vacation", "sick", "away")
#: What a call to an employee with a status does.  Every action but ``ring`` is
#: announced first ("Extension 2001 is in a meeting until 14:30").
REFERRAL_ACTIONS = (
    "voicemail",   # announce, then the employee's voicemail
    "divert",      # announce, then ``to`` (colleague, receptionist, department, mobile, number)
    "alternate",   # announce, then the alternate number the status carries (voicemail if none)
    "ring",        # ring anyway; the plan's reason tells the receptionist why it may go unanswered
)
ICM_SOURCES = ("history", "crm")
ICM_RING = ("manager", "manager_and_mobile")


@dataclass(frozen=True, slots=True)
class Destination:
    """A routing target.

    ``ref`` is an extension (employee, department, voicemail, fax), an IVR menu
    key, an E.164 number without ``+`` (external) or a hangup cause name.
    ``greeting`` is a sound file played before the destination is reached.
    """

    kind: str
    ref: str
    greeting: str | None = None


@dataclass(frozen=True, slots=True)
class Diverts:
    """Call forwarding of one employee.  ``None`` means the condition is off.

    A divert to the employee's own voicemail is ``Destination("voicemail", <own ext>)``.
    ``no_answer_after`` is the no-answer timer in seconds (company default applied).
    """

    always: Destination | None = None
    busy: Destination | None = None
    no_answer: Destination | None = None
    no_answer_after: int = 20
    unreachable: Destination | None = None


@dataclass(frozen=True, slots=True)
class ReferralAction:
    """What a call does while the employee has one status.

    ``to`` is set for ``divert`` only; a divert "to mobile" is already the
    employee's mobile as an ``external`` destination.
    """

    action: str
    to: Destination | None = None


@dataclass(frozen=True, slots=True)
class Employee:
    extension: str
    name: str
    role: str
    company: str
    email: str | None = None
    mobile: str | None = None           # E.164 digits, no '+'
    a1_hash: str | None = None          # md5("ext:domain:password"), never the password
    mobile_after: int | None = None     # ring the mobile after N s without answer
    diverts: Diverts = field(default_factory=Diverts)
    #: status -> action, company defaults merged with the employee's own; statuses not
    #: listed take the company's ``default_action`` (``referral_default``).
    referral: tuple[tuple[str, ReferralAction], ...] = ()
    referral_default: ReferralAction = ReferralAction("voicemail")
    #: extensions allowed to set or clear this employee's status (besides the
    #: employee and the company's admins)
    status_delegates: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Department:
    extension: str
    name: str
    company: str
    members: tuple[str, ...]            # employee extensions, in ring order
    strategy: str                       # one of STRATEGIES
    step_seconds: int                   # sequential: ring time per member; cumulative: delay between starts
    timeout: int                        # overall ring time of the group
    no_answer: Destination | None       # where the call goes when nobody answers (None: hang up NO_ANSWER)


@dataclass(frozen=True, slots=True)
class Schedule:
    """Business hours in the company's time zone.

    ``hours[i]`` holds the open intervals of weekday ``i`` (0 = Monday) as
    ``(start_minute, end_minute)`` pairs, end exclusive, sorted, non-overlapping;
    ``end_minute`` may be 1440 for "until midnight".  ``holidays`` are whole
    local days on which the schedule is closed, sorted.
    """

    key: str
    hours: tuple[tuple[tuple[int, int], ...], ...]
    holidays: tuple[_dt.date, ...] = ()


@dataclass(frozen=True, slots=True)
class IcmStep:
    """Intelligent contact manager on a number: returning callers reach their manager.

    Applies when the number's working-hours (or around-the-clock) route would
    be taken.  ``sources`` are asked in order; a manager in ``exceptions`` is
    never routed to.  If the manager cannot take the call it goes to the
    ``on_failure`` department (if any) and then, in every case, back to the
    number's normal route.  ``default`` is where callers without a manager go
    (None: the normal route).
    """

    sources: tuple[str, ...] = ICM_SOURCES
    max_age_days: int = 0               # call history older than this is ignored (0: any age)
    ring: str = "manager"               # or "manager_and_mobile"
    timeout: int = 20                   # seconds the manager's phone(s) ring
    on_failure: Destination | None = None   # a department (queue)
    default: Destination | None = None
    exceptions: tuple[str, ...] = ()    # employee extensions ICM never routes to


@dataclass(frozen=True, slots=True)
class Number:
    """A company DID.  With ``mode == "always"`` only ``open`` is used."""

    number: str                         # E.164 digits, no '+'
    company: str
    mode: str
    open: Destination
    closed: Destination | None = None
    schedule: str | None = None         # Schedule.key within the company
    icm: IcmStep | None = None


@dataclass(frozen=True, slots=True)
class IvrMenu:
    key: str
    company: str
    greeting: str
    options: tuple[tuple[str, Destination], ...]   # (digit, destination), digits 0-9 * #
    on_timeout: Destination
    on_invalid: Destination
    timeout: int = 5                    # seconds to wait for a digit
    retries: int = 3                    # how many times the greeting is played


@dataclass(frozen=True, slots=True)
class Company:
    id: str
    name: str
    country: str                        # ISO 3166-1 alpha-2, for national numbers
    timezone: str                       # IANA zone name
    sip_domain: str
    no_answer_seconds: int = 20         # default no-answer divert timer
    ring_timeout: int = 60              # how long a phone rings when nothing else is configured
    outbound_caller_id: str | None = None   # E.164 digits shown on calls out
    city_code: str | None = None        # area code for local numbers without one
    employees: tuple[Employee, ...] = ()
    departments: tuple[Department, ...] = ()
    schedules: tuple[Schedule, ...] = ()
    numbers: tuple[Number, ...] = ()
    ivr_menus: tuple[IvrMenu, ...] = ()
    language: str = "en"                # of the phrases callers hear (FreeSWITCH say/phrase language)
    statuses: tuple[str, ...] = REFERRAL_STATUSES   # built-in ones, then the company's own


@dataclass(frozen=True, slots=True)
class Config:
    companies: tuple[Company, ...]
    source: str = ""                    # file name(s) the config came from
