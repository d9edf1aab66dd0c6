"""The hot core of ESL framing, twice: this pure-Python kernel and ``fastpath._esl_frames``.

:class:`esl_app.esl_protocol.EslParser` frames everything; two jobs take
most of its time on a busy switch, and a kernel does them:

* :func:`scan_plain_frames` — cut a run of FreeSWITCH's ``text/event-plain``
  frames (``Content-Length: N`` + ``Content-Type: text/event-plain`` + a
  body-less event whose header block validates) into messages;
* :func:`split_block` — split such an event's header block into names and
  percent-decoded values (what reading every header costs);
* :func:`split_head` — split any other frame's header lines (command
  replies, the outbound ``connect`` reply's ~130 channel headers).

Both kernels take the same input and give equal results; a frame the scanner
does not take (another framing, an event body, CR, NUL, a value with a space,
a non-ASCII byte for the compiled one...) is left at ``pos`` for the parser's
general path, which also owns every error message.  So malformed input is
refused with the same words whichever kernel runs.

The choice works like ``fastpath.engine``: ``SWITCHBOARD_PUREPYTHON=1``
forces this module, ``SWITCHBOARD_FORCE_CYTHON=1`` the compiled one (or an
ImportError); otherwise the compiled one when it was built.
"""
from __future__ import annotations

import os
import sys
from binascii import a2b_qp
from urllib.parse import unquote

__all__ = ["MAX_CONTENT_LENGTH", "PLAIN_FRAME_NAMES", "plain_frame_head", "plain_block",
           "scan_plain_frames", "split_block", "split_head", "unquote_all", "IMPLEMENTATIONS", "IMPLEMENTATION",
           "kernel"]

#: Larger bodies are refused: the biggest seen is a 43 KB ``xml_locate`` reply.
MAX_CONTENT_LENGTH = 64 * 1024 * 1024
#: Header names of the frame FreeSWITCH wraps every plain event in.
PLAIN_FRAME_NAMES = ("Content-Length", "Content-Type")
PLAIN_FRAME_HEAD = b"Content-Length: "
PLAIN_FRAME_TAIL = b"\nContent-Type: text/event-plain\n\n"


def unquote_all(values: list[str]) -> list[str]:
    """``urllib.parse.unquote`` for many values, in one C pass when provably equal.

    binascii's quoted-printable decoder turns ``=XX`` into a byte, so after
    ``=`` -> ``=3D`` and ``%`` -> ``=`` it percent-decodes.  It mangles a bad
    escape where ``unquote`` keeps it, hence the length check: each ``%`` must
    have shrunk the text by exactly two bytes.  Anything unusual (CR, NUL,
    non-ASCII, bytes that are not UTF-8) takes the per-value route.
    """
    joined = "\x00".join(values)
    if "%" not in joined:
        return values
    if joined.isascii() and "\r" not in joined:
        raw = joined.encode("ascii")
        decoded = a2b_qp(raw.replace(b"=", b"=3D").replace(b"%", b"="))
        if len(decoded) == len(raw) - 2 * raw.count(b"%"):
            try:
                parts = decoded.decode("utf-8").split("\x00")
            except UnicodeDecodeError:
                parts = ()
            if len(parts) == len(values):  # else a %00 made a value look like two
                return parts
    return [unquote(v) for v in values]


def plain_frame_head(buf: bytes, pos: int) -> tuple[str, int, int] | None:
    """``(digits, body_at, stop)`` when ``buf[pos:]`` starts with FreeSWITCH's
    exact plain-event frame head (``stop`` may lie beyond ``buf``: the body is
    still coming); None for anything else or a head not yet complete."""
    if not buf.startswith(PLAIN_FRAME_HEAD, pos):
        return None
    digits_at = pos + 16
    newline = buf.find(b"\n", digits_at, digits_at + 9)  # 64 MiB has 8 digits
    if newline > digits_at and buf.startswith(PLAIN_FRAME_TAIL, newline):
        digits = buf[digits_at:newline]
        if digits.isdigit() and int(digits) <= MAX_CONTENT_LENGTH:
            body_at = newline + len(PLAIN_FRAME_TAIL)
            return digits.decode(), body_at, body_at + int(digits)
    return None


#: bytes.translate() deletion table that keeps only a plain event's structure.
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b": \n\r\x00")
_TO_FIELDS = bytes.maketrans(b":\n", b"\x00\x00")
#: Structure of ``n`` well-formed header lines: ``": \n"`` each, minus the last ``\n``.
_LINE_SHAPE = b": \n" * 8192


def plain_block(raw: bytes) -> str | None:
    """A body-less plain event's header block as ``"\\nName: value\\n…\\n"``, or
    None unless it is the plain shape FreeSWITCH writes.

    Validated with C-level passes only: the structural bytes must read
    ``": \\n"`` line after line (one colon and one space per line, no CR or
    NUL), every colon must be followed by its space, no name may be empty or
    ``Content-Length`` (that one promises a body) and the text must be UTF-8.
    FreeSWITCH percent-encodes values, so its events always pass.
    """
    if raw.endswith(b"\n\n"):
        shape = raw.translate(None, _NOT_STRUCTURE)
        size = len(shape) - 2
        lines = (size + 1) // 3
        if (size % 3 == 2 and shape[:size] == _LINE_SHAPE[:size]
                and raw.count(b": ") == lines and not raw.startswith((b": ", b"Content-Length: "))
                and b"\n: " not in raw and b"\nContent-Length: " not in raw):
            try:
                return "\n" + raw[:-1].decode("utf-8")
            except UnicodeDecodeError:
                pass
    return None


def split_block(block: str) -> tuple[list[str], list[str]]:
    """Names and decoded values of a block made by :func:`plain_block`."""
    # Validated: the only ':', ' ' and '\n' are separators, so mapping them
    # to NUL (dropping the space) and splitting once yields name, value, ...
    parts = block[1:-1].encode().translate(_TO_FIELDS, b" ").decode().split("\x00")
    return parts[0::2], unquote_all(parts[1::2])


def split_head(buf: bytes, pos: int, end: int) -> tuple[list[str], list[str]] | None:
    """Names and raw values of the header lines ``buf[pos:end]``, each split at
    its first ``": "``; None if a line has no ``": "`` or an empty name, or the
    bytes are not UTF-8 (the parser's general path then says what is wrong)."""
    try:
        text = buf[pos:end].decode("utf-8")
    except UnicodeDecodeError:
        return None
    names = []
    values = []
    for line in text.split("\n"):
        name, sep, value = line.partition(": ")
        if not sep or not name:
            return None
        names.append(name)
        values.append(value)
    return names, values


def scan_plain_frames(buf: bytes, pos: int, out: list, event_cls, message_cls) -> int:
    """Append a message to ``out`` for each plain-event frame from ``pos`` on
    that :func:`plain_frame_head` and :func:`plain_block` accept; returns the
    position of the first frame not taken (``len(buf)`` if all were)."""
    size = len(buf)
    while pos < size:
        head = plain_frame_head(buf, pos)
        if head is None or head[2] > size:
            break
        digits, body_at, stop = head
        body = buf[body_at:stop]
        block = plain_block(body)
        if block is None:
            break
        out.append(message_cls(PLAIN_FRAME_NAMES, [digits, "text/event-plain"], body,
                               event_cls._from_block(block)))
        pos = stop
    return pos


# --- choosing the implementation (as fastpath/engine.py does) ------------------------

IMPLEMENTATIONS = {"reference": sys.modules[__name__]}
try:
    from . import _esl_frames
except ImportError:
    if os.environ.get("SWITCHBOARD_FORCE_CYTHON") == "1":
        raise
else:
    IMPLEMENTATIONS["fastpath"] = _esl_frames

if os.environ.get("SWITCHBOARD_PUREPYTHON") == "1" or "fastpath" not in IMPLEMENTATIONS:
    IMPLEMENTATION = "reference"
else:
    IMPLEMENTATION = "fastpath"

#: The chosen kernel: a module with ``scan_plain_frames``, ``split_block`` and ``split_head``.
kernel = IMPLEMENTATIONS[IMPLEMENTATION]
