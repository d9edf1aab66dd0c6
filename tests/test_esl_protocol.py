"""EslParser and the encoders against byte-exact FreeSWITCH 1.10.12 recordings.

Every test runs twice, with ``EslParser()`` on the compiled kernel
(``fastpath._esl_frames``) and on the pure one (``fastpath/esl_frames.py``).
"""
from __future__ import annotations

import os
from collections import Counter
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esl_app import esl_protocol
from esl_app.esl_protocol import (
    MAX_CONTENT_LENGTH,
    EslInjectionError,
    EslParser,
    EslProtocolError,
    Event,
    encode_command,
    encode_sendmsg,
)
from tests.esl_trace import freeswitch_bytes, load_trace, trace_paths
from tests.fake_freeswitch import url_encode

TRACES = {path.stem: path for path in trace_paths()}

#: Parser kernels every ESL test runs on; the compiled one must be built unless
#: the package was deliberately installed without Cython.
KERNELS = ["reference"] if os.environ.get("SWITCHBOARD_NO_CYTHON") == "1" else ["fastpath", "reference"]


@pytest.fixture(autouse=True, scope="module", params=KERNELS)
def parser_kernel(request):
    """``EslParser()`` uses this kernel for the module's tests (module scope, so
    hypothesis tests may use it too)."""
    if request.param not in esl_protocol.IMPLEMENTATIONS:
        pytest.fail("the compiled ESL kernel is not built: run `pip install -e .` "
                    "(or set SWITCHBOARD_NO_CYTHON=1 to test the reference alone)")
    saved = esl_protocol.IMPLEMENTATION
    esl_protocol.IMPLEMENTATION = request.param
    yield request.param
    esl_protocol.IMPLEMENTATION = saved


def test_parser_runs_on_the_kernel_under_test(parser_kernel):
    parser = EslParser()
    assert parser.implementation == parser_kernel
    message = only(parser.feed(event_frame(b"Event-Name: HEARTBEAT\n\n")))
    assert type(message.event) is esl_protocol.IMPLEMENTATIONS[parser_kernel][1]

#: Messages per trace, by Content-Type, as counted by hand from README.md's scenario table.
EXPECTED_CONTENT_TYPES = {
    "inbound_acl_rude_rejection": {"text/rude-rejection": 1, "text/disconnect-notice": 1},
    "inbound_auth_api_status": {"auth/request": 1, "command/reply": 2, "api/response": 5,
                                "text/disconnect-notice": 1},
    "inbound_bad_password": {"auth/request": 1, "command/reply": 2, "text/disconnect-notice": 1},
    "inbound_bgapi": {"auth/request": 1, "command/reply": 8, "text/event-plain": 13,
                      "api/response": 1, "text/disconnect-notice": 1},
    "inbound_errors": {"auth/request": 1, "command/reply": 8, "api/response": 2,
                       "text/disconnect-notice": 1},
    "inbound_event_bodies_json_xml": {"auth/request": 1, "command/reply": 14,
                                      "text/event-json": 2, "text/event-xml": 2,
                                      "text/event-plain": 2, "text/disconnect-notice": 1},
    "inbound_event_json_call": {"auth/request": 1, "command/reply": 4, "api/response": 2,
                                "text/event-json": 56, "text/disconnect-notice": 1},
    "inbound_event_plain_call": {"auth/request": 1, "command/reply": 4, "api/response": 2,
                                 "text/event-plain": 57, "text/disconnect-notice": 1},
    "inbound_event_plain_sip_call": {"auth/request": 1, "command/reply": 4,
                                     "text/event-plain": 45, "api/response": 5,
                                     "text/disconnect-notice": 1},
    "inbound_event_xml_call": {"auth/request": 1, "command/reply": 4, "api/response": 2,
                               "text/event-xml": 55, "text/disconnect-notice": 1},
    "inbound_misc": {"auth/request": 1, "command/reply": 13, "api/response": 8,
                     "log/data": 49, "text/event-plain": 1, "text/disconnect-notice": 1},
    "inbound_myevents_uuid": {"auth/request": 1, "command/reply": 3, "api/response": 3,
                              "text/event-plain": 1, "text/disconnect-notice": 1},
    "inbound_show_channels": {"auth/request": 1, "command/reply": 2, "api/response": 11,
                              "text/disconnect-notice": 1},
    "outbound_async_full_linger": {"command/reply": 9, "text/event-plain": 16,
                                   "text/disconnect-notice": 2},
    "outbound_bridge": {"command/reply": 6, "text/event-plain": 16, "text/disconnect-notice": 1},
    "outbound_caller_hangup_linger5": {"command/reply": 5, "text/event-plain": 12,
                                       "text/disconnect-notice": 2},
    "outbound_caller_hangup_nolinger": {"command/reply": 4, "text/event-plain": 12,
                                        "text/disconnect-notice": 1},
    "outbound_sync_full": {"command/reply": 10, "api/response": 1, "text/event-plain": 9,
                           "text/disconnect-notice": 1},
}


def parse_chunks(chunks) -> list:
    parser = EslParser()
    messages = []
    for chunk in chunks:
        messages += parser.feed(chunk)
    return messages


def messages_of(name: str) -> list:
    return parse_chunks(load_trace(name).recv_chunks())


def events_of(name: str) -> list[Event]:
    return [m.event for m in messages_of(name) if m.event is not None]


def only(items):
    assert len(items) == 1, items
    return items[0]


# --- replaying every trace ------------------------------------------------------

def test_every_trace_is_covered():
    """Should know the expected message counts of every recorded trace."""
    assert set(TRACES) == set(EXPECTED_CONTENT_TYPES)


@pytest.mark.parametrize("name", sorted(EXPECTED_CONTENT_TYPES))
def test_real_recv_chunks_give_the_expected_messages(name):
    """Should frame each trace, fed with FreeSWITCH's real recv() chunks, into the
    expected messages, with nothing left over."""
    parser = EslParser()
    messages = []
    for chunk in load_trace(name).recv_chunks():
        messages += parser.feed(chunk)
    assert Counter(m.content_type for m in messages) == EXPECTED_CONTENT_TYPES[name]
    assert parser.feed(b"") == []
    # Everything consumed: the next byte starts a new message.
    assert parser._size == 0 and parser._head is None


@pytest.mark.parametrize("name", sorted(EXPECTED_CONTENT_TYPES))
def test_one_byte_at_a_time_gives_the_same_messages(name):
    """Should produce identical messages when every byte arrives on its own."""
    data = freeswitch_bytes(load_trace(name))
    assert parse_chunks(data[i:i + 1] for i in range(len(data))) == messages_of(name)


@pytest.mark.parametrize("name", sorted(EXPECTED_CONTENT_TYPES))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_chunking_gives_the_same_messages(name, data):
    """Should produce identical messages whatever the chunk boundaries."""
    stream = freeswitch_bytes(load_trace(name))
    cuts = sorted(data.draw(st.sets(st.integers(1, len(stream) - 1), max_size=40)))
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[a:b] for a, b in zip(bounds, bounds[1:])]
    assert parse_chunks(chunks) == messages_of(name)


def test_framing_chunk_alone():
    """Should hold a lone 'Content-Length…Content-Type' chunk (FreeSWITCH sends an
    event's framing and body with two send()s) until the body arrives."""
    chunks = load_trace("inbound_event_bodies_json_xml").recv_chunks()
    framing = chunks.index(b"Content-Length: 1241\nContent-Type: text/event-xml\n\n")
    parser = EslParser()
    for chunk in chunks[:framing]:
        parser.feed(chunk)
    assert parser.feed(chunks[framing]) == []
    event = only(parser.feed(chunks[framing + 1])).event
    assert event.name == "CUSTOM" and event.subclass == "esl::trace"


def test_resumed_header_search_does_not_skip_the_next_message():
    """Should find a short reply right after an event whose framing was split
    (regression found by the random-chunking test)."""
    parser = EslParser()
    assert parser.feed(b"Content-Length: 6\nContent-Type: text/event-pl") == []
    messages = parser.feed(b"ain\n\nA: b\n\n" + GOOD + GOOD)
    assert [m.content_type for m in messages] == [
        "text/event-plain", "command/reply", "command/reply"]


def test_many_messages_in_one_chunk():
    """Should return every message of a chunk holding a reply plus a notice."""
    chunk = load_trace("inbound_auth_api_status").recv_chunks()[-1]
    messages = EslParser().feed(chunk)
    assert [m.content_type for m in messages] == ["command/reply", "text/disconnect-notice"]
    assert messages[0].reply_text == "+OK bye"
    assert messages[1].body == b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"


def test_event_sequence_of_the_bridge_call():
    """Should see the outbound bridge call's events in wire order."""
    assert [e.name for e in events_of("outbound_bridge")] == [
        "CHANNEL_DATA", "CHANNEL_PARK", "CHANNEL_EXECUTE", "CHANNEL_ANSWER",
        "CHANNEL_EXECUTE_COMPLETE", "CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE",
        "CHANNEL_EXECUTE", "CHANNEL_BRIDGE", "CHANNEL_UNBRIDGE", "CHANNEL_EXECUTE_COMPLETE",
        "CHANNEL_HANGUP", "CHANNEL_UNPARK", "CHANNEL_EXECUTE_COMPLETE", "CHANNEL_STATE",
        "CHANNEL_STATE", "CHANNEL_HANGUP_COMPLETE"]


def test_bridge_result_variables():
    """Should expose the bridge outcome exactly as FreeSWITCH reports it."""
    complete = [e for e in events_of("outbound_bridge")
                if e.name == "CHANNEL_EXECUTE_COMPLETE" and e.get("Application") == "bridge"]
    bridge = only(complete)
    assert bridge["Application-Response"] == "_none_"
    assert bridge["variable_originate_disposition"] == "SUCCESS"
    assert bridge["variable_DIALSTATUS"] == "SUCCESS"
    assert bridge["variable_bridge_hangup_cause"] == "NORMAL_CLEARING"
    assert bridge["Application-Data"] == "{origination_uuid=bbbbbbbb-0000-0000-0000-000000000004}loopback/9196"


# --- headers, decoding and bodies --------------------------------------------------

@pytest.mark.parametrize("name", ["inbound_event_plain_call", "inbound_event_json_call"])
def test_duplicate_hangup_cause_is_kept(name):
    """Should keep both Hangup-Cause headers of CHANNEL_HANGUP_COMPLETE, in plain and JSON."""
    for event in events_of(name):
        if event.name == "CHANNEL_HANGUP_COMPLETE":
            assert event.get_all("Hangup-Cause") == ["NORMAL_CLEARING", "NORMAL_CLEARING"]
            names = [n for n, _ in event.headers]
            assert names.count("Hangup-Cause") == 2
            break
    else:
        pytest.fail("no CHANNEL_HANGUP_COMPLETE")


def test_duplicate_codec_headers_are_kept_in_order():
    codec = next(e for e in events_of("inbound_event_plain_call") if e.name == "CODEC"
                 and len(e.get_all("Channel-Write-Codec-Name")) == 2)
    assert codec.get("Channel-Write-Codec-Name") == codec.get_all("Channel-Write-Codec-Name")[0]


def test_sendevent_content_length_appears_twice():
    """Should keep the client's Content-Length and FreeSWITCH's own; the body
    is the bytes after the event's headers."""
    custom = [e for e in events_of("inbound_event_bodies_json_xml") if e.name == "CUSTOM"]
    assert len(custom) == 3
    for event in custom:
        if event.get("X-Format") == "xml":
            continue  # the XML form carries the length once, as <Content-Length>
        lengths = event.get_all("Content-Length")
        assert len(lengths) == 2 and lengths[0] == lengths[1] == str(len(event.body))


def test_url_decoding_of_plain_values():
    """Should percent-decode values (uppercase hex) and leave '+' alone."""
    job = next(e for e in events_of("inbound_bgapi") if e.name == "BACKGROUND_JOB")
    assert job["Job-Command-Arg"] == "loopback/9196 &park"
    assert job["FreeSWITCH-IPv6"] == "fd00::2"
    assert job["Event-Date-Local"].count(":") == 2 and "%" not in job["Event-Date-Local"]
    reply = messages_of("outbound_bridge")[0]
    assert reply.reply_text == "+OK\n"  # sent as %2BOK%0A


def test_same_custom_event_in_plain_json_and_xml():
    """Should decode the sendevent CUSTOM event identically in all three formats."""
    by_format = {e["X-Format"]: e for e in events_of("inbound_event_bodies_json_xml")
                 if e.name == "CUSTOM"}
    for fmt, event in by_format.items():
        assert event["X-Needs-Encoding"] == "a b:c%d"
        assert event["Event-Subclass"] == "esl::trace"
        assert event["Command"] == "sendevent CUSTOM"
        assert event.body == f"line one of a {fmt} body\nline two: 100% done & <ok>\n".encode()


def test_background_job_body_in_plain_json_and_xml():
    """Should give BACKGROUND_JOB the same header names and a body of the announced
    length in all three formats (XML's <Content-Length> becomes the last header)."""
    jobs = [e for e in events_of("inbound_event_bodies_json_xml") if e.name == "BACKGROUND_JOB"]
    assert len(jobs) == 3
    header_names = {tuple(n for n, _ in job.headers) for job in jobs}
    assert len(header_names) == 1
    for job in jobs:
        assert job.body.startswith(b"UP 0 years") and job.body.endswith(b"8192K\n")
        assert job["Content-Length"] == str(len(job.body))


def test_outbound_connect_reply_is_channel_data():
    """Should decode the connect reply, a CHANNEL_DATA block without Content-Length."""
    reply = messages_of("outbound_async_full_linger")[0]
    assert reply.content_type == "command/reply" and reply.body == b""
    data = reply.event
    assert data.name == "CHANNEL_DATA"
    assert data["Caller-Callee-ID-Name"] == "Outbound Call"
    assert data["variable_current_application_data"] == "127.0.0.1:8084 async full"
    assert [reply[h] for h in ("Socket-Mode", "Control")] == ["async", "full"]
    assert messages_of("outbound_sync_full")[0]["Socket-Mode"] == "static"


def test_api_response_bodies_are_exact():
    bodies = [m.body for m in messages_of("inbound_auth_api_status")
              if m.content_type == "api/response"]
    assert bodies[2:] == [b"\n0 total.\n", b'{"row_count": 0}\n', b'{"row_count": 0}\n']
    rows = [m.body for m in messages_of("inbound_show_channels")
            if m.content_type == "api/response" and m.body.startswith(b'{"row_count":1')]
    assert rows and not rows[0].endswith(b"\n")  # with rows: no trailing newline


def test_log_data_with_empty_user_data():
    logs = [m for m in messages_of("inbound_misc") if m.content_type == "log/data"]
    first = logs[0]
    assert first["User-Data"] == "" and first["Log-Level"] == "7"
    assert first.body.endswith(b"Parsing global variables\n")
    assert any(m["User-Data"] for m in logs)


def test_rude_rejection_and_linger_notice():
    rejection, notice = messages_of("inbound_acl_rude_rejection")
    assert rejection.body == b"Access Denied, go away.\n"
    assert notice.content_type == "text/disconnect-notice"
    linger = [m for m in messages_of("outbound_async_full_linger")
              if m.get("Content-Disposition") == "linger"]
    assert only(linger)["Linger-Time"] == "-1" and linger[0].body == b""


def test_command_reply_with_job_uuid():
    reply = next(m for m in messages_of("inbound_bgapi") if "Job-UUID" in m)
    assert reply.reply_text == f"+OK Job-UUID: {reply['Job-UUID']}"


def test_getvar_of_unset_variable_is_a_reply_not_an_error():
    replies = [m.reply_text for m in messages_of("outbound_sync_full")
               if m.content_type == "command/reply" and m.event is None]
    assert replies[:2] == ["7778", "-ERR command not found"]


# --- the lazy fast path equals the line-by-line reference ---------------------------

def all_plain_event_bodies() -> list[bytes]:
    return [m.body for name in TRACES for m in messages_of(name)
            if m.content_type == "text/event-plain"]


def test_fast_path_takes_every_recorded_bodyless_event():
    bodies = [b for b in all_plain_event_bodies() if b.endswith(b"\n\n")]
    assert bodies
    lazy = [esl_protocol._parse_plain_event(b, 0) for b in bodies]
    assert all(e._block is not None for e in lazy)


def test_fast_path_equals_reference_parser():
    """Should give every recorded plain event the same headers and body whether it
    is parsed lazily (fast path) or line by line, lookup by lookup."""
    for body in all_plain_event_bodies():
        reference = esl_protocol._parse_plain_event_slow(body, 0)
        for name, _ in reference.headers:
            assert esl_protocol._parse_plain_event(body, 0).get(name) == reference.get(name)
        assert esl_protocol._parse_plain_event(body, 0) == reference


HEADER_NAMES = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,20}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(headers=st.lists(st.tuples(HEADER_NAMES, st.text(max_size=30)), min_size=1, max_size=12),
       lookups=st.lists(HEADER_NAMES, max_size=4))
def test_fast_and_reference_agree_on_generated_events(headers, lookups):
    """Should decode any FreeSWITCH-encoded event to the original values, with the
    fast path and the reference in agreement."""
    raw = "".join(f"{n}: {url_encode(v)}\n" for n, v in headers).encode() + b"\n"
    reference = esl_protocol._parse_plain_event_slow(raw, 0)
    assert reference.headers == [(n, v) for n, v in headers]
    fast = esl_protocol._parse_plain_event(raw, 0)
    for name in lookups + [n for n, _ in headers]:
        assert fast.get(name) == reference.get(name)
    assert fast == reference


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.text(alphabet=st.sampled_from("%0aA9fZ=\r\x00 é+3D"), max_size=12),
                       max_size=6))
def test_batch_unquote_equals_urllib(values):
    """Should decode a batch exactly like urllib.parse.unquote, bad escapes included."""
    assert esl_protocol._unquote_all(list(values)) == [unquote(v) for v in values]


# --- malformed input ----------------------------------------------------------------

GOOD = b"Content-Type: command/reply\nReply-Text: +OK\n\n"


@pytest.mark.parametrize("garbage, fragment", [
    (b"Content-Type: command/reply\nReply-Text +OK\n\n", "'Reply-Text +OK'"),
    (b"Content-Type: api/response\nContent-Length: 1x\n\n", "'1x'"),
    (b"Content-Type: api/response\nContent-Length: -4\n\n", "'-4'"),
    (b"Content-Type: api/response\nContent-Length: \n\n", "''"),
    (b"Content-Type: api/response\nContent-Length: %d\n\n" % (MAX_CONTENT_LENGTH + 1),
     "exceeds"),
    (b"Content-Type: command/reply\nReply-Text: caf\xe9\n\n", "non-UTF-8 byte b'\\xe9'"),
    (b"Reply-Text: +OK\n\n", "without Content-Type"),
    (b"HTTP/1.1 200 OK\r\n\r\n\n\n", "'HTTP/1.1 200 OK\\r'"),
    (b"Content-Type: api/response\nContent-Length: 3\nContent-Length: 4\n\n1234",
     "conflicting Content-Length"),
])
def test_malformed_frames_raise(garbage, fragment):
    """Should reject bad framing with an error that quotes the offending bytes and
    gives their stream offset (here just after one good message)."""
    parser = EslParser()
    with pytest.raises(EslProtocolError) as info:
        parser.feed(GOOD + garbage)
    assert fragment in str(info.value)
    assert info.value.offset >= len(GOOD)
    assert [m.reply_text for m in info.value.messages] == ["+OK"]


def event_frame(body: bytes, content_type: bytes = b"text/event-plain") -> bytes:
    return b"Content-Length: %d\nContent-Type: %s\n\n%s" % (len(body), content_type, body)


@pytest.mark.parametrize("body, fragment", [
    (b"Event-Name: HEARTBEAT\nno separator here\n\n", "'no separator here'"),
    (b"Event-Name: HEARTBEAT\nCore-UUID:x\n\n", "'Core-UUID:x'"),
    (b"Event-Name: HEARTBEAT\n", "no blank line"),
    (b"Event-Name: BACKGROUND_JOB\nContent-Length: 9\n\n+OK\n", "Content-Length 9"),
    (b"Event-Name: BACKGROUND_JOB\n\n+OK\n", "no Content-Length"),
    (b"Event-Name: CUSTOM\nX: \xff\n\n", "non-UTF-8"),
])
def test_malformed_plain_events_raise(body, fragment):
    with pytest.raises(EslProtocolError, match="stream offset") as info:
        EslParser().feed(event_frame(body))
    assert fragment in str(info.value)


@pytest.mark.parametrize("body, content_type", [
    (b'{"Event-Name": "X"', b"text/event-json"),
    (b'[["Event-Name", "X"]]', b"text/event-json"),
    (b'{"Event-Name": 1}', b"text/event-json"),
    (b"<event><headers>", b"text/event-xml"),
    (b"<evt><headers/></evt>", b"text/event-xml"),
])
def test_malformed_json_and_xml_events_raise(body, content_type):
    with pytest.raises(EslProtocolError):
        EslParser().feed(event_frame(body, content_type))


def test_header_block_without_end_is_refused_once_too_long():
    parser = EslParser()
    parser.feed(b"Content-Type: x\n" + b"A" * 100)
    with pytest.raises(EslProtocolError, match="no blank line"):
        parser.feed(b"B" * esl_protocol.MAX_HEADER_BYTES)


def test_parser_is_unusable_until_reset():
    """Should refuse input after an error, and work again after reset()."""
    parser = EslParser()
    with pytest.raises(EslProtocolError):
        parser.feed(b"garbage\n\n")
    with pytest.raises(EslProtocolError, match="reset"):
        parser.feed(GOOD)
    parser.reset()
    assert only(parser.feed(GOOD)).reply_text == "+OK"


def test_offsets_count_from_the_start_of_the_stream():
    parser = EslParser()
    parser.feed(GOOD)
    parser.feed(GOOD[:10])
    with pytest.raises(EslProtocolError) as info:
        parser.feed(GOOD[10:] + b"Content-Type: x\nbad line\n\n")
    assert info.value.offset == 2 * len(GOOD) + len("Content-Type: x\n")


# --- what we send ------------------------------------------------------------------

def client_writes(name: str) -> list[bytes]:
    return load_trace(name).client_writes()


def test_encode_command_matches_the_trace():
    assert encode_command("api status") in client_writes("inbound_auth_api_status")
    assert encode_command("linger 5") == b"linger 5\n\n"


@pytest.mark.parametrize("kwargs", [
    dict(uuid=None, app="answer", arg=None),
    dict(uuid=None, app="set", arg="esl_trace_var=hello world"),
    dict(uuid=None, app="playback", arg="tone_stream://%(200,0,500,600,700)", event_lock=True),
    dict(uuid=None, app="log", arg="INFO this application argument was sent in the sendmsg body",
         arg_in_body=True),
])
def test_encode_sendmsg_matches_the_trace_byte_for_byte(kwargs):
    assert encode_sendmsg(**kwargs) in client_writes("outbound_async_full_linger")


def test_encode_sendmsg_options():
    assert encode_sendmsg("abc-1", "playback", "x.wav", loops=3, event_uuid="ev-1") == (
        b"sendmsg abc-1\ncall-command: execute\nexecute-app-name: playback\n"
        b"loops: 3\nevent-uuid: ev-1\nexecute-app-arg: x.wav\n\n")


def test_long_or_space_led_arguments_go_in_the_body():
    """Should move arguments FreeSWITCH would truncate or strip into a
    content-length body, with no trailing newline after it."""
    long_arg = "x" * (esl_protocol.INLINE_ARG_LIMIT + 1)
    wire = encode_sendmsg(None, "log", long_arg)
    assert wire.endswith(b"content-type: text/plain\ncontent-length: 513\n\n" + long_arg.encode())
    assert b"execute-app-arg" not in wire
    assert encode_sendmsg(None, "log", " padded").endswith(b"content-length: 7\n\n padded")
    assert encode_sendmsg(None, "say", "ä" * 300).endswith(b"content-length: 600\n\n" + "ä".encode() * 300)


CALLER_ID_ATTACK = "Mallory\n\nbgapi originate sofia/gateway/gw/4477 &park"


@pytest.mark.parametrize("build", [
    lambda: encode_sendmsg(None, "set", f"effective_caller_id_name={CALLER_ID_ATTACK}"),
    lambda: encode_sendmsg(None, "set", f"x={CALLER_ID_ATTACK}", arg_in_body=True),
    lambda: encode_sendmsg(None, "log", "x" * 1000 + "\n"),
    lambda: encode_sendmsg(None, "set", "a=b\rc"),
    lambda: encode_sendmsg(None, "set", "a=b\x00c"),
    lambda: encode_sendmsg("uuid\nbgapi status", "answer"),
    lambda: encode_sendmsg("two words", "answer"),
    lambda: encode_sendmsg(None, "answer\nexecute-app-name: hangup"),
    lambda: encode_sendmsg(None, "hang up"),
    lambda: encode_sendmsg(None, "answer", event_uuid="x\ny"),
    lambda: encode_command(f"api uuid_setvar abc cid {CALLER_ID_ATTACK}"),
    lambda: encode_command("auth secret\r"),
    lambda: encode_command(""),
])
def test_injection_is_refused(build):
    """Should refuse a caller ID name like "Mallory\\n\\nbgapi originate …" (or CR,
    NUL, a multi-word uuid/app) anywhere it would reach the wire."""
    with pytest.raises(EslInjectionError):
        build()


def test_injection_error_is_a_value_error():
    assert issubclass(EslInjectionError, ValueError)


def test_loops_must_be_positive():
    with pytest.raises(ValueError):
        encode_sendmsg(None, "playback", "x.wav", loops=0)
