"""A lightweight FreeSWITCH for load: thousands of outbound-socket calls from one process.

``tests/fake_freeswitch.py`` plays one call per thread and builds every event
header by header, which is right for behaviour tests and far too heavy for
thousands of concurrent calls.  This module plays the same outbound calls —
the same frames, header for header — on one asyncio loop, one
:class:`asyncio.Protocol` per connection (no thread, no coroutine per call),
with each channel's encoded header blocks cached between events.

What one call does, as FreeSWITCH 1.10's ``socket 127.0.0.1:PORT async full``
does it (``shared/esl-traces/outbound_bridge.trace``; layout and texts as in
``tests/fake_freeswitch.py``, which ``tests/test_load_switch.py`` checks):

* connect to our server; ``connect`` gets the CHANNEL_DATA block as the reply
  itself (no Content-Length); ``myevents`` / ``linger`` / ``resume`` get their
  ``command/reply`` (``myevents`` then parks the channel: CHANNEL_PARK;
  ``nixevent`` drops event names again);
* ``sendmsg`` executes get ``+OK``, CHANNEL_EXECUTE, what the application
  causes (CHANNEL_ANSWER for ``answer``...), CHANNEL_EXECUTE_COMPLETE with
  the ``Application-UUID`` we were given.  ``answer``, ``set``, ``multiset``, ``playback``,
  ``play_and_get_digits`` (the caller presses nothing), ``voicemail`` and
  ``hangup`` complete at once in virtual time;
* ``bridge``: every leg answers; the first leg of the first group wins after
  ``answer_delay`` real seconds (CHANNEL_ANSWER, CHANNEL_BRIDGE), the call is
  held ``hold`` real seconds so concurrency builds up, then the callee hangs
  up: CHANNEL_UNBRIDGE, the bridge's EXECUTE_COMPLETE and, with
  ``hangup_after_bridge=true``, the hangup events, the ``linger`` notice, and
  after our ``exit`` ``+OK bye``, the ``disconnect`` notice and EOF.

Commands are read the way mod_event_socket reads them (``CommandReader`` of
the fake, with a fast path for plain ``\n``-ended commands without a body).

Every call is recorded: when it was placed, got its first application (the
plan started), reached the bridge (and with which dial string), ended, and
whether anything went wrong (refused or reset connection, a timeout, a
command FreeSWITCH would refuse, our server letting go of a live channel).

Run as a process (the benchmark does), on uvloop when it is installed
(``pip install '.[test]'``), else on asyncio's own loop::

    python -m tests.load_switch SPEC.json RESULTS.json

``SPEC.json``: ``{"host", "port", "calls": [call, ...], "rate", "ramp",
"duration", "answer_delay", "hold", "max_open", "call_timeout",
"drain_timeout"}`` where a call is ``{"destination", "caller_number",
"caller_name", "username", "context", "channel_name", "vars"}``.  Calls are
placed open-loop (arrivals do not wait for the server): the rate ramps
linearly from 0 to ``rate`` calls/s over ``ramp`` s, stays there for
``duration`` s, cycling through ``calls``; then the generator waits up to
``drain_timeout`` s for the calls in progress and writes ``RESULTS.json``.
It prints ``started <monotonic>`` when the first call is due, so a watcher in
another process can line up its samples (``time.monotonic`` is system-wide).
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import quote

from tests.fake_freeswitch import (
    CALLING,
    DISCONNECT_BODY,
    INSTANT_APPS,
    MYEVENTS,
    Q850,
    CommandReader,
    _b_leg_identity,
    multiset_pairs,
    parse_dial_string,
    set_pairs,
    sip_uri_user,
)

__all__ = ["LoadCallSpec", "LoadSettings", "LoadSwitch", "LoadCall", "play_call", "run_load", "main"]

_SAFE = re.compile(r"[A-Za-z0-9!$'()*,\-./~_]*").fullmatch


_ENCODED: dict[str, str] = {}


def url_encode(value: str) -> str:
    """``tests.fake_freeswitch.url_encode``, remembered: numbers, names, dates,
    dial strings come back call after call (bounded: unique values such as
    UUIDs only fill it up to its limit, then are encoded each time)."""
    encoded = _ENCODED.get(value)
    if encoded is None:
        encoded = value if _SAFE(value) else quote(value, safe="!$'()*,-./~_")
        if len(_ENCODED) < 200_000:
            _ENCODED[value] = encoded
    return encoded


def _lines(headers) -> str:
    return "".join([f"{n}: {url_encode(v)}\n" for n, v in headers])


def _reply(text: str) -> bytes:
    return f"Content-Type: command/reply\nReply-Text: {text}\n\n".encode()


_EVENT_HEAD = b"Content-Length: %d\nContent-Type: text/event-plain\n\n"
_MASKED_TIMES = ("Profile-Created-Time", "Channel-Created-Time", "Channel-Answered-Time",
                 "Channel-Progress-Time", "Channel-Progress-Media-Time", "Channel-Hangup-Time",
                 "Channel-Transfer-Time", "Channel-Resurrect-Time", "Channel-Bridged-Time",
                 "Channel-Last-Hold", "Channel-Hold-Accum")


class _Command:
    """What :class:`tests.fake_freeswitch.ClientCommand` offers, with the
    headers looked up by lower-cased name (the first of a repeated one wins,
    like ``ClientCommand.header``)."""

    __slots__ = ("line", "headers", "body", "name", "arg", "_lower")

    def __init__(self, line: str, headers: list, body: bytes = b""):
        self.line, self.headers, self.body = line, headers, body
        self.name = line.split(" ", 1)[0].lower()
        self.arg = line.partition(" ")[2]
        self._lower = {}
        for n, v in headers:
            self._lower.setdefault(n.lower(), v)

    def header(self, name: str) -> str | None:
        return self._lower.get(name.lower())


class _CommandReader:
    """``tests.fake_freeswitch.CommandReader`` (mod_event_socket's read_packet()),
    with a fast path for what our server sends: ``\n``-ended lines, no body.
    Anything else -- a CR, a ``content-length`` -- goes to the fake's reader
    for the rest of the connection."""

    def __init__(self) -> None:
        self._buf = b""
        self._slow: CommandReader | None = None

    def feed(self, data: bytes) -> list:
        if self._slow is not None:
            return [_Command(c.line, c.headers, c.body) for c in self._slow.feed(data)]
        buf = self._buf + data if self._buf else data
        if b"\r" in buf or b"ength:" in buf.lower():
            self._slow = CommandReader()
            self._buf = b""
            return self.feed(buf)
        commands = []
        start = 0
        size = len(buf)
        while True:
            while start < size and buf[start] == 10:   # leading blank lines
                start += 1
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            lines = buf[start:end].decode("utf-8", "replace").split("\n")
            headers = []
            for line in lines[1:]:
                name, colon, value = line.partition(":")
                if colon:
                    headers.append((name, value.lstrip(" ")))
            commands.append(_Command(lines[0], headers))
            start = end + 2
        self._buf = buf[start:]
        return commands


class _Uuids:
    """UUID-shaped ids without a syscall each: a random per-process prefix and a counter."""

    def __init__(self) -> None:
        import uuid
        head = uuid.uuid4().hex
        self._prefix = f"{head[:8]}-{head[8:12]}-4{head[13:16]}-a{head[17:20]}-"
        self._next = 0

    def __call__(self) -> str:
        self._next += 1
        return f"{self._prefix}{self._next:012x}"


@dataclass(frozen=True)
class LoadCallSpec:
    """Who calls whom: the caller profile the dialplan that ran ``socket`` saw."""

    destination: str
    caller_number: str = "+442079460123"
    caller_name: str = ""
    username: str = ""
    context: str = "public"
    channel_name: str = ""
    vars: dict = field(default_factory=dict)
    network_addr: str = "127.0.0.1"
    presence_id: str = ""
    dialplan: str = "XML"
    source: str = "mod_sofia"
    codec: tuple = ("PCMA", "8000", "64000")

    @classmethod
    def from_data(cls, data: dict) -> LoadCallSpec:
        return cls(**{k: (tuple(v) if k == "codec" else v) for k, v in data.items()})


@dataclass
class LoadSettings:
    answer_delay: float = 0.1       # real seconds from bridge to answer (the virtual clock moves as much)
    hold: float = 1.0               # real seconds an answered call stays bridged
    call_timeout: float = 30.0      # a call still open this long after it was placed is lost
    playback_seconds: float = 1.0   # virtual
    linger_wait: float = 10.0       # real seconds we wait for `exit` after the linger notice


class LoadSwitch:
    """What the calls share: core UUID, event sequence, dates, the result log."""

    def __init__(self, settings: LoadSettings | None = None, *, hostname: str = "load-fs",
                 new_uuid: Callable[[], str] | None = None, clock: Callable[[], float] = time.monotonic):
        self.settings = settings or LoadSettings()
        self.hostname = hostname
        self.new_uuid = new_uuid or _Uuids()
        self.clock = clock
        self.core_uuid = self.new_uuid()
        self.sequence = 1000
        self._fixed = _lines([("Core-UUID", self.core_uuid), ("FreeSWITCH-Hostname", hostname),
                              ("FreeSWITCH-Switchname", hostname), ("FreeSWITCH-IPv4", "127.0.0.1"),
                              ("FreeSWITCH-IPv6", "::1")])
        self._calling = {}
        self._dates: dict[int, str] = {}
        self.open_calls: set[LoadCall] = set()
        self.bridged = 0
        self.records: list[tuple] = []

    def calling(self, name: str) -> str:
        lines = self._calling.get(name)
        if lines is None:
            where = CALLING.get(name, ("switch_event.c", "switch_event_fire_detailed", "2000"))
            lines = self._calling[name] = _lines([("Event-Calling-File", where[0]),
                                                  ("Event-Calling-Function", where[1]),
                                                  ("Event-Calling-Line-Number", where[2])])
        return lines

    def base(self, name: str, when_us: int) -> str:
        """``FakeFreeSWITCH._base_headers`` as text."""
        second = when_us // 1_000_000
        dates = self._dates.get(second)
        if dates is None:   # each channel has its own virtual clock: a few seconds are current at once
            if len(self._dates) > 256:
                self._dates.clear()
            dates = self._dates[second] = _lines([
                ("Event-Date-Local", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))),
                ("Event-Date-GMT", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(second)))])
        self.sequence += 1
        return (f"Event-Name: {name}\n{self._fixed}{dates}Event-Date-Timestamp: {when_us}\n"
                f"{self.calling(name)}Event-Sequence: {self.sequence}\n")


class LoadCall(asyncio.Protocol):
    """One outbound-socket call: the channel, the commands it gets, what it records."""

    def __init__(self, switch: LoadSwitch, spec: LoadCallSpec, index: int = 0,
                 host: str = "127.0.0.1", port: int = 8084):
        self.switch = switch
        self.spec = spec
        self.index = index
        self.settings = switch.settings
        self.uuid = switch.new_uuid()
        self.transport: asyncio.Transport | None = None
        self.reader = _CommandReader()
        self.commands: list = []          # kept only when record_commands is set
        self.record_commands = False
        self._out: list[bytes] = []
        self._queue: list = []            # sendmsg waiting for a running application (event-lock)
        self._busy = False
        self._timers: list[asyncio.TimerHandle] = []
        # socket state
        self.events_on = False
        self.event_names: set[str] = set()
        self.linger: int | None = None
        self.parked = False
        self.closed = False
        # channel state (tests.fake_freeswitch._Channel)
        self.name = spec.channel_name or f"sofia/external/{sip_uri_user(spec.caller_number)}@127.0.0.1"
        self.clock_us = int(time.time() * 1e6)
        self.created_us = self.clock_us
        self.answered_us = self.progress_us = self.progress_media_us = 0
        self.bridged_us = self.hangup_us = 0
        self.state, self.state_number = "CS_EXECUTE", 4
        self.call_state = "RINGING"
        self.answer_state = "ringing"
        self.hangup_cause: str | None = None
        self.callee_id_name = ""
        self.callee_id_number = ""
        self.other_leg = ""
        codec, rate, _ = spec.codec
        self.socket_data = f"{host}:{port} async full"
        self.variables: dict[str, str] = {
            "direction": "inbound", "uuid": self.uuid, "session_id": "1", "channel_name": self.name,
            "read_codec": codec, "read_rate": rate, "write_codec": codec, "write_rate": rate,
            **spec.vars,
            "call_uuid": self.uuid, "current_application_data": self.socket_data,
            "current_application": "socket", "socket_host": host,
        }
        self._var_lines = {n: f"variable_{n}: {url_encode(v)}\n" for n, v in self.variables.items()}
        self._vars_text: str | None = None
        self._basic_key = None
        self._basic_text = ""
        self._profile_key = None
        self._profile_text = ""
        # the record
        self.t_placed = switch.clock()
        self.t_connected = self.t_plan = self.t_bridge = self.t_end = 0.0
        self.dial: str | None = None
        self.executed = 0
        self.error = ""
        self.exited = False
        self.disconnected = False       # the transport is gone (everything we wrote was flushed or dropped)
        self._in_bridge = False

    # --- channel data as text ------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        self.clock_us += int(seconds * 1e6)

    def set_var(self, name: str, value: str | None) -> None:
        self.variables.pop(name, None)
        self._var_lines.pop(name, None)
        if value is not None:
            self.variables[name] = value
            self._var_lines[name] = f"variable_{name}: {url_encode(value)}\n"
        self._vars_text = None

    def _vars(self) -> str:
        text = self._vars_text
        if text is None:
            text = self._vars_text = "".join(self._var_lines.values())
        return text

    def _profile(self, prefix: str = "Caller") -> str:
        key = (prefix, self.callee_id_name, self.callee_id_number, self.answered_us, self.progress_us,
               self.progress_media_us, self.bridged_us, self.hangup_us)
        if key == self._profile_key:
            return self._profile_text
        s = self.spec
        fields = [
            ("Direction", "inbound"), ("Logical-Direction", "inbound"), ("Username", s.username),
            ("Dialplan", s.dialplan), ("Caller-ID-Name", s.caller_name),
            ("Caller-ID-Number", s.caller_number), ("Orig-Caller-ID-Name", s.caller_name),
            ("Orig-Caller-ID-Number", s.caller_number),
            ("Callee-ID-Name", self.callee_id_name), ("Callee-ID-Number", self.callee_id_number),
            ("Network-Addr", s.network_addr), ("ANI", s.caller_number),
            ("Destination-Number", s.destination), ("Unique-ID", self.uuid),
            ("Source", s.source), ("Context", s.context), ("Channel-Name", self.name),
            ("Profile-Index", "1"),
        ]
        times = (self.created_us, self.created_us, self.answered_us, self.progress_us,
                 self.progress_media_us, self.hangup_us, 0, 0, self.bridged_us, 0, 0)
        text = (_lines([(f"{prefix}-{n}", v) for n, v in fields if v])
                + "".join([f"{prefix}-{n}: {v}\n" for n, v in zip(_MASKED_TIMES, times)])
                + f"{prefix}-Screen-Bit: true\n{prefix}-Privacy-Hide-Name: false\n"
                  f"{prefix}-Privacy-Hide-Number: false\n")
        if prefix == "Caller":
            self._profile_key, self._profile_text = key, text
        return text

    def _basic(self) -> str:
        key = (self.state, self.call_state, self.answer_state, self.hangup_cause)
        if key == self._basic_key:
            return self._basic_text
        codec, rate, bits = self.spec.codec
        text = _lines([("Channel-State", self.state), ("Channel-Call-State", self.call_state),
                       ("Channel-State-Number", str(self.state_number)), ("Channel-Name", self.name),
                       ("Unique-ID", self.uuid), ("Call-Direction", "inbound"),
                       ("Presence-Call-Direction", "inbound"), ("Channel-HIT-Dialplan", "true")])
        if self.spec.presence_id:
            text += _lines([("Channel-Presence-ID", self.spec.presence_id)])
        text += _lines([("Channel-Call-UUID", self.uuid), ("Answer-State", self.answer_state)])
        if self.hangup_cause:
            text += _lines([("Hangup-Cause", self.hangup_cause)])
        text += _lines([("Channel-Read-Codec-Name", codec), ("Channel-Read-Codec-Rate", rate),
                        ("Channel-Read-Codec-Bit-Rate", bits), ("Channel-Write-Codec-Name", codec),
                        ("Channel-Write-Codec-Rate", rate), ("Channel-Write-Codec-Bit-Rate", bits)])
        self._basic_key, self._basic_text = key, text
        return text

    def emit(self, name: str, pre=(), post=(), variables: bool = True) -> None:
        """``_Channel.event()`` + ``FakeCall.emit()``: delivered when ``myevents`` asked for it."""
        if not self.events_on or name not in self.event_names or self.closed:
            return
        text = (self.switch.base(name, self.clock_us) + (_lines(pre) if pre else "") + self._basic()
                + self._profile() + self.other_leg + (self._vars() if variables else "")
                + (_lines(post) if post else "") + "\n")
        data = text.encode()
        self._out.append(_EVENT_HEAD % len(data))
        self._out.append(data)

    def _channel_data(self) -> bytes:
        text = (self.switch.base("CHANNEL_DATA", self.clock_us) + self._profile("Channel") + self._basic()
                + self._profile() + self._vars()
                + "Content-Type: command/reply\nReply-Text: %2BOK%0A\nSocket-Mode: async\nControl: full\n\n")
        return text.encode()

    # --- the connection ----------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.t_connected = self.switch.clock()
        self.switch.open_calls.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            for command in self.reader.feed(data):
                if self.record_commands:
                    self.commands.append(command)
                if self._busy and command.name == "sendmsg":
                    self._queue.append(command)   # event-lock: after the running application
                else:
                    self._handle(command)
                if self.closed:
                    break
        except Exception as exc:  # a bug here must show up as a lost call, not hang the run
            self._fail(f"load switch crashed: {exc!r}")
        self._flush()

    def eof_received(self):
        return False  # close our side too

    def connection_lost(self, exc) -> None:
        self.disconnected = True
        if not self.closed:
            if self.hangup_cause is None:
                self._fail("our server closed the connection on a live channel"
                           + (f" ({exc})" if exc else ""), close=False)
            elif not self.exited:
                self._fail("our server closed the connection without exit", close=False)
            self._finish()

    def _flush(self) -> None:
        if self._out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self._out))
        self._out.clear()

    def _later(self, delay: float, callback) -> None:
        self._timers.append(asyncio.get_running_loop().call_later(delay, self._run_timer, callback))

    def _run_timer(self, callback) -> None:
        if self.closed:
            return
        try:
            callback()
        except Exception as exc:
            self._fail(f"load switch crashed: {exc!r}")
        self._flush()

    def _fail(self, why: str, close: bool = True) -> None:
        if not self.error:
            self.error = why
        if close:
            self._goodbye(notice=False)

    def expire(self) -> None:
        if not self.closed:
            stage = ("connect" if not self.t_connected else "plan" if not self.t_plan
                     else "bridge" if not self.t_bridge else "end of call")
            self._fail(f"timed out waiting for {stage}")
            self._flush()

    def _goodbye(self, notice: bool = True) -> None:
        """The disconnect notice and EOF (``_Listener.goodbye``)."""
        if self.closed:
            return
        if notice:
            self._out.append(b"Content-Type: text/disconnect-notice\nControlled-Session-UUID: %b\n"
                             b"Content-Disposition: disconnect\nContent-Length: %d\n\n%b"
                             % (self.uuid.encode(), len(DISCONNECT_BODY), DISCONNECT_BODY))
        self._flush()
        self._finish()
        if self.transport is not None:
            self.transport.close()

    def _finish(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.t_end = self.switch.clock()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._in_bridge:
            self._in_bridge = False
            self.switch.bridged -= 1
        self.switch.open_calls.discard(self)
        self.switch.records.append((self.index, round(self.t_placed, 6), round(self.t_plan, 6),
                                    round(self.t_bridge, 6), round(self.t_end, 6), self.dial,
                                    self.executed, self.error, round(self.t_connected, 6)))

    # --- commands (FakeCall._handle) ------------------------------------------------------

    def _handle(self, command) -> None:
        name = command.name
        if name == "connect":
            self._out.append(self._channel_data())
        elif name == "sendmsg":
            uuid = command.arg.strip()
            if uuid and uuid != self.uuid:
                self._out.append(_reply(f"-ERR invalid session id [{uuid}]"))
                self._fail(f"sendmsg for another channel {uuid!r}", close=False)
                return
            self._out.append(_reply("+OK"))
            self._run_message(command)
        elif name == "myevents":
            if self.events_on:
                self._out.append(_reply("-ERR aready enabled."))
                return
            self.events_on = True
            self.event_names |= MYEVENTS
            self._out.append(_reply("+OK Events Enabled"))
            if not self.parked:
                self.parked = True
                self.emit("CHANNEL_PARK")
        elif name == "linger":
            self.linger = int(command.arg) if command.arg.strip().lstrip("-").isdigit() else -1
            self._out.append(_reply("+OK will linger" if self.linger < 0
                                    else f"+OK will linger {self.linger} seconds"))
        elif name == "nolinger":
            self.linger = None
            self._out.append(_reply("+OK will not linger"))
        elif name == "resume":
            self.set_var("socket_resume", "true")
            self._out.append(_reply("+OK"))
        elif name == "nixevent":   # _Listener._cmd_nixevent, for event names (no CUSTOM subclasses)
            words = [w.upper() for w in command.arg.split()]
            if "ALL" in words:
                self.event_names.clear()
            else:
                self.event_names -= set(words)
            self._out.append(_reply("+OK events nixed" if words else "-ERR no keywords supplied"))
        elif name == "getvar":
            self._out.append(_reply(self.variables.get(command.arg.strip(), "") or "-ERR command not found"))
        elif name == "exit":
            self.exited = True
            if self.hangup_cause is None:
                self._fail("our server let go of a live channel (exit before hangup)", close=False)
            self._out.append(_reply("+OK bye"))
            self._goodbye()
        else:
            self._out.append(_reply("-ERR command not found"))
            self._fail(f"unexpected command {command.line!r}", close=False)

    def _run_message(self, command) -> None:
        kind = (command.header("call-command") or "").lower()
        if self.hangup_cause is not None:
            self._fail(f"sendmsg {kind} after hangup", close=False)
            return
        if kind == "hangup":
            self._hangup(command.header("hangup-cause") or "NORMAL_CLEARING")
        elif kind == "execute":
            loops = command.header("loops") or "1"
            if loops != "1":
                self._fail(f"loops {loops!r} not played by the load switch", close=False)
            self.set_var("current_loop", "1")
            self.set_var("total_loops", "1")
            arg = command.header("execute-app-arg")
            if not arg and (command.header("content-type") or "").lower() == "text/plain":
                arg = command.body.decode("utf-8", "replace")   # tests.fake_freeswitch._app_arg
            self._execute(command.header("execute-app-name") or "", arg or "",
                          command.header("event-uuid") or self.switch.new_uuid())
        else:
            self._fail(f"unsupported call-command {kind!r}", close=False)

    def _next_message(self) -> None:
        self._busy = False
        while self._queue and not self._busy and not self.closed:
            self._handle(self._queue.pop(0))

    # --- applications ---------------------------------------------------------------------

    def _execute(self, app: str, arg: str, app_uuid: str) -> None:
        if not self.executed:
            self.t_plan = self.switch.clock()
        self.executed += 1
        handler = getattr(self, f"_app_{app}", None)
        if handler is None and app != "bridge" and app not in INSTANT_APPS:
            self._fail(f"invalid application {app!r}", close=False)
            self._hangup("DESTINATION_OUT_OF_ORDER")
            return
        self.set_var("current_application_response", None)
        self.set_var("current_application", app)
        self.set_var("current_application_data", arg or None)
        app_headers = [("Application", app)] + ([("Application-Data", arg)] if arg else [])
        self.emit("CHANNEL_EXECUTE", post=app_headers + [("Application-UUID", app_uuid)])
        if app == "bridge":
            self._busy = True
            self._bridge(arg, app_headers, app_uuid)
            return
        response = handler(arg) if handler is not None else None
        self._complete(app, arg, app_headers, app_uuid, response)

    def _complete(self, app, arg, app_headers, app_uuid, response) -> None:
        if response is not None:
            self.set_var("current_application_response", response)
        if self.hangup_cause is not None:  # the application hung the channel up
            self._finish_hangup(complete=(app, arg, app_uuid, response))
            return
        self.emit("CHANNEL_EXECUTE_COMPLETE", post=app_headers + [
            ("Application-Response", response or "_none_"), ("Application-UUID", app_uuid)])

    def _app_answer(self, arg: str) -> None:
        self._answer()
        self.set_var("endpoint_disposition", "ANSWER")

    def _answer(self) -> None:
        if self.answer_state == "answered":
            return
        self.advance(0.02)
        self.answered_us = self.clock_us
        self.answer_state = "answered"
        self.emit("CHANNEL_ANSWER")
        self.call_state = "ACTIVE"   # CHANNEL_CALLSTATE: not among myevents

    def _app_set(self, arg: str) -> None:
        for name, value in set_pairs(arg):
            self.set_var(name, value)

    def _app_multiset(self, arg: str) -> None:
        for name, value in multiset_pairs(arg):
            self.set_var(name, value)

    def _app_playback(self, arg: str) -> str:
        seconds = self.settings.playback_seconds   # PLAYBACK_START/STOP: not among myevents
        self.advance(seconds)
        samples = int(seconds * 8000)
        for name, value in (("playback_last_offset_pos", samples), ("playback_seconds", int(seconds)),
                            ("playback_ms", int(seconds * 1000)), ("playback_samples", samples)):
            self.set_var(name, str(value))
        return "FILE PLAYED"

    def _app_play_and_get_digits(self, arg: str) -> None:
        """The caller presses nothing: ``read_result=timeout`` after every try."""
        parts = arg.split()
        if len(parts) < 9:
            self._fail(f"play_and_get_digits needs 9 arguments: {arg!r}", close=False)
            return
        self.advance(int(parts[3]) / 1000 * int(parts[2]))
        self.set_var("read_result", "timeout")

    def _app_hangup(self, arg: str) -> None:
        self._hangup(arg.strip() or "NORMAL_CLEARING", events_only=True)

    def _bridge(self, arg: str, app_headers, app_uuid: str) -> None:
        self.t_bridge = self.switch.clock()
        if self.dial is None:
            self.dial = arg
        try:
            global_vars, groups = _parse_dial(arg)
        except ValueError as exc:
            self._fail(f"bridge {arg!r}: {exc}", close=False)
            groups = []
        if not groups:
            self._fail(f"bridge without legs: {arg!r}", close=False)
            self._hangup("DESTINATION_OUT_OF_ORDER")
            return
        self._later(self.settings.answer_delay,
                    lambda: self._bridge_answered(arg, global_vars, groups[0], app_headers, app_uuid))

    def _bridge_answered(self, arg, global_vars, group, app_headers, app_uuid) -> None:
        """``FakeCall._app_bridge`` when every leg answers: the first leg wins."""
        for target, _ in group:
            if target.startswith("user/"):
                user, _, domain = target[5:].partition("@")
                self.set_var("dialed_user", user)
                self.set_var("dialed_domain", domain)
        self.advance(self.settings.answer_delay)
        target, leg_vars = group[0]
        b_uuid = {**global_vars, **leg_vars}.get("origination_uuid") or self.switch.new_uuid()
        causes = [f"{b_uuid};NONE"] + [f"{self.switch.new_uuid()};LOSE_RACE" for _ in group[1:]]
        self.set_var("originate_causes", causes[0] if len(causes) == 1 else "ARRAY::" + "|:".join(causes))
        destination = target.rsplit("/", 1)[-1].split("@")[0]
        b_name, source, dialplan, logical = _b_leg_identity(target, destination)
        self.set_var("originated_legs", f"{b_uuid};Outbound Call;{destination}")
        self.set_var("originate_disposition", "SUCCESS")
        self.set_var("DIALSTATUS", "SUCCESS")
        self.set_var("signal_bond", b_uuid)
        self._answer()
        self.set_var("endpoint_disposition", "ANSWER")
        self.callee_id_name, self.callee_id_number = "Outbound Call", destination
        self.bridged_us = self.clock_us
        s = self.spec
        other = [("Direction", "outbound"), ("Logical-Direction", logical),
                 ("Dialplan", dialplan), ("Caller-ID-Name", s.caller_name),
                 ("Caller-ID-Number", s.caller_number),
                 ("Orig-Caller-ID-Name", s.caller_name),
                 ("Orig-Caller-ID-Number", s.caller_number),
                 ("Callee-ID-Name", "Outbound Call"), ("Callee-ID-Number", destination),
                 ("ANI", s.caller_number), ("Destination-Number", destination),
                 ("Unique-ID", b_uuid), ("Source", source), ("Context", s.context),
                 ("Channel-Name", b_name)]
        times = (self.clock_us, self.clock_us, self.clock_us, 0, 0, 0, 0, 0, 0, 0, 0)
        self.other_leg = (
            "Other-Type: originatee\n" + _lines([(f"Other-Leg-{n}", v) for n, v in other if v])
            + "".join([f"Other-Leg-{n}: {v}\n" for n, v in zip(_MASKED_TIMES, times)])
            + "Other-Leg-Screen-Bit: true\nOther-Leg-Privacy-Hide-Name: false\n"
              "Other-Leg-Privacy-Hide-Number: false\n")
        bridge_ids = [("Bridge-A-Unique-ID", self.uuid), ("Bridge-B-Unique-ID", b_uuid)]
        self.emit("CHANNEL_BRIDGE", pre=bridge_ids)
        self._in_bridge = True
        self.switch.bridged += 1
        self._later(self.settings.hold,
                    lambda: self._bridge_ended(arg, app_headers, app_uuid, b_uuid, b_name, destination,
                                               bridge_ids))

    def _bridge_ended(self, arg, app_headers, app_uuid, b_uuid, b_name, destination, bridge_ids) -> None:
        self._in_bridge = False
        self.switch.bridged -= 1
        self.advance(self.settings.hold)
        for name, value in (("last_bridge_to", b_uuid), ("bridge_channel", b_name),
                            ("bridge_uuid", b_uuid), ("last_sent_callee_id_name", "Outbound Call"),
                            ("last_sent_callee_id_number", destination),
                            ("last_bridge_hangup_cause", "NORMAL_CLEARING"),
                            ("bridge_hangup_cause", "NORMAL_CLEARING")):
            self.set_var(name, value)
        self.emit("CHANNEL_UNBRIDGE", pre=bridge_ids)
        self._complete("bridge", arg, app_headers, app_uuid, None)
        if self.hangup_cause is None and self.variables.get("hangup_after_bridge", "").lower() == "true":
            self._hangup("NORMAL_CLEARING")
        if not self.closed:
            self._next_message()

    # --- hanging up (FakeCall._hangup / _finish_hangup) -------------------------------------

    def _hangup(self, cause: str, events_only: bool = False, complete=None) -> None:
        self.hangup_cause = cause
        self.answer_state = "hangup"
        self.advance(0.02)
        self.hangup_us = self.clock_us
        self.set_var("current_loop", None)
        self.set_var("total_loops", None)
        self.emit("CHANNEL_HANGUP")
        if not events_only:
            self._finish_hangup(complete)

    def _finish_hangup(self, complete=None) -> None:
        if complete is not None:
            app, arg, app_uuid, response = complete
            if response is not None:
                self.set_var("current_application_response", response)
            self.emit("CHANNEL_EXECUTE_COMPLETE", post=[
                ("Application", app), *([("Application-Data", arg)] if arg else []),
                ("Application-Response", response or "_none_"), ("Application-UUID", app_uuid)])
        self.emit("CHANNEL_UNPARK")
        self.emit("CHANNEL_EXECUTE_COMPLETE", post=[
            ("Application", "socket"), ("Application-Data", self.socket_data),
            ("Application-Response", self.variables.get("current_application_response", "_none_")),
            ("Application-UUID", self.switch.new_uuid())])
        self.state, self.state_number = "CS_HANGUP", 10
        self.emit("CHANNEL_STATE", variables=False)
        self.call_state = "HANGUP"    # CHANNEL_CALLSTATE: not among myevents
        self.state, self.state_number = "CS_REPORTING", 11
        self.emit("CHANNEL_STATE", variables=False)
        cause = self.hangup_cause or "NORMAL_CLEARING"
        answered = self.answered_us or self.hangup_us
        for name, value in (("hangup_cause", cause), ("hangup_cause_q850", str(Q850.get(cause, 0))),
                            ("digits_dialed", "none"),
                            ("start_epoch", str(self.created_us // 1_000_000)),
                            ("answer_epoch", str(self.answered_us // 1_000_000)),
                            ("end_epoch", str(self.hangup_us // 1_000_000)),
                            ("duration", str((self.hangup_us - self.created_us) // 1_000_000)),
                            ("billsec", str((self.hangup_us - answered) // 1_000_000)),
                            ("last_app", self.variables.get("current_application", "")),
                            ("last_arg", self.variables.get("current_application_data", ""))):
            self.set_var(name, value)
        self.emit("CHANNEL_HANGUP_COMPLETE", pre=[("Hangup-Cause", cause)])
        if self.linger is None:
            self._goodbye()
        elif self.linger >= 0:  # virtual time: the linger period is over at once
            self._out.append(self._linger_frame(self.linger))
            self._goodbye()
        else:  # until our server says exit
            self._out.append(self._linger_frame(-1))
            self._later(self.settings.linger_wait,
                        lambda: self._fail("our server never sent exit while the socket lingered"))

    def _linger_frame(self, seconds: int) -> bytes:
        return (f"Content-Type: text/disconnect-notice\nControlled-Session-UUID: {self.uuid}\n"
                f"Content-Disposition: linger\nChannel-Name: {self.name}\n"
                f"Linger-Time: {seconds}\nContent-Length: 0\n\n").encode()


_DIALS: dict[str, tuple] = {}


def _parse_dial(dial: str) -> tuple:
    """``parse_dial_string``, remembered: the same dial strings come back call after call."""
    parsed = _DIALS.get(dial)
    if parsed is None:
        parsed = parse_dial_string(dial)
        if len(_DIALS) < 50_000:
            _DIALS[dial] = parsed
    return parsed


# --- the generator ---------------------------------------------------------------------------

def _due(t: float, rate: float, ramp: float, duration: float) -> int:
    """Calls that should have been placed ``t`` s after the start."""
    if t <= 0:
        return 0
    if ramp > 0 and t < ramp:
        return int(rate * t * t / (2 * ramp))
    return int(rate * ramp / 2 + rate * (min(t, ramp + duration) - ramp))


async def run_load(spec: dict, on_start: Callable[[float], None] | None = None) -> dict:
    """Place the calls of ``spec`` (see the module docstring); the results."""
    loop = asyncio.get_running_loop()
    settings = LoadSettings(answer_delay=float(spec.get("answer_delay", 0.1)), hold=float(spec.get("hold", 1.0)),
                            call_timeout=float(spec.get("call_timeout", 30.0)))
    switch = LoadSwitch(settings)
    host, port = spec.get("host", "127.0.0.1"), int(spec["port"])
    calls = [LoadCallSpec.from_data(c) for c in spec["calls"]]
    rate, ramp, duration = float(spec["rate"]), float(spec.get("ramp", 0)), float(spec["duration"])
    max_open = int(spec.get("max_open", 10_000))
    total = _due(ramp + duration, rate, ramp, duration)
    samples: list[tuple] = []
    refused = 0
    placed = 0

    async def place(call: LoadCall) -> None:
        try:
            await loop.create_connection(lambda: call, host, port)
        except OSError as exc:
            call._fail(f"connect failed: {exc}", close=False)
            call._finish()

    start = time.monotonic()
    if on_start is not None:
        on_start(start)
    next_sample = start
    while placed < total:
        now = time.monotonic()
        if now >= next_sample:
            samples.append((round(now, 4), len(switch.open_calls), switch.bridged, placed))
            next_sample += 0.25
        due = min(_due(now - start, rate, ramp, duration), total)
        while placed < due:
            if len(switch.open_calls) >= max_open:   # the server is not keeping up: refuse, count it
                refused += due - placed
                placed = due
                break
            call = LoadCall(switch, calls[placed % len(calls)], placed % len(calls), host, port)
            call._timers.append(loop.call_later(settings.call_timeout, call.expire))
            loop.create_task(place(call))
            placed += 1
        await asyncio.sleep(0.002)
    placing_ended = time.monotonic()
    deadline = placing_ended + float(spec.get("drain_timeout", settings.call_timeout))
    while len(switch.records) < placed - refused and time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_sample:
            samples.append((round(now, 4), len(switch.open_calls), switch.bridged, placed))
            next_sample += 0.25
        await asyncio.sleep(0.01)
    for call in list(switch.open_calls):
        call._fail("still open when the run ended")
    await asyncio.sleep(0.05)
    return {"start": start, "placing_ended": placing_ended, "placed": placed, "refused": refused,
            "records": switch.records, "samples": samples,
            "cpu_seconds": time.process_time(), "cpu_user_sys": list(os.times()[:2]),
            "record_fields": ["index", "placed", "plan", "bridge", "end", "dial", "executed", "error",
                              "connected"]}


async def play_call(host: str, port: int, spec: LoadCallSpec, settings: LoadSettings | None = None,
                    switch: LoadSwitch | None = None) -> LoadCall:
    """One call, recording the commands it received; returns once it is over."""
    loop = asyncio.get_running_loop()
    switch = switch or LoadSwitch(settings)
    call = LoadCall(switch, spec, 0, host, port)
    call.record_commands = True
    call._timers.append(loop.call_later(switch.settings.call_timeout, call.expire))
    try:
        await loop.create_connection(lambda: call, host, port)
    except OSError as exc:
        call._fail(f"connect failed: {exc}", close=False)
        call._finish()
    deadline = loop.time() + switch.settings.call_timeout + 5
    while not (call.closed and (call.disconnected or call.transport is None)) and loop.time() < deadline:
        await asyncio.sleep(0.005)   # until our last frames are on the wire, not just queued
    return call


def event_loop_factory() -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str]:
    """uvloop's loop when installed (its transports, timers and callbacks are
    C, so the generator needs less CPU per call), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return None, "asyncio"
    return uvloop.new_event_loop, f"uvloop {uvloop.__version__}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m tests.load_switch SPEC.json RESULTS.json", file=sys.stderr)
        return 2
    with open(args[0]) as f:
        spec = json.load(f)

    def started(at: float) -> None:
        print(f"started {at:.6f}", flush=True)

    loop_factory, loop_name = event_loop_factory()
    print(f"event loop {loop_name}", flush=True)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        results = runner.run(run_load(spec, started))
    results["event_loop"] = loop_name
    with open(args[1], "w") as f:
        json.dump(results, f)
    errors = sum(1 for r in results["records"] if r[7])
    print(f"done placed={results['placed']} refused={results['refused']} records={len(results['records'])} "
          f"errors={errors}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
