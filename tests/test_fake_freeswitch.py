"""The fake FreeSWITCH against the recordings of the real one, then its features.

Our side of every connection is a small synchronous client built on EslParser
and the encoders, so the fake is also an end-to-end check of those.
"""
from __future__ import annotations

import re
import socket
import threading
from collections import defaultdict, deque

import pytest

from esl_app.esl_protocol import EslParser, Event, Message, encode_command, encode_sendmsg
from tests.esl_trace import freeswitch_bytes, load_trace
from tests.fake_freeswitch import (
    Caller,
    FakeEvent,
    FakeFreeSWITCH,
    Outcome,
    Scenario,
    linger_frame,
    multiset_pairs,
    parse_dial_string,
    sip_uri_user,
)

TIMEOUT = 5.0
REPLIES = ("command/reply", "api/response")


class Peer:
    """Our end of one ESL connection: send a command, read until its reply;
    events seen meanwhile are kept in ``events``, everything in ``messages``."""

    def __init__(self, sock: socket.socket):
        sock.settimeout(TIMEOUT)
        self.sock = sock
        self.parser = EslParser()
        self.pending: deque[Message] = deque()
        self.messages: list[Message] = []
        self.events: list[Event] = []
        self.eof = False

    def read(self) -> Message | None:
        """The next message, or None at EOF (a reset counts as EOF)."""
        while not self.pending:
            if self.eof:
                return None
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
                continue
            self.pending.extend(self.parser.feed(data))
        message = self.pending.popleft()
        self.messages.append(message)
        if message.content_type.startswith("text/event-"):
            self.events.append(message.event)
        return message

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> Message:
        """Read up to the next command/reply or api/response."""
        for _ in range(10_000):
            message = self.read()
            assert message is not None, "connection closed before the reply"
            if message.content_type in REPLIES:
                return message
        raise AssertionError("no reply")

    def command(self, line: str) -> Message:
        self.send(encode_command(line))
        return self.reply()

    def execute(self, app: str, arg: str | None = None, **kwargs) -> Message:
        self.send(encode_sendmsg(None, app, arg, **kwargs))
        return self.reply()

    def event(self, name: str, **headers: str) -> Event:
        """The next event called ``name`` (whose headers match), reading as needed."""
        seen = 0
        for _ in range(10_000):
            for event in self.events[seen:]:
                if event.name == name and all(event.get(k) == v for k, v in headers.items()):
                    self.events.remove(event)
                    return event
            seen = len(self.events)
            if self.read() is None:
                raise AssertionError(f"EOF before {name} {headers}; got "
                                     f"{[e.name for e in self.events]}")
        raise AssertionError(f"no {name}")

    def until_eof(self) -> list[Message]:
        start = len(self.messages)
        while self.read() is not None:
            pass
        return self.messages[start:]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def fake():
    with FakeFreeSWITCH(timeout=TIMEOUT) as switch:
        yield switch


@pytest.fixture
def client(fake):
    """An authenticated inbound connection."""
    peer = Peer(socket.create_connection(fake.address, timeout=TIMEOUT))
    assert peer.read().content_type == "auth/request"
    assert peer.command("auth ClueCon").reply_text == "+OK accepted"
    yield peer
    peer.close()


@pytest.fixture
def outbound_server():
    """The socket our outbound ESL server would listen on."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(TIMEOUT)
    yield server
    server.close()


def answer_call(fake, server, channel_vars=None, scenario=None, caller=None, **kwargs):
    """Place a call into ``server``, accept it and send ``connect``."""
    call = fake.place_call(*server.getsockname(), channel_vars or {}, scenario, caller, **kwargs)
    sock, _ = server.accept()
    peer = Peer(sock)
    data = peer.command("connect")
    return call, peer, data


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def norm(text: str | bytes) -> str:
    if isinstance(text, bytes):
        text = text.decode()
    return UUID.sub("<uuid>", text)


def layout(event: Event) -> tuple[str, ...]:
    """Header names in order, with the variable_* block folded to one entry
    (variable order follows set-time order, which the fake does not model)."""
    names: list[str] = []
    for name, _ in event.headers:
        if name.startswith("variable_"):
            name = "variable_*"
            if names and names[-1] == name:
                continue
        names.append(name)
    return tuple(names)


def frame_shape(message: Message):
    """What must match between the real and the fake switch for a non-event frame."""
    if message.event is not None:  # the outbound connect reply, CHANNEL_DATA
        return "connect", layout(message.event), message.reply_text
    return (message.content_type, tuple(n for n, _ in message.headers),
            norm(message.reply_text or ""), norm(message.body),
            message.get("Linger-Time"))


# --- the fake against the recordings ------------------------------------------------------

def scripted_answers(trace) -> dict[str, deque[str]]:
    """api/bgapi command line -> the answers FreeSWITCH gave, in order."""
    answers: dict[str, deque[str]] = defaultdict(deque)
    parser = EslParser()
    api_waiting: deque[str] = deque()
    bg_waiting: deque[str] = deque()
    jobs: dict[str, str] = {}
    for record in trace.records:
        if record.direction == ">>>":
            line = record.data.split(b"\n", 1)[0].decode()
            if line.startswith("api "):
                api_waiting.append(line[4:])
            elif line.startswith("bgapi "):
                bg_waiting.append(line[6:])
        elif record.direction == "<<<":
            for message in parser.feed(record.data):
                if message.content_type == "api/response":
                    answers[api_waiting.popleft()].append(message.body.decode())
                elif "Job-UUID" in message and message.content_type == "command/reply":
                    jobs[message["Job-UUID"]] = bg_waiting.popleft()
                elif message.event is not None and message.event.name == "BACKGROUND_JOB":
                    answers[jobs[message.event["Job-UUID"]]].append(message.event.body.decode())
    return answers


def script(fake: FakeFreeSWITCH, answers: dict[str, deque[str]], native: set[str]) -> None:
    for line, queue in answers.items():
        if not any(uuid in line for uuid in native):
            fake.script_api(line, lambda arg, queue=queue: queue.popleft())


def replay(trace, peer: Peer) -> None:
    """Send the client's recorded writes one by one, each after the previous reply."""
    for data in trace.client_writes():
        peer.send(data)
        peer.reply()
    peer.until_eof()


def split(messages: list[Message]) -> tuple[list, list[Event]]:
    frames = [m for m in messages if m.event is None or m.content_type == "command/reply"]
    return ([frame_shape(m) for m in frames if m.content_type != "log/data"],
            [m.event for m in messages if m.content_type.startswith("text/event-")])


INBOUND_TRACES = [
    "inbound_auth_api_status", "inbound_bad_password", "inbound_errors", "inbound_bgapi",
    "inbound_event_bodies_json_xml", "inbound_misc", "inbound_show_channels",
    "inbound_event_plain_call", "inbound_event_json_call", "inbound_event_xml_call",
    "inbound_event_plain_sip_call", "inbound_myevents_uuid", "inbound_acl_rude_rejection",
]
def fake_made(event: Event) -> bool:
    """Events the fake itself produces in an inbound replay: jobs and the
    scenarios' own sendevent.  The rest came from calls and phones of the real
    switch, which the scripted fake only answers api commands about."""
    return event.name == "BACKGROUND_JOB" or event.subclass == "esl::trace"


@pytest.mark.parametrize("name", INBOUND_TRACES)
def test_inbound_frames_match_the_real_switch(name, outbound_server):
    """Should answer the recorded client's commands with the same frames: same
    Content-Type, header names in the same order, same reply texts and bodies
    (UUIDs aside), and events it makes itself laid out like the real ones."""
    trace = load_trace(name)
    expected_frames, expected_events = split(EslParser().feed(freeswitch_bytes(trace)))
    acl = (lambda address: False) if name == "inbound_acl_rude_rejection" else None
    with FakeFreeSWITCH(timeout=TIMEOUT, acl=acl) as fake:
        native = set()
        made = fake_made
        if name == "inbound_myevents_uuid":
            # The recorded channel, here a fake call parked on a socket nobody reads.
            uuid = "d7b84eac-58fa-427b-bf3c-d08bb64fc714"
            fake.place_call(*outbound_server.getsockname(), uuid=uuid)
            native = {uuid}
            made = lambda event: event.name == "CHANNEL_HANGUP"  # noqa: E731
        script(fake, scripted_answers(trace), native)
        peer = Peer(socket.create_connection(fake.address, timeout=TIMEOUT))
        replay(trace, peer)
    frames, events = split(peer.messages)
    assert frames == expected_frames
    expected_events = [e for e in expected_events if made(e)]
    assert [e.name for e in events] == [e.name for e in expected_events]
    if made is fake_made:
        assert [layout(e) for e in events] == [layout(e) for e in expected_events]


OUTBOUND = {
    "outbound_async_full_linger": Scenario(),
    "outbound_caller_hangup_linger5": Scenario(caller_hangs_up_after=4),
    "outbound_caller_hangup_nolinger": Scenario(caller_hangs_up_after=3),
    "outbound_bridge": Scenario(legs={"loopback/9196": Outcome.ANSWER}),
    "outbound_sync_full": Scenario(),
}

#: Variables the fake sets on every channel; the rest of a recorded CHANNEL_DATA
#: becomes channel_vars.
FAKE_SET = {"direction", "uuid", "session_id", "channel_name", "read_codec", "read_rate",
            "write_codec", "write_rate", "call_uuid", "current_application_data",
            "current_application", "socket_host"}


def recorded_call(data: Event) -> tuple[Caller, dict[str, str]]:
    """The Caller and channel variables that recreate a recorded CHANNEL_DATA."""
    caller = Caller(
        caller_id_number=data["Caller-Caller-ID-Number"],
        caller_id_name=data.get("Caller-Caller-ID-Name", ""),
        destination_number=data["Caller-Destination-Number"], context=data["Caller-Context"],
        dialplan=data["Caller-Dialplan"], network_addr=data.get("Caller-Network-Addr", ""),
        callee_id_name=data.get("Caller-Callee-ID-Name", ""),
        callee_id_number=data.get("Caller-Callee-ID-Number", ""),
        source=data["Caller-Source"], channel_name=data["Caller-Channel-Name"],
        codec=(data["Channel-Read-Codec-Name"], data["Channel-Read-Codec-Rate"],
               data["Channel-Read-Codec-Bit-Rate"]))
    variables = {n[9:]: v for n, v in data.headers
                 if n.startswith("variable_") and n[9:] not in FAKE_SET}
    return caller, variables


@pytest.mark.parametrize("name", sorted(OUTBOUND))
def test_outbound_frames_match_the_real_switch(name, outbound_server):
    """Should play a recorded outbound call with the same replies and notices,
    the same events in the same order, each laid out like the real one."""
    trace = load_trace(name)
    expected = EslParser().feed(freeswitch_bytes(trace))
    data = expected[0].event
    caller, variables = recorded_call(data)
    mode = expected[0]["Socket-Mode"]
    with FakeFreeSWITCH(timeout=TIMEOUT) as fake:
        fake.place_call(*outbound_server.getsockname(), variables, OUTBOUND[name], caller,
                        uuid=data["Unique-ID"], socket_mode=mode)
        sock, _ = outbound_server.accept()
        peer = Peer(sock)
        replay(trace, peer)
    frames, events = split(peer.messages)
    expected_frames, expected_events = split(expected)
    assert frames == expected_frames
    assert [e.name for e in events] == [e.name for e in expected_events]
    for got, want in zip(events, expected_events):
        assert layout(got) == layout(want), got.name
        assert got.get("Application") == want.get("Application")
        assert got.get("Application-Response") == want.get("Application-Response")
    got_vars = {n for n, _ in peer.messages[0].event.headers if n.startswith("variable_")}
    assert got_vars == {n for n, _ in data.headers if n.startswith("variable_")}


def test_event_serialisation_is_byte_exact():
    """Should serialise every recorded event (plain, JSON, XML) to exactly the
    bytes FreeSWITCH sent, from its decoded headers and body."""
    compared = 0
    for name in INBOUND_TRACES + sorted(OUTBOUND):
        data = freeswitch_bytes(load_trace(name))
        for message in EslParser().feed(data):
            if not message.content_type.startswith("text/event-"):
                continue
            event = message.event
            headers, body = event.headers, None
            if "Content-Length" in event:  # the serialiser appends the body's own
                last = max(i for i, (n, _) in enumerate(headers) if n == "Content-Length")
                headers, body = headers[:last] + headers[last + 1:], event.body.decode()
            head, payload = FakeEvent(headers, body).frame(message.content_type[11:])
            assert payload == message.body, (name, event.name)
            assert head == (f"Content-Length: {len(message.body)}\n"
                            f"Content-Type: {message.content_type}\n\n").encode()
            compared += 1
    assert compared > 250


# --- inbound mode ---------------------------------------------------------------------

def test_good_password_is_accepted(client):
    assert client.command("api version").body == b"FreeSWITCH Version 1.10.12-release~64bit ( 64bit)\n"


def test_wrong_password_is_refused_and_disconnected(fake):
    """Should answer -ERR invalid, send a disconnect notice and close, like the real switch."""
    peer = Peer(socket.create_connection(fake.address, timeout=TIMEOUT))
    peer.read()
    assert peer.command("api status").reply_text == "-ERR command not found"
    assert peer.command("auth WrongPassword").reply_text == "-ERR invalid"
    assert [m.content_type for m in peer.until_eof()] == ["text/disconnect-notice"]


def test_scripted_api_answers(fake, client):
    fake.script_api("show registrations", "reg_user,realm\n1001,example.com\n\n1 total.\n")
    fake.script_api("sofia_contact", lambda arg: f"sofia/internal/{arg}" if arg.startswith("2001")
                    else "error/user_not_registered")
    assert client.command("api show registrations").body.endswith(b"1 total.\n")
    assert client.command("api sofia_contact 2001@example.com").body == b"sofia/internal/2001@example.com"
    assert client.command("api sofia_contact 2002@example.com").body == b"error/user_not_registered"
    assert client.command("api show channels as json").body == b'{"row_count": 0}\n'
    assert client.command("api nosuchcmd").body == b"-ERR nosuchcmd Command not found!\n"
    assert [c.line for c in fake.connections[0].commands][-1] == "api nosuchcmd"


def test_bgapi_job_flow(fake, client):
    """Should reply with a Job-UUID at once, then deliver BACKGROUND_JOB with the
    output as body; a client-chosen Job-UUID is used as the job id."""
    fake.script_api("originate", lambda arg: "-ERR USER_BUSY\n")
    client.command("event plain BACKGROUND_JOB")
    reply = client.command("bgapi originate user/2001@example.com &park")
    job = reply["Job-UUID"]
    assert reply.reply_text == f"+OK Job-UUID: {job}"
    event = client.event("BACKGROUND_JOB", **{"Job-UUID": job})
    assert event.body == b"-ERR USER_BUSY\n"
    assert event["Job-Command"] == "originate"
    assert event["Job-Command-Arg"] == "user/2001@example.com &park"
    client.send(b"bgapi status\nJob-UUID: 11111111-2222-3333-4444-555555555555\n\n")
    assert client.reply()["Job-UUID"] == "11111111-2222-3333-4444-555555555555"
    assert client.event("BACKGROUND_JOB")["Job-UUID"] == "11111111-2222-3333-4444-555555555555"


@pytest.mark.parametrize("fmt", ["plain", "json", "xml"])
def test_emitted_events_arrive_in_the_subscribed_format(fake, client, fmt):
    """Should deliver pushed events in the connection's format, duplicates and
    body intact, and only the subscribed CUSTOM subclasses."""
    client.command(f"event {fmt} CHANNEL_HANGUP_COMPLETE CUSTOM sofia::register")
    fake.emit_event(fake.make_event("CUSTOM", {"Event-Subclass": "sofia::unregister"}))
    fake.emit_event(fake.make_event("CUSTOM", {"Event-Subclass": "sofia::register",
                                               "from-user": "1001", "contact": "<sip:1001@x>"}))
    fake.emit_event([("Event-Name", "CHANNEL_HANGUP_COMPLETE"), ("Hangup-Cause", "USER_BUSY"),
                     ("Hangup-Cause", "USER_BUSY"), ("Unique-ID", "u-1")], body="bye\n")
    register = client.event("CUSTOM")
    assert register.subclass == "sofia::register" and register["contact"] == "<sip:1001@x>"
    complete = client.event("CHANNEL_HANGUP_COMPLETE")
    assert complete.get_all("Hangup-Cause") == ["USER_BUSY", "USER_BUSY"]
    assert complete.body == b"bye\n"
    assert all(m.content_type == f"text/event-{fmt}" for m in client.messages[-2:])
    assert client.events == []  # sofia::unregister, sent first, never came


def test_filters_select_events(fake, client):
    client.command("event plain ALL")
    assert client.command("filter Unique-ID u-2").reply_text == "+OK filter added. [Unique-ID]=[u-2]"
    for uuid in ("u-1", "u-2"):
        fake.emit_event(fake.make_event("CHANNEL_ANSWER", {"Unique-ID": uuid}))
    fake.emit_event(fake.make_event("HEARTBEAT"))
    assert client.event("CHANNEL_ANSWER")["Unique-ID"] == "u-2"
    assert client.command("filter delete Unique-ID u-2").reply_text == "+OK filter deleted. [Unique-ID][u-2]"
    fake.emit_event(fake.make_event("HEARTBEAT"))
    client.event("HEARTBEAT")
    assert [e.name for e in client.events] == []


def test_api_holds_back_events_until_its_reply(fake, client):
    """Should send events queued during a blocking api after its api/response."""
    started, release = threading.Event(), threading.Event()

    def slow_originate(arg: str) -> str:
        started.set()
        assert release.wait(TIMEOUT)
        return "+OK 9e3c\n"

    fake.script_api("originate", slow_originate)
    client.command("event plain CHANNEL_CREATE")
    client.send(encode_command("api originate user/1001 &park"))
    assert started.wait(TIMEOUT)
    fake.emit_event(fake.make_event("CHANNEL_CREATE", {"Unique-ID": "9e3c"}))
    release.set()
    assert client.reply().body == b"+OK 9e3c\n"
    assert client.read().event.name == "CHANNEL_CREATE"


def test_exit_says_bye_then_disconnects(client):
    assert client.command("exit").reply_text == "+OK bye"
    notice, = client.until_eof()
    assert notice.body.startswith(b"Disconnected, goodbye.")


def test_drop_resets_connections_like_a_restart(fake, client):
    """Should cut every connection abruptly and accept new ones (new Core-UUID)."""
    core = fake.core_uuid
    fake.drop()
    assert client.until_eof() == []
    peer = Peer(socket.create_connection(fake.address, timeout=TIMEOUT))
    assert peer.read().content_type == "auth/request"
    assert fake.core_uuid != core
    peer.close()


def test_rude_rejection(outbound_server):
    with FakeFreeSWITCH(timeout=TIMEOUT, acl=lambda address: address != "127.0.0.1") as fake:
        peer = Peer(socket.create_connection(fake.address, timeout=TIMEOUT))
        assert [m.content_type for m in peer.until_eof()] == [
            "text/rude-rejection", "text/disconnect-notice"]


# --- outbound mode -----------------------------------------------------------------------

def test_connect_reply_carries_the_given_variables(fake, outbound_server):
    """Should answer connect with a CHANNEL_DATA block holding our channel
    variables, URL-encoded on the wire and decoded by our parser."""
    variables = {"sip_to_user": "442079460999", "company_id": "acme & co",
                 "sip_h_X-Note": "a:b %41\n", "effective_caller_id_name": "Zoë"}
    caller = Caller(caller_id_number="+447700900123", caller_id_name="Zoë Smith")
    call, peer, reply = answer_call(fake, outbound_server, variables, caller=caller)
    data = reply.event
    assert reply.reply_text == "+OK\n" and data.name == "CHANNEL_DATA"
    for name, value in variables.items():
        assert data[f"variable_{name}"] == value
    assert data["Caller-Caller-ID-Name"] == "Zoë Smith"
    assert data["Unique-ID"] == call.uuid and reply["Socket-Mode"] == "async"
    peer.close()


def test_connect_reply_is_url_encoded_on_the_wire(fake, outbound_server):
    call = fake.place_call(*outbound_server.getsockname(), {"note": "a b:c%d&"})
    sock, _ = outbound_server.accept()
    sock.settimeout(TIMEOUT)
    sock.sendall(b"connect\n\n")
    raw = b""
    while not raw.endswith(b"\n\n"):
        raw += sock.recv(65536)
    assert b"variable_note: a%20b%3Ac%25d%26\n" in raw
    assert b"Reply-Text: %2BOK%0A\n" in raw and b"Content-Length" not in raw
    sock.close()
    call.wait()


def test_answer_and_application_uuid(fake, outbound_server):
    """Should run answer like the real switch and echo our Event-UUID as
    Application-UUID in CHANNEL_EXECUTE and CHANNEL_EXECUTE_COMPLETE."""
    call, peer, _ = answer_call(fake, outbound_server)
    peer.command("myevents")
    assert peer.execute("answer", event_uuid="app-1").reply_text == "+OK"
    execute = peer.event("CHANNEL_EXECUTE")
    assert execute["Application"] == "answer" and execute["Application-UUID"] == "app-1"
    assert peer.event("CHANNEL_ANSWER")["Answer-State"] == "answered"
    complete = peer.event("CHANNEL_EXECUTE_COMPLETE", Application="answer")
    assert complete["Application-UUID"] == "app-1"
    assert complete["Application-Response"] == "_none_"
    assert call.executed == [("answer", "")]
    peer.close()


def run_bridge(fake, server, dial: str, scenario: Scenario, variables=None):
    call, peer, _ = answer_call(fake, server, variables, scenario)
    peer.command("myevents")
    peer.execute("answer")
    peer.execute("bridge", dial)
    peer.event("CHANNEL_EXECUTE", Application="bridge")
    return call, peer


def test_bridge_answered(fake, outbound_server):
    """Should bridge to the answering leg: CHANNEL_BRIDGE, then (callee hangs up)
    CHANNEL_UNBRIDGE and the bridge's EXECUTE_COMPLETE, as outbound_bridge.trace."""
    dial = "{origination_uuid=b-leg-1}user/2001@example.com"
    call, peer = run_bridge(fake, outbound_server, dial,
                            Scenario(legs={"user/2001@example.com": Outcome.ANSWER}))
    bridge = peer.event("CHANNEL_BRIDGE")
    assert bridge["Bridge-B-Unique-ID"] == "b-leg-1" and bridge["Other-Type"] == "originatee"
    peer.event("CHANNEL_UNBRIDGE")
    done = peer.event("CHANNEL_EXECUTE_COMPLETE", Application="bridge")
    assert done["Application-Response"] == "_none_"
    assert done["variable_originate_disposition"] == "SUCCESS"
    assert done["variable_DIALSTATUS"] == "SUCCESS"
    assert done["variable_bridge_hangup_cause"] == "NORMAL_CLEARING"
    assert done["variable_dialed_user"] == "2001"
    assert call.bridges[-1].answered == "user/2001@example.com"
    assert call.hangup_cause is None
    peer.close()


@pytest.mark.parametrize("outcome, cause, dialstatus", [
    (Outcome.BUSY, "USER_BUSY", "BUSY"),
    (Outcome.UNREGISTERED, "USER_NOT_REGISTERED", "USER_NOT_REGISTERED"),
    (Outcome.REJECT, "CALL_REJECTED", "DONTCALL"),
])
def test_failed_bridge_hangs_up_the_caller(fake, outbound_server, outcome, cause, dialstatus):
    """Should, without continue_on_fail, hang the caller up with the leg's cause
    (CHANNEL_HANGUP before the bridge's EXECUTE_COMPLETE), then disconnect."""
    call, peer = run_bridge(fake, outbound_server, "user/2001@example.com",
                            Scenario(legs={"user/2001@example.com": outcome}))
    assert peer.event("CHANNEL_HANGUP")["Hangup-Cause"] == cause
    done = peer.event("CHANNEL_EXECUTE_COMPLETE", Application="bridge")
    assert done["variable_originate_disposition"] == cause
    assert done["variable_DIALSTATUS"] == dialstatus
    complete = peer.event("CHANNEL_HANGUP_COMPLETE")
    assert complete.get_all("Hangup-Cause") == [cause, cause]
    assert peer.until_eof()[-1]["Content-Disposition"] == "disconnect"
    assert call.hangup_cause == cause


def test_busy_with_continue_on_fail_keeps_the_call(fake, outbound_server):
    call, peer, _ = answer_call(fake, outbound_server,
                                scenario=Scenario(legs={"user/2001@d": Outcome.BUSY}))
    peer.command("myevents")
    peer.execute("set", "continue_on_fail=true")
    peer.execute("bridge", "user/2001@d")
    done = peer.event("CHANNEL_EXECUTE_COMPLETE", Application="bridge")
    assert done["variable_originate_disposition"] == "USER_BUSY"
    assert call.hangup_cause is None
    peer.execute("voicemail", "default example.com 2001")
    assert peer.event("CHANNEL_EXECUTE_COMPLETE", Application="voicemail")
    peer.close()


def test_multiset_sets_each_pair_like_set_and_acks_like_set(fake, outbound_server):
    """Should read multiset's space-separated var=value pairs as mod_dptools does
    (an empty value unsets, ``^^X`` picks another delimiter), answering with
    +OK, CHANNEL_EXECUTE and CHANNEL_EXECUTE_COMPLETE as for ``set``."""
    call, peer, _ = answer_call(fake, outbound_server,
                                scenario=Scenario(legs={"user/2001@d": Outcome.BUSY}))
    peer.command("myevents")
    peer.execute("set", "gone=soon")
    peer.execute("multiset", "continue_on_fail=true  hangup_after_bridge=true gone=")
    assert peer.event("CHANNEL_EXECUTE", Application="multiset")
    done = peer.event("CHANNEL_EXECUTE_COMPLETE", Application="multiset")
    assert done["Application-Data"] == "continue_on_fail=true  hangup_after_bridge=true gone="
    assert (done["variable_continue_on_fail"], done["variable_hangup_after_bridge"]) == ("true", "true")
    assert "variable_gone" not in done
    peer.execute("multiset", "^^;a=1 2;b=x y")
    done = peer.event("CHANNEL_EXECUTE_COMPLETE", Application="multiset")
    assert (done["variable_a"], done["variable_b"]) == ("1 2", "x y")
    peer.execute("bridge", "user/2001@d")     # continue_on_fail: the busy leg keeps the caller
    assert peer.event("CHANNEL_EXECUTE_COMPLETE", Application="bridge")["variable_originate_disposition"] \
        == "USER_BUSY"
    assert call.hangup_cause is None and call.errors == []
    peer.close()


@pytest.mark.parametrize("data, pairs", [
    ("a=1 b=2", [("a", "1"), ("b", "2")]),
    ("a=1  b= c", [("a", "1"), ("b", None), ("c", None)]),
    ("^^,a=1,b=x y", [("a", "1"), ("b", "x y")]),
    ("a,1 b=1,2", [("a", "1"), ("b", "1,2")]),
    ("", []),
])
def test_multiset_pairs_follow_base_set(data, pairs):
    assert multiset_pairs(data) == pairs


def test_no_answer_uses_the_leg_timeout_on_a_virtual_clock(fake, outbound_server):
    """Should give up after the leg timeout (NO_ANSWER, which never hangs the
    caller up) without the test waiting for it."""
    call, peer, _ = answer_call(fake, outbound_server,
                                scenario=Scenario(legs={"user/2001@d": Outcome.NO_ANSWER}))
    peer.command("myevents")
    peer.execute("bridge", "[leg_timeout=25]user/2001@d")
    started = int(peer.event("CHANNEL_EXECUTE", Application="bridge")["Event-Date-Timestamp"])
    done = peer.event("CHANNEL_EXECUTE_COMPLETE", Application="bridge")
    assert int(done["Event-Date-Timestamp"]) - started >= 25_000_000
    assert done["variable_originate_disposition"] == "NO_ANSWER"
    assert done["variable_DIALSTATUS"] == "NOANSWER"
    assert call.hangup_cause is None
    peer.close()


def test_sequential_failover_and_simultaneous_ring(fake, outbound_server):
    """Should try '|' groups in turn and ring ',' legs together."""
    legs = {"user/2001@d": Outcome.BUSY, "user/2002@d": Outcome.NO_ANSWER,
            "sofia/gateway/gw/447700900123": Outcome.ANSWER}
    call, peer = run_bridge(fake, outbound_server,
                            "user/2001@d,user/2002@d|sofia/gateway/gw/447700900123",
                            Scenario(legs=legs))
    peer.event("CHANNEL_BRIDGE")
    done = peer.event("CHANNEL_EXECUTE_COMPLETE", Application="bridge")
    assert done["variable_originate_disposition"] == "SUCCESS"
    assert done["variable_originate_causes"].startswith("ARRAY::")
    attempt = call.bridges[-1]
    assert attempt.answered == "sofia/gateway/gw/447700900123"
    assert [t for t, _ in attempt.legs] == list(legs)
    peer.close()


def test_dial_string_parsing():
    global_vars, groups = parse_dial_string(
        "{ignore_early_media=true,origination_uuid=x}[leg_timeout=10,a=b]user/1@d,"
        "user/2@d|sofia/gateway/gw/44:_:loopback/9")
    assert global_vars == {"ignore_early_media": "true", "origination_uuid": "x"}
    assert groups == [[("user/1@d", {"leg_timeout": "10", "a": "b"}), ("user/2@d", {})],
                      [("sofia/gateway/gw/44", {}), ("loopback/9", {})]]


def test_play_and_get_digits(fake, outbound_server):
    """Should deliver the scenario's digits as DTMF and set the variable; None
    means the caller typed nothing."""
    call, peer, _ = answer_call(fake, outbound_server, scenario=Scenario(digits=["12#", None]))
    peer.command("myevents")
    args = "1 4 3 5000 # menu.wav invalid.wav choice \\d+ 2000"
    peer.execute("play_and_get_digits", args)
    assert [peer.event("DTMF")["DTMF-Digit"] for _ in range(3)] == ["1", "2", "#"]
    done = peer.event("CHANNEL_EXECUTE_COMPLETE", Application="play_and_get_digits")
    assert done["variable_choice"] == "12" and done["variable_read_result"] == "success"
    peer.execute("play_and_get_digits", args.replace("choice", "again"))
    done = peer.event("CHANNEL_EXECUTE_COMPLETE", Application="play_and_get_digits")
    assert "variable_again" not in done and done["variable_read_result"] == "timeout"
    peer.close()


def test_caller_hangs_up_during_playback(fake, outbound_server):
    """Should cut the running playback short like the real switch: CHANNEL_HANGUP,
    then its EXECUTE_COMPLETE with PLAYBACK ERROR, then the disconnect notice."""
    call, peer, _ = answer_call(fake, outbound_server, scenario=Scenario(caller_hangs_up_after=3))
    peer.command("myevents")
    peer.execute("answer")
    peer.execute("playback", "ivr/welcome.wav")
    peer.until_eof()
    names = [e.name for e in peer.events]
    assert names[names.index("CHANNEL_HANGUP") + 1] == "CHANNEL_EXECUTE_COMPLETE"
    cut = next(e for e in peer.events if e.get("Application") == "playback"
               and e.name == "CHANNEL_EXECUTE_COMPLETE")
    assert cut["Application-Response"] == "PLAYBACK ERROR"
    assert peer.messages[-1]["Content-Disposition"] == "disconnect"
    assert call.hangup_cause == "NORMAL_CLEARING" and not call.abandoned
    # Produced but not delivered: myevents does not include CHANNEL_CALLSTATE.
    assert "CHANNEL_CALLSTATE" in [e.name for e in call.events]
    assert "CHANNEL_CALLSTATE" not in names


def test_linger_keeps_the_socket_until_exit(fake, outbound_server):
    call, peer, _ = answer_call(fake, outbound_server)
    peer.command("myevents")
    assert peer.command("linger").reply_text == "+OK will linger"
    peer.send(b"sendmsg\ncall-command: hangup\nhangup-cause: NORMAL_CLEARING\n\n")
    peer.reply()
    peer.event("CHANNEL_HANGUP_COMPLETE")
    assert peer.read()["Content-Disposition"] == "linger"
    assert peer.command("exit").reply_text == "+OK bye"
    assert peer.until_eof()[-1]["Content-Disposition"] == "disconnect"


def test_uuid_kill_from_an_inbound_connection(fake, client, outbound_server):
    call, peer, _ = answer_call(fake, outbound_server)
    peer.command("myevents")
    assert client.command(f"api uuid_kill {call.uuid} USER_BUSY").body == b"+OK\n"
    assert peer.event("CHANNEL_HANGUP")["Hangup-Cause"] == "USER_BUSY"
    assert client.command(f"api uuid_kill {call.uuid}").body == b"-ERR No such channel!\n"


def test_invalid_application_hangs_up(fake, outbound_server):
    call, peer, _ = answer_call(fake, outbound_server)
    peer.command("myevents")
    peer.execute("no_such_app", "x")
    assert peer.event("CHANNEL_HANGUP")["Hangup-Cause"] == "DESTINATION_OUT_OF_ORDER"
    assert call.errors == ["invalid application 'no_such_app'"]


def test_transfer_returns_the_channel_to_the_dialplan(fake, outbound_server):
    call, peer, _ = answer_call(fake, outbound_server)
    peer.command("myevents")
    peer.execute("transfer", "2001 XML default")
    peer.until_eof()
    assert call.transferred_to == "2001 XML default" and call.hangup_cause is None


def test_closing_without_hangup_is_recorded(fake, outbound_server):
    call, peer, _ = answer_call(fake, outbound_server)
    peer.close()
    fake.wait_until(lambda: call.abandoned, what="the call to be abandoned")


def test_getvar_and_long_arguments_in_the_body(fake, outbound_server):
    """Should take an argument sent as a content-length body, and answer getvar
    of an unset variable with -ERR command not found."""
    call, peer, _ = answer_call(fake, outbound_server, {"company_id": "42"})
    assert peer.command("getvar company_id").reply_text == "42"
    assert peer.command("getvar nosuchvar").reply_text == "-ERR command not found"
    long_value = "x" * 2000
    peer.execute("set", f"note={long_value}")
    assert peer.command("getvar note").reply_text == long_value
    assert call.commands[-2].header("content-length") == str(len(f"note={long_value}"))
    peer.close()


def test_an_injected_newline_would_become_a_second_command(fake, outbound_server):
    """Shows what EslInjectionError prevents: hand-framed bytes with a caller-chosen
    name holding a blank line reach FreeSWITCH as a separate bgapi command."""
    fake.script_api("originate", "+OK\n")
    call, peer, _ = answer_call(fake, outbound_server)
    name = "Mallory\n\nbgapi originate sofia/gateway/gw/447700900123 &park"
    peer.send(f"sendmsg\ncall-command: execute\nexecute-app-name: set\n"
              f"execute-app-arg: effective_caller_id_name={name}\n\n".encode())
    fake.wait_until(lambda: len(call.commands) == 3, what="three commands")
    assert [c.name for c in call.commands] == ["connect", "sendmsg", "bgapi"]
    assert call.executed == [("set", "effective_caller_id_name=Mallory")]
    peer.close()


def test_a_hostile_caller_id_never_breaks_the_linger_notice():
    """mod_event_socket writes Channel-Name raw into its linger notice; sofia names
    the channel after the From URI's user, where a line break must be escaped."""
    name = f"sofia/external/{sip_uri_user('+447700900123' + chr(10) * 2 + 'api status')}@127.0.0.1"
    assert name == "sofia/external/+447700900123%0A%0Aapi%20status@127.0.0.1"
    (notice,) = EslParser().feed(linger_frame("0f0e0d0c-0000-4000-8000-000000000001", name, -1))
    assert notice.get("Channel-Name") == name and notice.get("Linger-Time") == "-1"
    assert sip_uri_user("+447700900123") == "+447700900123"
