"""A fake FreeSWITCH 1.10 for tests: a real TCP peer speaking ESL byte for byte.

* Inbound mode: :class:`FakeFreeSWITCH` listens on ``127.0.0.1:<ephemeral>`` and
  plays mod_event_socket to our client (auth, api/bgapi, event subscriptions,
  filters, sendevent, exit; scripted api answers; pushed events; abrupt drops).
* Outbound mode: :meth:`FakeFreeSWITCH.place_call` connects to OUR server like
  ``socket host:port async full`` does and plays the channel: the CHANNEL_DATA
  ``connect`` reply, ``sendmsg`` applications with their CHANNEL_EXECUTE[_COMPLETE]
  events, bridges whose legs answer, are busy, unregistered... as a
  :class:`Scenario` says, DTMF, caller hang-ups, linger.

Frames, header order and reply texts copy ``shared/esl-traces`` (checked by
``tests/test_fake_freeswitch.py``); what the traces do not show follows
FreeSWITCH 1.10's own source (mod_event_socket.c, mod_dptools.c,
switch_ivr_originate.c).  Plain ``socket`` + ``threading`` only, so it can also
run in a separate process.  Nothing waits with ``sleep()``: waits are
``Condition`` waits with timeouts, every socket has a timeout, and time inside a
call is virtual (a 60 s ring timeout costs nothing).
"""
from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
import uuid as uuid_module
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import quote
from xml.sax.saxutils import escape as xml_escape

VERSION = "FreeSWITCH Version 1.10.12-release~64bit ( 64bit)"
DISCONNECT_BODY = b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
REJECTION_BODY = b"Access Denied, go away.\n"
AUTH_REQUEST = b"Content-Type: auth/request\n\n"


def new_uuid() -> str:
    return str(uuid_module.uuid4())


def url_encode(value: str) -> str:
    """switch_url_encode(): ``%XX`` (uppercase) for CR, LF, space,
    ``"#%&+:;<=>?@[\\]^`{|}``, control characters and every non-ASCII byte."""
    return quote(value, safe="!$'()*,-./~_")


def sip_uri_user(number: str) -> str:
    """The user part of a SIP From URI as sofia names the channel after it:
    a control character or space cannot travel unescaped in a SIP URI, so a
    hostile caller ID never puts a raw line break into ``Channel-Name`` (which
    mod_event_socket writes unencoded into its ``linger`` notice)."""
    return re.sub(r"[\x00-\x20\x7f]", lambda m: f"%{ord(m.group()):02X}", number)


# --- what the client sends, read the way mod_event_socket reads it ------------------

@dataclass
class ClientCommand:
    """One command: its first line, ``name: value`` lines, and a body when a
    ``content-length`` header announced one."""

    line: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def name(self) -> str:
        return self.line.split(" ", 1)[0].lower()

    @property
    def arg(self) -> str:
        return self.line.partition(" ")[2]

    def header(self, name: str) -> str | None:
        """First value of ``name``, case-insensitive like switch_event_get_header()."""
        name = name.lower()
        return next((v for n, v in self.headers if n.lower() == name), None)


class CommandReader:
    """read_packet() of mod_event_socket, sans IO.

    Leading CR/LF are skipped; a block ends at a blank line (CRs ignored); CR
    or LF ends a line; each later line is split at its first ``:`` with the
    spaces after it dropped (lines without ``:`` are ignored);
    ``content-length`` makes the next N bytes the body.  So a stray CR or LF in
    a value starts a new header, and a blank line a new command: exactly what
    an injection would exploit, and what the tests look for.
    """

    _BLANK_LINE = re.compile(rb"\n\r*\n")
    _LINE_BREAK = re.compile(r"[\r\n]+")

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[ClientCommand]:
        self._buf += data
        commands = []
        while True:
            buf = self._buf.lstrip(b"\r\n")
            blank = self._BLANK_LINE.search(buf)
            if blank is None:
                self._buf = buf
                return commands
            lines = self._LINE_BREAK.split(buf[:blank.start()].decode("utf-8", "replace"))
            command = ClientCommand(lines[0])
            length = 0
            for line in lines[1:]:
                name, colon, value = line.partition(":")
                if colon:
                    value = value.lstrip(" ")
                    command.headers.append((name, value))
                    if name.lower() == "content-length":
                        length = int(value) if value.isdigit() else 0
            start = blank.end()
            if len(buf) < start + length:
                self._buf = buf
                return commands
            command.body = buf[start:start + length]
            self._buf = buf[start + length:]
            commands.append(command)


# --- frames FreeSWITCH sends ------------------------------------------------------

def reply_frame(text: str) -> bytes:
    return f"Content-Type: command/reply\nReply-Text: {text}\n\n".encode()


def api_frame(body: str) -> bytes:
    data = body.encode() or b"-ERR no reply\n"
    return b"Content-Type: api/response\nContent-Length: %d\n\n%b" % (len(data), data)


def disconnect_frame(session_uuid: str | None = None) -> bytes:
    head = "Content-Type: text/disconnect-notice\n"
    if session_uuid:
        head += f"Controlled-Session-UUID: {session_uuid}\nContent-Disposition: disconnect\n"
    return f"{head}Content-Length: {len(DISCONNECT_BODY)}\n\n".encode() + DISCONNECT_BODY


def linger_frame(session_uuid: str, channel_name: str, linger_time: int) -> bytes:
    return (f"Content-Type: text/disconnect-notice\nControlled-Session-UUID: {session_uuid}\n"
            f"Content-Disposition: linger\nChannel-Name: {channel_name}\n"
            f"Linger-Time: {linger_time}\nContent-Length: 0\n\n").encode()


def rejection_frame() -> bytes:
    return (b"Content-Type: text/rude-rejection\nContent-Length: %d\n\n%b"
            % (len(REJECTION_BODY), REJECTION_BODY))


class FakeEvent:
    """An event as FreeSWITCH holds it: decoded headers in order, optional text body."""

    __slots__ = ("headers", "body")

    def __init__(self, headers: Mapping[str, str] | Iterable[tuple[str, str]],
                 body: str | None = None):
        items = headers.items() if isinstance(headers, Mapping) else headers
        self.headers: list[tuple[str, str]] = [(str(n), str(v)) for n, v in items]
        self.body = body

    @property
    def name(self) -> str | None:
        return self.get("Event-Name")

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        return next((v for n, v in self.headers if n.lower() == name), default)

    def frame(self, fmt: str = "plain") -> tuple[bytes, bytes]:
        """The framing line and the payload, which FreeSWITCH writes with two send()s."""
        body = self.body.encode() if self.body is not None else None
        if fmt == "plain":
            payload = "".join(f"{n}: {url_encode(v)}\n" for n, v in self.headers).encode()
            payload += b"Content-Length: %d\n\n%b" % (len(body), body) if body is not None else b"\n"
        elif fmt == "json":
            pairs = list(self.headers)
            if body is not None:
                pairs += [("Content-Length", str(len(body))), ("_body", self.body)]
            payload = ("{" + ",".join(f"{json.dumps(n, ensure_ascii=False)}:"
                                      f"{json.dumps(v, ensure_ascii=False)}" for n, v in pairs)
                       + "}").encode()
        elif fmt == "xml":
            rows = "".join(f"    <{n}>{url_encode(v)}</{n}>\n" for n, v in self.headers)
            tail = ""
            if body is not None:
                tail = (f"  <Content-Length>{len(body)}</Content-Length>\n"
                        f"  <body>{xml_escape(self.body)}  </body>\n")
            payload = f"<event>\n  <headers>\n{rows}  </headers>\n{tail}</event>\n".encode()
        else:
            raise ValueError(f"unknown event format {fmt!r}")
        head = b"Content-Length: %d\nContent-Type: text/event-%s\n\n" % (len(payload), fmt.encode())
        return head, payload


# Every event name switch_name_event() knows (switch_event.c EVENT_NAMES).
EVENT_NAMES = frozenset("""
CUSTOM CLONE CHANNEL_CREATE CHANNEL_DESTROY CHANNEL_STATE CHANNEL_CALLSTATE CHANNEL_ANSWER
CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE CHANNEL_EXECUTE CHANNEL_EXECUTE_COMPLETE CHANNEL_HOLD
CHANNEL_UNHOLD CHANNEL_BRIDGE CHANNEL_UNBRIDGE CHANNEL_PROGRESS CHANNEL_PROGRESS_MEDIA
CHANNEL_OUTGOING CHANNEL_PARK CHANNEL_UNPARK CHANNEL_APPLICATION CHANNEL_ORIGINATE CHANNEL_UUID
API LOG INBOUND_CHAN OUTBOUND_CHAN STARTUP SHUTDOWN PUBLISH UNPUBLISH TALK NOTALK SESSION_CRASH
MODULE_LOAD MODULE_UNLOAD DTMF MESSAGE PRESENCE_IN NOTIFY_IN PRESENCE_OUT PRESENCE_PROBE
MESSAGE_WAITING MESSAGE_QUERY ROSTER CODEC BACKGROUND_JOB DETECTED_SPEECH DETECTED_TONE
PRIVATE_COMMAND HEARTBEAT TRAP ADD_SCHEDULE DEL_SCHEDULE EXE_SCHEDULE RE_SCHEDULE RELOADXML
NOTIFY PHONE_FEATURE PHONE_FEATURE_SUBSCRIBE SEND_MESSAGE RECV_MESSAGE REQUEST_PARAMS
CHANNEL_DATA GENERAL COMMAND SESSION_HEARTBEAT CLIENT_DISCONNECTED SERVER_DISCONNECTED
SEND_INFO RECV_INFO RECV_RTCP_MESSAGE SEND_RTCP_MESSAGE CALL_SECURE NAT RECORD_START
RECORD_STOP PLAYBACK_START PLAYBACK_STOP CALL_UPDATE FAILURE SOCKET_DATA MEDIA_BUG_START
MEDIA_BUG_STOP CONFERENCE_DATA_QUERY CONFERENCE_DATA CALL_SETUP_REQ CALL_SETUP_RESULT
CALL_DETAIL DEVICE_STATE TEXT SHUTDOWN_REQUESTED ALL
""".split())

# What `myevents` subscribes to (mod_event_socket.c).
MYEVENTS = frozenset("""
CHANNEL_ANSWER CHANNEL_APPLICATION CHANNEL_BRIDGE CHANNEL_CREATE CHANNEL_DATA CHANNEL_DESTROY
CHANNEL_EXECUTE CHANNEL_EXECUTE_COMPLETE CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE
CHANNEL_ORIGINATE CHANNEL_UUID CHANNEL_OUTGOING CHANNEL_PARK CHANNEL_PROGRESS
CHANNEL_PROGRESS_MEDIA CHANNEL_STATE CHANNEL_UNBRIDGE CHANNEL_UNPARK DETECTED_SPEECH DTMF
NOTALK TALK
""".split())

LOG_LEVELS = {"console": 0, "alert": 1, "crit": 2, "err": 3, "warning": 4, "notice": 5,
              "info": 6, "debug": 7}

# Event-Calling-* as recorded; the DTMF line is approximate (not in the traces).
CALLING = {
    "BACKGROUND_JOB": ("mod_event_socket.c", "api_exec", "1572"),
    "CHANNEL_ANSWER": ("switch_channel.c", "switch_channel_perform_mark_answered", "3846"),
    "CHANNEL_BRIDGE": ("switch_ivr_bridge.c", "switch_ivr_multi_threaded_bridge", "1689"),
    "CHANNEL_CALLSTATE": ("switch_channel.c", "switch_channel_perform_set_callstate", "301"),
    "CHANNEL_DATA": ("mod_event_socket.c", "parse_command", "2021"),
    "CHANNEL_EXECUTE": ("switch_core_session.c", "switch_core_session_exec", "2944"),
    "CHANNEL_EXECUTE_COMPLETE": ("switch_core_session.c", "switch_core_session_exec", "2967"),
    "CHANNEL_HANGUP": ("switch_channel.c", "switch_channel_perform_hangup", "3445"),
    "CHANNEL_HANGUP_COMPLETE": ("switch_core_state_machine.c",
                                "switch_core_session_reporting_state", "943"),
    "CHANNEL_PARK": ("switch_ivr.c", "switch_ivr_park", "1002"),
    "CHANNEL_PROGRESS": ("switch_channel.c", "switch_channel_perform_mark_ring_ready_value",
                         "3505"),
    "CHANNEL_PROGRESS_MEDIA": ("switch_channel.c", "switch_channel_perform_mark_pre_answered",
                               "3660"),
    "CHANNEL_STATE": ("switch_channel.c", "switch_channel_perform_set_running_state", "2408"),
    "CHANNEL_UNBRIDGE": ("switch_ivr_bridge.c", "switch_ivr_multi_threaded_bridge", "1879"),
    "CHANNEL_UNPARK": ("switch_ivr.c", "switch_ivr_park", "1213"),
    "CUSTOM": ("mod_event_socket.c", "parse_command", "2275"),
    "DTMF": ("switch_channel.c", "switch_channel_dequeue_dtmf", "684"),
    "PLAYBACK_START": ("switch_ivr_play_say.c", "switch_ivr_play_file", "1646"),
    "PLAYBACK_STOP": ("switch_ivr_play_say.c", "switch_ivr_play_file", "2020"),
}


# --- scenarios ------------------------------------------------------------------------

class Outcome(str, Enum):
    """What a dialled leg does."""

    ANSWER = "answer"
    BUSY = "busy"                  # USER_BUSY (a phone rejecting with 486)
    NO_ANSWER = "no_answer"        # rings until the leg timeout: NO_ANSWER
    UNREGISTERED = "unregistered"  # user/ with no registration: USER_NOT_REGISTERED
    REJECT = "reject"              # CALL_REJECTED


FAILURE_CAUSE = {
    Outcome.BUSY: "USER_BUSY",
    Outcome.NO_ANSWER: "NO_ANSWER",
    Outcome.UNREGISTERED: "USER_NOT_REGISTERED",
    Outcome.REJECT: "CALL_REJECTED",
}

# switch_ivr_originate(): DIALSTATUS for a failed originate (default: the cause).
DIALSTATUS = {
    "ORIGINATOR_CANCEL": "CANCEL",
    "USER_BUSY": "BUSY",
    "NO_ANSWER": "NOANSWER",
    "DESTINATION_OUT_OF_ORDER": "INVALIDARGS",
    "INVALID_PROFILE": "INVALIDARGS",
    "CALL_REJECTED": "DONTCALL",
}

Q850 = {
    "UNALLOCATED_NUMBER": 1, "NORMAL_CLEARING": 16, "USER_BUSY": 17, "NO_USER_RESPONSE": 18,
    "NO_ANSWER": 19, "SUBSCRIBER_ABSENT": 20, "CALL_REJECTED": 21,
    "DESTINATION_OUT_OF_ORDER": 27, "NORMAL_UNSPECIFIED": 31, "NORMAL_TEMPORARY_FAILURE": 41,
    "ORIGINATOR_CANCEL": 487, "LOSE_RACE": 502, "USER_NOT_REGISTERED": 606,
}


@dataclass
class Scenario:
    """How one fake call behaves.

    ``legs`` maps a dial target -- the text a bridge dial string names after its
    ``{...}``/``[...]`` variables, e.g. ``user/2001@example.com`` or
    ``sofia/gateway/gw/447700900123`` -- to its :class:`Outcome`; targets not
    listed get ``unknown_leg`` (a switch knows no phone it was not told about).
    ``digits`` answers successive ``play_and_get_digits`` (None: the caller
    types nothing).  ``caller_hangs_up_after``: the caller hangs up while the
    N-th command after ``connect`` runs (cutting an application short, as
    FreeSWITCH does).  Times are virtual seconds.
    """

    legs: Mapping[str, Outcome | str] = field(default_factory=dict)
    unknown_leg: Outcome = Outcome.UNREGISTERED
    digits: Sequence[str | None] = ()
    caller_hangs_up_after: int | None = None
    ring_seconds: float = 2.0   # until an answering leg picks up
    talk_seconds: float = 30.0  # until an answered callee hangs up
    playback_seconds: float = 1.0

    def outcome(self, target: str) -> Outcome:
        return Outcome(self.legs.get(target, self.unknown_leg))


@dataclass
class Caller:
    """The calling channel's identity: its caller profile, as the dialplan that ran
    ``socket`` saw it.  FreeSWITCH leaves empty profile fields out of events."""

    caller_id_number: str = "+442079460123"
    caller_id_name: str = ""
    destination_number: str = "442079460999"
    context: str = "public"
    dialplan: str = "XML"
    username: str = ""
    network_addr: str = "127.0.0.1"
    callee_id_name: str = ""
    callee_id_number: str = ""
    source: str = "mod_sofia"
    channel_name: str = ""  # default: sofia/external/<caller id number>@127.0.0.1
    presence_id: str = ""
    codec: tuple[str, str, str] = ("PCMA", "8000", "64000")


@dataclass
class BridgeAttempt:
    """One ``bridge`` as the fake ran it."""

    dial_string: str
    legs: list[tuple[str, Outcome]]
    cause: str               # SUCCESS or the originate failure cause
    answered: str | None     # the target that answered


def parse_dial_string(dial: str) -> tuple[dict[str, str], list[list[tuple[str, dict[str, str]]]]]:
    """``{a=1}[b=2]user/1@d,user/2@d|sofia/gateway/gw/44`` -> global variables and
    groups (``|``: tried in turn) of simultaneous legs (``,``) with their ``[...]``
    variables.  ``:_:`` (enterprise originate) is treated like ``,``."""
    dial = dial.strip()
    global_vars: dict[str, str] = {}
    if dial[:1] in "{<":
        close = "}" if dial[0] == "{" else ">"
        end = dial.index(close)
        global_vars = _parse_vars(dial[1:end])
        dial = dial[end + 1:]
    groups = []
    for group in _split_outside_brackets(dial, "|"):
        legs = []
        for leg in _split_outside_brackets(group.replace(":_:", ","), ","):
            leg = leg.strip()
            leg_vars: dict[str, str] = {}
            while leg[:1] in "[{":
                close = "]" if leg[0] == "[" else "}"
                end = leg.index(close)
                leg_vars.update(_parse_vars(leg[1:end]))
                leg = leg[end + 1:].strip()
            if leg:
                legs.append((leg, leg_vars))
        if legs:
            groups.append(legs)
    return global_vars, groups


def _parse_vars(text: str) -> dict[str, str]:
    pairs = (item.partition("=") for item in _split_outside_brackets(text, ","))
    return {k.strip(): v for k, eq, v in pairs if eq}


def _split_outside_brackets(text: str, sep: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "[{<":
            depth += 1
        elif char in "]}>":
            depth -= 1
        elif char == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


# --- the switch -------------------------------------------------------------------------

class FakeFreeSWITCH:
    """mod_event_socket on ``127.0.0.1:<port 0>`` plus outbound calls.

    Script api answers with :meth:`script_api`, push events with
    :meth:`emit_event`, kill every connection with :meth:`drop`, place calls
    into our outbound server with :meth:`place_call`.  ``connections`` and
    ``calls`` record everything received; :meth:`wait_until` waits on them.
    """

    def __init__(self, password: str = "ClueCon", *, hostname: str = "fake-fs",
                 timeout: float = 5.0, acl: Callable[[str], bool] | None = None):
        self.password = password
        self.hostname = hostname
        self.timeout = timeout
        self.acl = acl  # False for a client address -> text/rude-rejection
        self.core_uuid = new_uuid()
        self.connections: list[InboundConnection] = []
        self.calls: list[FakeCall] = []
        self._changed = threading.Condition()
        self._sequence = 1000
        self._api_lines: dict[str, str | Callable[[str], str]] = {}
        self._api_commands: dict[str, str | Callable[[str], str]] = {}
        self._threads: list[threading.Thread] = []
        self._server: socket.socket | None = None
        self.address: tuple[str, int] = ("127.0.0.1", 0)

    # lifecycle
    def start(self) -> FakeFreeSWITCH:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        server.settimeout(self.timeout)
        self._server = server
        self.address = server.getsockname()
        self._spawn(self._accept_loop, "fake-fs-accept")
        return self

    def stop(self) -> None:
        if self._server is not None:
            _shutdown(self._server)
            self._server = None
        for listener in self._listeners():
            listener.close()
        for thread in list(self._threads):
            thread.join(self.timeout)

    def __enter__(self) -> FakeFreeSWITCH:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def drop(self) -> None:
        """Reset every connection (TCP RST), as a FreeSWITCH restart does; the
        listener stays up and the next connection sees a new Core-UUID."""
        for listener in self._listeners():
            listener.close(abrupt=True)
        self.core_uuid = new_uuid()

    # scripting and observation
    def script_api(self, command: str, reply: str | Callable[[str], str]) -> None:
        """Answer ``api``/``bgapi`` ``command``: an exact command line
        (``"show registrations"``) or a bare command name (``"sofia_contact"``),
        whose callable gets the argument string.  Exact lines win."""
        target = self._api_lines if " " in command else self._api_commands
        target[command] = reply

    def wait_until(self, predicate: Callable[[], object], timeout: float | None = None,
                   what: str = "condition"):
        """Block until ``predicate()`` is truthy (re-checked on every change the
        fake makes) and return its value; TimeoutError after ``timeout``."""
        with self._changed:
            result = self._changed.wait_for(predicate, self.timeout if timeout is None else timeout)
        if not result:
            raise TimeoutError(f"fake FreeSWITCH: timed out waiting for {what}")
        return result

    def make_event(self, name: str, headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
                   body: str | None = None) -> FakeEvent:
        """A realistic event: FreeSWITCH's standard headers, then ``headers``
        (``Event-Subclass`` goes first, as in CUSTOM events)."""
        extra = list(headers.items() if isinstance(headers, Mapping) else headers)
        subclass = [(n, v) for n, v in extra if n == "Event-Subclass"]
        rest = [(n, v) for n, v in extra if n != "Event-Subclass"]
        return FakeEvent(subclass + self._base_headers(name) + rest, body)

    def emit_event(self, headers: FakeEvent | Mapping[str, str] | Iterable[tuple[str, str]],
                   body: str | None = None, fmt: str | None = None) -> None:
        """Send an event, exactly as given, to every connection subscribed to it
        (in each one's format, unless ``fmt`` forces plain/json/xml)."""
        event = headers if isinstance(headers, FakeEvent) else FakeEvent(headers, body)
        self.publish(event, fmt)

    def publish(self, event: FakeEvent, fmt: str | None = None) -> None:
        for listener in self._listeners():
            if listener.wants(event):
                listener.deliver(event, fmt)

    # outbound
    def place_call(self, host: str, port: int, channel_vars: Mapping[str, str] | None = None,
                   scenario: Scenario | None = None, caller: Caller | None = None, *,
                   uuid: str | None = None, socket_mode: str = "async") -> FakeCall:
        """Connect to our outbound server as ``socket host:port async full`` does
        (``socket_mode="static"``: without ``async``).  ``channel_vars`` become the
        channel's ``variable_*`` headers.  Returns at once; the call runs in its
        own thread and records what it receives."""
        sock = socket.create_connection((host, port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # as FreeSWITCH's socket app does
        sock.settimeout(self.timeout)
        call = FakeCall(self, sock, _Channel(self, uuid or new_uuid(), caller or Caller(),
                                             dict(channel_vars or {}), host, port, socket_mode),
                        scenario or Scenario(), socket_mode)
        with self._changed:
            self.calls.append(call)
            self._changed.notify_all()
        self._spawn(call.serve, f"fake-call-{call.uuid[:8]}")
        return call

    def call_by_uuid(self, uuid: str) -> FakeCall | None:
        return next((c for c in self.calls if c.uuid == uuid), None)

    # internals
    def _listeners(self) -> list[_Listener]:
        with self._changed:
            return [*self.connections, *self.calls]

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _next_sequence(self) -> int:
        with self._changed:
            self._sequence += 1
            return self._sequence

    def _accept_loop(self) -> None:
        server = self._server
        while server is not None and server.fileno() >= 0:
            try:
                sock, address = server.accept()
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except socket.timeout:
                continue
            except OSError:
                return
            sock.settimeout(self.timeout)
            connection = InboundConnection(self, sock, address[0])
            with self._changed:
                self.connections.append(connection)
                self._changed.notify_all()
            self._spawn(connection.serve, f"fake-fs-conn-{len(self.connections)}")

    def _base_headers(self, name: str, when_us: int | None = None) -> list[tuple[str, str]]:
        when_us = int(time.time() * 1e6) if when_us is None else when_us
        seconds = when_us / 1e6
        calling = CALLING.get(name, ("switch_event.c", "switch_event_fire_detailed", "2000"))
        return [
            ("Event-Name", name), ("Core-UUID", self.core_uuid),
            ("FreeSWITCH-Hostname", self.hostname), ("FreeSWITCH-Switchname", self.hostname),
            ("FreeSWITCH-IPv4", "127.0.0.1"), ("FreeSWITCH-IPv6", "::1"),
            ("Event-Date-Local", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))),
            ("Event-Date-GMT", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(seconds))),
            ("Event-Date-Timestamp", str(when_us)),
            ("Event-Calling-File", calling[0]), ("Event-Calling-Function", calling[1]),
            ("Event-Calling-Line-Number", calling[2]),
            ("Event-Sequence", str(self._next_sequence())),
        ]

    def run_api(self, line: str) -> str:
        """The body an ``api <line>`` gets: scripted answers first, then the few
        commands the fake implements, else FreeSWITCH's unknown-command error."""
        command, _, arg = line.strip().partition(" ")
        reply = self._api_lines.get(line.strip(), self._api_commands.get(command))
        if reply is not None:
            return reply(arg) if callable(reply) else reply
        builtin = getattr(self, f"_api_{command}", None)
        if builtin is not None:
            return builtin(arg)
        return f"-ERR {command} Command not found!\n"

    def _api_status(self, arg: str) -> str:
        live = sum(1 for c in self.calls if c.hangup_cause is None)
        return (f"UP 0 years, 0 days, 0 hours, 0 minutes, 1 second, 0 milliseconds, "
                f"0 microseconds\nFreeSWITCH (Version 1.10.12-release  64bit) is ready\n"
                f"{len(self.calls)} session(s) since startup\n{live} session(s) - peak {live}, "
                f"last 5min {live} \n0 session(s) per Sec out of max 30, peak 0, last 5min 0 \n"
                f"1000 session(s) max\nmin idle cpu 0.00/99.00\n"
                f"Current Stack Size/Max 240K/8192K\n")

    def _api_version(self, arg: str) -> str:
        return VERSION + "\n"

    def _api_show(self, arg: str) -> str:
        """Empty tables; script ``show channels as json`` etc. when a test needs rows."""
        if arg.endswith("as json"):
            return '{"row_count": 0}\n'
        return "\n0 total.\n"

    def _api_sofia_contact(self, arg: str) -> str:
        return "error/user_not_registered"

    def _api_uuid_kill(self, arg: str) -> str:
        uuid, _, cause = arg.partition(" ")
        call = self.call_by_uuid(uuid)
        if call is None or call.hangup_cause is not None:
            return "-ERR No such channel!\n"
        call.hangup_from_outside(cause.strip() or "NORMAL_CLEARING")
        return "+OK\n"

    def _api_uuid_getvar(self, arg: str) -> str:
        uuid, _, name = arg.partition(" ")
        call = self.call_by_uuid(uuid)
        if call is None:
            return "-ERR No such channel!\n"
        return call.channel.variables.get(name.strip(), "_undef_")

    def _api_uuid_setvar(self, arg: str) -> str:
        uuid, _, rest = arg.partition(" ")
        name, _, value = rest.partition(" ")
        call = self.call_by_uuid(uuid)
        if call is None:
            return "-ERR No such channel!\n"
        with call.lock:
            call.channel.set_var(name, value)
        return "+OK\n"

    def _api_uuid_exists(self, arg: str) -> str:
        call = self.call_by_uuid(arg.strip())
        return "true" if call is not None and call.hangup_cause is None else "false"


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


_GOODBYE = object()  # marks a disconnect held back behind a blocking api


class _Listener:
    """What mod_event_socket keeps per connection, and the commands every
    connection understands (api, bgapi, event, filter, sendevent, exit...)."""

    session_uuid: str | None = None  # the channel this connection controls

    def __init__(self, switch: FakeFreeSWITCH, sock: socket.socket):
        self.switch = switch
        self.sock = sock
        self.commands: list[ClientCommand] = []
        self.closed = threading.Event()
        self._send_lock = threading.Lock()
        self._held: list[tuple[bytes, ...]] | None = None
        self._leaving = False
        self.format = "plain"
        self.events_on = False
        self.myevents = False
        self.event_names: set[str] = set()
        self.subclasses: set[str] = set()
        self.filters: list[tuple[str, str]] = []
        self.logging = False
        self.errors: list[str] = []  # what the fake refused or could not play

    # sending; while a blocking api runs, everything else waits in _held
    def send(self, *parts: bytes) -> None:
        with self._send_lock:
            if self._leaving:
                return
            if self._held is not None:
                self._held.append(parts)
            else:
                self._send(parts)

    def _send(self, parts: Iterable[bytes]) -> None:
        if self.closed.is_set():
            return
        try:
            for part in parts:
                self.sock.sendall(part)
        except OSError:
            self.close()

    def deliver(self, event: FakeEvent, fmt: str | None = None) -> None:
        self.send(*event.frame(fmt or self.format))

    def close(self, abrupt: bool = False) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        try:
            if abrupt:  # RST, not FIN: SHUT_RD only wakes our reader
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.sock.shutdown(socket.SHUT_RD)
            else:
                self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.switch._notify()

    def goodbye(self) -> None:
        """The disconnect notice mod_event_socket sends before closing; nothing
        more is sent after it."""
        with self._send_lock:
            if self._leaving:
                return
            self._leaving = True
            if self._held is not None:
                self._held.append(_GOODBYE)
                return
            self._send([disconnect_frame(self.session_uuid)])
        self.close()

    # subscriptions: event_handler() of mod_event_socket
    def wants(self, event: FakeEvent) -> bool:
        if not self.events_on or self._leaving or self.closed.is_set():
            return False
        name = event.name
        if self.myevents and self.session_uuid and event.get("Unique-ID") != self.session_uuid:
            return False
        if "ALL" not in self.event_names:
            if name not in self.event_names:
                return False
            if name == "CUSTOM" and event.get("Event-Subclass") not in self.subclasses:
                return False
        return self._passes_filters(event)

    def _passes_filters(self, event: FakeEvent) -> bool:
        if not self.filters:
            return True
        send = False
        for header, wanted in self.filters:
            value = event.get(header)
            if value is None:
                continue
            positive = not wanted.startswith("-")
            wanted = wanted.lstrip("+-")
            if send and positive:
                continue
            if wanted.startswith("/"):
                matched = re.search(wanted.strip("/"), value) is not None
            else:
                matched = value.lower() == wanted.lower()
            if matched:
                if not positive:
                    return False
                send = True
        return send

    # reading
    def serve(self) -> None:
        reader = CommandReader()
        try:
            self.greet()
            while not self.closed.is_set():
                try:
                    data = self.sock.recv(65536)
                except socket.timeout:
                    self.idle()
                    continue
                except OSError:
                    break
                if not data:
                    break
                for command in reader.feed(data):
                    with self.switch._changed:
                        self.commands.append(command)
                    self.handle(command)
                    self.switch._notify()
                    if self.closed.is_set():
                        break
        except Exception as exc:  # a bug in the fake: make it visible to the test
            self.errors.append(f"fake crashed: {exc!r}")
            raise
        finally:
            self.on_eof()
            self.close()

    def greet(self) -> None:
        pass

    def idle(self) -> None:
        pass

    def on_eof(self) -> None:
        pass

    def handle(self, command: ClientCommand) -> None:
        raise NotImplementedError

    # commands shared by inbound and outbound connections (parse_command())
    def handle_common(self, command: ClientCommand) -> bool:
        handler = getattr(self, f"_cmd_{command.name}", None)
        if handler is None:
            return False
        handler(command)
        return True

    def _cmd_exit(self, command: ClientCommand) -> None:
        self.send(reply_frame("+OK bye"))
        self.goodbye()

    def _cmd_api(self, command: ClientCommand) -> None:
        # A blocking api holds back the events queued meanwhile (README: "api
        # blocks the inbound connection").
        with self._send_lock:
            self._held = []
        body = self.switch.run_api(command.arg)
        with self._send_lock:
            held, self._held = self._held, None
            self._send([api_frame(body)])
            for parts in held:
                if parts is _GOODBYE:
                    self._send([disconnect_frame(self.session_uuid)])
                    break
                self._send(parts)
        if _GOODBYE in held:
            self.close()

    def _cmd_bgapi(self, command: ClientCommand) -> None:
        """Reply with the Job-UUID, then fire BACKGROUND_JOB.  FreeSWITCH runs the
        job in a thread; here it runs right after the reply (where the traces
        show it), which keeps event order deterministic."""
        job = command.header("Job-UUID") or new_uuid()
        self.send(f"Content-Type: command/reply\nReply-Text: +OK Job-UUID: {job}\n"
                  f"Job-UUID: {job}\n\n".encode())
        body = self.switch.run_api(command.arg)
        name, _, arg = command.arg.partition(" ")
        headers = [("Job-UUID", job), ("Job-Command", name)]
        if arg:
            headers.append(("Job-Command-Arg", arg))
        self.switch.publish(FakeEvent(self.switch._base_headers("BACKGROUND_JOB") + headers,
                                      body or "Command returned no output!"))

    def _cmd_event(self, command: ClientCommand) -> None:
        words = command.arg.split()
        if words and words[0].lower() in ("plain", "json", "xml"):
            self.format = words.pop(0).lower()
        keys = 0
        custom = False
        for word in words:
            if custom:
                self.subclasses.add(word)
            elif word.upper() in EVENT_NAMES:
                keys += 1
                self.event_names.add(word.upper())
                custom = word.upper() == "CUSTOM"
        if not keys:
            self.send(reply_frame("-ERR no keywords supplied"))
            return
        self.events_on = True
        self.send(reply_frame(f"+OK event listener enabled {self.format}"))

    def _cmd_nixevent(self, command: ClientCommand) -> None:
        keys = 0
        custom = False
        for word in command.arg.split():
            if custom:
                self.subclasses.discard(word)
            elif word.upper() in EVENT_NAMES:
                keys += 1
                custom = word.upper() == "CUSTOM"
                if word.upper() == "ALL":
                    self.event_names.clear()
                elif not custom:
                    if "ALL" in self.event_names:
                        self.event_names = set(EVENT_NAMES) - {"ALL"}
                    self.event_names.discard(word.upper())
        self.send(reply_frame("+OK events nixed" if keys else "-ERR no keywords supplied"))

    def _cmd_noevents(self, command: ClientCommand) -> None:
        if not self.events_on:
            self.send(reply_frame("-ERR not listening for events"))
            return
        self.events_on = False
        self.myevents = False
        self.event_names.clear()
        self.subclasses.clear()
        self.send(reply_frame("+OK no longer listening for events"))

    def _cmd_filter(self, command: ClientCommand) -> None:
        header, _, value = command.arg.strip().partition(" ")
        if header.lower() == "delete" and value:
            header, _, value = value.partition(" ")
            if header.lower() == "all":
                self.filters.clear()
            else:
                self.filters = [(h, v) for h, v in self.filters
                                if not (h.lower() == header.lower() and (not value or v == value))]
            self.send(reply_frame(f"+OK filter deleted. [{header}][{value}]"))
        elif value:
            if header.lower() == "add":
                header, _, value = value.partition(" ")
            self.filters.append((header, value))
            self.send(reply_frame(f"+OK filter added. [{header}]=[{value}]"))
        else:
            self.send(reply_frame("-ERR invalid syntax"))

    def _cmd_log(self, command: ClientCommand) -> None:
        level = command.arg.strip()
        number = int(level) if level.isdigit() else LOG_LEVELS.get(level.lower() or "debug")
        if number is None:
            self.send(reply_frame("-ERR invalid log level"))
            return
        self.logging = True
        self.send(reply_frame(f"+OK log level {level} [{number}]"))

    def _cmd_nolog(self, command: ClientCommand) -> None:
        was, self.logging = self.logging, False
        self.send(reply_frame("+OK no longer logging" if was else "-ERR not loging"))

    def _cmd_sendevent(self, command: ClientCommand) -> None:
        event_uuid = new_uuid()
        name = command.arg.strip().upper() or "CUSTOM"
        headers = [("Command", command.line), *command.headers, ("Event-UUID", event_uuid)]
        at = next((i for i, (n, _) in enumerate(headers) if n.lower() == "event-subclass"), None)
        if name == "CUSTOM" and at is not None:  # switch_event_set_subclass_name() moves it up
            headers.insert(0, headers.pop(at))
        body = command.body.decode("utf-8", "replace") if command.body else None
        self.send(reply_frame(f"+OK {event_uuid}"))
        self.switch.publish(FakeEvent(headers + self.switch._base_headers(name), body))


class InboundConnection(_Listener):
    """A client connected to the fake's event socket."""

    def __init__(self, switch: FakeFreeSWITCH, sock: socket.socket, peer: str):
        super().__init__(switch, sock)
        self.peer = peer
        self.authed = False

    def greet(self) -> None:
        if self.switch.acl is not None and not self.switch.acl(self.peer):
            self.send(rejection_frame())
            self.goodbye()
            return
        self.send(AUTH_REQUEST)

    def handle(self, command: ClientCommand) -> None:
        name = command.name
        if name == "exit":
            self._cmd_exit(command)
        elif not self.authed:
            if name != "auth":
                self.send(reply_frame("-ERR command not found"))
            elif command.arg == self.switch.password:
                self.authed = True
                self.send(reply_frame("+OK accepted"))
            else:
                self.send(reply_frame("-ERR invalid"))
                self.goodbye()
        elif self.handle_common(command):
            pass
        elif name == "myevents" and command.arg:
            self._myevents(command.arg)
        elif name in ("linger", "nolinger"):
            self.send(reply_frame("-ERR not controlling a session"))
        elif name == "divert_events":
            self.send(reply_frame("-ERR not controlling a session."))
        elif name == "sendmsg":
            uuid = command.arg.strip() or command.header("session-id") or ""
            call = self.switch.call_by_uuid(uuid)
            if call is None or call.closed.is_set():
                self.send(reply_frame(f"-ERR invalid session id [{uuid}]"))
            else:
                self.send(reply_frame("+OK"))
                call.run_message(command)
        else:
            self.send(reply_frame("-ERR command not found"))

    def _myevents(self, arg: str) -> None:
        if self.myevents:
            self.send(reply_frame("-ERR aready enabled."))
            return
        uuid, _, fmt = arg.partition(" ")
        call = self.switch.call_by_uuid(uuid)
        if call is None and fmt:
            self.send(reply_frame("-ERR invalid uuid"))
            return
        if call is not None:
            self.session_uuid = uuid
        # FreeSWITCH 1.10.12 cuts the command at the uuid before reading the
        # format, so "myevents <uuid> json" still gets plain events.
        self.myevents = self.events_on = True
        self.event_names |= MYEVENTS
        self.send(reply_frame("+OK Events Enabled"))


# --- outbound calls ---------------------------------------------------------------------

class _Channel:
    """A channel's state and the header blocks FreeSWITCH builds from it."""

    def __init__(self, switch: FakeFreeSWITCH, uuid: str, caller: Caller,
                 channel_vars: dict[str, str], host: str, port: int, socket_mode: str):
        self.switch = switch
        self.uuid = uuid
        self.caller = caller
        self.name = caller.channel_name or f"sofia/external/{sip_uri_user(caller.caller_id_number)}@127.0.0.1"
        self.clock_us = int(time.time() * 1e6)  # virtual: advanced by what the call does
        self.created_us = self.clock_us
        self.answered_us = self.progress_us = self.progress_media_us = 0
        self.bridged_us = self.hangup_us = 0
        self.state, self.state_number = "CS_EXECUTE", 4
        self.call_state = "RINGING"
        self.answer_state = "ringing"
        self.hangup_cause: str | None = None
        self.callee_id_name = caller.callee_id_name
        self.callee_id_number = caller.callee_id_number
        self.other_leg: list[tuple[str, str]] | None = None
        codec, rate, _ = caller.codec
        mode = "async full" if socket_mode == "async" else "full"
        self.socket_data = f"{host}:{port} {mode}"
        self.variables: dict[str, str] = {
            "direction": "inbound", "uuid": uuid, "session_id": "1", "channel_name": self.name,
            "read_codec": codec, "read_rate": rate, "write_codec": codec, "write_rate": rate,
            **channel_vars,
            "call_uuid": uuid, "current_application_data": self.socket_data,
            "current_application": "socket", "socket_host": host,
        }

    def advance(self, seconds: float) -> None:
        self.clock_us += int(seconds * 1e6)

    def set_var(self, name: str, value: str | None) -> None:
        self.variables.pop(name, None)
        if value is not None:
            self.variables[name] = value

    def profile(self, prefix: str) -> list[tuple[str, str]]:
        c = self.caller
        fields = [
            ("Direction", "inbound"), ("Logical-Direction", "inbound"), ("Username", c.username),
            ("Dialplan", c.dialplan), ("Caller-ID-Name", c.caller_id_name),
            ("Caller-ID-Number", c.caller_id_number), ("Orig-Caller-ID-Name", c.caller_id_name),
            ("Orig-Caller-ID-Number", c.caller_id_number),
            ("Callee-ID-Name", self.callee_id_name), ("Callee-ID-Number", self.callee_id_number),
            ("Network-Addr", c.network_addr), ("ANI", c.caller_id_number),
            ("Destination-Number", c.destination_number), ("Unique-ID", self.uuid),
            ("Source", c.source), ("Context", c.context), ("Channel-Name", self.name),
            ("Profile-Index", "1"),
        ]
        times = [("Profile-Created-Time", self.created_us), ("Channel-Created-Time", self.created_us),
                 ("Channel-Answered-Time", self.answered_us),
                 ("Channel-Progress-Time", self.progress_us),
                 ("Channel-Progress-Media-Time", self.progress_media_us),
                 ("Channel-Hangup-Time", self.hangup_us), ("Channel-Transfer-Time", 0),
                 ("Channel-Resurrect-Time", 0), ("Channel-Bridged-Time", self.bridged_us),
                 ("Channel-Last-Hold", 0), ("Channel-Hold-Accum", 0)]
        flags = [("Screen-Bit", "true"), ("Privacy-Hide-Name", "false"),
                 ("Privacy-Hide-Number", "false")]
        return ([(f"{prefix}-{n}", v) for n, v in fields if v]
                + [(f"{prefix}-{n}", str(v)) for n, v in times]
                + [(f"{prefix}-{n}", v) for n, v in flags])

    def basic(self) -> list[tuple[str, str]]:
        codec, rate, bits = self.caller.codec
        headers = [("Channel-State", self.state), ("Channel-Call-State", self.call_state),
                   ("Channel-State-Number", str(self.state_number)), ("Channel-Name", self.name),
                   ("Unique-ID", self.uuid), ("Call-Direction", "inbound"),
                   ("Presence-Call-Direction", "inbound"), ("Channel-HIT-Dialplan", "true")]
        if self.caller.presence_id:
            headers.append(("Channel-Presence-ID", self.caller.presence_id))
        headers += [("Channel-Call-UUID", self.uuid), ("Answer-State", self.answer_state)]
        if self.hangup_cause:
            headers.append(("Hangup-Cause", self.hangup_cause))
        return headers + [
            ("Channel-Read-Codec-Name", codec), ("Channel-Read-Codec-Rate", rate),
            ("Channel-Read-Codec-Bit-Rate", bits), ("Channel-Write-Codec-Name", codec),
            ("Channel-Write-Codec-Rate", rate), ("Channel-Write-Codec-Bit-Rate", bits)]

    def event(self, name: str, pre: Sequence[tuple[str, str]] = (),
              post: Sequence[tuple[str, str]] = (), variables: bool = True) -> FakeEvent:
        """switch_channel_event_set_data() layout: standard headers, event-specific
        leading headers, channel state, caller profile, other leg, variables,
        then the event's own trailing headers."""
        headers = self.switch._base_headers(name, self.clock_us) + list(pre) + self.basic()
        headers += self.profile("Caller")
        if self.other_leg:
            headers += self.other_leg
        if variables:
            headers += [(f"variable_{n}", v) for n, v in self.variables.items()]
        return FakeEvent(headers + list(post))


class FakeCall(_Listener):
    """One call the fake placed into our outbound server.

    ``commands`` is every command received, ``events`` every event the channel
    produced (delivered or not), ``bridges`` every bridge attempt;
    ``hangup_cause`` is set once the channel hangs up.  ``abandoned`` is True if
    our side closed the socket on a live channel without hanging up.
    """

    def __init__(self, switch: FakeFreeSWITCH, sock: socket.socket, channel: _Channel,
                 scenario: Scenario, socket_mode: str):
        super().__init__(switch, sock)
        self.channel = channel
        self.scenario = scenario
        self.socket_mode = socket_mode
        self.session_uuid = channel.uuid
        self.lock = threading.RLock()  # the channel is also driven from inbound connections
        self.events: list[FakeEvent] = []
        self.bridges: list[BridgeAttempt] = []
        self.linger: int | None = None  # seconds, -1 for ever
        self.abandoned = False
        self._parked = False
        self._digits = list(scenario.digits)
        self._linger_deadline: float | None = None

    @property
    def uuid(self) -> str:
        return self.channel.uuid

    @property
    def hangup_cause(self) -> str | None:
        return self.channel.hangup_cause

    @property
    def transferred_to(self) -> str | None:
        return self.channel.variables.get("transfer_destination")

    @property
    def executed(self) -> list[tuple[str, str]]:
        """(application, argument) of every ``sendmsg`` execute received."""
        return [(c.header("execute-app-name") or "", _app_arg(c)) for c in self.commands
                if c.name == "sendmsg" and (c.header("call-command") or "").lower() == "execute"]

    def wait(self, timeout: float | None = None) -> None:
        """Until the connection is closed; TimeoutError otherwise."""
        if not self.closed.wait(self.switch.timeout if timeout is None else timeout):
            raise TimeoutError(f"fake call {self.uuid} still connected")

    # connection plumbing
    def idle(self) -> None:
        if self._linger_deadline is not None and time.monotonic() > self._linger_deadline:
            self.errors.append("client never sent exit while the socket lingered")
            self.goodbye()

    def on_eof(self) -> None:
        if self.channel.hangup_cause is None and not self.closed.is_set():
            # The socket application returns; with nothing after it in the
            # dialplan the channel is hung up, but we are no longer told.
            self.abandoned = True
            self.channel.hangup_cause = "NORMAL_CLEARING"

    def emit(self, event: FakeEvent) -> None:
        self.events.append(event)
        self.switch.publish(event)

    def _cmd_exit(self, command: ClientCommand) -> None:
        if self.channel.hangup_cause is None:
            self.abandoned = True  # the socket application returns: we lose the call
        super()._cmd_exit(command)

    def handle(self, command: ClientCommand) -> None:
        with self.lock:
            self._handle(command)
            if (self.scenario.caller_hangs_up_after == len(self.commands) - 1
                    and self.channel.hangup_cause is None):
                self._hangup("NORMAL_CLEARING")

    def _handle(self, command: ClientCommand) -> None:
        name = command.name
        if name == "connect":
            self._send_channel_data()
        elif name == "sendmsg":
            uuid = command.arg.strip()
            if uuid and uuid != self.uuid:
                call = self.switch.call_by_uuid(uuid)
                if call is None:
                    self.send(reply_frame(f"-ERR invalid session id [{uuid}]"))
                else:
                    self.send(reply_frame("+OK"))
                    call.run_message(command)
                return
            self.send(reply_frame("+OK"))
            self.run_message(command, counted=True)
        elif name == "myevents":
            if self.myevents:
                self.send(reply_frame("-ERR aready enabled."))
                return
            self.myevents = self.events_on = True
            self.event_names |= MYEVENTS
            if "json" in command.arg.lower():
                self.format = "json"
            elif "xml" in command.arg.lower():
                self.format = "xml"
            self.send(reply_frame("+OK Events Enabled"))
            self._park()
        elif name == "event":
            self._cmd_event(command)
            self._park()
        elif name == "linger":
            self.linger = int(command.arg) if command.arg.strip().lstrip("-").isdigit() else -1
            self.send(reply_frame("+OK will linger" if self.linger < 0
                                  else f"+OK will linger {self.linger} seconds"))
        elif name == "nolinger":
            self.linger = None
            self.send(reply_frame("+OK will not linger"))
        elif name == "getvar":
            self.send(reply_frame(self.channel.variables.get(command.arg.strip(), "")
                                  or "-ERR command not found"))
        elif name == "resume":
            self.channel.set_var("socket_resume", "true")
            self.send(reply_frame("+OK"))
        elif name == "divert_events":
            on = command.arg.strip().lower() == "on"
            self.send(reply_frame("+OK events diverted" if on else "+OK events not diverted"))
        elif not self.handle_common(command):
            self.send(reply_frame("-ERR command not found"))

    def _park(self) -> None:
        # The async socket application parks the channel ~20 ms after connect,
        # by when the client has subscribed; a static socket never parks.
        if self.socket_mode == "async" and not self._parked and self.events_on:
            self._parked = True
            self.emit(self.channel.event("CHANNEL_PARK"))

    def _send_channel_data(self) -> None:
        ch = self.channel
        headers = (self.switch._base_headers("CHANNEL_DATA", ch.clock_us) + ch.profile("Channel")
                   + ch.basic() + ch.profile("Caller")
                   + [(f"variable_{n}", v) for n, v in ch.variables.items()]
                   + [("Content-Type", "command/reply"), ("Reply-Text", "+OK\n"),
                      ("Socket-Mode", self.socket_mode), ("Control", "full")])
        # Serialized like an event but sent as the reply itself: no Content-Length.
        self.send("".join(f"{n}: {url_encode(v)}\n" for n, v in headers).encode() + b"\n")

    def hangup_from_outside(self, cause: str) -> None:
        """``uuid_kill`` or another connection's ``sendmsg``: hang up now."""
        with self.lock:
            if self.channel.hangup_cause is None:
                self._hangup(cause)

    def run_message(self, command: ClientCommand, counted: bool = False) -> None:
        """switch_ivr_parse_event(): ``call-command: execute|hangup``."""
        with self.lock:
            kind = (command.header("call-command") or "").lower()
            if self.channel.hangup_cause is not None:
                self.errors.append(f"sendmsg {kind} after hangup")
                return
            if kind == "hangup":
                self._hangup(command.header("hangup-cause") or "NORMAL_CLEARING")
            elif kind == "execute":
                loops = command.header("loops") or "1"
                for loop in range(1, int(loops) + 1 if loops.isdigit() else 2):
                    if self.channel.hangup_cause is not None:
                        break
                    self.channel.set_var("current_loop", str(loop))
                    self.channel.set_var("total_loops", loops)
                    self._execute(command.header("execute-app-name") or "", _app_arg(command),
                                  command.header("event-uuid") or new_uuid(), counted)
            else:
                self.errors.append(f"unsupported call-command {kind!r}")

    # applications
    def _execute(self, app: str, arg: str, app_uuid: str, counted: bool) -> None:
        handler = getattr(self, f"_app_{app}", None)
        if handler is None and app not in INSTANT_APPS:
            # switch_core_session_execute_application(): no CHANNEL_EXECUTE at all.
            self.errors.append(f"invalid application {app!r}")
            self._hangup("DESTINATION_OUT_OF_ORDER")
            return
        ch = self.channel
        ch.set_var("current_application_response", None)
        ch.set_var("current_application", app)
        ch.set_var("current_application_data", arg or None)
        app_headers = [("Application", app)] + ([("Application-Data", arg)] if arg else [])
        self.emit(ch.event("CHANNEL_EXECUTE", post=app_headers + [("Application-UUID", app_uuid)]))
        cut_short = counted and self.scenario.caller_hangs_up_after == len(self.commands) - 1
        if cut_short:
            response = "PLAYBACK ERROR" if app == "playback" else None
            if app == "bridge":
                self._bridge_cancelled(arg)
            self._hangup("NORMAL_CLEARING", complete=(app, arg, app_uuid, response))
            return
        response = handler(arg) if handler is not None else None
        if response is not None:
            ch.set_var("current_application_response", response)
        if ch.hangup_cause is not None:  # the application hung the channel up
            self._finish_hangup(complete=(app, arg, app_uuid, response))
            return
        self.emit(ch.event("CHANNEL_EXECUTE_COMPLETE", post=app_headers + [
            ("Application-Response", response or "_none_"), ("Application-UUID", app_uuid)]))
        if app == "bridge" and self.bridges and self.bridges[-1].answered:
            if ch.variables.get("hangup_after_bridge", "").lower() == "true":
                self._hangup("NORMAL_CLEARING")
        elif app == "transfer":
            self._leave_socket()

    def _app_answer(self, arg: str) -> None:
        self._answer()
        self.channel.set_var("endpoint_disposition", "ANSWER")

    def _answer(self) -> None:
        ch = self.channel
        if ch.answer_state == "answered":
            return
        ch.advance(0.02)
        ch.answered_us = ch.clock_us
        ch.answer_state = "answered"
        self.emit(ch.event("CHANNEL_ANSWER"))
        self._set_call_state("ACTIVE")

    def _set_call_state(self, state: str) -> None:
        ch = self.channel
        before, ch.call_state = ch.call_state, state
        numbers = {"RINGING": "2", "EARLY": "3", "ACTIVE": "4", "HANGUP": "10"}
        self.emit(ch.event("CHANNEL_CALLSTATE", variables=False, pre=[
            ("Original-Channel-Call-State", before),
            ("Channel-Call-State-Number", numbers.get(state, "0"))]))

    def _app_pre_answer(self, arg: str) -> None:
        ch = self.channel
        if ch.answer_state in ("answered", "early"):
            return
        ch.progress_media_us = ch.clock_us
        ch.answer_state = "early"
        self.emit(ch.event("CHANNEL_PROGRESS_MEDIA"))
        self._set_call_state("EARLY")

    def _app_ring_ready(self, arg: str) -> None:
        self.channel.progress_us = self.channel.clock_us
        self.emit(self.channel.event("CHANNEL_PROGRESS"))

    def _app_set(self, arg: str) -> None:
        for name, value in set_pairs(arg):
            self.channel.set_var(name, value)

    def _app_multiset(self, arg: str) -> None:
        for name, value in multiset_pairs(arg):
            self.channel.set_var(name, value)

    def _app_export(self, arg: str) -> None:
        self._app_set(arg.removeprefix("nolocal:"))

    def _app_unset(self, arg: str) -> None:
        self.channel.set_var(arg, None)

    def _app_sleep(self, arg: str) -> None:
        self.channel.advance(int(arg or 0) / 1000)

    def _app_playback(self, arg: str) -> str:
        ch = self.channel
        kind = arg.split("://", 1)[0] if "://" in arg else arg.rsplit(".", 1)[-1]
        file_headers = [("Playback-File-Type", kind), ("Playback-File-Path", arg)]
        self.emit(ch.event("PLAYBACK_START", post=file_headers))
        ch.advance(self.scenario.playback_seconds)
        samples = int(self.scenario.playback_seconds * 8000)
        for name, value in (("playback_last_offset_pos", samples),
                            ("playback_seconds", int(self.scenario.playback_seconds)),
                            ("playback_ms", int(self.scenario.playback_seconds * 1000)),
                            ("playback_samples", samples)):
            ch.set_var(name, str(value))
        self.emit(ch.event("PLAYBACK_STOP", post=file_headers + [("Playback-Status", "done")]))
        return "FILE PLAYED"

    def _app_play_and_get_digits(self, arg: str) -> None:
        """``min max tries timeout terminators file invalid_file var regexp ...``:
        the next ``Scenario.digits`` entry is all the caller types (one try)."""
        parts = arg.split()
        if len(parts) < 9:
            self.errors.append(f"play_and_get_digits needs 9 arguments: {arg!r}")
            return
        minimum, maximum = int(parts[0]), int(parts[1])
        terminators, variable, pattern = parts[4], parts[7], parts[8]
        typed = self._digits.pop(0) if self._digits else None
        ch = self.channel
        ch.advance(int(parts[3]) / 1000 * int(parts[2]) if typed is None else 1.0)
        if typed is None:
            ch.set_var("read_result", "timeout")
            return
        for digit in typed:
            self.emit(ch.event("DTMF", post=[("DTMF-Digit", digit), ("DTMF-Duration", "2000"),
                                             ("DTMF-Source", "RTP")]))
        if terminators != "none":
            typed = re.split(f"[{re.escape(terminators)}]", typed)[0]
        entered = typed[:maximum]
        if len(entered) >= minimum and re.search(pattern, entered):  # PCRE, unanchored
            ch.set_var(variable, entered)
            ch.set_var("read_result", "success")
        else:
            ch.set_var(f"{variable}_invalid", entered)
            ch.set_var("read_result", "failure")

    def _app_hangup(self, arg: str) -> None:
        self._hangup(arg.strip() or "NORMAL_CLEARING", events_only=True)

    def _app_transfer(self, arg: str) -> None:
        self.channel.set_var("transfer_destination", arg)

    def _app_bridge(self, arg: str) -> None:
        """switch_ivr_originate() + audio_bridge_function() of mod_dptools."""
        ch = self.channel
        global_vars, groups = parse_dial_string(arg)
        tried: list[tuple[str, Outcome]] = []
        causes: list[str] = []
        cause = "NO_ANSWER"
        for group in groups:
            outcomes = [(target, leg_vars, self.scenario.outcome(target))
                        for target, leg_vars in group]
            tried += [(t, o) for t, _, o in outcomes]
            for target, leg_vars, _ in outcomes:
                if target.startswith("user/"):
                    user, _, domain = target[5:].partition("@")
                    ch.set_var("dialed_user", user)
                    ch.set_var("dialed_domain", domain)
            winner = next((o for o in outcomes if o[2] is Outcome.ANSWER), None)
            if winner is not None:
                ch.advance(self.scenario.ring_seconds)
                b_uuid = {**global_vars, **winner[1]}.get("origination_uuid") or new_uuid()
                causes.append(f"{b_uuid};NONE")
                causes += [f"{new_uuid()};{FAILURE_CAUSE.get(o, 'LOSE_RACE')}"
                           for _, _, o in outcomes if o not in (Outcome.ANSWER, Outcome.NO_ANSWER)]
                causes += [f"{new_uuid()};LOSE_RACE" for other in outcomes if other is not winner
                           and other[2] in (Outcome.ANSWER, Outcome.NO_ANSWER)]
                self._set_originate_causes(causes)
                self._bridged(winner[0], b_uuid, arg, tried)
                return
            timeouts = [self._leg_timeout(global_vars, v) for _, v, o in outcomes
                        if o is Outcome.NO_ANSWER]
            if timeouts:
                ch.advance(max(timeouts))
                cause = "NO_ANSWER"
            else:
                cause = FAILURE_CAUSE[outcomes[0][2]]
            causes += [f"{new_uuid()};{FAILURE_CAUSE[o]}" for _, _, o in outcomes]
        self._set_originate_causes(causes)
        self.bridges.append(BridgeAttempt(arg, tried, cause, None))
        ch.set_var("originate_disposition", cause)
        ch.set_var("DIALSTATUS", DIALSTATUS.get(cause, cause))
        if not self._continues_after(cause):
            self._hangup(cause, events_only=True)

    def _bridge_cancelled(self, arg: str) -> None:
        _, groups = parse_dial_string(arg)
        self.bridges.append(BridgeAttempt(
            arg, [(t, self.scenario.outcome(t)) for g in groups for t, _ in g],
            "ORIGINATOR_CANCEL", None))
        self.channel.set_var("originate_disposition", "ORIGINATOR_CANCEL")
        self.channel.set_var("DIALSTATUS", "CANCEL")

    def _leg_timeout(self, global_vars: dict[str, str], leg_vars: dict[str, str]) -> float:
        for source, name in ((leg_vars, "leg_timeout"), (global_vars, "leg_timeout"),
                             (global_vars, "originate_timeout"),
                             (self.channel.variables, "call_timeout")):
            if source.get(name, "").isdigit():
                return float(source[name])
        return 60.0

    def _set_originate_causes(self, causes: list[str]) -> None:
        self.channel.set_var("originate_causes", causes[0] if len(causes) == 1
                             else "ARRAY::" + "|:".join(causes))

    def _continues_after(self, cause: str) -> bool:
        """audio_bridge_function(): does the A leg survive a failed bridge?"""
        variables = self.channel.variables
        keep_going = variables.get("continue_on_fail")
        failure_causes = variables.get("failure_causes")
        number = str(Q850.get(cause, 0))
        if keep_going is None and failure_causes is None:
            return cause in ("NO_ANSWER", "NO_USER_RESPONSE", "ORIGINATOR_CANCEL")
        if failure_causes is not None:
            listed = [c.strip().upper() for c in failure_causes.split(",")]
            if cause not in listed and number not in listed:
                return True
        if keep_going is not None:
            if keep_going.lower() in ("true", "yes", "on", "1"):
                return True
            listed = [c.strip().upper() for c in keep_going.split(",")]
            return cause in listed or number in listed
        return False

    def _bridged(self, target: str, b_uuid: str, arg: str,
                 tried: list[tuple[str, Outcome]]) -> None:
        ch = self.channel
        self.bridges.append(BridgeAttempt(arg, tried, "SUCCESS", target))
        destination = target.rsplit("/", 1)[-1].split("@")[0]
        b_name, source, dialplan, logical = _b_leg_identity(target, destination)
        ch.set_var("originated_legs", f"{b_uuid};Outbound Call;{destination}")
        ch.set_var("originate_disposition", "SUCCESS")
        ch.set_var("DIALSTATUS", "SUCCESS")
        ch.set_var("signal_bond", b_uuid)
        self._answer()  # the A leg is answered when the B leg answers
        ch.set_var("endpoint_disposition", "ANSWER")
        ch.callee_id_name, ch.callee_id_number = "Outbound Call", destination
        ch.bridged_us = ch.clock_us
        other = [("Direction", "outbound"), ("Logical-Direction", logical),
                 ("Dialplan", dialplan), ("Caller-ID-Name", ch.caller.caller_id_name),
                 ("Caller-ID-Number", ch.caller.caller_id_number),
                 ("Orig-Caller-ID-Name", ch.caller.caller_id_name),
                 ("Orig-Caller-ID-Number", ch.caller.caller_id_number),
                 ("Callee-ID-Name", "Outbound Call"), ("Callee-ID-Number", destination),
                 ("ANI", ch.caller.caller_id_number), ("Destination-Number", destination),
                 ("Unique-ID", b_uuid), ("Source", source), ("Context", ch.caller.context),
                 ("Channel-Name", b_name)]
        times = [("Profile-Created-Time", ch.clock_us), ("Channel-Created-Time", ch.clock_us),
                 ("Channel-Answered-Time", ch.clock_us), ("Channel-Progress-Time", 0),
                 ("Channel-Progress-Media-Time", 0), ("Channel-Hangup-Time", 0),
                 ("Channel-Transfer-Time", 0), ("Channel-Resurrect-Time", 0),
                 ("Channel-Bridged-Time", 0), ("Channel-Last-Hold", 0), ("Channel-Hold-Accum", 0)]
        ch.other_leg = ([("Other-Type", "originatee")]
                        + [(f"Other-Leg-{n}", v) for n, v in other if v]
                        + [(f"Other-Leg-{n}", str(v)) for n, v in times]
                        + [("Other-Leg-Screen-Bit", "true"), ("Other-Leg-Privacy-Hide-Name", "false"),
                           ("Other-Leg-Privacy-Hide-Number", "false")])
        bridge_ids = [("Bridge-A-Unique-ID", ch.uuid), ("Bridge-B-Unique-ID", b_uuid)]
        self.emit(ch.event("CHANNEL_BRIDGE", pre=bridge_ids))
        ch.advance(self.scenario.talk_seconds)
        for name, value in (("last_bridge_to", b_uuid), ("bridge_channel", b_name),
                            ("bridge_uuid", b_uuid), ("last_sent_callee_id_name", "Outbound Call"),
                            ("last_sent_callee_id_number", destination),
                            ("last_bridge_hangup_cause", "NORMAL_CLEARING"),
                            ("bridge_hangup_cause", "NORMAL_CLEARING")):
            ch.set_var(name, value)
        self.emit(ch.event("CHANNEL_UNBRIDGE", pre=bridge_ids))

    def _leave_socket(self) -> None:
        """After ``transfer`` the dialplan owns the channel again: the socket
        application completes and the connection is closed."""
        ch = self.channel
        self.emit(ch.event("CHANNEL_UNPARK"))
        self._complete_socket_app()
        self.goodbye()

    def _complete_socket_app(self) -> None:
        ch = self.channel
        self.emit(ch.event("CHANNEL_EXECUTE_COMPLETE", post=[
            ("Application", "socket"), ("Application-Data", ch.socket_data),
            ("Application-Response", ch.variables.get("current_application_response", "_none_")),
            ("Application-UUID", new_uuid())]))

    # hanging up
    def _hangup(self, cause: str, events_only: bool = False,
                complete: tuple[str, str, str, str | None] | None = None) -> None:
        """CHANNEL_HANGUP; with ``events_only`` the running application's
        EXECUTE_COMPLETE and the rest follow when it returns."""
        ch = self.channel
        ch.hangup_cause = cause
        ch.answer_state = "hangup"
        ch.advance(0.02)
        ch.hangup_us = ch.clock_us
        ch.set_var("current_loop", None)
        ch.set_var("total_loops", None)
        self.emit(ch.event("CHANNEL_HANGUP"))
        self._unbind_inbound_listeners()
        if not events_only:
            self._finish_hangup(complete)

    def _finish_hangup(self, complete: tuple[str, str, str, str | None] | None = None) -> None:
        ch = self.channel
        if self.socket_mode == "static":  # the socket closes with the channel
            self._end_connection()
            return
        if complete is not None:
            app, arg, app_uuid, response = complete
            if response is not None:
                ch.set_var("current_application_response", response)
            self.emit(ch.event("CHANNEL_EXECUTE_COMPLETE", post=[
                ("Application", app), *([("Application-Data", arg)] if arg else []),
                ("Application-Response", response or "_none_"), ("Application-UUID", app_uuid)]))
        self.emit(ch.event("CHANNEL_UNPARK"))
        self._complete_socket_app()
        ch.state, ch.state_number = "CS_HANGUP", 10
        self.emit(ch.event("CHANNEL_STATE", variables=False))
        self._set_call_state("HANGUP")
        ch.state, ch.state_number = "CS_REPORTING", 11
        self.emit(ch.event("CHANNEL_STATE", variables=False))
        cause = ch.hangup_cause or "NORMAL_CLEARING"
        answered = ch.answered_us or ch.hangup_us
        for name, value in (("hangup_cause", cause), ("hangup_cause_q850", str(Q850.get(cause, 0))),
                            ("digits_dialed", "none"),
                            ("start_epoch", str(ch.created_us // 1_000_000)),
                            ("answer_epoch", str(ch.answered_us // 1_000_000)),
                            ("end_epoch", str(ch.hangup_us // 1_000_000)),
                            ("duration", str((ch.hangup_us - ch.created_us) // 1_000_000)),
                            ("billsec", str((ch.hangup_us - answered) // 1_000_000)),
                            ("last_app", ch.variables.get("current_application", "")),
                            ("last_arg", ch.variables.get("current_application_data", ""))):
            ch.set_var(name, value)
        self.emit(ch.event("CHANNEL_HANGUP_COMPLETE", pre=[("Hangup-Cause", cause)]))
        self._end_connection()

    def _end_connection(self) -> None:
        ch = self.channel
        if self.linger is None or self.socket_mode == "static":
            self.goodbye()
        elif self.linger >= 0:  # virtual time: the linger period is over at once
            self.send(linger_frame(ch.uuid, ch.name, self.linger))
            self.goodbye()
        else:  # lingers until the client says exit (bounded by the fake's timeout)
            self.send(linger_frame(ch.uuid, ch.name, -1))
            self._linger_deadline = time.monotonic() + self.switch.timeout

    def _unbind_inbound_listeners(self) -> None:
        """Inbound ``myevents <uuid>`` listeners get a disconnect notice and EOF."""
        for connection in list(self.switch.connections):
            if connection.session_uuid == self.uuid:
                connection.goodbye()


INSTANT_APPS = frozenset({
    "log", "info", "say", "phrase", "send_dtmf", "respond", "record_session",
    "stop_record_session", "hash", "db", "limit", "sched_hangup", "voicemail",
    "rxfax", "txfax", "speak", "echo", "event",
})


def set_pairs(data: str) -> list[tuple[str, str | None]]:
    """What mod_dptools' ``set`` (``base_set()``) does with its argument: the
    name ends at the first ``=`` (else the first ``,``); an empty value unsets
    the variable; no name, nothing is set.  (No ``${...}`` expansion here.)"""
    name, value = data, None
    for separator in ("=", ","):
        if separator in data:
            name, _, value = data.partition(separator)
            break
    return [(name, value or None)] if name else []


def multiset_pairs(data: str) -> list[tuple[str, str | None]]:
    """mod_dptools' ``multiset``: ``var=value var2=value2``, split at spaces
    (``^^X`` first chooses the delimiter X instead), each part set as ``set``
    does (at most 256 parts, as ``switch_split`` into its array).  Its
    completion is acked like ``set``: ``+OK``, CHANNEL_EXECUTE,
    CHANNEL_EXECUTE_COMPLETE (``esl-traces/outbound_bridge.trace``)."""
    delimiter = " "
    if data.startswith("^^") and len(data) > 2:
        delimiter, data = data[2], data[3:]
    parts = [part for part in data.split(delimiter) if part][:256]
    return [pair for part in parts for pair in set_pairs(part)]


def _app_arg(command: ClientCommand) -> str:
    """``execute-app-arg``, or the ``text/plain`` body FreeSWITCH uses without it."""
    arg = command.header("execute-app-arg")
    if not arg and (command.header("content-type") or "").lower() == "text/plain":
        return command.body.decode("utf-8", "replace")
    return arg or ""


def _b_leg_identity(target: str, destination: str) -> tuple[str, str, str, str]:
    """Channel name, Source, Dialplan and Logical-Direction of a bridged leg."""
    if target.startswith("loopback/"):
        return f"{target}-a", "mod_loopback", "xml", "inbound"
    if target.startswith("user/"):
        user, _, domain = target[5:].partition("@")
        return f"sofia/internal/{user}@{domain}", "src/switch_ivr_originate.c", "", "outbound"
    return f"sofia/external/{destination}", "src/switch_ivr_originate.c", "", "outbound"
