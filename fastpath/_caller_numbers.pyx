# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled twin of :func:`fastpath.caller_numbers.normalise_py`.

Same table, same walk, in C: the input is checked and stripped on its UTF-8
bytes, every intermediate number lives in a 64-byte stack buffer, and only the
result becomes a Python object.  Every read of the table is bounds-checked
(a corrupt record raises ``PhoneNumberError``, never reads past its end).
``fastpath/_icm_lookup.pyx`` calls :c:func:`normalise_c` directly through
``_caller_numbers.pxd``.  Any difference from the pure twin is a bug; the
shared tests compare both with ``phonenumbers``.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_CheckExact
from cpython.unicode cimport PyUnicode_Check
from libc.string cimport memcpy, memcmp

from .errors import PhoneNumberError


cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object, Py_ssize_t*) except NULL
    bint PyUnicode_IS_ASCII(object)
    object PyUnicode_DecodeASCII(const char*, Py_ssize_t, const char*)


cdef enum:
    REC_DIAL_RULES = 10
    RULES_VERSION = 1
    HEAD_SIZE = 40
    N_OFFSETS = 9
    MAX_DIGITS = 32
    MAX_NSN = 17
    MIN_NSN = 2
    LEN_SLOTS = 48
    L_POSSIBLE = 0
    L_LOCAL_ONLY = 1
    L_TOO_SHORT = 2
    L_TOO_LONG = 3
    L_INVALID = 4
    F_V_HOME = 1
    F_VALID = 2
    F_V_MAIN = 4
    DEAD = 0xFFFF
    P_ANCHORED = 1
    P_TRANSFORM = 2
    CC_ENTRY = 6


cdef struct Match:
    Py_ssize_t parts
    Py_ssize_t length
    int flags


cdef int _corrupt() except -1:
    raise PhoneNumberError("dialling rules record is malformed or truncated; reload the config")


cdef inline unsigned int u16(const unsigned char* p) noexcept nogil:
    return p[0] | (p[1] << 8)


cdef inline unsigned int u32(const unsigned char* p) noexcept nogil:
    return p[0] | (p[1] << 8) | (p[2] << 16) | (<unsigned int>p[3] << 24)


cdef int rules_open(Rules* r, const unsigned char* p, Py_ssize_t n) except -1:
    cdef Py_ssize_t o[N_OFFSETS]
    cdef int i
    if n < HEAD_SIZE or p[0] != REC_DIAL_RULES or p[1] != RULES_VERSION:
        _corrupt()
    for i in range(N_OFFSETS):
        o[i] = u32(p + 4 + 4 * i)
        if o[i] > n:
            _corrupt()
    r.p = p
    r.n = n
    r.cc = u16(p + 2)
    r.len_home = o[0]
    r.len_main = o[1]
    r.city = o[2]
    r.idd = o[3]
    r.np_home = o[4]
    r.np_main = o[5]
    if (o[0] + LEN_SLOTS > n or o[1] + LEN_SLOTS > n or o[2] + 1 > n or o[2] + 1 + p[o[2]] > n
            or o[3] + 2 > n or o[4] + 2 > n or o[5] + 2 > n or o[6] + 2 > n or o[7] + 2 > n):
        _corrupt()
    r.n_states = u16(p + o[6])
    r.dfa_flags = o[6] + 2
    r.dfa_trans = r.dfa_flags + r.n_states + (r.n_states & 1)
    if r.n_states < 1 or r.dfa_trans + <Py_ssize_t>r.n_states * 20 > n:
        _corrupt()
    r.n_ccs = u16(p + o[7])
    r.ccs = o[7] + 2
    if r.ccs + <Py_ssize_t>r.n_ccs * CC_ENTRY > n:
        _corrupt()
    return 0


# --- the automaton -----------------------------------------------------------------

cdef int flags_of(Rules* r, const char* s, Py_ssize_t n) except -1:
    cdef unsigned int state = 0
    cdef Py_ssize_t i
    cdef const unsigned char* trans = r.p + r.dfa_trans
    for i in range(n):
        state = u16(trans + (state * 10 + <unsigned int>(s[i] - 48)) * 2)
        if state == DEAD:
            return 0
        if state >= <unsigned int>r.n_states:
            _corrupt()
    return r.p[r.dfa_flags + state]


cdef inline int verdict(Rules* r, Py_ssize_t n, bint main) noexcept:
    if n >= LEN_SLOTS:
        return L_TOO_LONG
    return r.p[(r.len_main if main else r.len_home) + n]


# --- prefix lists --------------------------------------------------------------------

cdef Py_ssize_t skip_parts(Rules* r, Py_ssize_t pos) except -1:
    cdef int count, k
    if pos + 1 > r.n:
        _corrupt()
    count = r.p[pos]
    pos += 1
    for k in range(count):
        if pos + 3 > r.n:
            _corrupt()
        if r.p[pos] == 1:
            pos += 3
        else:
            pos += 2 + r.p[pos + 1]
    if pos > r.n:
        _corrupt()
    return pos


cdef bint match(Rules* r, Py_ssize_t section, const char* s, Py_ssize_t n, Match* m) except -1:
    """First path of the list at ``section`` fitting the start of ``s``, as ``re.match`` picks it."""
    cdef const unsigned char* p = r.p
    cdef Py_ssize_t pos = section + 2, masks, parts, length, i
    cdef int count = u16(p + section), k, flags
    cdef bint fits
    for k in range(count):
        if pos + 2 > r.n:
            _corrupt()
        length = p[pos]
        flags = p[pos + 1]
        masks = pos + 2
        parts = masks + 2 * length
        if parts + 1 > r.n:
            _corrupt()
        fits = length <= n and (not (flags & P_ANCHORED) or length == n)
        if fits:
            for i in range(length):
                if not ((u16(p + masks + 2 * i) >> (s[i] - 48)) & 1):
                    fits = False
                    break
        if fits:
            m.parts = parts
            m.length = length
            m.flags = flags
            return True
        pos = skip_parts(r, parts)
    return False


cdef Py_ssize_t expand(Rules* r, Py_ssize_t pos, const char* s, Py_ssize_t n, char* out) except -1:
    """The replacement of a transform rule: literal digits and spans of ``s``."""
    cdef int count = r.p[pos], k, a, b, size
    cdef Py_ssize_t written = 0
    pos += 1
    for k in range(count):
        if r.p[pos] == 1:
            a = r.p[pos + 1]
            b = r.p[pos + 2]
            if a > b or b > n or written + (b - a) >= NORMALISED_MAX:
                _corrupt()
            memcpy(out + written, s + a, b - a)
            written += b - a
            pos += 3
        else:
            size = r.p[pos + 1]
            if pos + 2 + size > r.n or written + size >= NORMALISED_MAX:
                _corrupt()
            memcpy(out + written, r.p + pos + 2, size)
            written += size
            pos += 2 + size
    return written


cdef Py_ssize_t strip_national_prefix(Rules* r, const char* s, Py_ssize_t n, bint main, char* out) except -1:
    """libphonenumber's _maybe_strip_national_prefix_carrier_code; the result goes to ``out``."""
    cdef Match m
    cdef Py_ssize_t size
    cdef int viable = F_V_MAIN if main else F_V_HOME
    cdef bint viable_original
    if n == 0 or not match(r, r.np_main if main else r.np_home, s, n, &m):
        memcpy(out, s, n)
        return n
    viable_original = (flags_of(r, s, n) & viable) != 0
    if m.flags & P_TRANSFORM:
        size = expand(r, m.parts, s, n, out)
        if size + n - m.length >= NORMALISED_MAX:
            _corrupt()
        memcpy(out + size, s + m.length, n - m.length)
        size += n - m.length
    else:
        size = n - m.length
        memcpy(out, s + m.length, size)
    if viable_original and not (flags_of(r, out, size) & viable):
        memcpy(out, s, n)
        return n
    return size


# --- readings ------------------------------------------------------------------------

cdef long long possible_mask(Rules* r, int cc) noexcept:
    cdef int lo = 0, hi = r.n_ccs - 1, mid
    cdef unsigned int code
    cdef const unsigned char* e
    while lo <= hi:
        mid = (lo + hi) >> 1
        e = r.p + r.ccs + mid * CC_ENTRY
        code = u16(e)
        if code == <unsigned int>cc:
            return u32(e + 2)
        if code < <unsigned int>cc:
            lo = mid + 1
        else:
            hi = mid - 1
    return -1


cdef Py_ssize_t international(Rules* r, const char* s, Py_ssize_t n, char* out) except -2:
    cdef int cc = 0, i
    cdef long long mask
    cdef Py_ssize_t nsn
    if n == 0 or s[0] == c'0':
        return -1
    for i in range(1, (3 if n > 3 else n) + 1):
        cc = cc * 10 + (s[i - 1] - 48)
        mask = possible_mask(r, cc)
        if mask >= 0:
            nsn = n - i
            if nsn < MIN_NSN or nsn > MAX_NSN:
                return -1
            if cc == r.cc:
                if not (flags_of(r, s + i, nsn) & F_VALID):
                    return -1
            elif not ((mask >> nsn) & 1):
                return -1
            memcpy(out, s, n)
            return n
    return -1


cdef int cc_digits(int cc, char* out) noexcept:
    cdef char tmp[8]
    cdef int k = 0, i
    while True:
        tmp[k] = <char>(48 + cc % 10)
        k += 1
        cc //= 10
        if cc == 0:
            break
    for i in range(k):
        out[i] = tmp[k - 1 - i]
    return k


cdef Py_ssize_t national(Rules* r, const char* s, Py_ssize_t n, char* out) except -2:
    """The national significant number ``phonenumbers.parse(s, country)`` finds, into ``out``; or -1."""
    cdef char ccs[8]
    cdef char potential[NORMALISED_MAX]
    cdef char nsn[NORMALISED_MAX]
    cdef int ccn = cc_digits(r.cc, ccs), v
    cdef Py_ssize_t size, nsn_len = -1
    cdef bint main = False
    if n < MIN_NSN:
        return -1
    if n >= ccn and memcmp(s, ccs, ccn) == 0:
        size = strip_national_prefix(r, s + ccn, n - ccn, False, potential)
        if (((flags_of(r, s, n) & F_V_HOME) == 0 and (flags_of(r, potential, size) & F_V_HOME) != 0)
                or verdict(r, n, False) == L_TOO_LONG):
            memcpy(nsn, potential, size)
            nsn_len = size
            main = True
    if nsn_len < 0:
        memcpy(nsn, s, n)
        nsn_len = n
    if nsn_len < MIN_NSN:
        return -1
    size = strip_national_prefix(r, nsn, nsn_len, main, potential)
    v = verdict(r, size, main)
    if v != L_TOO_SHORT and v != L_LOCAL_ONLY and v != L_INVALID:
        memcpy(nsn, potential, size)
        nsn_len = size
    if nsn_len > MAX_NSN:
        return -1
    memcpy(out, nsn, nsn_len)
    return nsn_len


cdef inline bint is_space(char c) noexcept:
    return c == c' ' or c == c'\t' or c == c'\r' or c == c'\n'


cdef Py_ssize_t normalise_c(Rules* r, const char* raw, Py_ssize_t n, char* out) except -2:
    cdef Py_ssize_t i = 0, j = n, m, k, city_len
    cdef const char* d
    cdef char nsn[NORMALISED_MAX]
    cdef char local[NORMALISED_MAX]
    cdef Match mt
    cdef int ccn
    while i < j and is_space(raw[i]):
        i += 1
    while j > i and is_space(raw[j - 1]):
        j -= 1
    cdef bint plus = i < j and raw[i] == c'+'
    if plus:
        i += 1
    m = j - i
    if m < 1 or m > MAX_DIGITS:
        return -1
    d = raw + i
    for k in range(m):
        if d[k] < c'0' or d[k] > c'9':
            return -1
    if plus:
        return international(r, d, m, out)
    if match(r, r.idd, d, m, &mt) and (mt.length == m or d[mt.length] != c'0'):
        return international(r, d + mt.length, m - mt.length, out)
    if m > 2 and d[0] == c'0' and d[1] == c'0' and d[2] != c'0':
        return international(r, d + 2, m - 2, out)
    k = national(r, d, m, nsn)
    if k >= 0 and (flags_of(r, nsn, k) & F_VALID):
        ccn = cc_digits(r.cc, out)
        memcpy(out + ccn, nsn, k)
        return ccn + k
    city_len = r.p[r.city]
    if city_len and city_len + m <= MAX_NSN:
        memcpy(local, r.p + r.city + 1, city_len)
        memcpy(local + city_len, d, m)
        if flags_of(r, local, city_len + m) & F_VALID:
            ccn = cc_digits(r.cc, out)
            memcpy(out + ccn, local, city_len + m)
            return ccn + city_len + m
    return international(r, d, m, out)


def normalise(rules, raw):
    """E.164 digits of caller number ``raw`` under the compiled ``rules`` (bytes), or None."""
    cdef Rules r
    cdef char out[NORMALISED_MAX]
    cdef Py_ssize_t size, k
    cdef const unsigned char[::1] view
    cdef const char* text
    if not PyUnicode_Check(raw) or not PyUnicode_IS_ASCII(raw):
        return None                 # only ASCII digits, '+' and whitespace can make a number
    if PyBytes_CheckExact(rules):
        rules_open(&r, <const unsigned char*>PyBytes_AS_STRING(rules), PyBytes_GET_SIZE(rules))
    else:
        view = rules
        rules_open(&r, &view[0] if view.shape[0] else <const unsigned char*>b"", view.shape[0])
    text = PyUnicode_AsUTF8AndSize(raw, &size)
    k = normalise_c(&r, text, size, out)
    if k < 0:
        return None
    return PyUnicode_DecodeASCII(out, k, NULL)
