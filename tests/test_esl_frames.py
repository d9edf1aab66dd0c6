"""The two ESL parser kernels (compiled ``fastpath._esl_frames``, pure
``fastpath/esl_frames.py``) give the same messages and the same errors.

``tests/test_esl_protocol.py`` runs every trace test on both; here hypothesis
throws random, truncated and corrupted streams at both side by side.
"""
from __future__ import annotations

import inspect
import os
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esl_app import esl_protocol
from esl_app.esl_protocol import EslParser, EslProtocolError
from fastpath import esl_frames
from tests.fake_freeswitch import url_encode
from tests.test_esl_protocol import KERNELS

# Skipped only where the package was deliberately installed without Cython
# (SWITCHBOARD_NO_CYTHON=1): there is no compiled kernel to load or compare.  A compiled
# kernel that is merely missing fails the tests instead (tests/test_esl_protocol.py).
NO_CYTHON = os.environ.get("SWITCHBOARD_NO_CYTHON") == "1"
NO_CYTHON_REASON = "SWITCHBOARD_NO_CYTHON=1: deliberately installed without the compiled kernel"


@pytest.mark.skipif(NO_CYTHON, reason=NO_CYTHON_REASON)
def test_compiled_kernel_is_loaded_and_chosen():
    from fastpath import _esl_frames
    assert "cyfunction" in repr(_esl_frames.scan_plain_frames)
    assert "cyfunction" in repr(_esl_frames.split_block)
    assert _esl_frames.__file__.endswith((".so", ".pyd"))
    assert esl_frames.IMPLEMENTATIONS["fastpath"] is _esl_frames
    if os.environ.get("SWITCHBOARD_PUREPYTHON") != "1":
        assert esl_protocol.IMPLEMENTATION == esl_frames.IMPLEMENTATION == "fastpath"
        parser = EslParser()
        assert parser.implementation == "fastpath"
        (message,) = parser.feed(_frame(b"text/event-plain", b"Event-Name: HEARTBEAT\n\n"))
        assert message.event._split_block is _esl_frames.split_block


def test_both_kernels_share_one_api():
    for name in KERNELS:
        kernel = esl_frames.IMPLEMENTATIONS[name]
        assert list(inspect.signature(kernel.scan_plain_frames).parameters) == \
            ["buf", "pos", "out", "event_cls", "message_cls"], name
        assert list(inspect.signature(kernel.split_block).parameters) == ["block"], name
        assert list(inspect.signature(kernel.split_head).parameters) == ["buf", "pos", "end"], name


# --- split_block ----------------------------------------------------------------------

NAMES = st.from_regex(r"[A-Za-z][A-Za-z0-9_%-]{0,12}", fullmatch=True)
#: Raw (already encoded) values with no space or colon: good and bad escapes,
#: escapes of invalid UTF-8 and of NUL, non-ASCII (never a raw NUL: blocks are validated).
RAW_VALUES = st.lists(st.sampled_from(list("%0aA9fFZz=+3Dé") + ["%C3%A9", "%FF", "%e2%82", "%00"]),
                      max_size=12).map("".join)


@settings(max_examples=300, deadline=None)
@given(headers=st.lists(st.tuples(NAMES, RAW_VALUES), min_size=1, max_size=8))
def test_kernels_split_blocks_alike(headers):
    """Should split a header block into the names and ``unquote``d values,
    identically in both kernels (non-ASCII blocks included)."""
    block = "\n" + "".join(f"{n}: {v}\n" for n, v in headers)
    expected = ([n for n, _ in headers], [unquote(v) for _, v in headers])
    for name in KERNELS:
        assert esl_frames.IMPLEMENTATIONS[name].split_block(block) == expected, name


@settings(max_examples=400, deadline=None)
@given(head=st.lists(st.sampled_from([b"Content-Type: command/reply", b"Reply-Text: +OK will linger",
                                      b"A: b: c", b": no name", b"no separator", b"X:y", b"V: caf\xc3\xa9",
                                      b"V: \xff", b"E: ", b"R: a\rb", b"N: \x00"]),
                     min_size=1, max_size=5).map(b"\n".join),
       pad=st.binary(max_size=3))
def test_kernels_split_heads_alike(head, pad):
    """Should split header lines at their first ": " (raw values), or refuse the
    same blocks (a line without it, an empty name, bytes that are not UTF-8)."""
    buf = pad + head + b"\n\n" + pad
    results = [esl_frames.IMPLEMENTATIONS[name].split_head(buf, len(pad), len(pad) + len(head))
               for name in KERNELS]
    assert all(result == results[0] for result in results), results
    good = all(b": " in line and not line.startswith(b": ") for line in head.split(b"\n"))
    try:
        head.decode()
    except UnicodeDecodeError:
        good = False
    assert (results[0] is not None) == good


# --- whole streams ----------------------------------------------------------------------

def _frame(content_type: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return b"Content-Length: %d\nContent-Type: %s\n%s\n%s" % (len(body), content_type, extra, body)


@st.composite
def plain_events(draw) -> bytes:
    """A text/event-plain frame: FreeSWITCH-encoded or raw (spaces, colons,
    CR, NUL, non-ASCII, empty names), with or without its own body, its inner
    Content-Length right, wrong or missing."""
    headers = draw(st.lists(st.tuples(NAMES | st.sampled_from(["", "Content-Length", "Event-Name"]),
                                      st.text(max_size=12)), min_size=0, max_size=6))
    encode = draw(st.booleans())
    lines = "".join(f"{n}: {url_encode(v) if encode else v}\n" for n, v in headers)
    body = draw(st.sampled_from([b"", b"+OK\n", b"two\nlines\n"]))
    if body or draw(st.booleans()):
        length = draw(st.sampled_from([len(body), len(body) + 1, None]))
        if length is not None:
            lines += f"Content-Length: {length}\n"
    return _frame(b"text/event-plain", lines.encode("utf-8", "surrogatepass") + b"\n" + body)


OTHER_FRAMES = st.sampled_from([
    b"Content-Type: command/reply\nReply-Text: +OK\n\n",
    b"Content-Type: auth/request\n\n",
    _frame(b"api/response", b"+OK done\n"),
    _frame(b"text/event-json", b'{"Event-Name": "HEARTBEAT", "A": "b c"}'),
    _frame(b"text/event-xml", b"<event><headers><Event-Name>X</Event-Name></headers></event>\n"),
    _frame(b"text/disconnect-notice", b"Disconnected, goodbye.\n"),
    b"Content-Length: 5\nContent-Type: text/event-plain\n\nA: b\n\n",           # length too short
    b"Content-Type: text/event-plain\nContent-Length: 12\n\nEvent-Name: X\n",   # other header order
    b"Content-Length: 007\nContent-Type: text/event-plain\n\nA: b\n\n",
    b"Content-Length: 1x\nContent-Type: text/event-plain\n\n",
    b"garbage without separator\n\n",
    b"\n",
])


@st.composite
def streams(draw) -> tuple[bytes, list[int]]:
    """Frames, maybe truncated, maybe with one byte changed, and a chunking."""
    stream = b"".join(draw(st.lists(plain_events() | OTHER_FRAMES, min_size=1, max_size=6)))
    if stream and draw(st.booleans()):
        at = draw(st.integers(0, len(stream) - 1))
        stream = stream[:at] + bytes([draw(st.sampled_from(b"\n :%\r\x00\xc3A9"))]) + stream[at + 1:]
    if draw(st.booleans()):
        stream = stream[:draw(st.integers(0, len(stream)))]
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    return stream, cuts


def _run(kernel: str, stream: bytes, cuts: list[int], lookups: list[str]):
    """What a parser on ``kernel`` makes of the stream: every message (lookups
    first, as a dispatcher does, then all headers) and the error, if any."""
    parser = EslParser(kernel)
    seen = []
    error = None
    for start, stop in zip([0] + cuts, cuts + [len(stream)]):
        try:
            messages = parser.feed(stream[start:stop])
        except EslProtocolError as exc:
            messages = exc.messages
            error = (str(exc), exc.offset)
        for m in messages:
            event = m.event
            seen.append((m.headers, m.body, None if event is None else (
                [event.get(name) for name in lookups], event.name, event.headers, event.body)))
        if error:
            break
    return seen, error


@pytest.mark.skipif(NO_CYTHON, reason=NO_CYTHON_REASON)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=streams(), lookups=st.lists(NAMES | st.sampled_from(["Event-Name", "A", "Content-Length"]),
                                       max_size=3))
def test_kernels_agree_on_random_truncated_and_malformed_streams(case, lookups):
    """Should give equal messages, lookups, and the same error text and offset."""
    stream, cuts = case
    assert _run("fastpath", stream, cuts, lookups) == _run("reference", stream, cuts, lookups)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("body, fragment", [
    (b"Event-Name: HEARTBEAT\nContent-Length: 5\n\n", "Content-Length 5"),
    (b"Content-Length: 5\nEvent-Name: HEARTBEAT\n\n", "Content-Length 5"),
    (b"Event-Name: X\nA:b\n\n", "'A:b'"),
])
def test_kernels_refuse_the_same_malformed_events(kernel, body, fragment):
    """Should refuse a body-less event that claims a body (an inner
    Content-Length first in the block too) or a line without ``": "``,
    whichever kernel frames it."""
    with pytest.raises(EslProtocolError) as info:
        EslParser(kernel).feed(_frame(b"text/event-plain", body))
    assert fragment in str(info.value)
