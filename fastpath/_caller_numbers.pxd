# Shared with fastpath/_icm_lookup.pyx: walk a compiled dialling-rules table in C.
# The layout is described in fastpath/caller_numbers.py.

cdef enum:
    NORMALISED_MAX = 64          # bytes an output buffer must hold

cdef struct Rules:
    const unsigned char* p
    Py_ssize_t n
    int cc
    Py_ssize_t len_home, len_main, city, idd, np_home, np_main
    Py_ssize_t dfa_flags, dfa_trans, ccs
    int n_states, n_ccs

# Check the header and section bounds of ``p[:n]``; raises PhoneNumberError when malformed.
cdef int rules_open(Rules* r, const unsigned char* p, Py_ssize_t n) except -1

# Caller number ``raw[:n]`` (as sent by the switch) -> E.164 digits written to ``out``
# (NORMALISED_MAX bytes); returns their length, or -1 when it is not a phone number.
cdef Py_ssize_t normalise_c(Rules* r, const char* raw, Py_ssize_t n, char* out) except -2
