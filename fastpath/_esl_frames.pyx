# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled twin of ``fastpath/esl_frames.py``: same functions, same results.

One C pass per frame: match the frame head, walk the event's header lines
checking the plain shape (exactly one ``": "`` per line and no other ``:`` or
space, no CR/NUL/non-ASCII, no ``Content-Length`` name), then copy the block
into a str.  Splitting walks the block once and percent-decodes each value
into a scratch buffer (``%XX`` with either case of hex becomes a byte, any
other ``%`` stays, then UTF-8 with ``errors="replace"``: exactly
``urllib.parse.unquote`` on ASCII text).  Anything else is left to the pure
kernel or the parser's general path.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdlib cimport malloc, free
from libc.string cimport memcmp, memcpy

from .esl_frames import MAX_CONTENT_LENGTH, PLAIN_FRAME_NAMES
from .esl_frames import split_block as _split_block_py
from .esl_frames import split_head as _split_head_py

cdef extern from "Python.h":
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void* PyUnicode_DATA(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)
    bint PyUnicode_IS_COMPACT_ASCII(object)

cdef const char* HEAD = b"Content-Length: "
cdef const char* TAIL = b"\nContent-Type: text/event-plain\n\n"
cdef Py_ssize_t TAIL_LEN = 33
cdef Py_ssize_t MAX_LENGTH = MAX_CONTENT_LENGTH
cdef object NAMES = PLAIN_FRAME_NAMES
cdef str PLAIN_TYPE = "text/event-plain"

cdef signed char HEX[256]
for _i in range(256):
    HEX[_i] = -1
for _i in range(10):
    HEX[48 + _i] = _i
for _i in range(6):
    HEX[65 + _i] = 10 + _i
    HEX[97 + _i] = 10 + _i


cdef inline object _ascii(const char* data, Py_ssize_t size):
    cdef object text = PyUnicode_New(size, 127)
    memcpy(PyUnicode_DATA(text), data, size)
    return text


cdef bint _plain_shape(const unsigned char* p, Py_ssize_t n):
    """``plain_block``'s rule, restricted to ASCII (the rest is the pure kernel's)."""
    cdef Py_ssize_t i = 0, start
    cdef int colons, spaces
    cdef unsigned char c
    if n < 2 or p[n - 1] != 10 or p[n - 2] != 10:
        return False
    n -= 1   # the last '\n' ends the block; every line ends in '\n'
    while i < n:
        start = i
        colons = 0
        spaces = 0
        while True:
            c = p[i]
            if c == 10:
                break
            if c == 58:      # ':' must be followed by its space
                if colons or p[i + 1] != 32:
                    return False
                colons = 1
            elif c == 32:
                if spaces or i == start or p[i - 1] != 58:
                    return False
                spaces = 1
            elif c == 13 or c == 0 or c >= 128:
                return False
            i += 1
        if not colons or p[start] == 58:
            return False
        if i - start >= 16 and memcmp(p + start, HEAD, 16) == 0:
            return False     # Content-Length promises a body: the general path checks it
        i += 1
    return True


def scan_plain_frames(bytes buf, Py_ssize_t pos, list out, event_cls, message_cls):
    cdef const char* p = PyBytes_AS_STRING(buf)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(buf)
    cdef Py_ssize_t digits_at, newline, limit, i, length, body_at, stop
    cdef object block, event, message
    cdef str text
    cdef list values
    new_event = event_cls.__new__
    new_message = message_cls.__new__
    while pos < size:
        if size - pos < 16 or memcmp(p + pos, HEAD, 16) != 0:
            break
        digits_at = pos + 16
        limit = min(digits_at + 9, size)
        newline = -1
        for i in range(digits_at, limit):
            if p[i] == 10:
                newline = i
                break
        if newline <= digits_at:
            break
        length = 0
        for i in range(digits_at, newline):
            if p[i] < 48 or p[i] > 57:
                length = -1
                break
            length = length * 10 + (p[i] - 48)
        if length < 0 or length > MAX_LENGTH:
            break
        if size - newline < TAIL_LEN or memcmp(p + newline, TAIL, TAIL_LEN) != 0:
            break
        body_at = newline + TAIL_LEN
        stop = body_at + length
        if stop > size or not _plain_shape(<const unsigned char*>p + body_at, length):
            break
        text = PyUnicode_New(length, 127)
        (<char*>PyUnicode_DATA(text))[0] = 10
        memcpy(<char*>PyUnicode_DATA(text) + 1, p + body_at, length - 1)
        event = new_event(event_cls)
        event._names = None
        event._values = None
        event.body = b""
        event._block = text
        values = [_ascii(p + digits_at, newline - digits_at), PLAIN_TYPE]
        message = new_message(message_cls)
        message._names = NAMES
        message._values = values
        message.body = PyBytes_FromStringAndSize(p + body_at, length)
        message.event = event
        out.append(message)
        pos = stop
    return pos


cdef object _decoded(const unsigned char* p, Py_ssize_t n, char* scratch):
    """``urllib.parse.unquote`` of the ASCII text ``p[:n]``."""
    cdef Py_ssize_t i = 0, j = 0
    cdef signed char hi, lo
    while i < n:
        if p[i] == 37 and i + 2 < n:
            hi = HEX[p[i + 1]]
            lo = HEX[p[i + 2]]
            if hi >= 0 and lo >= 0:
                scratch[j] = <char>((hi << 4) | lo)
                j += 1
                i += 3
                continue
        scratch[j] = <char>p[i]
        j += 1
        i += 1
    return PyUnicode_DecodeUTF8(scratch, j, "replace")


def split_block(str block):
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(block)
    if not PyUnicode_IS_COMPACT_ASCII(block) or n < 2:
        return _split_block_py(block)
    cdef const unsigned char* p = <const unsigned char*>PyUnicode_DATA(block)
    cdef Py_ssize_t i = 1, start, colon, count = 0
    cdef bint escaped
    for start in range(1, n):
        if p[start] == 10:
            count += 1
    cdef list names = PyList_New(count)
    cdef list values = PyList_New(count)
    cdef object name, value
    cdef char* scratch = <char*>malloc(n)
    if scratch == NULL:
        raise MemoryError()
    try:
        for k in range(count):
            start = i
            colon = -1
            escaped = False
            while p[i] != 10:
                if colon < 0 and p[i] == 58:
                    colon = i
                elif p[i] == 37:
                    escaped = True
                i += 1
            if colon < 0 or colon + 1 >= i or p[colon + 1] != 32:
                return _split_block_py(block)   # not a validated block: the pure rule decides
            name = _ascii(<const char*>p + start, colon - start)
            if escaped:
                value = _decoded(p + colon + 2, i - colon - 2, scratch)
            else:
                value = _ascii(<const char*>p + colon + 2, i - colon - 2)
            Py_INCREF(name)
            PyList_SET_ITEM(names, k, name)
            Py_INCREF(value)
            PyList_SET_ITEM(values, k, value)
            i += 1
    finally:
        free(scratch)
    return names, values


def split_head(bytes buf, Py_ssize_t pos, Py_ssize_t end):
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(buf)
    cdef Py_ssize_t i, start, sep
    cdef list names = [], values = []
    if pos < 0 or end > PyBytes_GET_SIZE(buf) or pos > end:
        return _split_head_py(buf, pos, end)
    for i in range(pos, end):
        if p[i] >= 128:
            return _split_head_py(buf, pos, end)   # UTF-8 (or not): the pure rule decides
    start = pos
    while True:
        sep = -1
        i = start
        while i < end and p[i] != 10:
            if sep < 0 and p[i] == 58 and i + 1 < end and p[i + 1] == 32:
                sep = i
            i += 1
        if sep <= start:        # no ": ", or an empty name
            return None
        names.append(_ascii(<const char*>p + start, sep - start))
        values.append(_ascii(<const char*>p + sep + 2, i - sep - 2))
        if i >= end:
            return names, values
        start = i + 1
