# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled engine: the same ``decide`` as :mod:`fastpath.engine_ref`, fast.

Records are read in place: a pointer walks the layout described in
:mod:`fastpath.records`, every read checked against the record's end, and only
the strings that end up in the plan become Python objects.  Lookups go through
one cursor per table, opened on first use, on a plain read transaction: for
records of this size py-lmdb's ``buffers=True`` memoryviews cost more than the
copy they save (measured 240 ns against 186 ns per lookup).  Local time comes from the zone table stored with each
schedule (binary search); outside that table's window it asks ``zoneinfo``,
exactly like the reference.  Any difference from the reference is a bug: the
shared tests and the property test compare the two.
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from cpython.object cimport PyTypeObject
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.string cimport memcmp, memcpy
from libc.stdint cimport int64_t, int32_t, uint16_t, uint32_t

import datetime as _dt

from .errors import PhoneNumberError, StoreError
from .phone import to_e164
from .route_plan import Announce, Continue, Fax, Hangup, Ivr, Ring, RoutePlan, Target, Voicemail
from .engine_ref import MAX_HOPS, WEEKDAY_NAMES, _zone
from .model import Destination
from .records import KIND_CODES, VISIBILITY_NAMES, ReferralInterval
from . import referral_route
from .icm_lookup import NO_MANAGER, reason as icm_reason
from . import _icm_lookup

cdef enum:
    REC_NUMBER = 1
    REC_EMPLOYEE = 2
    REC_DEPARTMENT = 3
    REC_IVR = 4
    REC_COMPANY = 5
    REC_LIVE = 6
    REC_REFERRAL = 7
    RECORD_VERSION = 1
    K_NONE = 0
    K_EMPLOYEE = 1
    K_DEPARTMENT = 2
    K_IVR = 3
    K_VOICEMAIL = 4
    K_EXTERNAL = 5
    K_FAX = 6
    K_HANGUP = 7
    LIVE_REG_KNOWN = 1
    LIVE_REGISTERED = 2
    LIVE_REFERRAL = 4
    A_VOICEMAIL = 0
    A_DIVERT = 1
    A_ALTERNATE = 2
    A_RING = 3
    LIVE_BLOCK = 64
    LIVE_ENTRY = 8
    LIVE_BLOCK_SIZE = 2 + 64 * 8

cdef tuple _KIND_NAMES = ("", "employee", "department", "ivr", "voicemail", "external", "fax", "hangup")
cdef tuple _STRATEGIES = ("simultaneous", "sequential", "cumulative")
_EPOCH_DATE = _dt.date(1970, 1, 1)


# --- building plan steps ---------------------------------------------------
# Steps are named tuples.  Calling the class (or tuple.__new__) goes through
# Python-level argument handling; this is what CPython's tuple_subtype_new does,
# minus the temporary tuple: allocate the subclass instance and fill its slots.

cdef extern from "Python.h":
    object PyType_GenericAlloc(PyTypeObject* type, Py_ssize_t nitems)   # the tp_alloc of tuple subclasses


cdef inline object _alloc(type cls, Py_ssize_t n):
    return PyType_GenericAlloc(<PyTypeObject*>cls, n)


cdef inline void _put(object t, Py_ssize_t i, object v):
    Py_INCREF(v)
    PyTuple_SET_ITEM(t, i, v)


cdef inline tuple one(object step):
    cdef tuple t = PyTuple_New(1)
    Py_INCREF(step)
    PyTuple_SET_ITEM(t, 0, step)
    return t


cdef object mk_target(str kind, str number, str name, int delay, int timeout):
    t = _alloc(Target, 5)
    _put(t, 0, kind)
    _put(t, 1, number)
    _put(t, 2, name)
    _put(t, 3, delay)
    _put(t, 4, timeout)
    return t


cdef object mk_ring(tuple targets, str strategy, int timeout, str reason, object on_busy, object on_no_answer,
                    object on_unreachable, object caller_id):
    t = _alloc(Ring, 9)
    _put(t, 0, targets)
    _put(t, 1, strategy)
    _put(t, 2, timeout)
    _put(t, 3, reason)
    _put(t, 4, on_busy)
    _put(t, 5, on_no_answer)
    _put(t, 6, on_unreachable)
    _put(t, 7, caller_id)
    _put(t, 8, "ring")
    return t


cdef object mk3(type cls, object a, object b, str action):
    """The two-field steps: Announce, Voicemail, Fax, Hangup, Continue."""
    t = _alloc(cls, 3)
    _put(t, 0, a)
    _put(t, 1, b)
    _put(t, 2, action)
    return t


cdef inline tuple hangup(str cause, str reason):
    return one(mk3(Hangup, cause, reason, "hangup"))


# --- reading records in place ----------------------------------------------

cdef struct Cur:
    const unsigned char* p
    const unsigned char* end

cdef struct Str:
    const char* p
    Py_ssize_t n

cdef struct Dest:
    int kind
    Str ref
    Str greet

cdef struct Live:
    bint known
    bint registered
    bint referral
    int calls

cdef struct Emp:
    Str company
    Str name
    Str mobile
    int mobile_after
    int no_answer_after
    int ring_timeout
    uint32_t slot
    Dest always
    Dest busy
    Dest no_answer
    Dest unreachable
    Cur actions                 # the status -> action table and the rest of the record


cdef int _truncated() except -1:
    raise StoreError("a record in the store is truncated; the store is corrupt, reload the config")


cdef inline int need(Cur* c, Py_ssize_t n) except -1:
    if c.end - c.p < n:
        _truncated()
    return 0


cdef inline int rd_u8(Cur* c) except -1:
    need(c, 1)
    cdef int v = c.p[0]
    c.p += 1
    return v


cdef inline int rd_u16(Cur* c) except -1:
    need(c, 2)
    cdef int v = c.p[0] | (c.p[1] << 8)
    c.p += 2
    return v


cdef inline int rd_i32(Cur* c, int32_t* out) except -1:
    need(c, 4)
    memcpy(out, c.p, 4)
    c.p += 4
    return 0


cdef inline int rd_u32(Cur* c, uint32_t* out) except -1:
    need(c, 4)
    memcpy(out, c.p, 4)
    c.p += 4
    return 0


cdef inline int rd_i64(Cur* c, int64_t* out) except -1:
    need(c, 8)
    memcpy(out, c.p, 8)
    c.p += 8
    return 0


cdef inline int rd_str(Cur* c, Str* s) except -1:
    cdef int n = rd_u16(c)
    need(c, n)
    s.p = <const char*>c.p
    s.n = n
    c.p += n
    return 0


cdef inline int rd_blob(Cur* c, Str* s) except -1:
    cdef uint32_t n
    rd_u32(c, &n)
    need(c, n)
    s.p = <const char*>c.p
    s.n = n
    c.p += n
    return 0


cdef inline int rd_dest(Cur* c, Dest* d) except -1:
    d.kind = rd_u8(c)
    rd_str(c, &d.ref)
    rd_str(c, &d.greet)
    if d.kind > K_HANGUP:
        raise StoreError(f"unknown destination kind {d.kind} in the store; reload the config")
    return 0


cdef inline str py(Str s):
    return PyUnicode_DecodeUTF8(s.p, s.n, NULL)


cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object text, Py_ssize_t* size) except NULL


cdef inline bint same_text(object text, Str raw) except -1:
    """Whether ``text`` is the UTF-8 in ``raw`` (its UTF-8 form is cached by CPython: no encoding)."""
    cdef Py_ssize_t n
    cdef const char* p = PyUnicode_AsUTF8AndSize(text, &n)
    return n == raw.n and memcmp(p, raw.p, n) == 0


# --- employees' strings, decoded once ---------------------------------------
# A department ring names every member (extension and name) in its targets;
# decoding them on every call was a third of a company-number decision.  The
# strings of presence slot N are kept here and reused while the record's bytes
# still spell them (so a reload that renames or renumbers is seen at once),
# together with the last Target built for that employee (plans are immutable
# tuples, so sharing one between plans is safe).

cdef enum:
    SLOT_CACHE_MAX = 1 << 20       # slots are dense (one per employee): bounded by the company size
cdef list _slot_cache = []         # slot -> [extension, name, Target or None]


cdef inline list cached_slot(uint32_t slot):
    if slot < <uint32_t>len(_slot_cache):
        return <list>_slot_cache[slot]
    return None


cdef list remember_slot(uint32_t slot, list entry):
    if slot < SLOT_CACHE_MAX:
        if slot >= <uint32_t>len(_slot_cache):
            _slot_cache.extend([None] * (slot + 1 - len(_slot_cache)))
        _slot_cache[slot] = entry
    return entry


cdef list slot_entry(uint32_t slot, Str ext, Str name):
    """``[extension, name, last target]`` of presence slot ``slot``, checked against the record."""
    cdef list entry = cached_slot(slot)
    if entry is not None and same_text(entry[0], ext) and same_text(entry[1], name):
        return entry
    return remember_slot(slot, [py(ext), py(name), None])


cdef list slot_entry_of(uint32_t slot, str ext, Str name):
    """:func:`slot_entry` when the extension is already a str (an employee reached by its key)."""
    cdef list entry = cached_slot(slot)
    if entry is not None and <str>entry[0] == ext and same_text(entry[1], name):
        return entry
    return remember_slot(slot, [ext, py(name), None])


cdef object slot_target(list entry, int delay, int timeout):
    """``Target("extension", ext, name, delay, timeout)``, reusing the entry's last one when equal."""
    last = entry[2]
    if last is not None and <int>(<tuple>last)[3] == delay and <int>(<tuple>last)[4] == timeout:
        return last
    target = mk_target("extension", entry[0], entry[1], delay, timeout)
    entry[2] = target
    return target


cdef inline Str span(bytes raw):
    """The bytes of ``raw`` as a span; valid while the caller keeps ``raw`` alive."""
    cdef Str s
    s.p = PyBytes_AS_STRING(raw)
    s.n = PyBytes_GET_SIZE(raw)
    return s


cdef int open_rec(bytes raw, Cur* c, int rec_type) except -1:
    return open_span(span(raw), c, rec_type)


cdef int open_span(Str record, Cur* c, int rec_type) except -1:
    """Point ``c`` at ``record`` and check its header."""
    c.p = <const unsigned char*>record.p
    c.end = c.p + record.n
    need(c, 2)
    if c.p[0] != rec_type or c.p[1] != RECORD_VERSION:
        raise StoreError(f"record type {c.p[0]} v{c.p[1]} found where type {rec_type} "
                         f"v{RECORD_VERSION} was expected; the store is corrupt or from another version")
    c.p += 2
    return 0


cdef int rec_type_of(bytes raw) except -1:
    if PyBytes_GET_SIZE(raw) < 1:
        _truncated()
    return (<const unsigned char*>PyBytes_AS_STRING(raw))[0]


cdef int read_employee(Str record, Emp* e) except -1:
    """Fill ``e`` with pointers into ``record``; valid while its bytes live."""
    cdef Cur c
    cdef Str skip
    open_span(record, &c, REC_EMPLOYEE)
    rd_str(&c, &e.company)
    rd_str(&c, &e.name)
    rd_u8(&c)                 # role
    rd_str(&c, &skip)         # email
    rd_str(&c, &e.mobile)
    rd_str(&c, &skip)         # a1 hash
    e.mobile_after = rd_u16(&c)
    e.no_answer_after = rd_u16(&c)
    e.ring_timeout = rd_u16(&c)
    rd_u32(&c, &e.slot)
    rd_dest(&c, &e.always)
    rd_dest(&c, &e.busy)
    rd_dest(&c, &e.no_answer)
    rd_dest(&c, &e.unreachable)
    e.actions = c
    return 0


cdef int action_of(Emp* e, str status, Dest* to) except -1:
    """The employee's action code for ``status`` (their own, the company's, else the default)."""
    cdef Cur c = e.actions
    cdef Str name
    cdef int n = rd_u8(&c)
    cdef int i, code
    for i in range(n):
        rd_str(&c, &name)
        code = rd_u8(&c)
        rd_dest(&c, to)
        if same_text(status, name):
            return code
    code = rd_u8(&c)
    rd_dest(&c, to)
    return code


cdef str dest_text(Dest* d):
    cdef str ref = py(d.ref)
    if d.kind == K_EMPLOYEE or d.kind == K_DEPARTMENT:
        return f"ext {ref}"
    if d.kind == K_EXTERNAL:
        return f"+{ref}"
    if d.kind == K_IVR:
        return f"IVR {ref}"
    if d.kind == K_HANGUP:
        return f"hang up ({ref})"
    return f"{_KIND_NAMES[d.kind]} {ref}"


cdef inline int64_t floor_div(int64_t a, int64_t b):
    cdef int64_t q = a // b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q


cdef str iso_date(int64_t days):
    """YYYY-MM-DD of a day counted from 1970-01-01 (Hinnant's civil_from_days)."""
    cdef int64_t z = days + 719468
    cdef int64_t era = floor_div(z, 146097)
    cdef int64_t doe = z - era * 146097
    cdef int64_t yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    cdef int64_t y = yoe + era * 400
    cdef int64_t doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    cdef int64_t mp = (5 * doy + 2) // 153
    cdef int64_t d = doy - (153 * mp + 2) // 5 + 1
    cdef int64_t m = mp + 3 if mp < 10 else mp - 9
    if m <= 2:
        y += 1
    return f"{y:04d}-{m:02d}-{d:02d}"


cdef inline int desk_timeout(Emp* e):
    """How long the desk phone rings before its no-answer handling starts."""
    if e.mobile_after:
        return e.mobile_after
    return e.no_answer_after if e.no_answer.kind != K_NONE else e.ring_timeout


cdef dict _ICM_ORDERS = {1: ("history",), 2: ("crm",), 6: ("history", "crm"), 9: ("crm", "history")}
cdef tuple _HHMM = tuple(f"{m // 60:02d}:{m % 60:02d}" for m in range(1440))
cdef tuple _WEEKDAYS = tuple(WEEKDAY_NAMES)


# --- referral intervals that matter at a given time ------------------------------

cdef struct Span:
    int64_t start
    int64_t end
    Py_ssize_t pos
    Py_ssize_t record


def relevant(list records, at_obj):
    """Twin of :func:`fastpath.referral_route.relevant`: the intervals deciding the status at
    ``at`` and until when, by source (None if none is in force), scanning the records in C
    and building objects only for those few."""
    cdef int64_t at = at_obj, bound = 0
    cdef Py_ssize_t n = 0, k, i, count, r
    cdef Cur c
    cdef Str s
    cdef bint found = False, changed = True
    cdef Span* spans
    cdef const unsigned char* base
    for r in range(len(records)):
        open_rec(<bytes>(<tuple>records[r])[1], &c, REC_REFERRAL)
        n += rd_u16(&c)
    spans = <Span*>PyMem_Malloc((n if n > 0 else 1) * sizeof(Span))
    if spans == NULL:
        raise MemoryError()
    try:
        k = 0
        for r in range(len(records)):
            raw = <bytes>(<tuple>records[r])[1]
            base = <const unsigned char*>PyBytes_AS_STRING(raw)
            open_rec(raw, &c, REC_REFERRAL)
            count = rd_u16(&c)
            for i in range(count):
                spans[k].pos = c.p - base
                spans[k].record = r
                rd_i64(&c, &spans[k].start)
                rd_i64(&c, &spans[k].end)
                rd_str(&c, &s)
                rd_str(&c, &s)
                rd_str(&c, &s)
                rd_u8(&c)
                rd_str(&c, &s)
                if spans[k].start <= at < spans[k].end and (not found or spans[k].end > bound):
                    bound = spans[k].end
                    found = True
                k += 1
        if not found:
            return None
        while changed:
            changed = False
            for k in range(n):
                if spans[k].end > bound and spans[k].start <= bound:
                    bound = spans[k].end
                    changed = True
        out = {}
        for k in range(n):
            if spans[k].end > at and spans[k].start <= bound:
                source, raw = <tuple>records[spans[k].record]
                out.setdefault(source, []).append(interval_at(<bytes>raw, spans[k].pos))
        return {source: tuple(items) for source, items in out.items()}
    finally:
        PyMem_Free(spans)


cdef bint any_in_force(bytes raw, int64_t at) except -1:
    """Whether an interval of a referral record is in force at ``at`` (no objects built)."""
    cdef Cur c
    cdef Str s
    cdef int64_t start, end
    cdef Py_ssize_t i, count
    open_rec(raw, &c, REC_REFERRAL)
    count = rd_u16(&c)
    for i in range(count):
        rd_i64(&c, &start)
        rd_i64(&c, &end)
        if start <= at < end:
            return True
        rd_str(&c, &s)
        rd_str(&c, &s)
        rd_str(&c, &s)
        rd_u8(&c)
        rd_str(&c, &s)
    return False


cdef object interval_at(bytes raw, Py_ssize_t pos):
    cdef Cur c
    cdef Str status, reason, alternate, source
    cdef int64_t start, end
    cdef int visibility
    open_rec(raw, &c, REC_REFERRAL)
    c.p = <const unsigned char*>PyBytes_AS_STRING(raw) + pos
    rd_i64(&c, &start)
    rd_i64(&c, &end)
    rd_str(&c, &status)
    rd_str(&c, &reason)
    rd_str(&c, &alternate)
    visibility = rd_u8(&c)
    rd_str(&c, &source)
    return ReferralInterval(start, end, py(status), py(reason), py(alternate), VISIBILITY_NAMES[visibility],
                            py(source))


# --- the decision ------------------------------------------------------------

def decide(store, str called, str caller, now):
    """Route one call.  Pure: reads one store snapshot, writes nothing."""
    called = called.strip()
    caller = caller.strip()
    if called.startswith("+"):
        called = called[1:]
    if caller.startswith("+"):
        caller = caller[1:]
    at_obj = int(now)
    cdef int64_t at = at_obj
    cdef _Decision ctx
    txn = store.env.begin()
    try:
        ctx = _Decision.__new__(_Decision)
        ctx.start(store, txn, caller, at)
        steps = ctx.route(called)
    finally:
        txn.abort()
    plan = _alloc(RoutePlan, 5)
    _put(plan, 0, called)
    _put(plan, 1, caller)
    _put(plan, 2, at_obj)
    _put(plan, 3, ctx.company)
    _put(plan, 4, steps)
    return plan


cdef enum Table:
    T_NUMBER = 0
    T_EXT = 1
    T_IVR = 2
    T_COMPANY = 3
    T_LIVE = 4



@cython.final
@cython.no_gc           # holds no cycles; skipping GC tracking makes it cheaper to create and free
@cython.freelist(4)
cdef class _Decision:
    cdef object txn
    cdef dict dbs
    cdef object c0, c1, c2, c3, c4     # each table's cursor ``get``, opened on first use
    cdef object c5                     # the referral table's cursor, opened on first use
    cdef str caller
    cdef int64_t at
    cdef public str company
    cdef int depth             # > 0 while building a fallback: rings there get continuations
    cdef int ring_timeout      # the company's, copied into the records: no company lookup
    cdef bytes block           # the live-state block read last, and its number
    cdef uint32_t block_no
    cdef object store
    cdef bint skip_icm         # deciding ``normal:<number>``: the route without its ICM step

    cdef void start(self, object store, txn, str caller, int64_t at):
        self.txn = txn
        self.store = store
        self.dbs = store.db
        self.skip_icm = False
        self.caller = caller
        self.at = at
        self.company = ""
        self.depth = 0

    cdef object get(self, str key, int table):
        """The record under ``key`` (bytes), or None."""
        return self.lookup(key.encode(), table)

    cdef object get_ref(self, Str ref, int table):
        """The record whose key is ``ref``, straight from the bytes of another record."""
        return self.lookup(PyBytes_FromStringAndSize(ref.p, ref.n), table)

    cdef object lookup(self, bytes key, int table):
        if table == T_NUMBER:
            if self.c0 is None:
                self.c0 = self.txn.cursor(self.dbs["number"]).get
            return self.c0(key)
        if table == T_EXT:
            if self.c1 is None:
                self.c1 = self.txn.cursor(self.dbs["ext"]).get
            return self.c1(key)
        if table == T_IVR:
            if self.c2 is None:
                self.c2 = self.txn.cursor(self.dbs["ivr"]).get
            return self.c2(key)
        if table == T_COMPANY:
            if self.c3 is None:
                self.c3 = self.txn.cursor(self.dbs["company"]).get
            return self.c3(key)
        if self.c4 is None:
            self.c4 = self.txn.cursor(self.dbs["live"]).get
        return self.c4(key)

    cdef int live(self, uint32_t slot, Live* out) except -1:
        """Presence of ``slot``; the last block read is kept for a department's next member."""
        cdef uint32_t number = slot // LIVE_BLOCK
        cdef bytes key
        cdef const unsigned char* p
        if self.block is None or self.block_no != number:
            key = PyBytes_FromStringAndSize(NULL, 4)
            p = <const unsigned char*>PyBytes_AS_STRING(key)
            (<unsigned char*>p)[0] = (number >> 24) & 0xFF
            (<unsigned char*>p)[1] = (number >> 16) & 0xFF
            (<unsigned char*>p)[2] = (number >> 8) & 0xFF
            (<unsigned char*>p)[3] = number & 0xFF
            raw = self.lookup(key, T_LIVE)
            if raw is not None and (PyBytes_GET_SIZE(raw) != LIVE_BLOCK_SIZE
                                    or (<const unsigned char*>PyBytes_AS_STRING(raw))[0] != REC_LIVE
                                    or (<const unsigned char*>PyBytes_AS_STRING(raw))[1] != RECORD_VERSION):
                raise StoreError(f"live-state block {number} is malformed ({PyBytes_GET_SIZE(raw)} bytes)")
            self.block = raw if raw is not None else b""
            self.block_no = number
        out.known = False
        out.registered = False
        out.referral = False
        out.calls = 0
        if PyBytes_GET_SIZE(self.block) == 0:
            return 0
        p = <const unsigned char*>PyBytes_AS_STRING(self.block) + 2 + (slot % LIVE_BLOCK) * LIVE_ENTRY
        out.known = (p[0] & LIVE_REG_KNOWN) != 0
        out.registered = (p[0] & LIVE_REGISTERED) != 0
        out.referral = (p[0] & LIVE_REFERRAL) != 0
        out.calls = p[2] | (p[3] << 8)
        return 0

    cdef int company_ring_timeout(self) except -1:
        if self.ring_timeout:
            return self.ring_timeout
        cdef Cur c
        cdef Str s
        cdef int i
        raw = self.get(self.company, T_COMPANY)
        open_rec(raw, &c, REC_COMPANY)
        for i in range(5):
            rd_str(&c, &s)
        rd_u16(&c)
        return rd_u16(&c)

    # -- entry points --------------------------------------------------------

    cdef tuple route(self, str called):
        if called.startswith("ivr:"):
            return self.ivr_address(called)
        if called.startswith("then:"):
            return self.then(called)
        if called.startswith("normal:"):
            return self.normal(called)
        key = called.encode()
        # Extensions are 2 to 6 digits and no number spells one (validation sees to it), so the
        # order of the two lookups changes nothing but the cost: an internal call skips a miss.
        cdef int table = T_EXT if len(called) <= 6 else T_NUMBER
        cdef int i
        for i in range(2):
            raw = self.lookup(key, table)
            if raw is not None:
                return self.internal(called, raw) if table == T_EXT else self.number(called, raw)
            table = T_NUMBER if table == T_EXT else T_EXT
        return self.outbound_or_unknown(called)

    cdef tuple number(self, str number, bytes raw):
        cdef Cur c
        cdef Str company, key, tzname, open_copy, closed_copy
        cdef Dest open_, closed
        cdef const unsigned char* day_at[7]
        cdef int day_n[7]
        cdef const unsigned char* holidays_at
        cdef const unsigned char* table
        cdef int mode, day, n, i, nhol, count, wd, lo, hi, mid
        cdef int32_t hol, off32
        cdef int64_t valid_from, valid_until, when, local, days, minute
        cdef uint16_t start, end
        cdef Cur icm_at
        open_rec(raw, &c, REC_NUMBER)
        rd_str(&c, &company)
        self.company = py(company)
        mode = rd_u8(&c)
        self.ring_timeout = rd_u16(&c)
        rd_dest(&c, &open_)
        rd_blob(&c, &open_copy)
        rd_dest(&c, &closed)
        rd_blob(&c, &closed_copy)
        if mode == 0:
            return self.open_route(number, &c, &open_, &open_copy, f"number +{number} routes around the clock")
        rd_str(&c, &key)
        for day in range(7):
            n = rd_u8(&c)
            need(&c, 4 * n)
            day_at[day] = c.p
            day_n[day] = n
            c.p += 4 * n
        nhol = rd_u16(&c)
        need(&c, 4 * nhol)
        holidays_at = c.p
        c.p += 4 * nhol
        rd_str(&c, &tzname)
        count = rd_u16(&c)
        rd_i64(&c, &valid_from)
        rd_i64(&c, &valid_until)
        need(&c, 12 * count)
        table = c.p
        icm_at.p = table + 12 * count
        icm_at.end = c.end
        zone = py(tzname)
        if count > 0 and valid_from <= self.at < valid_until:
            lo = 0
            hi = count
            while hi - lo > 1:
                mid = (lo + hi) // 2
                memcpy(&when, table + 12 * mid, 8)
                if when <= self.at:
                    lo = mid
                else:
                    hi = mid
            memcpy(&off32, table + 12 * lo + 8, 4)
            local = self.at + off32
            days = floor_div(local, 86400)
            minute = (local - days * 86400) // 60
        else:
            moment = _dt.datetime.fromtimestamp(self.at, _zone(zone))
            days = (moment.date() - _EPOCH_DATE).days
            minute = moment.hour * 60 + moment.minute
        wd = <int>(((days % 7) + 7 + 3) % 7)     # 1970-01-01 was a Thursday (3)
        skey = py(key)
        dayname = _WEEKDAYS[wd]
        lo = 0
        hi = nhol
        while lo < hi:                           # holidays are sorted: binary search
            mid = (lo + hi) // 2
            memcpy(&hol, holidays_at + 4 * mid, 4)
            if hol < days:
                lo = mid + 1
            else:
                hi = mid
        if lo < nhol:
            memcpy(&hol, holidays_at + 4 * lo, 4)
            if hol == days:
                return self.destination(&closed, f"{dayname} {iso_date(days)} is a holiday in schedule "
                                                 f"'{skey}', non-working hours route", (), &closed_copy)
        whentext = f"{dayname} {_HHMM[minute]} in {zone}"
        for i in range(day_n[wd]):
            start = day_at[wd][4 * i] | (day_at[wd][4 * i + 1] << 8)
            end = day_at[wd][4 * i + 2] | (day_at[wd][4 * i + 3] << 8)
            if start <= minute < end:
                return self.open_route(number, &icm_at, &open_, &open_copy,
                                       f"{whentext}: working hours of schedule '{skey}'")
        return self.destination(&closed, f"{whentext}: outside working hours of schedule '{skey}', "
                                         f"non-working hours route", (), &closed_copy)

    # -- ICM: a returning caller reaches their manager ---------------------------

    cdef tuple open_route(self, str number, Cur* c, Dest* open_, Str* open_copy, str why):
        """The working-hours route; with an ICM step (``c`` points at it), the caller's manager first."""
        if not self.skip_icm and rd_u8(c):
            return self.icm(number, c, open_, open_copy, why)
        return self.destination(open_, why, (), open_copy)

    cdef tuple normal(self, str address):
        """``normal:<number>``: the number's route without its ICM step (ICM could not connect)."""
        number = address[7:]
        raw = self.get(number, T_NUMBER) if number.isdigit() else None
        if raw is None:
            return hangup("UNALLOCATED_NUMBER", f"{address}: no such company number")
        self.skip_icm = True
        return self.number(number, raw)

    cdef tuple icm(self, str number, Cur* c, Dest* open_, Str* open_copy, str why):
        cdef int nsrc, i, code, max_age, ring, timeout, nexc
        cdef Dest on_failure, default_, to
        cdef Emp e
        cdef Live live
        cdef Cur co
        cdef Str s
        nsrc = rd_u8(c)
        codes = 0
        for i in range(nsrc):
            code = rd_u8(c)
            if code != 1 and code != 2:
                raise StoreError(f"unknown ICM source {code} for number +{number}; reload the config")
            codes = codes * 4 + code
        max_age = rd_u16(c)
        ring = rd_u8(c)
        timeout = rd_u16(c)
        rd_dest(c, &on_failure)
        rd_dest(c, &default_)
        nexc = rd_u8(c)
        found = _icm_lookup.lookup_in(self.txn, self.store, self.company, self.caller, self.at, max_age * 86400,
                                      _ICM_ORDERS[codes])
        if found is None:
            if default_.kind != K_NONE:
                return self.destination(&default_, f"{why}; {NO_MANAGER}, default", ())
            return self.destination(open_, f"{why}; {NO_MANAGER}, normal route", (),
                                    open_copy)
        ext = <str>found[0]
        raw = self.get(self.company, T_COMPANY)
        open_rec(raw, &co, REC_COMPANY)
        for i in range(4):
            rd_str(&co, &s)                # id, name, country, timezone
        why = f"{why}; {icm_reason(ext, found[1], found[2], py(s))}"
        for i in range(nexc):
            rd_str(c, &s)
            if same_text(ext, s):
                return self.destination(open_, f"{why}, an ICM exception: normal route", (), open_copy)
        raw = self.get(ext, T_EXT)
        read_employee(span(raw), &e)
        path = (ext,)
        why = f"{why} → ext {ext} ({py(e.name)})"
        steps, notes = self.status_first(ext, &e, why, path, &live)
        if steps is not None:
            return steps
        if e.always.kind != K_NONE and self.blocked(&e.always, path) is None:
            return self.destination(&e.always, f"{why}{notes} diverts all calls", path)
        if live.known and not live.registered:
            return self.icm_failed(number, &on_failure, f"{why}{notes} is not registered")
        if live.calls > 0:
            return self.icm_failed(number, &on_failure, f"{why}{notes} is on a call")
        name = py(e.name)
        targets = one(mk_target("extension", ext, name, 0, timeout))
        if ring == 1 and e.mobile.n:
            targets += one(mk_target("external", py(e.mobile), f"{name} (mobile)", 0, timeout))
        self.depth += 1
        failed = self.icm_failed(number, &on_failure, f"ICM: ext {ext} did not take the call")
        self.depth -= 1
        return one(mk_ring(targets, "simultaneous", timeout, why + notes, failed, failed, failed, None))

    cdef tuple icm_failed(self, str number, Dest* queue, str prefix):
        """The manager cannot take the call: the ICM queue if any, then always the normal route."""
        back = one(mk3(Continue, f"normal:{number}", f"{prefix}: back to the normal route of +{number}",
                       "continue"))
        if queue.kind == K_NONE:
            return back
        raw = self.get_ref(queue.ref, T_EXT)
        return self.department(py(queue.ref), span(raw), f"{prefix} → ICM queue", (), back)

    cdef tuple internal(self, str called, bytes raw):
        cdef Emp e
        cdef int target_type = rec_type_of(raw)
        cdef Cur c
        cdef Str company, caller_company
        open_rec(raw, &c, target_type)
        rd_str(&c, &company)
        self.company = py(company)
        caller_raw = self.get(self.caller, T_EXT) if self.caller else None
        if caller_raw is not None:
            open_rec(caller_raw, &c, rec_type_of(caller_raw))
            rd_str(&c, &caller_company)
            source_company = py(caller_company)
            if source_company != self.company:
                return hangup("CALL_REJECTED",
                        f"ext {self.caller} ({source_company}) may not dial ext {called} of "
                        f"company {self.company}; call its public number")
            if self.caller == called and target_type == REC_EMPLOYEE:
                return one(mk3(Voicemail, called, f"ext {called} called itself: own voicemail", "voicemail"))
            why = f"internal call from ext {self.caller}"
        else:
            why = f"direct call to ext {called}"
        if target_type == REC_DEPARTMENT:
            return self.department(called, span(raw), why, ())
        read_employee(span(raw), &e)
        return self.employee(called, &e, why, ())

    cdef tuple outbound_or_unknown(self, str called):
        cdef Emp e
        cdef Cur c
        cdef Str s
        caller_raw = self.get(self.caller, T_EXT) if self.caller else None
        if caller_raw is None or rec_type_of(caller_raw) != REC_EMPLOYEE:
            return hangup("UNALLOCATED_NUMBER",
                    f"{called} is neither a company number nor an extension")
        read_employee(span(caller_raw), &e)
        self.company = py(e.company)
        raw = self.get(self.company, T_COMPANY)
        open_rec(raw, &c, REC_COMPANY)
        rd_str(&c, &s)                 # id
        rd_str(&c, &s)                 # name
        rd_str(&c, &s)                 # country
        country = py(s)
        rd_str(&c, &s)                 # timezone
        rd_str(&c, &s)                 # sip domain
        rd_u16(&c)                     # no-answer seconds
        timeout = rd_u16(&c)
        rd_str(&c, &s)
        caller_id = py(s) or None
        try:
            number = to_e164(called, country)
        except PhoneNumberError as exc:
            return hangup("UNALLOCATED_NUMBER", f"ext {self.caller} dialled {called}: {exc}")
        target = mk_target("external", number, "", 0, timeout)
        return one(mk_ring((target,), "simultaneous", timeout,
                                  f"outbound call from ext {self.caller} to +{number}",
                                  None, None, None, caller_id))

    cdef tuple ivr_address(self, str address):
        cdef Cur c
        cdef Str s
        cdef Dest d
        cdef int n, i
        parts = address[4:].split("/")
        if len(parts) not in (2, 3):
            return hangup("UNALLOCATED_NUMBER", f"{address} is not an IVR address")
        raw = self.get(f"{parts[0]}/{parts[1]}", T_IVR)
        if raw is None:
            return hangup("UNALLOCATED_NUMBER", f"no IVR menu {parts[0]}/{parts[1]}")
        if len(parts) == 2:
            return self.ivr(raw, None)
        open_rec(raw, &c, REC_IVR)
        rd_str(&c, &s)
        self.company = py(s)
        rd_str(&c, &s)
        key = py(s)
        rd_str(&c, &s)                 # greeting
        rd_u8(&c)                      # timeout
        rd_u8(&c)                      # retries
        self.ring_timeout = rd_u16(&c)
        choice = parts[2]
        if choice == "timeout":
            rd_dest(&c, &d)
            return self.destination(&d, f"IVR {key}: no choice made", ())
        rd_dest(&c, &d)                # on timeout
        rd_dest(&c, &d)                # on invalid
        invalid = d
        n = rd_u8(&c)
        for i in range(n):
            rd_str(&c, &s)
            rd_dest(&c, &d)
            if py(s) == choice:
                return self.destination(&d, f"IVR {key}: caller pressed {choice}", ())
        return self.destination(&invalid, f"IVR {key}: invalid choice", ())

    # -- destinations --------------------------------------------------------

    cdef tuple destination(self, Dest* d, str why, tuple path, Str* record=NULL):
        """The steps for ``d``; ``record`` is its ext record when the caller already has it."""
        cdef Str found
        cdef Emp e
        cdef int timeout
        ref = py(d.ref)
        if d.kind == K_EMPLOYEE:
            if record != NULL and record.n:
                found = record[0]
            else:
                raw = self.get_ref(d.ref, T_EXT)   # kept alive in this frame while ``found`` is used
                found = span(raw)
            read_employee(found, &e)
            steps = self.employee(ref, &e, why, path)
        elif d.kind == K_DEPARTMENT:
            if record != NULL and record.n:
                found = record[0]
            else:
                raw = self.get_ref(d.ref, T_EXT)
                found = span(raw)
            steps = self.department(ref, found, why, path)
        elif d.kind == K_IVR:
            raw = self.get(f"{self.company}/{ref}", T_IVR)
            steps = self.ivr(raw, why)
        elif d.kind == K_VOICEMAIL:
            steps = one(mk3(Voicemail, ref, f"{why} → voicemail {ref}", "voicemail"))
        elif d.kind == K_EXTERNAL:
            timeout = self.company_ring_timeout()
            target = mk_target("external", ref, "", 0, timeout)
            steps = one(mk_ring((target,), "simultaneous", timeout, f"{why} → +{ref}",
                                       None, None, None, None))
        elif d.kind == K_FAX:
            steps = one(mk3(Fax, ref, f"{why} → fax for ext {ref}", "fax"))
        else:
            steps = hangup(ref, f"{why} → hang up")
        if d.greet.n:
            return one(mk3(Announce, py(d.greet), f"greeting before {dest_text(d)}", "announce")) + steps
        return steps

    cdef tuple ivr(self, bytes raw, str why):
        cdef Cur c
        cdef Str s
        cdef Dest d
        cdef int timeout, retries, n, i
        open_rec(raw, &c, REC_IVR)
        rd_str(&c, &s)
        company = py(s)
        self.company = company
        rd_str(&c, &s)
        key = py(s)
        rd_str(&c, &s)
        greeting = py(s)
        timeout = rd_u8(&c)
        retries = rd_u8(&c)
        self.ring_timeout = rd_u16(&c)
        rd_dest(&c, &d)
        on_timeout = f"{_KIND_NAMES[d.kind]}:{py(d.ref)}"
        rd_dest(&c, &d)
        on_invalid = f"{_KIND_NAMES[d.kind]}:{py(d.ref)}"
        n = rd_u8(&c)
        options = []
        for i in range(n):
            rd_str(&c, &s)
            rd_dest(&c, &d)
            options.append((py(s), f"{_KIND_NAMES[d.kind]}:{py(d.ref)}"))
        reason = f"IVR {key}" if why is None else f"{why} → IVR {key}"
        step = _alloc(Ivr, 9)
        _put(step, 0, f"{company}/{key}")
        _put(step, 1, greeting)
        _put(step, 2, timeout)
        _put(step, 3, retries)
        _put(step, 4, tuple(options))
        _put(step, 5, on_timeout)
        _put(step, 6, on_invalid)
        _put(step, 7, reason)
        _put(step, 8, "ivr")
        return one(step)

    cdef object blocked(self, Dest* d, tuple path):
        """Why following a divert to ``d`` must not happen, or None."""
        if d.kind != K_EMPLOYEE and d.kind != K_DEPARTMENT:
            return None
        ref = py(d.ref)
        if ref in path:
            return "divert loop " + " → ".join(path + (ref,)) + " ignored"
        if len(path) > MAX_HOPS:
            return f"divert chain longer than {MAX_HOPS} hops stopped at ext {path[len(path) - 1]}"
        return None

    # Each fallback takes ``prefix``: what happened, e.g. "ext 2001 is busy".
    # The destination then appends where the call goes ("→ voicemail 2001").

    cdef tuple busy_steps(self, Emp* e, str prefix, tuple path):
        if e.busy.kind == K_NONE:
            return hangup("USER_BUSY", f"{prefix}, no busy divert")
        blocked = self.blocked(&e.busy, path)
        if blocked is not None:
            return hangup("USER_BUSY", f"{prefix}; {blocked}")
        return self.destination(&e.busy, f"{prefix}, busy divert", path)

    cdef tuple no_answer_steps(self, Emp* e, str prefix, tuple path):
        if e.no_answer.kind == K_NONE:
            return hangup("NO_ANSWER", f"{prefix}, no no-answer divert")
        blocked = self.blocked(&e.no_answer, path)
        if blocked is not None:
            return hangup("NO_ANSWER", f"{prefix}; {blocked}")
        return self.destination(&e.no_answer, f"{prefix}, no-answer divert", path)

    cdef tuple after_desk(self, str ext, Emp* e, tuple path):
        """When the desk phone rang out: the mobile if configured, else the no-answer divert."""
        cdef int timeout = desk_timeout(e)
        if e.mobile_after:
            return self.mobile_steps(ext, e, f"ext {ext} no answer after {timeout} s → mobile +{py(e.mobile)}",
                                     path)
        return self.no_answer_steps(e, f"ext {ext} no answer after {timeout} s", path)

    cdef tuple mobile_steps(self, str ext, Emp* e, str reason, tuple path):
        """Ring the mobile; if that fails too, the no-answer divert."""
        cdef int timeout = e.no_answer_after if e.no_answer.kind != K_NONE else e.ring_timeout
        target = mk_target("external", py(e.mobile), f"{py(e.name)} (mobile)", 0, timeout)
        if self.depth:
            rest = self.cont(ext, "mobile", ",".join(path), f"mobile of ext {ext} did not answer")
        else:
            self.depth += 1
            rest = self.no_answer_steps(e, f"mobile of ext {ext} did not answer", path)
            self.depth -= 1
        return one(mk_ring((target,), "simultaneous", timeout, reason, rest, rest, rest, None))

    cdef tuple unreachable_steps(self, str ext, Emp* e, str prefix, tuple path):
        blocked = None
        if e.unreachable.kind != K_NONE:
            blocked = self.blocked(&e.unreachable, path)
            if blocked is None:
                return self.destination(&e.unreachable, f"{prefix}, unreachable divert", path)
        if e.mobile_after:
            note = f"; {blocked}" if blocked is not None else ""
            return self.mobile_steps(ext, e, f"{prefix}{note} → mobile +{py(e.mobile)}", path)
        note = f"; {blocked}" if blocked is not None else ", no unreachable divert"
        return hangup("USER_NOT_REGISTERED", f"{prefix}{note}")

    cdef tuple cont(self, str ext, str condition, str trail, str prefix):
        """A continuation; ``trail`` is the path joined with commas."""
        return one(mk3(Continue, f"then:{ext}/{condition}/{trail}",
                                      f"{prefix}: next step decided then", "continue"))

    # -- referral status (rare: only employees flagged LIVE_REFERRAL) ------------

    cdef bint referral_maybe(self, str ext) except -1:
        """Whether any stored status of ``ext`` is in force now: a C scan of its records, so
        employees whose statuses are all past or future cost one cursor walk, no objects."""
        if self.c5 is None:
            self.c5 = self.txn.cursor(self.dbs["referral"])
        cur = self.c5
        prefix = (ext + "/").encode()
        if not cur.set_range(prefix):
            return False
        while True:
            key = cur.key()
            if not (<bytes>key).startswith(prefix):
                return False
            if any_in_force(<bytes>cur.value(), self.at):
                return True
            if not cur.next():
                return False

    cdef object referral(self, str ext, Emp* e):
        if not self.referral_maybe(ext):
            return None
        return self.referral_in_force(ext, e)

    cdef object referral_in_force(self, str ext, Emp* e):
        """The status in force, once :meth:`referral_maybe` said there may be one."""
        return referral_route.in_force(self.txn, self.dbs["referral"], self.dbs["company"], ext, py(e.company),
                                       self.at, relevant)

    cdef tuple status_steps(self, str ext, Emp* e, object status, int code, Dest* to, str why, tuple path):
        """Tell the caller why, then the status's action (divert, alternate number or voicemail)."""
        cdef Dest alt
        cdef bytes alt_ref
        why = f"{why} is {status.text}"
        note = ""
        if code == A_DIVERT or code == A_ALTERNATE:
            if code == A_DIVERT:
                label = "status divert"
                blocked = self.blocked(to, path)
            else:
                dest, label = referral_route.alternate(self.txn, self.dbs["ext"], self.dbs["company"], status,
                                                       py(e.company))
                blocked = label
                if dest is not None:
                    alt_ref = (<str>dest.ref).encode()
                    alt.kind = KIND_CODES[dest.kind]
                    alt.ref = span(alt_ref)
                    alt.greet.n = 0
                    to = &alt
                    blocked = self.blocked(to, path)
            if blocked is None:
                return one(status.say) + self.destination(to, f"{why}, {label}", path)
            note = f"; {blocked}"
        return (status.say, mk3(Voicemail, ext, f"{why}{note} → voicemail {ext}", "voicemail"))

    cdef tuple status_first(self, str ext, Emp* e, str why, tuple path, Live* live):
        """``(steps, notes)``: the steps when the employee's status decides the call (None
        otherwise) and the note a ring carries when the status says "ring anyway"; fills ``live``."""
        cdef Dest to
        cdef int code
        self.live(e.slot, live)
        if live.referral:
            status = self.referral(ext, e)
            if status is not None:
                code = action_of(e, status.interval.status, &to)
                if code != A_RING:
                    return self.status_steps(ext, e, status, code, &to, why, path), ""
                return None, f"; {status.text}: ringing anyway"
        return None, ""

    cdef object member_unavailable(self, str member):
        """Why a department member with a status is skipped (None: ring them)."""
        cdef Emp e
        cdef Dest to
        if not self.referral_maybe(member):
            return None
        raw = self.get(member, T_EXT)
        read_employee(span(raw), &e)
        status = self.referral_in_force(member, &e)
        if status is None or action_of(&e, status.interval.status, &to) == A_RING:
            return None
        return referral_route.WORDS.get(status.shown, f"status {status.shown}")

    cdef tuple employee(self, str ext, Emp* e, str why, tuple path):
        cdef Live live
        cdef int timeout
        path = path + (ext,)
        self.ring_timeout = e.ring_timeout
        entry = slot_entry_of(e.slot, ext, e.name)
        name = entry[1]
        why = f"{why} → ext {ext} ({name})"
        steps, notes = self.status_first(ext, e, why, path, &live)
        if steps is not None:
            return steps
        if e.always.kind != K_NONE:
            blocked = self.blocked(&e.always, path)
            if blocked is None:
                return self.destination(&e.always, f"{why}{notes} diverts all calls", path)
            notes += f"; {blocked}"
        if live.known and not live.registered:
            return self.unreachable_steps(ext, e, f"{why} is not registered{notes}", path)
        if live.calls > 0:
            if e.busy.kind != K_NONE and self.blocked(&e.busy, path) is None:
                return self.destination(&e.busy, f"{why} is on a call{notes}, busy divert", path)
            notes += "; on a call, no busy divert: ringing anyway (call waiting)"
        timeout = desk_timeout(e)
        if self.depth:
            trail = ",".join(path)
            on_busy = self.cont(ext, "busy", trail, f"ext {ext} is busy")
            on_no_answer = self.cont(ext, "no_answer", trail, f"ext {ext} no answer after {timeout} s")
            on_unreachable = self.cont(ext, "unreachable", trail, f"ext {ext} is not reachable")
        else:
            self.depth += 1
            on_busy = self.busy_steps(e, f"ext {ext} is busy", path)
            on_no_answer = self.after_desk(ext, e, path)
            on_unreachable = self.unreachable_steps(ext, e, f"ext {ext} is not reachable", path)
            self.depth -= 1
        target = slot_target(entry, 0, timeout)
        return one(mk_ring((target,), "simultaneous", timeout, why + notes,
                                  on_busy, on_no_answer, on_unreachable, None))

    cdef tuple nobody(self, Dest* no_answer, str reason, tuple path):
        """Nobody in the department took the call: its no-answer destination."""
        if no_answer.kind == K_NONE:
            return hangup("NO_ANSWER", f"{reason}, no destination configured")
        blocked = self.blocked(no_answer, path)
        if blocked is not None:
            return hangup("NO_ANSWER", f"{reason}; {blocked}")
        return self.destination(no_answer, reason, path)

    # -- continuations ---------------------------------------------------------

    cdef tuple then(self, str address):
        """Resume a fallback: ``then:<ext>/<condition>/<path>`` (see route_plan)."""
        cdef Emp e
        cdef Cur c
        cdef Str s
        cdef Dest no_answer
        cdef int i, n, target_type
        parts = address[5:].split("/")
        path = tuple(parts[2].split(",")) if len(parts) == 3 else ()
        if len(parts) != 3 or not all([x.isdigit() for x in path]) or path[len(path) - 1] != parts[0]:
            return hangup("UNALLOCATED_NUMBER", f"{address} is not a fallback address")
        ext = parts[0]
        condition = parts[1]
        raw = self.get(ext, T_EXT)
        if raw is None:
            return hangup("UNALLOCATED_NUMBER", f"{address}: ext {ext} no longer exists")
        target_type = rec_type_of(raw)
        if target_type == REC_DEPARTMENT:
            open_rec(raw, &c, REC_DEPARTMENT)
            rd_str(&c, &s)
            self.company = py(s)
            if condition == "nobody":
                rd_str(&c, &s)
                rd_u8(&c)
                rd_u16(&c)
                rd_u16(&c)
                self.ring_timeout = rd_u16(&c)
                rd_dest(&c, &no_answer)
                return self.nobody(&no_answer, f"dept {ext} ({py(s)}): nobody answered", path)
        else:
            read_employee(span(raw), &e)
            self.company = py(e.company)
            self.ring_timeout = e.ring_timeout
            if condition == "busy":
                return self.busy_steps(&e, f"ext {ext} is busy", path)
            if condition == "no_answer":
                return self.after_desk(ext, &e, path)
            if condition == "unreachable":
                return self.unreachable_steps(ext, &e, f"ext {ext} is not reachable", path)
            if condition == "mobile":
                return self.no_answer_steps(&e, f"mobile of ext {ext} did not answer", path)
        return hangup("UNALLOCATED_NUMBER", f"{address}: no fallback '{condition}' for ext {ext}")

    cdef tuple department(self, str ext, Str record, str why, tuple path, tuple after=None):
        """Ring the group; ``after`` (ICM's way back to the normal route) replaces its own no-answer route."""
        cdef Cur c
        cdef Str s, m, n
        cdef Dest no_answer
        cdef Live live
        cdef int strategy, step, timeout, count, i, elapsed, leg, delay, total
        cdef uint32_t slot
        open_span(record, &c, REC_DEPARTMENT)
        rd_str(&c, &s)                 # company
        rd_str(&c, &s)
        name = py(s)
        strategy = rd_u8(&c)
        if strategy > 2:
            raise StoreError(f"unknown ring strategy {strategy} for dept {ext}; reload the config")
        step = rd_u16(&c)
        timeout = rd_u16(&c)
        self.ring_timeout = rd_u16(&c)
        rd_dest(&c, &no_answer)
        count = rd_u16(&c)
        path = path + (ext,)
        strategy_name = _STRATEGIES[strategy]
        why = f"{why} → dept {ext} ({name}), {strategy_name}"
        # One pass: presence of every member (for the "skipped" note), targets
        # for the available ones until the group's timeout is used up.
        skipped = None
        targets = []
        elapsed = 0                    # sequential: when the next leg starts
        delay = 0                      # cumulative: when the next phone joins
        for i in range(count):
            rd_str(&c, &m)
            rd_str(&c, &n)
            rd_u32(&c, &slot)
            entry = slot_entry(slot, m, n)
            member = entry[0]
            self.live(slot, &live)
            if live.known and not live.registered:
                if skipped is None:
                    skipped = []
                skipped.append(f"{member} not registered")
            elif live.calls > 0:
                if skipped is None:
                    skipped = []
                skipped.append(f"{member} on a call")
            elif live.referral and (word := self.member_unavailable(member)) is not None:
                if skipped is None:
                    skipped = []
                skipped.append(f"{member} {word}")
            elif strategy == 0:
                targets.append(slot_target(entry, 0, timeout))
            elif strategy == 1:
                if elapsed < timeout:
                    leg = step if step < timeout - elapsed else timeout - elapsed
                    targets.append(slot_target(entry, elapsed, leg))
                    elapsed += leg
            elif delay < timeout:
                targets.append(slot_target(entry, delay, timeout - delay))
                delay += step
        if skipped is not None:
            why += "; skipped " + ", ".join(skipped)
        if not targets:
            if after is not None:
                return after
            return self.nobody(&no_answer, f"{why}: nobody available", path)
        total = elapsed if strategy == 1 else timeout
        reason = f"dept {ext} ({name}): nobody answered"
        if after is not None:
            rest = after
        elif self.depth:
            rest = self.cont(ext, "nobody", ",".join(path), reason)
        else:
            self.depth += 1
            rest = self.nobody(&no_answer, reason, path)
            self.depth -= 1
        return one(mk_ring(tuple(targets), strategy_name, total, why, rest, rest, rest, None))
