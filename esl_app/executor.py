"""Execute a :class:`~fastpath.route_plan.RoutePlan` on one outbound ESL call.

Three layers, from pure to wired:

* :class:`CallProtocol` — sans-IO.  Bytes from FreeSWITCH go in
  (:meth:`~CallProtocol.feed`); it resolves :class:`Waiter` objects for
  command replies (in order: mod_event_socket answers each command before the
  next) and for ``CHANNEL_EXECUTE_COMPLETE`` events (by ``Application-UUID``,
  which echoes the ``Event-UUID`` we sent), and tracks the channel: answered,
  bridged, hung up.  A hangup fails every application waiter with
  :class:`CallGone`; a disconnect, EOF or malformed frame fails *every*
  waiter — greenswitch's ``OutboundSessionHasGoneAway``, without its
  unbounded waits.
* :class:`CallChannel` — the protocol plus a socket.  Every wait has a
  deadline (:class:`CallTimeout`).  It only reads while something waits, and
  one greenlet (or thread) drives one call, so it works the same on a gevent
  socket and on a plain one (the unit tests use plain sockets).
* :class:`Executor` — runs the steps: answer when media is needed,
  ``playback``, ``play_and_get_digits`` then a fresh decision, ``bridge`` with
  fallbacks, ``voicemail``, ``rxfax``, ``hangup``; asks the engine again for
  ``continue`` steps; stops after :attr:`ExecutorSettings.max_steps`.

Caller-controlled data is validated before use (:meth:`CallInfo.from_channel_data`,
the IVR digit check, :mod:`esl_app.dial_string`), and each call ends in one
:class:`CallReport`, logged as one line by :func:`log_call`.

FreeSWITCH behaviour relied on, and where it is seen:

* the ``connect`` reply is the CHANNEL_DATA event; ``myevents`` then parks the
  channel (``outbound_async_full_linger.trace``, ``outbound_bridge.trace``);
* ``event-uuid`` comes back as ``Application-UUID`` of CHANNEL_EXECUTE and
  CHANNEL_EXECUTE_COMPLETE (fake_freeswitch, mod_dptools/switch_ivr.c);
* a bridge answered and ended: CHANNEL_BRIDGE, CHANNEL_UNBRIDGE, then the
  bridge's EXECUTE_COMPLETE with ``variable_originate_disposition=SUCCESS``
  and ``variable_bridge_hangup_cause`` (``outbound_bridge.trace``); with
  ``hangup_after_bridge=true`` the hangup may come before or after that
  completion, and both orders are handled;
* a failed bridge reports its cause as ``originate_disposition`` /
  ``DIALSTATUS`` (FREESWITCH-NOTES "Dialling and outcomes"); without
  ``continue_on_fail`` most causes hang the caller up, hence
  ``continue_on_fail=true`` (with ``hangup_after_bridge=true``, in one
  ``multiset``) before the first bridge;
* the caller hanging up: CHANNEL_HANGUP, then the running application's
  EXECUTE_COMPLETE, then (with ``linger``) a ``linger`` disconnect notice and,
  after our ``exit``, ``+OK bye``, the ``disconnect`` notice and EOF
  (``outbound_caller_hangup_*.trace``, ``outbound_async_full_linger.trace``).
* fax: ``rxfax`` needs mod_spandsp.  FreeSWITCH 1.10.12 builds it only
  against spandsp from before the mid-2023 v18 API change
  (FREESWITCH-NOTES "Config"); on a build without it ``rxfax`` is an unknown
  application and FreeSWITCH hangs the call up with
  DESTINATION_OUT_OF_ORDER without a CHANNEL_EXECUTE — the report then says
  so.  Received faxes land in ``<fax_spool>/<call uuid>-<ext>.tif``.
"""
from __future__ import annotations

import json
import logging
import random
import re
import socket
import time
import uuid as uuid_module
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from fastpath.route_plan import Hangup, RoutePlan

from . import dial_string, feature_codes
from .esl_protocol import EslParser, EslProtocolError, Event, Message, encode_command, encode_sendmsg

__all__ = [
    "CallGone",
    "CallTimeout",
    "CommandError",
    "Waiter",
    "CallProtocol",
    "CallChannel",
    "CallInfo",
    "CallReport",
    "ExecutorSettings",
    "Executor",
    "classify_failure",
    "ivr_arguments",
    "log_call",
    "LOG",
]

LOG = logging.getLogger("switchboard.calls")

_UUID = re.compile(r"[0-9A-Za-z][0-9A-Za-z-]{0,63}")
_CAUSE = re.compile(r"[A-Z][A-Z0-9_]{1,47}")
_DIGITS = re.compile(r"[0-9]{1,16}")
_CALLED = re.compile(r"\+?[0-9*#]{1,32}")
#: An extension as validate.py defines it: a bare number like this in an
#: unauthenticated caller ID could impersonate an employee.
_EXTENSION_LIKE = re.compile(r"[0-9]{2,6}")
#: Sound files and tone streams from the config: one word, nothing FreeSWITCH
#: would expand (``$``), split (``!``, spaces) or unquote.
# What a say step may carry into an ESL command (the engine writes them from config, still checked).
_PHRASE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_PHRASE_DATA = re.compile(r"[A-Za-z0-9_:.-]{1,128}")
_LANGUAGE = re.compile(r"[a-z]{2}")
_ZONE = re.compile(r"[A-Za-z][A-Za-z0-9_+/-]{0,63}")
_SOUND = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./:@+=%,()-]{0,255}")
_IVR_DIGITS = "0123456789*#"


# --- errors ------------------------------------------------------------------------

class CallGone(Exception):
    """The channel hung up, or the connection to FreeSWITCH is gone.

    ``reason`` is ``"hangup"`` (``cause`` holds the Hangup-Cause),
    ``"disconnected"`` (notice or EOF) or ``"protocol_error"``.
    """

    def __init__(self, reason: str, cause: str | None = None, detail: str = ""):
        super().__init__(f"{reason}{f' ({cause})' if cause else ''}{f': {detail}' if detail else ''}")
        self.reason = reason
        self.cause = cause
        self.detail = detail


class CallTimeout(Exception):
    """FreeSWITCH did not answer in time (the waiter stays registered, so a late
    reply is still matched to its own command)."""


class CommandError(Exception):
    """FreeSWITCH answered a command with ``-ERR ...``."""


# --- sans-IO protocol ----------------------------------------------------------------

class Waiter:
    """Something we wait for: a command reply or one application's completion."""

    __slots__ = ("what", "result", "error", "done")

    def __init__(self, what: str):
        self.what = what
        self.result: Message | Event | None = None
        self.error: BaseException | None = None
        self.done = False

    def resolve(self, result) -> None:
        if not self.done:
            self.result, self.done = result, True

    def fail(self, error: BaseException) -> None:
        if not self.done:
            self.error, self.done = error, True

    def value(self):
        if self.error is not None:
            raise self.error
        return self.result


_REPLY_TYPES = ("command/reply", "api/response")
_HANGUP_EVENTS = ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE", "CHANNEL_DESTROY")

#: Events ``myevents`` subscribes to that the protocol never reads (it needs
#: CHANNEL_EXECUTE_COMPLETE, CHANNEL_ANSWER, CHANNEL_BRIDGE and CHANNEL_HANGUP,
#: which always comes first of the hangup events).  ``nixevent`` with these
#: right after ``myevents`` spares FreeSWITCH and us more than half of every
#: call's event bytes: ~2.5-5.5 KB per event, ~15 events per bridged call.
UNUSED_EVENTS = ("CHANNEL_CREATE", "CHANNEL_DATA", "CHANNEL_EXECUTE", "CHANNEL_APPLICATION",
                 "CHANNEL_ORIGINATE", "CHANNEL_UUID", "CHANNEL_OUTGOING", "CHANNEL_PARK",
                 "CHANNEL_UNPARK", "CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA", "CHANNEL_STATE",
                 "CHANNEL_UNBRIDGE", "CHANNEL_HANGUP_COMPLETE", "DETECTED_SPEECH", "DTMF",
                 "NOTALK", "TALK")


class CallProtocol:
    """The state of one outbound ESL connection, fed with bytes, no sockets."""

    def __init__(self) -> None:
        self.parser = EslParser()
        self._replies: deque[Waiter] = deque()
        self._apps: dict[str, Waiter] = {}
        self.uuid: str | None = None          # the channel's Unique-ID, from connect
        self.answered = False
        self.bridged: Event | None = None     # the CHANNEL_BRIDGE event, once seen
        self.hangup_cause: str | None = None
        self.lingering = False
        self.closed: CallGone | None = None   # set once the connection is finished
        self._closers: list[Waiter] = []

    # waiters
    def expect_reply(self) -> Waiter:
        waiter = Waiter("reply")
        if self.closed is not None:
            waiter.fail(self.closed)
        else:
            self._replies.append(waiter)
        return waiter

    def expect_completion(self, app_uuid: str, app: str) -> Waiter:
        waiter = Waiter(f"{app} to complete")
        if self.closed is not None:
            waiter.fail(self.closed)
        elif self.hangup_cause is not None:
            waiter.fail(CallGone("hangup", self.hangup_cause))
        else:
            self._apps[app_uuid] = waiter
        return waiter

    def expect_close(self) -> Waiter:
        """Resolved (with None) once the connection is finished."""
        waiter = Waiter("end of connection")
        if self.closed is not None:
            waiter.resolve(None)
        else:
            self._closers.append(waiter)
        return waiter

    # input
    def feed(self, data: bytes) -> list[Message]:
        """Parse ``data`` and dispatch it; a malformed frame fails every waiter
        and raises :class:`CallGone` ``("protocol_error")``."""
        try:
            messages = self.parser.feed(data)
        except EslProtocolError as exc:
            for message in exc.messages:
                self.dispatch(message)
            gone = CallGone("protocol_error", detail=str(exc)[:200])
            self._close(gone)
            raise gone from exc
        for message in messages:
            self.dispatch(message)
        return messages

    def eof(self) -> None:
        self._close(CallGone("disconnected", self.hangup_cause, "connection closed by FreeSWITCH"))

    def dispatch(self, message: Message) -> None:
        content_type = message.content_type
        if content_type in _REPLY_TYPES:
            if message.event is not None and self.uuid is None:  # the connect reply
                self.uuid = message.event.get("Unique-ID")
                if message.event.get("Answer-State") == "answered":
                    self.answered = True
            if self._replies:
                self._replies.popleft().resolve(message)
        elif content_type == "text/disconnect-notice":
            if message.get("Content-Disposition") == "linger":
                self.lingering = True
            else:
                self._close(CallGone("disconnected", self.hangup_cause, "disconnect notice"))
        elif message.event is not None:
            self._on_event(message.event)

    def _on_event(self, event: Event) -> None:
        name = event.name
        if self.uuid is not None and event.get("Unique-ID") not in (None, self.uuid):
            return  # not our channel (myevents should prevent this)
        if name == "CHANNEL_EXECUTE_COMPLETE":
            waiter = self._apps.pop(event.get("Application-UUID") or "", None)
            if waiter is not None:
                waiter.resolve(event)
        elif name == "CHANNEL_ANSWER":
            self.answered = True
        elif name == "CHANNEL_BRIDGE":
            self.bridged = event
        elif name in _HANGUP_EVENTS and self.hangup_cause is None:
            self.hangup_cause = event.get("Hangup-Cause") or event.get("variable_hangup_cause") \
                or "NORMAL_CLEARING"
            gone = CallGone("hangup", self.hangup_cause)
            for waiter in self._apps.values():
                waiter.fail(gone)
            self._apps.clear()

    def _close(self, gone: CallGone) -> None:
        if self.closed is None:
            self.closed = gone
        for waiter in list(self._replies) + list(self._apps.values()):
            waiter.fail(self.closed)
        for waiter in self._closers:
            waiter.resolve(None)
        self._replies.clear()
        self._apps.clear()
        self._closers.clear()


# --- the channel over a socket ---------------------------------------------------------

_UUID_RANDOM = random.Random(uuid_module.uuid4().int)
_UUID_VERSION_4 = (0x4000 << 64) | (0x8000 << 48)
_UUID_FIXED_BITS = ~((0xF000 << 64) | (0xC000 << 48))


def _event_uuid() -> str:
    """A random version-4 UUID for an application's ``Event-UUID``.  It only
    has to tell this connection's applications apart (FreeSWITCH echoes it as
    ``Application-UUID``), so it comes from a PRNG seeded once from
    ``os.urandom`` instead of a ``getrandom()`` syscall per application."""
    n = _UUID_RANDOM.getrandbits(128) & _UUID_FIXED_BITS | _UUID_VERSION_4
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class CallChannel:
    """One outbound ESL connection: send commands, wait for what they cause.

    ``sock`` is a connected socket (gevent's or the standard library's); it is
    owned from now on.  ``timeout`` bounds command replies; application waits
    take their own.  ``on_wire(direction, data)`` sees every byte sent
    (``">>>"``) and received (``"<<<"``), for tests and debugging;
    ``new_uuid()`` makes each application's Event-UUID.
    """

    def __init__(self, sock, *, timeout: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 on_wire: Callable[[str, bytes], None] | None = None,
                 new_uuid: Callable[[], str] = lambda: _event_uuid()):
        self.sock = sock
        self.timeout = timeout
        self.clock = clock
        self.on_wire = on_wire
        self.new_uuid = new_uuid
        self.protocol = CallProtocol()

    # state
    @property
    def uuid(self) -> str | None:
        return self.protocol.uuid

    @property
    def answered(self) -> bool:
        return self.protocol.answered

    @property
    def bridged(self) -> Event | None:
        return self.protocol.bridged

    @property
    def hangup_cause(self) -> str | None:
        return self.protocol.hangup_cause

    @property
    def closed(self) -> bool:
        return self.protocol.closed is not None

    # low level
    def send(self, data: bytes) -> None:
        if self.protocol.closed is not None:
            raise self.protocol.closed
        if self.on_wire is not None:
            self.on_wire(">>>", data)
        try:
            sock = self.sock
            sock.settimeout(self.timeout)
            # A command is a few hundred bytes: one send() takes it whole.
            # sendall() only for the rest, if any (gevent's sendall costs
            # several Python-level calls even when one send suffices).
            sent = sock.send(data)
            if sent < len(data):
                sock.sendall(memoryview(data)[sent:])
        except OSError as exc:  # includes socket.timeout
            gone = CallGone("disconnected", self.protocol.hangup_cause, f"send failed: {exc}")
            self.protocol._close(gone)
            raise self.protocol.closed from exc

    def wait(self, waiter: Waiter, timeout: float):
        """Read until ``waiter`` is done; :class:`CallTimeout` after ``timeout`` s."""
        deadline = self.clock() + timeout
        while not waiter.done:
            if self.protocol.closed is not None:
                waiter.fail(self.protocol.closed)
                break
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise CallTimeout(f"no {waiter.what} within {timeout:g} s")
            try:
                self.sock.settimeout(remaining)
                data = self.sock.recv(65536)
            except socket.timeout:
                raise CallTimeout(f"no {waiter.what} within {timeout:g} s") from None
            except OSError:
                data = b""
            if self.on_wire is not None and data:
                self.on_wire("<<<", data)
            if not data:
                self.protocol.eof()
                break
            self.protocol.feed(data)
            data = None  # not held while blocked in the next recv: a few KiB per waiting call
        return waiter.value()

    # commands
    def command(self, line: str, timeout: float | None = None) -> Message:
        """A socket command (``connect``, ``myevents``, ``linger``...); its reply."""
        return self.commands((line,), timeout)[0]

    def commands(self, lines, timeout: float | None = None) -> list[Message]:
        """Socket commands in one write; their replies, in order (mod_event_socket
        reads and answers one command after the other, so no round trip per
        command is needed)."""
        return self.replies(lines, self.send_commands(lines), timeout)

    def send_commands(self, lines) -> list[Waiter]:
        """The sending half of :meth:`commands`: work can go on while FreeSWITCH
        answers; pass the waiters to :meth:`replies` before anything else waits."""
        data = b"".join(encode_command(line) for line in lines)
        waiters = [self.protocol.expect_reply() for _ in lines]
        self.send(data)
        return waiters

    def replies(self, lines, waiters: list[Waiter], timeout: float | None = None) -> list[Message]:
        """The replies to :meth:`send_commands`.  Every one is read before the
        first ``-ERR`` raises :class:`CommandError`, so none is left to a later waiter."""
        limit = self.timeout if timeout is None else timeout
        replies = [self.wait(waiter, limit) for waiter in waiters]
        for line, reply in zip(lines, replies):
            text = reply.reply_text or ""
            if text.startswith("-ERR"):
                raise CommandError(f"{line.split()[0]}: {text}")
        return replies

    def connect(self, timeout: float | None = None) -> Event:
        """``connect``: the channel's CHANNEL_DATA."""
        return self.channel_data(self.command("connect", timeout))

    @staticmethod
    def channel_data(reply: Message) -> Event:
        """The CHANNEL_DATA of a ``connect`` reply."""
        if reply.event is None:
            raise CommandError(f"connect: no channel data in the reply ({reply.reply_text!r})")
        return reply.event

    def start(self, app: str, arg: str | None = None) -> Waiter:
        """Send ``sendmsg execute`` with event-lock and an Event-UUID; returns the
        waiter for its CHANNEL_EXECUTE_COMPLETE once FreeSWITCH accepted it."""
        return self.start_all(((app, arg),))[0]

    def start_all(self, apps) -> list[Waiter]:
        """:meth:`start` for several ``(app, arg)`` in one write: event-lock runs
        them one after the other, in order.  Returns their completion waiters
        once FreeSWITCH accepted every one; a ``-ERR`` (checked after all
        replies are read) drops them all."""
        if self.protocol.hangup_cause is not None:
            raise CallGone("hangup", self.protocol.hangup_cause)
        uuids = [self.new_uuid() for _ in apps]
        data = b"".join(encode_sendmsg(None, app, arg, event_lock=True, event_uuid=app_uuid)
                        for (app, arg), app_uuid in zip(apps, uuids))
        completions = [self.protocol.expect_completion(app_uuid, app)
                       for (app, _), app_uuid in zip(apps, uuids)]
        replies = [self.protocol.expect_reply() for _ in apps]
        self.send(data)
        texts = [self.wait(reply, self.timeout).reply_text or "" for reply in replies]
        for (app, _), text in zip(apps, texts):
            if text.startswith("-ERR"):
                for app_uuid in uuids:
                    self.protocol._apps.pop(app_uuid, None)
                if self.protocol.hangup_cause is not None:
                    raise CallGone("hangup", self.protocol.hangup_cause)
                raise CommandError(f"{app}: {text}")
        return completions

    def execute(self, app: str, arg: str | None = None, *, timeout: float) -> Event:
        """Run ``app`` and return its CHANNEL_EXECUTE_COMPLETE event."""
        return self.wait(self.start(app, arg), timeout)

    def hangup_now(self, cause: str = "NORMAL_CLEARING") -> None:
        """``sendmsg call-command: hangup`` — ends the call even while an
        application runs.  Best effort: errors are swallowed."""
        if not _CAUSE.fullmatch(cause):
            cause = "NORMAL_CLEARING"
        try:
            waiter = self.protocol.expect_reply()
            self.send(f"sendmsg\ncall-command: hangup\nhangup-cause: {cause}\n\n".encode())
            self.wait(waiter, self.timeout)
        except (CallGone, CallTimeout, CommandError):
            pass

    def exit(self, timeout: float = 2.0) -> None:
        """``exit`` and read to EOF (bounded); never raises."""
        if self.protocol.closed is None:
            try:
                self.command("exit", timeout)
                self.wait(self.protocol.expect_close(), timeout)
            except (CallGone, CallTimeout, CommandError):
                pass
        self.close()

    def close(self) -> None:
        if self.protocol.closed is None:
            self.protocol._close(CallGone("disconnected", self.protocol.hangup_cause, "closed by us"))
        try:
            self.sock.close()
        except OSError:
            pass


# --- the call ----------------------------------------------------------------------

@dataclass(frozen=True)
class CallInfo:
    """Who calls whom, validated from the CHANNEL_DATA of the ``connect`` reply.

    ``called`` is ``variable_switchboard_called`` (set by our dialplan), else
    ``Caller-Destination-Number``, else ``variable_sip_req_user`` — or ``""``
    when that is not a dialable number (it is
    never passed to the engine then: ``ivr:...`` or ``then:...`` from a SIP
    URI must not reach internal addresses).  ``caller`` is who the engine
    routes for: the authenticated directory user for a registered phone, else
    the caller-ID number — except that an *unauthenticated* caller ID that
    looks like an extension is ignored, so nobody outside can pose as an
    employee (and e.g. dial out through the gateway).  ``caller_number`` and
    ``caller_name`` are what is shown to the callee.
    """

    uuid: str
    called: str
    caller: str
    caller_number: str
    caller_name: str
    authenticated: bool = False
    raw_called: str = ""
    notes: tuple[str, ...] = ()

    @classmethod
    def from_channel_data(cls, data: Event) -> CallInfo:
        notes = []
        channel_uuid = data.get("Unique-ID") or data.get("Channel-Unique-ID") or ""
        if not _UUID.fullmatch(channel_uuid):
            notes.append("channel UUID missing or malformed")
            channel_uuid = ""
        # switchboard_called: set by our dialplan (freeswitch_conf) to the number in
        # E.164 digits or the extension, whatever form the carrier sent.
        raw_called = next((value.strip() for value in (
            data.get("variable_switchboard_called"), data.get("Caller-Destination-Number"),
            data.get("variable_sip_req_user")) if value and value.strip()), "")
        called = raw_called if _CALLED.fullmatch(raw_called) else ""
        if raw_called and not called:
            notes.append("destination is not a dialable number")
        number = dial_string.clean_caller_number(data.get("Caller-Caller-ID-Number"))
        raw_number = data.get("Caller-Caller-ID-Number") or ""
        if raw_number and not number:
            notes.append("caller ID number malformed: anonymous")
        name = dial_string.clean_caller_name(data.get("Caller-Caller-ID-Name"))
        user = data.get("variable_user_name") or data.get("variable_sip_auth_username") or ""
        authenticated = (data.get("variable_sip_authorized") == "true"
                         and bool(_EXTENSION_LIKE.fullmatch(user)))
        if authenticated:
            caller = user
        elif number and _EXTENSION_LIKE.fullmatch(number):
            caller = ""
            notes.append(f"unauthenticated caller ID {number} looks like an extension: routed as anonymous")
        else:
            caller = number
        return cls(channel_uuid, called, caller, number, name, authenticated,
                   dial_string.clean_caller_name(raw_called) if not called else raw_called, tuple(notes))


@dataclass
class CallReport:
    """What happened to one call; :func:`log_call` writes it as one line."""

    uuid: str = ""
    called: str = ""
    caller: str = ""
    company: str = ""
    reasons: list[str] = field(default_factory=list)
    outcome: str = "unknown"     # answered | voicemail | fax | hangup | caller_hung_up | disconnected
                                 # | detached | step_limit | error | timeout
    detail: str = ""
    steps: int = 0
    decisions: int = 0
    started: float = field(default_factory=time.monotonic)
    notes: list[str] = field(default_factory=list)

    def finish(self, outcome: str, detail: str = "") -> None:
        self.outcome, self.detail = outcome, detail


_KEY_SAFE = re.compile(r"[A-Za-z0-9_.:+@/#*-]*")


def _kv(value) -> str:
    text = str(value)
    return text if text and _KEY_SAFE.fullmatch(text) else json.dumps(text, ensure_ascii=False)


def log_call(report: CallReport, logger: logging.Logger = LOG, **extra) -> None:
    """One line per call: ``call uuid=… called=… caller=… outcome=… detail="…" reasons="a | b"``.
    Values are JSON-quoted when they hold anything but plain tokens, so a
    caller-controlled value can never start a new log line."""
    fields = {
        "uuid": report.uuid or "-", "called": report.called or "-", "caller": report.caller or "anonymous",
        "company": report.company or "-", "outcome": report.outcome, "detail": report.detail,
        "steps": report.steps, "decisions": report.decisions,
        "ms": int((time.monotonic() - report.started) * 1000),
        "reasons": " | ".join(report.reasons), **extra,
    }
    if report.notes:
        fields["notes"] = "; ".join(report.notes)
    logger.info("call " + " ".join(f"{k}={_kv(v)}" for k, v in fields.items()))


# --- outcomes of a failed bridge ---------------------------------------------------------

BUSY_CAUSES = frozenset({"USER_BUSY", "CALL_REJECTED"})
NO_ANSWER_CAUSES = frozenset({"NO_ANSWER", "NO_USER_RESPONSE", "ORIGINATOR_CANCEL",
                              "ALLOTTED_TIMEOUT", "PROGRESS_TIMEOUT"})
UNREACHABLE_CAUSES = frozenset({"USER_NOT_REGISTERED", "SUBSCRIBER_ABSENT", "NO_ROUTE_DESTINATION",
                                "UNALLOCATED_NUMBER", "DESTINATION_OUT_OF_ORDER",
                                "NORMAL_TEMPORARY_FAILURE", "RECOVERY_ON_TIMER_EXPIRE"})
#: switch_ivr_originate()'s DIALSTATUS words back to causes.
DIALSTATUS_CAUSES = {"BUSY": "USER_BUSY", "NOANSWER": "NO_ANSWER", "DONTCALL": "CALL_REJECTED",
                     "CANCEL": "ORIGINATOR_CANCEL", "CHANUNAVAIL": "DESTINATION_OUT_OF_ORDER",
                     "CONGESTION": "NORMAL_TEMPORARY_FAILURE", "INVALIDARGS": "DESTINATION_OUT_OF_ORDER"}


def _kind(cause: str) -> str | None:
    if cause in BUSY_CAUSES:
        return "busy"
    if cause in NO_ANSWER_CAUSES:
        return "no_answer"
    if cause in UNREACHABLE_CAUSES:
        return "unreachable"
    return None


def classify_failure(event: Event | None) -> tuple[str, str]:
    """``(kind, cause)`` of a bridge that ended without an answer, from its
    CHANNEL_EXECUTE_COMPLETE: ``variable_originate_disposition`` first, then
    ``variable_bridge_hangup_cause``, then ``variable_DIALSTATUS``.  ``kind``
    is ``busy``, ``no_answer`` or ``unreachable``; an unknown cause counts as
    unreachable (the phone could not be reached, whatever the reason).
    ``ORIGINATOR_CANCEL`` here means the callee side cancelled: a caller who
    hangs up is seen as a hangup before this is ever asked."""
    if event is None:
        return "unreachable", "NORMAL_TEMPORARY_FAILURE"
    first_unknown = None
    for name in ("variable_originate_disposition", "variable_bridge_hangup_cause"):
        cause = (event.get(name) or "").strip().upper()
        if not cause or cause in ("FAILURE", "SUCCESS", "NONE"):
            continue
        kind = _kind(cause)
        if kind:
            return kind, cause
        first_unknown = first_unknown or cause
    status = (event.get("variable_DIALSTATUS") or "").strip().upper()
    cause = DIALSTATUS_CAUSES.get(status, status)
    kind = _kind(cause)
    if kind:
        return kind, cause
    return "unreachable", first_unknown or (cause if _CAUSE.fullmatch(cause or "") else "NORMAL_TEMPORARY_FAILURE")


# --- the executor ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ExecutorSettings:
    gateway: str = "carrier"
    on_first_plan: Callable | None = None   # hook(call, plan) after the first decision (esl_app/icm_requests)
    fax_spool: str = "/var/spool/switchboard/fax"
    invalid_sound: str = "ivr/ivr-that_was_an_invalid_entry.wav"
    ivr_variable: str = "switchboard_ivr_choice"
    max_steps: int = 50                   # hop safety: steps per call, re-decisions included
    command_timeout: float = 10.0         # answer, set, hangup
    playback_timeout: float = 300.0       # one announcement
    ring_slack: float = 30.0              # beyond the ring step's own timeout
    max_call_seconds: float = 4 * 3600.0  # a bridged conversation; then it is left to FreeSWITCH
    voicemail_timeout: float = 1200.0
    fax_timeout: float = 1800.0


STEP_LIMIT_CAUSE = "RECOVERY_ON_TIMER_EXPIRE"
#: Set before the first bridge, in one application (mod_dptools' ``multiset``:
#: space-separated ``var=value`` pairs): a failed leg leaves the caller with us,
#: and the end of an answered bridge ends the call.
BRIDGE_VARIABLES = ("multiset", "continue_on_fail=true hangup_after_bridge=true")


class _Finished(Exception):
    """The call is over (for us); carries the outcome."""

    def __init__(self, outcome: str, detail: str = ""):
        super().__init__(outcome)
        self.outcome, self.detail = outcome, detail


class Executor:
    """Runs route plans on one call until it is answered, diverted to a
    terminal step, hung up, or the caller leaves.

    ``decide(store, called, caller, now)`` is the engine (``fastpath.engine.decide``);
    ``clock()`` gives ``now`` for IVR and continuation decisions.
    """

    def __init__(self, channel: CallChannel, store, call: CallInfo, *, decide: Callable,
                 clock: Callable[[], float] = time.time, settings: ExecutorSettings | None = None,
                 report: CallReport | None = None):
        self.channel = channel
        self.store = store
        self.call = call
        self.decide = decide
        self.clock = clock
        self.settings = settings or ExecutorSettings()
        self.report = report or CallReport(uuid=call.uuid, called=call.called or call.raw_called,
                                           caller=call.caller)
        self.report.notes.extend(n for n in call.notes if n not in self.report.notes)
        self._bridge_ready = False
        self._domains: dict[str, str | None] = {}
        self._ivr_visits = 0
        self._last_failure: str | None = None
        self._company = ""
        self._ring_targets: tuple = ()

    # entry points
    def first_plan(self) -> RoutePlan:
        """The engine's plan for this call (or a refusal for a bad destination)."""
        if not self.call.called:
            return RoutePlan(self.call.raw_called, self.call.caller, int(self.clock()), "", (Hangup(
                "UNALLOCATED_NUMBER", "destination is not a dialable number"),))
        if feature_codes.is_feature_code(self.call.called):
            return feature_codes.handle(self.store, self.call.called, self.call.caller, self.call.authenticated,
                                        self.clock())
        self.report.decisions += 1
        plan = self.decide(self.store, self.call.called, self.call.caller, self.clock())
        hook = self.settings.on_first_plan
        if hook is not None:
            try:
                hook(self.call, plan)
            except Exception:           # a side job (e.g. queueing a CRM lookup) never breaks a call
                LOG.exception("uuid=%s on_first_plan hook failed", self.call.uuid)
        return plan

    def run(self, plan: RoutePlan | None = None) -> CallReport:
        """Execute ``plan`` (default: :meth:`first_plan`) to the end; the report
        says how the call ended.  Never raises for call events; programming
        errors propagate after the report says ``error``."""
        report = self.report
        try:
            if plan is None:
                plan = self.first_plan()
            self._run(plan)
            # Plan exhausted with the caller still there: nobody took the call.
            cause = self._last_failure or "NORMAL_CLEARING"
            self._hangup(cause, "plan ended")
        except _Finished as done:
            report.finish(done.outcome, done.detail)
        except CallGone as gone:
            report.finish(*self._gone_outcome(gone))
        except CallTimeout as exc:
            report.finish("timeout", str(exc))
            self.channel.hangup_now("RECOVERY_ON_TIMER_EXPIRE")
        except CommandError as exc:
            report.finish("error", str(exc))
            self.channel.hangup_now("NORMAL_TEMPORARY_FAILURE")
        except Exception as exc:
            report.finish("error", f"{type(exc).__name__}: {exc}")
            raise
        return report

    def _gone_outcome(self, gone: CallGone) -> tuple[str, str]:
        if self.channel.bridged is not None:
            return "answered", self._answered_by()
        if gone.reason == "hangup":
            return "caller_hung_up", gone.cause or ""
        return gone.reason, gone.detail

    # the loop
    def _run(self, plan: RoutePlan) -> None:
        self._adopt(plan)
        queue = deque(plan.steps)
        while queue:
            step = queue.popleft()
            self.report.steps += 1
            if self.report.steps > self.settings.max_steps:
                self.report.notes.append(f"more than {self.settings.max_steps} steps: stopped")
                self._hangup(STEP_LIMIT_CAUSE, "step limit", outcome="step_limit")
            self.report.reasons.append(step.reason)
            action = step.action
            if action == "announce":
                self._announce(step)
            elif action == "say":
                self._say(step)
            elif action == "ring":
                sub = self._ring(step)
                if sub is not None:
                    queue = deque(sub)
            elif action == "ivr":
                queue = deque(self._redecide(self._ivr(step)).steps)
            elif action == "continue":
                queue = deque(self._redecide(step.address).steps)
            elif action == "voicemail":
                self._voicemail(step)
            elif action == "fax":
                self._fax(step)
            elif action == "hangup":
                self._hangup(step.cause, step.reason)
            else:
                self.report.notes.append(f"unknown step {action!r} skipped")

    def _adopt(self, plan: RoutePlan) -> None:
        if plan.company:
            self.report.company = self.report.company or plan.company
            self._company = plan.company

    def _redecide(self, address: str) -> RoutePlan:
        self.report.decisions += 1
        plan = self.decide(self.store, address, self.call.caller, self.clock())
        self._adopt(plan)
        return plan

    def _domain(self) -> str | None:
        company = self._company
        if company not in self._domains:
            self._domains[company] = dial_string.company_sip_domain(self.store, company)
        return self._domains[company]

    # helpers
    def _execute(self, app: str, arg: str | None, timeout: float) -> Event:
        return self.channel.execute(app, arg, timeout=timeout)

    def _ensure_answered(self) -> None:
        if not self.channel.answered:
            self._execute("answer", None, self.settings.command_timeout)

    def _sound(self, sound: str) -> str | None:
        if isinstance(sound, str) and _SOUND.fullmatch(sound):
            return sound
        self.report.notes.append(f"unplayable sound {sound!r} skipped")
        return None

    # steps
    def _announce(self, step) -> None:
        sound = self._sound(step.sound)
        if sound is None:
            return
        self._ensure_answered()
        self._execute("playback", sound, self.settings.playback_timeout)

    def _say(self, step) -> None:
        """A phrase macro (e.g. ``referral_status``): times said in the step's zone, in its language."""
        if not (_PHRASE.fullmatch(step.phrase) and _PHRASE_DATA.fullmatch(step.data)
                and _LANGUAGE.fullmatch(step.language) and _ZONE.fullmatch(step.timezone)):
            self.report.notes.append(f"unsayable phrase {step.phrase!r} ({step.data!r}) skipped")
            return
        self._ensure_answered()
        self._execute("multiset", f"timezone={step.timezone} default_language={step.language}",
                      self.settings.command_timeout)
        self._execute("phrase", f"{step.phrase},{step.data}", self.settings.playback_timeout)

    def _ivr(self, step) -> str:
        """Play the menu, collect one digit; the address to decide next."""
        self._ensure_answered()
        self._ivr_visits += 1
        variable = f"{self.settings.ivr_variable}_{self._ivr_visits}"
        greeting = self._sound(step.greeting) or "silence_stream://250"
        invalid = self._sound(self.settings.invalid_sound) or "silence_stream://250"
        digits = "".join(d for d, _ in step.options if len(d) == 1 and d in _IVR_DIGITS)
        tries = max(1, int(step.retries))
        timeout_ms = max(1, int(step.timeout)) * 1000
        arg = ivr_arguments(digits, tries, timeout_ms, greeting, invalid, variable)
        wait = tries * (step.timeout + self.settings.playback_timeout) + self.settings.command_timeout
        done = self._execute("play_and_get_digits", arg, wait)
        typed = done.get(f"variable_{variable}") or ""
        result = done.get("variable_read_result") or ""
        menu = step.menu
        if len(typed) == 1 and typed in digits:
            self.report.notes.append(f"IVR {menu}: caller pressed {typed}")
            return f"ivr:{menu}/{typed}"
        if typed or result == "failure" or done.get(f"variable_{variable}_invalid"):
            self.report.notes.append(f"IVR {menu}: invalid choice")
            return f"ivr:{menu}/invalid"
        self.report.notes.append(f"IVR {menu}: no choice")
        return f"ivr:{menu}/timeout"

    def _ring(self, step):
        """Bridge; returns the fallback sub-plan, or None for "next step"."""
        try:
            dial = dial_string.build_dial_string(
                step, sip_domain=self._domain(), gateway=self.settings.gateway,
                caller_number=self.call.caller_number, caller_name=self.call.caller_name)
        except dial_string.DialStringError as exc:
            self.report.notes.append(f"cannot dial: {exc}")
            self._last_failure = "NORMAL_TEMPORARY_FAILURE"
            return step.on_unreachable
        apps = [("bridge", dial)]
        if not self._bridge_ready:   # sent with the first bridge, in one write
            apps.insert(0, BRIDGE_VARIABLES)
        self._ring_targets = step.targets
        waiters = self.channel.start_all(apps)
        waiter = waiters.pop()
        if waiters:   # the multiset; its completion (a few KiB) is not kept for the call
            self.channel.wait(waiters.pop(), self.settings.command_timeout)
        self._bridge_ready = True
        try:
            done = self.channel.wait(waiter, step.timeout + self.settings.ring_slack)
        except CallTimeout:
            if self.channel.bridged is None:
                raise
            try:  # talking: wait for the end of the conversation, within reason
                done = self.channel.wait(waiter, self.settings.max_call_seconds)
            except CallTimeout:
                raise _Finished("answered", self._answered_by() + "; detached after max_call_seconds")
        if self.channel.bridged is not None or (done.get("variable_originate_disposition") == "SUCCESS"):
            raise _Finished("answered", self._answered_by(done))
        kind, cause = classify_failure(done)
        self._last_failure = cause
        self.report.notes.append(f"ring failed: {kind} ({cause})")
        return getattr(step, f"on_{kind}")

    def _answered_by(self, done: Event | None = None) -> str:
        bridge = self.channel.bridged or done
        if bridge is None:
            return "unknown"
        channel_name = bridge.get("Other-Leg-Channel-Name") or bridge.get("variable_bridge_channel") or ""
        destination = bridge.get("Other-Leg-Destination-Number") or ""
        dialed_user = bridge.get("variable_dialed_user") or ""
        for target in self._ring_targets:
            if target.kind == "extension":
                if f"/{target.number}@" in channel_name or destination == target.number:
                    return f"ext {target.number}" + (f" ({target.name})" if target.name else "")
            elif target.number and target.number in (channel_name + " " + destination):
                return f"+{target.number}" + (f" ({target.name})" if target.name else "")
        if dialed_user:
            return f"ext {dial_string.clean_caller_name(dialed_user)}"
        return dial_string.clean_caller_name(channel_name) or "unknown"

    def _voicemail(self, step) -> None:
        box = step.box
        domain = self._domain()
        if not _DIGITS.fullmatch(box or "") or domain is None:
            self.report.notes.append(f"voicemail box {box!r} / domain {domain!r} unusable")
            self._hangup("NORMAL_TEMPORARY_FAILURE", "voicemail unusable")
        self._ensure_answered()
        try:
            self._execute("voicemail", f"default {domain} {box}", self.settings.voicemail_timeout)
        except CallGone as gone:  # leaving a message ends with the caller hanging up
            raise _Finished("voicemail", f"box {box}; caller hung up ({gone.cause or gone.reason})")
        self._hangup("NORMAL_CLEARING", "after voicemail", outcome="voicemail", detail=f"box {box}")

    def _fax(self, step) -> None:
        ext = step.extension
        uuid = self.channel.uuid or self.call.uuid
        if not _DIGITS.fullmatch(ext or "") or not _UUID.fullmatch(uuid or ""):
            self.report.notes.append(f"fax for {ext!r} unusable")
            self._hangup("NORMAL_TEMPORARY_FAILURE", "fax unusable")
        spool = self.settings.fax_spool.rstrip("/")
        path = f"{spool}/{uuid}-{ext}.tif"
        self._ensure_answered()
        try:
            done = self._execute("rxfax", path, self.settings.fax_timeout)
        except CallGone as gone:
            if gone.cause == "DESTINATION_OUT_OF_ORDER":
                self.report.notes.append("rxfax refused: is mod_spandsp loaded? (see FREESWITCH-NOTES)")
            raise _Finished("fax", f"ext {ext} -> {path}; call ended ({gone.cause or gone.reason})")
        result = done.get("variable_fax_success")
        detail = f"ext {ext} -> {path}" + (f" fax_success={result}" if result else "")
        self._hangup("NORMAL_CLEARING", "after fax", outcome="fax", detail=detail)

    def _hangup(self, cause: str, why: str, *, outcome: str = "hangup", detail: str | None = None) -> None:
        """Hang up with ``cause``; always ends the run (raises :class:`_Finished`)."""
        if not _CAUSE.fullmatch(cause or ""):
            self.report.notes.append(f"bad hangup cause {cause!r}: NORMAL_CLEARING")
            cause = "NORMAL_CLEARING"
        try:
            self._execute("hangup", cause, self.settings.command_timeout)
        except CallGone:
            pass
        except CallTimeout:
            self.channel.hangup_now(cause)
        raise _Finished(outcome, cause if detail is None else detail)


def ivr_arguments(digits: str, tries: int, timeout_ms: int, greeting: str, invalid: str,
                  variable: str) -> str:
    """``play_and_get_digits`` argument: exactly one digit from ``digits``.

    ``min max tries timeout terminators file invalid_file var regexp digit_timeout``;
    terminators ``none`` (so ``#`` can be a choice); the regexp is a character
    class of the option digits (``^[12*#]$``): no backslashes, which
    FreeSWITCH's variable expansion would eat, and no spaces, which would
    split the argument.
    """
    chosen = "".join(sorted(set(d for d in digits if d in _IVR_DIGITS), key=_IVR_DIGITS.index))
    pattern = f"^[{chosen}]$" if chosen else "^$"   # no options: nothing is valid
    return f"1 1 {tries} {timeout_ms} none {greeting} {invalid} {variable} {pattern} {timeout_ms}"
