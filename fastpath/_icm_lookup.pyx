# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled twin of :func:`fastpath.icm_lookup.lookup_ref`.

One read transaction and, for the caller, one LMDB read: their ``caller``
record holds both the call-history entry and each company's cached CRM answer
(``records.CallerRec``); it is checked whole and read in place
(bounds-checked pointer walks over the layouts of ``fastpath/records.py``), as
is the extension record when the answer's extension needs checking.  The caller
number is normalised in C by ``_caller_numbers.normalise_c`` into a stack
buffer that becomes the LMDB key directly.  Only the answer becomes Python
objects.

The company's dialling rules (a few KB) are kept per store and company with
the config generation they were read at; a lookup reads the generation
(8 bytes) only when its snapshot is a newer one than the last lookup's (LMDB's
txn id changed), and the rules only when the generation changed.
The rules are config: ``Store.load_config`` writes them (table ``dial``, one of
the store's config tables, whose handle the store opens with the others) in
the transaction that bumps the generation, so this is exact, and it
saves copying the rules out of LMDB on every call.  The same generation tells
whether a cached CRM answer's extension was checked against the loaded config
(then its extension record is not read again).
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize, PyBytes_CheckExact
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcpy, memcmp

from ._caller_numbers cimport Rules, rules_open, normalise_c, NORMALISED_MAX

from .errors import StoreError
from .icm_lookup import RULES_TABLE, SOURCES


cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object, Py_ssize_t*) except NULL
    bint PyUnicode_IS_ASCII(object)


cdef enum:
    REC_EMPLOYEE = 2
    REC_HISTORY = 8
    REC_CRM = 9
    REC_CALLER = 11
    RECORD_VERSION = 1
    CRM_FOUND = 1
    CRM_UNMAPPED = 2
    CALLER_HISTORY = 6      # type, version, u32 history length, then the history record
    HISTORY_EXT = 11        # type, version, i64 when, u8 direction, then the extension string
    CRM_EXPIRES = 19        # type, version, u8 status, i64 fetched, i64 refresh_after, i64 expires,
    CRM_GENERATION = 27     # i64 generation, then the extension and source strings
    CRM_EXT = 35


cdef str HISTORY = "history"
cdef str CRM = "crm"


@cython.final
cdef class _State:
    """Per store: its ``env.begin``, the table handles, and each company's key and rules with
    their config generation."""
    cdef object begin, meta, dial, caller, ext
    cdef dict companies         # company -> (key bytes, generation, rules bytes)
    cdef object txn_id          # the snapshot the generation below was read in (LMDB txn id), or None
    cdef int64_t generation


cdef _State state_of(store):
    st = store.__dict__.get("_icm_state")
    if st is not None:
        return <_State>st
    dbs = store.db
    cdef _State state = _State.__new__(_State)
    state.begin = store.env.begin
    state.meta, state.dial, state.caller, state.ext = dbs["meta"], dbs[RULES_TABLE], dbs["caller"], dbs["ext"]
    state.companies = {}
    state.txn_id = None
    store.__dict__["_icm_state"] = state
    return state


cdef int _malformed(str what) except -1:
    raise StoreError(f"a {what} record in the store is malformed; the store is corrupt")


cdef inline int64_t rd_i64(const unsigned char* p) noexcept:
    cdef int64_t v
    memcpy(&v, p, 8)            # little-endian hosts only, like the compiled engine
    return v


cdef inline Py_ssize_t rd_u16(const unsigned char* p) noexcept:
    return p[0] | (p[1] << 8)


cdef inline Py_ssize_t rd_u32(const unsigned char* p) noexcept:
    return <Py_ssize_t>(p[0] | (p[1] << 8) | (p[2] << 16) | (<uint32_t>p[3] << 24))


cdef bint utf8_ok(const unsigned char* s, Py_ssize_t n) noexcept:
    """Whether ``s[:n]`` is UTF-8 as Python's strict decoder takes it (no surrogates, no
    overlong forms, nothing past U+10FFFF): the reference decodes every string of a record."""
    cdef Py_ssize_t i = 0, j, k
    cdef unsigned char c, c1
    cdef uint64_t word
    while i < n:
        if i + 8 <= n:              # eight ASCII bytes at a time: names, e-mails and ids mostly are
            memcpy(&word, s + i, 8)
            if (word & 0x8080808080808080ULL) == 0:
                i += 8
                continue
        c = s[i]
        if c < 0x80:
            i += 1
            continue
        if 0xC2 <= c <= 0xDF:
            k = 1
        elif 0xE0 <= c <= 0xEF:
            k = 2
        elif 0xF0 <= c <= 0xF4:
            k = 3
        else:
            return False
        if i + k >= n:              # the sequence runs past the string
            return False
        c1 = s[i + 1]
        if (c1 & 0xC0) != 0x80 or (c == 0xE0 and c1 < 0xA0) or (c == 0xED and c1 > 0x9F) \
                or (c == 0xF0 and c1 < 0x90) or (c == 0xF4 and c1 > 0x8F):
            return False
        for j in range(2, k + 1):
            if (s[i + j] & 0xC0) != 0x80:
                return False
        i += k + 1
    return True


cdef int check_history(const unsigned char* p, Py_ssize_t n) except -1:
    """A history record's layout, checked as ``records.decode_history`` reads it."""
    if n < HISTORY_EXT + 2 or p[0] != REC_HISTORY or p[1] != RECORD_VERSION \
            or HISTORY_EXT + 2 + rd_u16(p + HISTORY_EXT) > n \
            or not utf8_ok(p + HISTORY_EXT + 2, rd_u16(p + HISTORY_EXT)):
        _malformed("call-history")
    return 0


cdef int check_answer(const unsigned char* p, Py_ssize_t n) except -1:
    """A cached CRM answer's layout, checked as ``records.decode_crm_answer`` reads it."""
    cdef Py_ssize_t end = CRM_EXT
    if n < CRM_EXT or p[0] != REC_CRM or p[1] != RECORD_VERSION or p[2] > CRM_UNMAPPED:
        _malformed("CRM answer")
    for _ in range(5):              # extension, source, user id, name, e-mail
        if end + 2 > n or end + 2 + rd_u16(p + end) > n or not utf8_ok(p + end + 2, rd_u16(p + end)):
            _malformed("CRM answer")
        end += 2 + rd_u16(p + end)
    return 0


cdef Py_ssize_t check_caller(const unsigned char* p, Py_ssize_t n, bytes company,
                             Py_ssize_t* history_len) except -2:
    """Check a caller record's whole layout (as ``records.decode_caller`` does) and return the
    offset of ``company``'s CRM answer in it, or -1; ``history_len`` gets the history's length
    (the history, if any, starts at CALLER_HISTORY)."""
    cdef Py_ssize_t pos, count, size, found = -1, want = PyBytes_GET_SIZE(company)
    cdef const char* name = PyBytes_AS_STRING(company)
    if n < CALLER_HISTORY or p[0] != REC_CALLER or p[1] != RECORD_VERSION:
        _malformed("caller")
    size = rd_u32(p + 2)
    if CALLER_HISTORY + size + 2 > n:
        _malformed("caller")
    if size:
        check_history(p + CALLER_HISTORY, size)
    history_len[0] = size
    pos = CALLER_HISTORY + size
    count = rd_u16(p + pos)
    pos += 2
    for _ in range(count):
        if pos + 2 > n:
            _malformed("caller")
        size = rd_u16(p + pos)
        if pos + 2 + size + 4 > n or not utf8_ok(p + pos + 2, size):
            _malformed("caller")
        if size == want and memcmp(p + pos + 2, name, size) == 0:
            found = pos + 2 + size
        pos += 2 + size
        size = rd_u32(p + pos)
        if pos + 4 + size > n:
            _malformed("caller")
        check_answer(p + pos + 4, size)
        pos += 4 + size
    if pos != n:
        _malformed("caller")
    return found


cdef bint employee_of(object txn, object ext_db, const unsigned char* ext, Py_ssize_t ext_len,
                      bytes company) except -1:
    """Whether extension ``ext`` is an employee of ``company`` in the loaded config."""
    if ext_len == 0 or ext_len > 511:      # no such key can exist (LMDB keys are 1..511 bytes)
        return False
    raw = txn.get(PyBytes_FromStringAndSize(<const char*>ext, ext_len), None, ext_db)
    if raw is None:
        return False
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(raw)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw), size
    if n < 4:
        _malformed("extension")
    if p[0] != REC_EMPLOYEE:
        return False
    size = rd_u16(p + 2)
    if 4 + size > n:
        _malformed("extension")
    return size == PyBytes_GET_SIZE(company) and memcmp(p + 4, PyBytes_AS_STRING(company), size) == 0


def lookup(store, str company, str caller, now, int max_age=0, tuple order=SOURCES):
    """``(extension, source, when)`` of the caller's manager, or None (see ``fastpath.icm_lookup``)."""
    cdef int64_t at = int(now)
    cdef _State st = state_of(store)
    txn = st.begin()
    try:
        return lookup_state(txn, st, company, caller, at, max_age, order)
    finally:
        txn.abort()


def lookup_in(txn, store, str company, str caller, now, int max_age=0, tuple order=SOURCES):
    """The lookup inside a read transaction the caller owns (the compiled engine's ICM step)."""
    return lookup_state(txn, state_of(store), company, caller, int(now), max_age, order)


cdef object lookup_txn(object txn, object store, str company, str caller, int64_t at, int max_age, tuple order):
    """The lookup inside a read transaction the caller owns (for compiled callers)."""
    return lookup_state(txn, state_of(store), company, caller, at, max_age, order)


cdef object lookup_state(object txn, _State st, str company, str caller, int64_t at, int max_age, tuple order):
    cdef int64_t when, generation = 0, checked
    cdef Rules r
    cdef char digits[NORMALISED_MAX]
    cdef Py_ssize_t k, size, n, ext_len, src_len, answer, history_len = 0
    cdef const unsigned char* p
    cdef const unsigned char* h
    cdef const unsigned char* a
    cdef const char* text
    cdef bytes ckey
    # LMDB numbers snapshots by the last write committed: the same id is the same data, so the
    # config generation read in it still holds (any write, even of call history, changes the id).
    txn_id = txn.id()
    if st.txn_id is not None and txn_id == st.txn_id:
        generation = st.generation
    else:
        raw = txn.get(b"generation", None, st.meta)
        if raw is not None and PyBytes_GET_SIZE(raw) == 8:
            generation = rd_i64(<const unsigned char*>PyBytes_AS_STRING(raw))
        st.txn_id = txn_id
        st.generation = generation
    hit = st.companies.get(company)
    if hit is not None and (<tuple>hit)[1] == generation:
        ckey = (<tuple>hit)[0]
        rules = (<tuple>hit)[2]
    else:
        ckey = company.encode()
        rules = txn.get(ckey, None, st.dial)
        if rules is None:
            raise StoreError(f"no dialling rules for company {company!r}; reload the config")
        if len(st.companies) > 4096:
            st.companies.clear()
        st.companies[company] = (ckey, generation, rules)
    rules_open(&r, <const unsigned char*>PyBytes_AS_STRING(rules), PyBytes_GET_SIZE(rules))
    if not PyUnicode_IS_ASCII(caller):
        return None
    text = PyUnicode_AsUTF8AndSize(caller, &size)
    k = normalise_c(&r, text, size, digits)
    if k < 0:
        return None
    raw = txn.get(PyBytes_FromStringAndSize(digits, k), None, st.caller)
    if raw is None:
        return None
    p = <const unsigned char*>PyBytes_AS_STRING(raw)
    n = PyBytes_GET_SIZE(raw)
    answer = check_caller(p, n, ckey, &history_len)
    for source in order:
        if source is HISTORY or source == HISTORY:
            if history_len == 0:
                continue
            h = p + CALLER_HISTORY
            when = rd_i64(h + 2)
            if max_age and at - when > max_age:
                continue
            ext_len = rd_u16(h + HISTORY_EXT)
            if employee_of(txn, st.ext, h + HISTORY_EXT + 2, ext_len, ckey):
                return (PyUnicode_DecodeUTF8(<const char*>h + HISTORY_EXT + 2, ext_len, NULL), HISTORY, when)
        elif source is CRM or source == CRM:
            if answer < 0:
                continue
            a = p + answer + 4
            if a[2] != CRM_FOUND or at >= rd_i64(a + CRM_EXPIRES):
                continue
            ext_len = rd_u16(a + CRM_EXT)
            src_len = rd_u16(a + CRM_EXT + 2 + ext_len)
            checked = rd_i64(a + CRM_GENERATION)
            if ((checked != 0 and checked == generation)
                    or employee_of(txn, st.ext, a + CRM_EXT + 2, ext_len, ckey)):
                return (PyUnicode_DecodeUTF8(<const char*>a + CRM_EXT + 2, ext_len, NULL),
                        PyUnicode_DecodeUTF8(<const char*>a + CRM_EXT + 4 + ext_len, src_len, NULL),
                        rd_i64(a + 3))
        else:
            raise ValueError(f"unknown ICM source {source!r}; use {', '.join(SOURCES)}")
    return None
