# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled twin of :func:`fastpath.icm_lookup.lookup_ref`.

One read transaction; the history record, the cached CRM answer and the
extension record are read in place (bounds-checked pointer walks over the
layouts of ``fastpath/records.py``); the caller number is normalised in C by
``_caller_numbers.normalise_c`` into a stack buffer that becomes the LMDB keys
directly.  Only the answer becomes Python objects.

The company's dialling rules (a few KB) are kept per store and company with
the config generation they were read at; each lookup reads the generation
(8 bytes) in its snapshot and reads the rules again only when it changed.
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
from libc.stdint cimport int64_t
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
    RECORD_VERSION = 1
    CRM_FOUND = 1
    HISTORY_EXT = 11        # type, version, i64 when, u8 direction, then the extension string
    CRM_EXPIRES = 19        # type, version, u8 status, i64 fetched, i64 refresh_after, i64 expires,
    CRM_GENERATION = 27     # i64 generation, then the extension and source strings
    CRM_EXT = 35


cdef str HISTORY = "history"
cdef str CRM = "crm"


@cython.final
cdef class _State:
    """Per store: the table handles, and each company's key and rules with their config generation."""
    cdef object meta, dial, history, crm, ext
    cdef dict companies         # company -> (key bytes, generation, rules bytes)
    cdef object txn_id          # the snapshot the generation below was read in (LMDB txn id), or None
    cdef int64_t generation


cdef _State state_of(store):
    st = store.__dict__.get("_icm_state")
    if st is not None:
        return <_State>st
    dbs = store.db
    cdef _State state = _State.__new__(_State)
    state.meta, state.dial, state.history = dbs["meta"], dbs[RULES_TABLE], dbs["history"]
    state.crm, state.ext = dbs["crm"], dbs["ext"]
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


cdef bint employee_of(object get, object ext_db, const unsigned char* ext, Py_ssize_t ext_len,
                      bytes company) except -1:
    """Whether extension ``ext`` is an employee of ``company`` in the loaded config."""
    if ext_len == 0 or ext_len > 511:      # no such key can exist (LMDB keys are 1..511 bytes)
        return False
    raw = get(PyBytes_FromStringAndSize(<const char*>ext, ext_len), None, ext_db)
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
    txn = store.env.begin()
    try:
        return lookup_txn(txn, store, company, caller, at, max_age, order)
    finally:
        txn.abort()


def lookup_in(txn, store, str company, str caller, now, int max_age=0, tuple order=SOURCES):
    """The lookup inside a read transaction the caller owns (the compiled engine's ICM step)."""
    return lookup_txn(txn, store, company, caller, int(now), max_age, order)


cdef object lookup_txn(object txn, object store, str company, str caller, int64_t at, int max_age, tuple order):
    """The lookup inside a read transaction the caller owns (the compiled engine's, for the ICM step)."""
    cdef int64_t when, generation = 0, checked
    cdef Rules r
    cdef char digits[NORMALISED_MAX]
    cdef Py_ssize_t k, size, n, ext_len, src_len, end
    cdef const unsigned char* p
    cdef const char* text
    cdef _State st = state_of(store)
    cdef bytes ckey
    get = txn.get
    # LMDB numbers snapshots by the last write committed: the same id is the same data, so the
    # config generation read in it still holds (any write, even of call history, changes the id).
    txn_id = txn.id()
    if st.txn_id is not None and txn_id == st.txn_id:
        generation = st.generation
    else:
        raw = get(b"generation", None, st.meta)
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
        rules = get(ckey, None, st.dial)
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
    for source in order:
        if source is HISTORY or source == HISTORY:
            raw = get(PyBytes_FromStringAndSize(digits, k), None, st.history)
            if raw is None:
                continue
            p = <const unsigned char*>PyBytes_AS_STRING(raw)
            n = PyBytes_GET_SIZE(raw)
            if n < HISTORY_EXT + 2 or p[0] != REC_HISTORY or p[1] != RECORD_VERSION:
                _malformed("call-history")
            when = rd_i64(p + 2)
            ext_len = rd_u16(p + HISTORY_EXT)
            if HISTORY_EXT + 2 + ext_len > n:
                _malformed("call-history")
            if max_age and at - when > max_age:
                continue
            if employee_of(get, st.ext, p + HISTORY_EXT + 2, ext_len, ckey):
                return (PyUnicode_DecodeUTF8(<const char*>p + HISTORY_EXT + 2, ext_len, NULL),
                        HISTORY, when)
        elif source is CRM or source == CRM:
            key = PyBytes_FromStringAndSize(NULL, PyBytes_GET_SIZE(ckey) + 1 + k)
            memcpy(PyBytes_AS_STRING(key), PyBytes_AS_STRING(ckey), PyBytes_GET_SIZE(ckey))
            PyBytes_AS_STRING(key)[PyBytes_GET_SIZE(ckey)] = c'/'
            memcpy(PyBytes_AS_STRING(key) + PyBytes_GET_SIZE(ckey) + 1, digits, k)
            raw = get(key, None, st.crm)
            if raw is None:
                continue
            p = <const unsigned char*>PyBytes_AS_STRING(raw)
            n = PyBytes_GET_SIZE(raw)
            if n < CRM_EXT + 2 or p[0] != REC_CRM or p[1] != RECORD_VERSION:
                _malformed("CRM answer")
            ext_len = rd_u16(p + CRM_EXT)
            if CRM_EXT + 2 + ext_len + 2 > n:
                _malformed("CRM answer")
            src_len = rd_u16(p + CRM_EXT + 2 + ext_len)
            end = CRM_EXT + 4 + ext_len + src_len
            for _ in range(3):          # user id, name, e-mail: not read here, but checked like the twin does
                if end + 2 > n:
                    _malformed("CRM answer")
                end += 2 + rd_u16(p + end)
            if end > n:
                _malformed("CRM answer")
            if p[2] != CRM_FOUND or at >= rd_i64(p + CRM_EXPIRES):
                continue
            checked = rd_i64(p + CRM_GENERATION)
            if ((checked != 0 and checked == generation)
                    or employee_of(get, st.ext, p + CRM_EXT + 2, ext_len, ckey)):
                return (PyUnicode_DecodeUTF8(<const char*>p + CRM_EXT + 2, ext_len, NULL),
                        PyUnicode_DecodeUTF8(<const char*>p + CRM_EXT + 4 + ext_len, src_len, NULL),
                        rd_i64(p + 3))
        else:
            raise ValueError(f"unknown ICM source {source!r}; use {', '.join(SOURCES)}")
    return None
