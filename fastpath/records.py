"""Binary records kept in the LMDB store, and their pure-Python decoders.

Why not JSON or msgpack: the Cython engine reads these records straight out of
LMDB's memory map with pointer arithmetic, no allocation and no parser.  So the
layout is fixed and simple:

* little-endian integers; every record starts with ``u8 type, u8 version``;
* a string is ``u16 byte length`` + UTF-8 bytes (empty string = absent);
* a destination is ``u8 kind`` + string ref + string greeting (kind 0 = none);
* a blob (an embedded record) is ``u32 byte length`` + bytes;
* lists are ``u16 count`` + items.

Changing any layout means bumping :data:`SCHEMA_VERSION`; the store refuses to
open a store written by another version.  ``fastpath/_engine.pyx`` reads the same
layouts; the tests decode every record both ways.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import StoreError
from .model import Destination

#: 2: the ``dial`` table (each company's compiled dialling rules) is config; employee
#: records end with their status actions and delegates, number records with their ICM
#: step, company records with their language; presence entries carry LIVE_REFERRAL.
#: 3: a caller's call-history entry and every company's cached CRM answer about them are one
#: ``caller`` record (tables ``history`` and ``crm`` are gone), so ICM reads one key per call.
#: (``switchboard load`` rewrites a version-1 or -2 store in place; see ``fastpath/store.py``.)
SCHEMA_VERSION = 3

# Record types (first byte of every value).
REC_NUMBER = 1
REC_EMPLOYEE = 2
REC_DEPARTMENT = 3
REC_IVR = 4
REC_COMPANY = 5
REC_LIVE = 6
REC_REFERRAL = 7
REC_HISTORY = 8
REC_CRM = 9             # a cached CRM answer (ICM); type 10 is fastpath.caller_numbers.REC_DIAL_RULES
REC_CALLER = 11         # what ICM knows of one caller: a REC_HISTORY and the companies' REC_CRM records
RECORD_VERSION = 1

# Destination kinds on disk.  0 means "none" (a divert that is off).
KIND_CODES = {
    "employee": 1, "department": 2, "ivr": 3, "voicemail": 4,
    "external": 5, "fax": 6, "hangup": 7,
}
KIND_NAMES = {code: name for name, code in KIND_CODES.items()}

ROLE_CODES = {"user": 0, "admin": 1, "receptionist": 2}
ROLE_NAMES = {code: name for name, code in ROLE_CODES.items()}
STRATEGY_CODES = {"simultaneous": 0, "sequential": 1, "cumulative": 2}
STRATEGY_NAMES = {code: name for name, code in STRATEGY_CODES.items()}
MODE_ALWAYS = 0
MODE_SCHEDULE = 1
ACTION_CODES = {"voicemail": 0, "divert": 1, "alternate": 2, "ring": 3}
ACTION_NAMES = {code: name for name, code in ACTION_CODES.items()}
ICM_SOURCE_CODES = {"history": 1, "crm": 2}
ICM_SOURCE_NAMES = {code: name for name, code in ICM_SOURCE_CODES.items()}
ICM_RING_CODES = {"manager": 0, "manager_and_mobile": 1}
ICM_RING_NAMES = {code: name for name, code in ICM_RING_CODES.items()}

# Live state (presence) is kept in blocks of LIVE_BLOCK employees, addressed by
# the employee's slot (assigned at config load so that a department's members
# are neighbours): a ring group's presence is then one or two lookups, not one
# per member.  Block key: u32 big-endian block number (keys sort numerically).
LIVE_BLOCK = 64
LIVE_REG_KNOWN = 1      # the listener has seen this extension's registration state
LIVE_REGISTERED = 2     # ... and it is registered
LIVE_REFERRAL = 4       # the referral table holds statuses for this employee (the engines look only then)

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_I32 = struct.Struct("<i")
_HEAD = struct.Struct("<BB")
_TZ_HEAD = struct.Struct("<Hqq")     # count, valid_from, valid_until (UTC seconds)
_TRANSITION = struct.Struct("<qi")   # utc seconds, offset seconds
_LIVE_ENTRY = struct.Struct("<BxHI")  # flags, active calls, updated (POSIX seconds)
_LIVE_KEY = struct.Struct(">I")
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")


class Writer:
    """Appends fields to a bytearray in the record layout."""

    __slots__ = ("buf",)

    def __init__(self, rec_type: int):
        self.buf = bytearray(_HEAD.pack(rec_type, RECORD_VERSION))

    def u8(self, value: int) -> "Writer":
        self.buf += _U8.pack(value)
        return self

    def u16(self, value: int) -> "Writer":
        self.buf += _U16.pack(value)
        return self

    def i32(self, value: int) -> "Writer":
        self.buf += _I32.pack(value)
        return self

    def u32(self, value: int) -> "Writer":
        self.buf += _U32.pack(value)
        return self

    def i64(self, value: int) -> "Writer":
        self.buf += _I64.pack(value)
        return self

    def str(self, value: str | None) -> "Writer":
        data = (value or "").encode("utf-8")
        if len(data) > 0xFFFF:
            raise StoreError(f"string of {len(data)} bytes does not fit a record field: {value[:40]!r}…")
        self.buf += _U16.pack(len(data)) + data
        return self

    def blob(self, data: bytes) -> "Writer":
        self.buf += _U32.pack(len(data)) + data
        return self

    def dest(self, dest: Destination | None) -> "Writer":
        if dest is None:
            return self.u8(0).str(None).str(None)
        return self.u8(KIND_CODES[dest.kind]).str(dest.ref).str(dest.greeting)

    def raw(self, data: bytes) -> "Writer":
        self.buf += data
        return self

    def bytes(self) -> bytes:
        return bytes(self.buf)


class Reader:
    """Reads fields in order from a record (bytes or a buffer from LMDB)."""

    __slots__ = ("data", "pos")

    def __init__(self, data, expect_type: int):
        self.data = memoryview(data)
        if len(self.data) < 2:
            raise StoreError("record shorter than its 2-byte header")
        rec_type, version = _HEAD.unpack_from(self.data, 0)
        if rec_type != expect_type or version != RECORD_VERSION:
            raise StoreError(
                f"record type {rec_type} v{version} found where type {expect_type} "
                f"v{RECORD_VERSION} was expected; the store is corrupt or from another version")
        self.pos = 2

    def _need(self, size: int) -> None:
        if self.pos + size > len(self.data):
            raise StoreError(f"record truncated at byte {self.pos} (needs {size} more of {len(self.data)}); "
                             f"the store is corrupt, reload the config")

    def u8(self) -> int:
        self._need(1)
        (value,) = _U8.unpack_from(self.data, self.pos)
        self.pos += 1
        return value

    def u16(self) -> int:
        self._need(2)
        (value,) = _U16.unpack_from(self.data, self.pos)
        self.pos += 2
        return value

    def i32(self) -> int:
        self._need(4)
        (value,) = _I32.unpack_from(self.data, self.pos)
        self.pos += 4
        return value

    def u32(self) -> int:
        self._need(4)
        (value,) = _U32.unpack_from(self.data, self.pos)
        self.pos += 4
        return value

    def i64(self) -> int:
        self._need(8)
        (value,) = _I64.unpack_from(self.data, self.pos)
        self.pos += 8
        return value

    def str(self) -> str:
        size = self.u16()
        self._need(size)
        try:
            value = bytes(self.data[self.pos:self.pos + size]).decode("utf-8")
        except UnicodeDecodeError:
            raise StoreError(f"record has a string at byte {self.pos} that is not UTF-8; the store is corrupt") from None
        self.pos += size
        return value

    def blob(self) -> bytes:
        size = self.u32()
        self._need(size)
        value = bytes(self.data[self.pos:self.pos + size])
        self.pos += size
        return value

    def dest(self) -> Destination | None:
        code = self.u8()
        ref = self.str()
        greeting = self.str()
        if code == 0:
            return None
        if code not in KIND_NAMES:
            raise StoreError(f"unknown destination kind {code} in the store; reload the config")
        return Destination(KIND_NAMES[code], ref, greeting or None)


# --- decoded views used by the reference engine, the CLI and the tests ------

@dataclass(frozen=True, slots=True)
class TzTable:
    """UTC offsets of one zone between ``valid_from`` and ``valid_until``.

    ``transitions`` are ``(utc_seconds, offset_seconds)``, sorted; the offset of
    instant t is that of the last transition at or before t.
    """

    name: str
    valid_from: int
    valid_until: int
    transitions: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class ScheduleRec:
    key: str
    hours: tuple[tuple[tuple[int, int], ...], ...]
    holidays: tuple[int, ...]          # local days since 1970-01-01
    tz: TzTable


@dataclass(frozen=True, slots=True)
class NumberRec:
    """A company number.  ``open_record`` / ``closed_record`` are copies of the
    ``ext`` record of an employee or department destination (else b""), written
    in the same transaction, so the compiled engine saves a lookup per call."""

    number: str
    company: str
    mode: int
    ring_timeout: int                   # the company's, for external destinations
    open: Destination | None
    open_record: bytes
    closed: Destination | None
    closed_record: bytes
    schedule: ScheduleRec | None
    icm: "IcmRec | None" = None


@dataclass(frozen=True, slots=True)
class IcmRec:
    """A number's ICM step (see ``model.IcmStep``), after the schedule in the number record."""

    sources: tuple[str, ...]
    max_age_days: int
    ring: str
    timeout: int
    on_failure: Destination | None
    default: Destination | None
    exceptions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ActionRec:
    """What a call does while the employee has a status (``model.ReferralAction``)."""

    action: str
    to: Destination | None = None


@dataclass(frozen=True, slots=True)
class EmployeeRec:
    extension: str
    company: str
    name: str
    role: str
    email: str
    mobile: str
    a1_hash: str
    mobile_after: int                   # 0 = no no-answer-to-mobile
    no_answer_after: int
    ring_timeout: int
    slot: int                           # where the live state lives (see LIVE_BLOCK)
    always: Destination | None
    busy: Destination | None
    no_answer: Destination | None
    unreachable: Destination | None
    referral: tuple[tuple[str, ActionRec], ...] = ()    # status -> action
    referral_default: ActionRec = ActionRec("voicemail")
    status_delegates: tuple[str, ...] = ()

    def referral_action(self, status: str) -> ActionRec:
        for name, action in self.referral:
            if name == status:
                return action
        return self.referral_default


@dataclass(frozen=True, slots=True)
class DepartmentRec:
    extension: str
    company: str
    name: str
    strategy: str
    step_seconds: int
    timeout: int
    ring_timeout: int                   # the company's, for external destinations
    no_answer: Destination | None
    members: tuple[tuple[str, str, int], ...]    # (extension, name, slot)


@dataclass(frozen=True, slots=True)
class IvrRec:
    company: str
    key: str
    greeting: str
    timeout: int
    retries: int
    ring_timeout: int                   # the company's, for external destinations
    on_timeout: Destination | None
    on_invalid: Destination | None
    options: tuple[tuple[str, Destination | None], ...]


@dataclass(frozen=True, slots=True)
class CompanyRec:
    id: str
    name: str
    country: str
    timezone: str
    sip_domain: str
    no_answer_seconds: int
    ring_timeout: int
    outbound_caller_id: str
    city_code: str
    language: str = "en"
    statuses: tuple[str, ...] = ()          # every status the company knows (built-in and its own)


@dataclass(frozen=True, slots=True)
class LiveRec:
    registered_known: bool
    registered: bool
    active_calls: int
    updated: int = 0                    # POSIX seconds of the last change
    referral: bool = False              # statuses are stored for this employee (LIVE_REFERRAL)


UNKNOWN_LIVE = LiveRec(False, False, 0, 0)


@dataclass(frozen=True, slots=True)
class HistoryRec:
    extension: str
    when: int                # POSIX seconds of the call
    direction: str           # "in" | "out"


CRM_NOT_FOUND = 0       # every CRM source answered: nobody is responsible for this caller
CRM_FOUND = 1           # a CRM user is responsible, and maps to ``extension``
CRM_UNMAPPED = 2        # a CRM user is responsible, but maps to no extension of the company


@dataclass(frozen=True, slots=True)
class CrmAnswerRec:
    """What the CRM sources said about one caller of one company (kept in :class:`CallerRec`).

    Times are POSIX seconds: the refresher asks again
    after ``refresh_after``; the call path uses the answer only before
    ``expires``.  ``source`` names the source that answered ("amocrm", ...).
    ``generation`` is the config generation against which ``extension`` was
    found to be an employee of the company (0: unknown); while it is still the
    store's generation the call path need not check the extension again.
    Layout (fixed part first, so the fast path reads it at fixed offsets):
    ``u8 status, i64 fetched, i64 refresh_after, i64 expires, i64 generation``,
    then the strings ``extension, source, user_id, user_name, user_email``.
    """

    status: int
    extension: str
    source: str
    fetched: int
    refresh_after: int
    expires: int
    user_id: str = ""
    user_name: str = ""
    user_email: str = ""
    generation: int = 0


@dataclass(frozen=True, slots=True)
class CallerRec:
    """What the store keeps about one caller (table ``caller``, key: E.164 digits), for ICM.

    ``history``: who last talked to them, in any company (None: no call on
    record); ``crm``: each company's cached CRM answer about them.  One record,
    so the call path finds both with one key.  Layout: ``blob history`` (an
    :func:`encode_history` record, empty for none), ``u16 count``, then per
    company ``str company, blob answer`` (an :func:`encode_crm_answer` record),
    sorted by company.
    """

    history: HistoryRec | None = None
    crm: "dict[str, CrmAnswerRec]" = None

    def __post_init__(self):
        if self.crm is None:
            object.__setattr__(self, "crm", {})

    def __bool__(self) -> bool:
        return self.history is not None or bool(self.crm)


VISIBILITY_CODES = {"everyone": 0, "receptionists": 1, "nobody": 2}
VISIBILITY_NAMES = {code: name for name, code in VISIBILITY_CODES.items()}


@dataclass(frozen=True, slots=True)
class ReferralInterval:
    """An availability status (meeting, vacation…) in force from ``start`` to ``end``.

    Times are POSIX seconds; ``source`` says who set it ("manual", "calendar:…").
    ``visibility`` says who may see ``reason`` and ``alternate``.
    """

    start: int
    end: int
    status: str
    reason: str = ""
    alternate: str = ""
    visibility: str = "everyone"
    source: str = "manual"


# --- encoders (store writer side) ------------------------------------------

def encode_tz(writer: Writer, table: TzTable) -> None:
    writer.str(table.name)
    writer.raw(_TZ_HEAD.pack(len(table.transitions), table.valid_from, table.valid_until))
    for when, offset in table.transitions:
        writer.raw(_TRANSITION.pack(when, offset))


def encode_number(rec: NumberRec) -> bytes:
    w = (Writer(REC_NUMBER).str(rec.company).u8(rec.mode).u16(rec.ring_timeout)
         .dest(rec.open).blob(rec.open_record).dest(rec.closed).blob(rec.closed_record))
    if rec.mode == MODE_SCHEDULE:
        sched = rec.schedule
        w.str(sched.key)
        for day in sched.hours:
            w.u8(len(day))
            for start, end in day:
                w.u16(start).u16(end)
        w.u16(len(sched.holidays))
        for day in sched.holidays:
            w.i32(day)
        encode_tz(w, sched.tz)
    icm = rec.icm
    if icm is None:
        w.u8(0)
    else:
        w.u8(1).u8(len(icm.sources))
        for source in icm.sources:
            w.u8(ICM_SOURCE_CODES[source])
        w.u16(icm.max_age_days).u8(ICM_RING_CODES[icm.ring]).u16(icm.timeout).dest(icm.on_failure).dest(icm.default)
        w.u8(len(icm.exceptions))
        for ext in icm.exceptions:
            w.str(ext)
    return w.bytes()


def encode_employee(rec: EmployeeRec) -> bytes:
    w = (Writer(REC_EMPLOYEE).str(rec.company).str(rec.name).u8(ROLE_CODES[rec.role])
         .str(rec.email).str(rec.mobile).str(rec.a1_hash)
         .u16(rec.mobile_after).u16(rec.no_answer_after).u16(rec.ring_timeout).u32(rec.slot)
         .dest(rec.always).dest(rec.busy).dest(rec.no_answer).dest(rec.unreachable))
    w.u8(len(rec.referral))
    for status, action in rec.referral:
        w.str(status).u8(ACTION_CODES[action.action]).dest(action.to)
    w.u8(ACTION_CODES[rec.referral_default.action]).dest(rec.referral_default.to)
    w.u8(len(rec.status_delegates))
    for ext in rec.status_delegates:
        w.str(ext)
    return w.bytes()


def encode_department(rec: DepartmentRec) -> bytes:
    w = (Writer(REC_DEPARTMENT).str(rec.company).str(rec.name).u8(STRATEGY_CODES[rec.strategy])
         .u16(rec.step_seconds).u16(rec.timeout).u16(rec.ring_timeout).dest(rec.no_answer)
         .u16(len(rec.members)))
    for ext, name, slot in rec.members:
        w.str(ext).str(name).u32(slot)
    return w.bytes()


def encode_ivr(rec: IvrRec) -> bytes:
    w = (Writer(REC_IVR).str(rec.company).str(rec.key).str(rec.greeting)
         .u8(rec.timeout).u8(rec.retries).u16(rec.ring_timeout).dest(rec.on_timeout).dest(rec.on_invalid)
         .u8(len(rec.options)))
    for digit, dest in rec.options:
        w.str(digit).dest(dest)
    return w.bytes()


def encode_company(rec: CompanyRec) -> bytes:
    return (Writer(REC_COMPANY).str(rec.id).str(rec.name).str(rec.country).str(rec.timezone)
            .str(rec.sip_domain).u16(rec.no_answer_seconds).u16(rec.ring_timeout)
            .str(rec.outbound_caller_id).str(rec.city_code).str(rec.language)
            .str(",".join(rec.statuses)).bytes())


def live_key(slot: int) -> bytes:
    """The key of the block holding ``slot``."""
    return _LIVE_KEY.pack(slot // LIVE_BLOCK)


def encode_live_block(entries) -> bytes:
    """A block of LIVE_BLOCK entries (LiveRec, or None for an unused slot)."""
    out = bytearray(_HEAD.pack(REC_LIVE, RECORD_VERSION))
    for i in range(LIVE_BLOCK):
        e = entries[i] if i < len(entries) else None
        if e is None:
            out += _LIVE_ENTRY.pack(0, 0, 0)
        else:
            flags = ((LIVE_REG_KNOWN if e.registered_known else 0) | (LIVE_REGISTERED if e.registered else 0)
                     | (LIVE_REFERRAL if e.referral else 0))
            out += _LIVE_ENTRY.pack(flags, min(e.active_calls, 0xFFFF), e.updated & 0xFFFFFFFF)
    return bytes(out)


def encode_history(rec: HistoryRec) -> bytes:
    direction = 1 if rec.direction == "out" else 0
    return Writer(REC_HISTORY).i64(rec.when).u8(direction).str(rec.extension).bytes()


def encode_crm_answer(rec: CrmAnswerRec) -> bytes:
    return (Writer(REC_CRM).u8(rec.status).i64(rec.fetched).i64(rec.refresh_after).i64(rec.expires)
            .i64(rec.generation).str(rec.extension).str(rec.source).str(rec.user_id).str(rec.user_name).str(rec.user_email)
            .bytes())


def encode_caller(rec: CallerRec) -> bytes:
    return caller_bytes(encode_history(rec.history) if rec.history is not None else b"",
                         {company: encode_crm_answer(a) for company, a in rec.crm.items()})


_CALLER_HEAD = struct.Struct("<BBI")      # type, version, history length


def caller_bytes(history: bytes, answers: "dict[str, bytes]") -> bytes:
    w = Writer(REC_CALLER).blob(history).u16(len(answers))
    for company in sorted(answers):
        if not company or "/" in company:
            raise StoreError(f"bad company id {company!r} for a cached CRM answer")
        w.str(company).blob(answers[company])
    return w.bytes()


def caller_parts(data) -> "tuple[bytes, dict[str, bytes]]":
    """The encoded history entry (b"" for none) and each company's encoded CRM answer."""
    r = Reader(data, REC_CALLER)
    history = r.blob()
    answers = {}
    for _ in range(r.u16()):
        company = r.str()
        answers[company] = r.blob()
    if r.pos != len(r.data):
        raise StoreError(f"caller record has {len(r.data) - r.pos} bytes past its end; the store is corrupt")
    return history, answers


def caller_with_history(old, history: bytes) -> bytes | None:
    """The caller record ``old`` (None: no record yet) with its history entry replaced by
    ``history`` (an :func:`encode_history` record; b"" removes it); None when nothing would
    be left.  The CRM answers are copied as they are, not decoded, so
    the listener's writes stay cheap.  A corrupt ``old`` is replaced: its cached answers
    are lost, which the CRM refresher makes good; its history would be overwritten anyway."""
    if old is None:                 # a new caller: the common case, built without the Writer
        return _CALLER_HEAD.pack(REC_CALLER, RECORD_VERSION, len(history)) + history + b"\x00\x00" \
            if history else None
    try:
        answers = caller_parts(old)[1]
    except StoreError:
        answers = {}
    if not history and not answers:
        return None
    return caller_bytes(history, answers)


def caller_with_answer(old, company: str, answer: CrmAnswerRec | None) -> bytes | None:
    """The caller record ``old`` with ``company``'s cached CRM answer replaced (None removes
    it); None when nothing would be left.  A corrupt ``old`` raises StoreError: it may hold
    a call-history entry, which only a privacy erase may drop."""
    history, answers = caller_parts(old) if old is not None else (b"", {})
    if answer is None:
        answers.pop(company, None)
    else:
        answers[company] = encode_crm_answer(answer)
    if not history and not answers:
        return None
    return caller_bytes(history, answers)


def encode_referrals(intervals: "list[ReferralInterval] | tuple[ReferralInterval, ...]") -> bytes:
    w = Writer(REC_REFERRAL).u16(len(intervals))
    for iv in intervals:
        w.i64(iv.start).i64(iv.end).str(iv.status).str(iv.reason).str(iv.alternate)
        w.u8(VISIBILITY_CODES[iv.visibility]).str(iv.source)
    return w.bytes()


# --- decoders (reference engine side) --------------------------------------

def _decode_tz(r: Reader) -> TzTable:
    name = r.str()
    count, valid_from, valid_until = _TZ_HEAD.unpack_from(r.data, r.pos)
    r.pos += _TZ_HEAD.size
    transitions = tuple(_TRANSITION.iter_unpack(r.data[r.pos:r.pos + count * _TRANSITION.size]))
    r.pos += count * _TRANSITION.size
    return TzTable(name, valid_from, valid_until, transitions)


def decode_number(number: str, data) -> NumberRec:
    r = Reader(data, REC_NUMBER)
    company, mode, ring_timeout = r.str(), r.u8(), r.u16()
    open_, open_record, closed, closed_record = r.dest(), r.blob(), r.dest(), r.blob()
    schedule = None
    if mode == MODE_SCHEDULE:
        key = r.str()
        hours = []
        for _ in range(7):
            hours.append(tuple((r.u16(), r.u16()) for _ in range(r.u8())))
        holidays = tuple(r.i32() for _ in range(r.u16()))
        schedule = ScheduleRec(key, tuple(hours), holidays, _decode_tz(r))
    icm = None
    if r.u8():
        sources = tuple(ICM_SOURCE_NAMES[r.u8()] for _ in range(r.u8()))
        max_age, ring, timeout = r.u16(), ICM_RING_NAMES[r.u8()], r.u16()
        on_failure, default = r.dest(), r.dest()
        icm = IcmRec(sources, max_age, ring, timeout, on_failure, default, tuple(r.str() for _ in range(r.u8())))
    return NumberRec(number, company, mode, ring_timeout, open_, open_record, closed, closed_record, schedule, icm)


def decode_extension(extension: str, data):
    """Decode an ``ext`` record, which is an employee or a department."""
    if len(data) and data[0] == REC_DEPARTMENT:
        return decode_department(extension, data)
    return decode_employee(extension, data)


def employee_slot(data) -> int:
    """The presence slot of an employee record, reading only the fields every schema has."""
    r = Reader(data, REC_EMPLOYEE)
    r.str(), r.str(), r.u8(), r.str(), r.str(), r.str(), r.u16(), r.u16(), r.u16()
    return r.u32()


def decode_employee(extension: str, data) -> EmployeeRec:
    r = Reader(data, REC_EMPLOYEE)
    fields = (r.str(), r.str(), ROLE_NAMES[r.u8()], r.str(), r.str(), r.str(),
              r.u16(), r.u16(), r.u16(), r.u32(), r.dest(), r.dest(), r.dest(), r.dest())
    referral = tuple((r.str(), ActionRec(ACTION_NAMES[r.u8()], r.dest())) for _ in range(r.u8()))
    default = ActionRec(ACTION_NAMES[r.u8()], r.dest())
    delegates = tuple(r.str() for _ in range(r.u8()))
    return EmployeeRec(extension, *fields, referral, default, delegates)


def decode_department(extension: str, data) -> DepartmentRec:
    r = Reader(data, REC_DEPARTMENT)
    company, name, strategy = r.str(), r.str(), STRATEGY_NAMES[r.u8()]
    step, timeout, ring_timeout, no_answer = r.u16(), r.u16(), r.u16(), r.dest()
    members = tuple((r.str(), r.str(), r.u32()) for _ in range(r.u16()))
    return DepartmentRec(extension, company, name, strategy, step, timeout, ring_timeout, no_answer, members)


def decode_ivr(data) -> IvrRec:
    r = Reader(data, REC_IVR)
    company, key, greeting = r.str(), r.str(), r.str()
    timeout, retries, ring_timeout, on_timeout, on_invalid = r.u8(), r.u8(), r.u16(), r.dest(), r.dest()
    options = tuple((r.str(), r.dest()) for _ in range(r.u8()))
    return IvrRec(company, key, greeting, timeout, retries, ring_timeout, on_timeout, on_invalid, options)


def decode_company(data) -> CompanyRec:
    r = Reader(data, REC_COMPANY)
    fields = (r.str(), r.str(), r.str(), r.str(), r.str(), r.u16(), r.u16(), r.str(), r.str(), r.str())
    return CompanyRec(*fields, tuple(filter(None, r.str().split(","))))


LIVE_BLOCK_SIZE = _HEAD.size + LIVE_BLOCK * _LIVE_ENTRY.size


def decode_live_block(data) -> list[LiveRec]:
    if len(data) != LIVE_BLOCK_SIZE:
        raise StoreError(f"live-state block of {len(data)} bytes, expected {LIVE_BLOCK_SIZE}")
    Reader(data, REC_LIVE)      # checks the header
    return [LiveRec(bool(flags & LIVE_REG_KNOWN), bool(flags & LIVE_REGISTERED), calls, updated,
                    bool(flags & LIVE_REFERRAL))
            for flags, calls, updated in _LIVE_ENTRY.iter_unpack(memoryview(data)[_HEAD.size:])]


def decode_live(data, slot: int) -> LiveRec:
    """The entry of ``slot`` in its block ``data``."""
    if len(data) != LIVE_BLOCK_SIZE:
        raise StoreError(f"live-state block of {len(data)} bytes, expected {LIVE_BLOCK_SIZE}")
    Reader(data, REC_LIVE)
    flags, calls, updated = _LIVE_ENTRY.unpack_from(data, _HEAD.size + (slot % LIVE_BLOCK) * _LIVE_ENTRY.size)
    return LiveRec(bool(flags & LIVE_REG_KNOWN), bool(flags & LIVE_REGISTERED), calls, updated,
                   bool(flags & LIVE_REFERRAL))


def decode_history(data) -> HistoryRec:
    r = Reader(data, REC_HISTORY)
    when, direction = r.i64(), r.u8()
    return HistoryRec(r.str(), when, "out" if direction else "in")


def decode_crm_answer(data) -> CrmAnswerRec:
    r = Reader(data, REC_CRM)
    status, fetched, refresh_after, expires, generation = r.u8(), r.i64(), r.i64(), r.i64(), r.i64()
    if status not in (CRM_NOT_FOUND, CRM_FOUND, CRM_UNMAPPED):
        raise StoreError(f"unknown CRM answer status {status} in the store")
    return CrmAnswerRec(status, r.str(), r.str(), fetched, refresh_after, expires, r.str(), r.str(), r.str(),
                        generation)


def decode_caller(data) -> CallerRec:
    history, answers = caller_parts(data)
    return CallerRec(decode_history(history) if history else None,
                     {company: decode_crm_answer(a) for company, a in answers.items()})


def decode_referrals(data) -> tuple[ReferralInterval, ...]:
    r = Reader(data, REC_REFERRAL)
    return tuple(
        ReferralInterval(r.i64(), r.i64(), r.str(), r.str(), r.str(), VISIBILITY_NAMES[r.u8()], r.str())
        for _ in range(r.u16()))
