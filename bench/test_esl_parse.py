"""ESL parsing throughput: EslParser (compiled and pure kernels) beside greenswitch's parser, on the same bytes.

Workload: every ``text/event-plain`` event of ``inbound_event_plain_call`` and
``inbound_event_plain_sip_call`` (102 real FreeSWITCH 1.10.12 events, 2.5 KB on
average), re-framed exactly as FreeSWITCH frames them, repeated to ~2 MB and
cut into 64 KiB chunks like ``recv(65536)`` returns them.

How each side is driven:

* ``fastpath``: ``EslParser("fastpath").feed()`` over the chunks (the compiled
  kernel ``fastpath._esl_frames`` frames plain events and splits header blocks);
* ``reference``: the same with the pure-Python kernel (``fastpath/esl_frames.py``).
* ``greenswitch``: its own ``ESLProtocol.receive_events()`` loop, unmodified:
  ``readline()`` per header line, ``_read_socket()`` for bodies,
  ``ESLEvent.parse_data()``, then ``put()`` on its gevent queue.  Production
  reads ``sock.makefile('rb')``; here the same loop reads ``io.BytesIO(stream)``.
  Both ``readline()`` implementations are C, so only the socket syscalls are
  left out -- for both sides alike.

``test_esl_parse`` reads ``Event-Name`` of every event (what a dispatcher does;
our events split their header block only when asked for more than lookups).
``test_esl_parse_all_headers`` materialises every header, the work greenswitch
always does.  Events/s = ``extra_info["events_per_round"]`` / mean time.
"""
from __future__ import annotations

import io

import pytest
from greenswitch import esl as greenswitch_esl

from esl_app.esl_protocol import IMPLEMENTATIONS as ESL_IMPLEMENTATIONS
from esl_app.esl_protocol import EslParser
from tests.esl_trace import freeswitch_bytes, load_trace

TRACES = ("inbound_event_plain_call", "inbound_event_plain_sip_call")
TARGET_BYTES = 2 * 1024 * 1024
CHUNK = 65536


def _workload() -> tuple[bytes, int, int]:
    """The stream, its event count and how many of those are CODEC events
    (the answer both parsers must give)."""
    frames = []
    codec = 0
    for name in TRACES:
        for message in EslParser().feed(freeswitch_bytes(load_trace(name))):
            if message.content_type == "text/event-plain":
                frames.append(b"Content-Length: %d\nContent-Type: text/event-plain\n\n%b"
                              % (len(message.body), message.body))
                codec += message.body.startswith(b"Event-Name: CODEC\n")
    once = b"".join(frames)
    repeat = max(1, TARGET_BYTES // len(once))
    return once * repeat, len(frames) * repeat, codec * repeat


STREAM, EVENTS, CODEC_EVENTS = _workload()
CHUNKS = [STREAM[i:i + CHUNK] for i in range(0, len(STREAM), CHUNK)]


def ours_names(implementation: str) -> int:
    parser = EslParser(implementation)
    count = 0
    for chunk in CHUNKS:
        for message in parser.feed(chunk):
            count += message.event.get("Event-Name") == "CODEC"
    return count


def ours_headers(implementation: str) -> int:
    parser = EslParser(implementation)
    count = 0
    for chunk in CHUNKS:
        for message in parser.feed(chunk):
            count += len(message.event.headers)
    return count


def _greenswitch_events():
    protocol = greenswitch_esl.ESLProtocol()
    protocol.sock_file = io.BytesIO(STREAM)
    protocol.connected = True
    protocol.receive_events()  # returns at EOF, every event queued
    queue = protocol._esl_event_queue
    while not queue.empty():
        yield queue.get_nowait()


def greenswitch_names(_=None) -> int:
    return sum(e.headers.get("Event-Name") == "CODEC" for e in _greenswitch_events())


def greenswitch_headers(_=None) -> int:
    return sum(len(e.headers) for e in _greenswitch_events())


IMPLS = ["fastpath", "reference", "greenswitch"]


def _implementation(impl: str) -> str:
    if impl != "greenswitch" and impl not in ESL_IMPLEMENTATIONS:
        pytest.fail("the compiled ESL kernel is not built: run `pip install -e .`")
    return impl


@pytest.mark.parametrize("impl", IMPLS)
def test_esl_parse(benchmark, impl):
    benchmark.group = "esl_parse"
    benchmark.extra_info["events_per_round"] = EVENTS
    benchmark.extra_info["bytes_per_round"] = len(STREAM)
    run = greenswitch_names if impl == "greenswitch" else ours_names
    assert benchmark(run, _implementation(impl)) == CODEC_EVENTS


@pytest.mark.parametrize("impl", IMPLS)
def test_esl_parse_all_headers(benchmark, impl):
    benchmark.group = "esl_parse_all_headers"
    benchmark.extra_info["events_per_round"] = EVENTS
    benchmark.extra_info["bytes_per_round"] = len(STREAM)
    run = greenswitch_headers if impl == "greenswitch" else ours_headers
    headers = benchmark(run, _implementation(impl))
    if impl == "greenswitch":   # a dict per event: repeated names count once
        assert headers > 0
    else:
        assert headers == sum(len(m.event.headers) for m in EslParser("reference").feed(STREAM))
