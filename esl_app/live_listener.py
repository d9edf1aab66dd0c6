"""Keeps the store's presence true: one inbound Event Socket connection to FreeSWITCH.

:class:`LiveListener` connects to mod_event_socket, authenticates, subscribes::

    event plain CHANNEL_CREATE CHANNEL_ANSWER CHANNEL_BRIDGE CHANNEL_HANGUP_COMPLETE
                HEARTBEAT BACKGROUND_JOB CUSTOM sofia::register sofia::unregister sofia::expire

(``CUSTOM`` must come last: mod_event_socket reads every word after it as a
subclass name, so ``CUSTOM sofia::register CHANNEL_CREATE`` would subscribe to a
CUSTOM subclass called "CHANNEL_CREATE"), then takes a snapshot and follows the
events.  The bookkeeping lives in :class:`PresenceTracker`, which never touches
a socket, so recorded FreeSWITCH events can be replayed through it in tests.

Resync without losing events
    Subscribing comes *before* the snapshot (``api show registrations as json``
    and ``api show channels as json``, pipelined).  Every event that arrives
    from the subscription until both replies are in -- before them, or held
    back by FreeSWITCH while the blocking ``api`` ran and sent right after its
    reply -- is buffered.  The snapshot then becomes the base state and the
    buffered events are replayed over it in arrival order, and only the result
    is written, with one ``store.replace_live``.  Replay is safe whichever side
    of the snapshot an event really fell on: registrations are keyed by SIP
    Call-ID and channels by UUID, so applying an event the snapshot already
    reflects changes nothing, and one the snapshot missed (``show
    registrations`` lags ~0.5 s behind a REGISTER, ``show channels`` fills
    asynchronously) is put right.  ``snapshot_delay`` (default 1 s) waits,
    still buffering, before asking, so a REGISTER completed just before we
    subscribed has reached the tables.

Extension identification (the directory user, never the contact user, which
phones may set to ``1000-0x564ebc1854b0``)
    * ``sofia::register`` / ``sofia::unregister``: ``from-user`` (sofia's
      ``to_user``: the user that ``user/…`` dialling and ``show registrations``'
      ``reg_user`` go by), else ``username`` (the digest user); ``sofia::expire``
      carries it as ``user``.  All three carry ``call-id``.
    * A channel belongs to one employee at most.  ``Call-Direction: outbound``
      (a leg FreeSWITCH originated, e.g. ``user/2001``): ``variable_dialed_user``.
      ``inbound`` (a phone calling): ``variable_sip_auth_username``, else
      ``variable_user_name``.  ``dialed_user`` is deliberately not read on
      inbound legs: FreeSWITCH copies it onto the A leg that bridges to
      ``user/…``, and an external caller must not make the callee count twice.
    * Snapshot rows (``show channels`` has no variables): the user part of
      ``presence_id`` (``user/…`` legs get ``<dialed_user>@<domain>``), and on
      inbound rows also ``accountcode``.

Throughput (``tests/test_live_listener.py::test_throughput`` measures and prints
it on every run): 22,000-34,000 events/s for 7.5 KB CHANNEL_CREATE / ANSWER /
HANGUP_COMPLETE events of which two in three move a busy counter, on the
2-vCPU build VM with the store on its virtio disk (4,000 presence writes in
174 commits).  The store writes of every event read in one ``recv`` burst (up
to 256 KB) go into one ``store.apply_live`` transaction, in arrival order, and
``status()`` moves only once they are committed; before that, each write was
its own durable LMDB commit (~0.4 ms fsync), which capped the listener at
~2,400 writes/s (3,700 events/s).  A PBX starting 100 calls per second
produces about 700 such events per second (CREATE, ANSWER, HANGUP_COMPLETE
per leg, BRIDGE per call), and mod_event_socket buffers up to 100,000 per
listener.

Threading: the listener runs in one ``threading.Thread`` using blocking sockets
with timeouts; under ``gevent.monkey.patch_all()`` that thread is a greenlet and
the sockets cooperative.  Store writes are one short write transaction per read burst.
"""
from __future__ import annotations

import json
import logging
import random
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from contextlib import contextmanager

import lmdb

from fastpath.caller_numbers import normalise
from fastpath.errors import StoreError
from fastpath.store import CallEnded, CallRecorded, CallStarted, Registered

from .esl_protocol import EslParser, EslProtocolError, Event, Message, encode_command

__all__ = [
    "SUBSCRIPTION",
    "LiveListener",
    "PresenceTracker",
    "ListenerError",
    "AuthenticationFailed",
    "AccessDenied",
    "ResyncFailed",
    "parse_show_rows",
]

log = logging.getLogger(__name__)

SUBSCRIPTION = ("event plain CHANNEL_CREATE CHANNEL_ANSWER CHANNEL_BRIDGE CHANNEL_HANGUP_COMPLETE "
                "HEARTBEAT BACKGROUND_JOB CUSTOM sofia::register sofia::unregister sofia::expire")
SNAPSHOT_COMMANDS = ("api show registrations as json", "api show channels as json")

#: Seconds a registration outlives its ``expires`` if nothing refreshes or
#: removes it (sofia's own ``sip_expires_late_margin`` default).
LATE_MARGIN = 60
#: Used when a register event has no usable ``expires``.
DEFAULT_EXPIRES = 3600


class ListenerError(Exception):
    """Why a connection to FreeSWITCH ended; the listener reconnects."""


class AuthenticationFailed(ListenerError):
    """FreeSWITCH refused the ESL password (the password itself is never in the message)."""


class AccessDenied(AuthenticationFailed):
    """FreeSWITCH's ACL turned the connection away (``text/rude-rejection``)."""


class ResyncFailed(ListenerError):
    """The snapshot commands did not answer with something we can read."""


# --- helpers -----------------------------------------------------------------------

def _user(value: str | None) -> str | None:
    """``"2001@pbx.example"`` / ``"sip:2001@host"`` / ``"2001"`` -> ``"2001"``; None if empty."""
    if not value:
        return None
    user = value.strip()
    if user.lower().startswith("sip:"):
        user = user[4:]
    user = user.split("@", 1)[0].strip()
    return user or None


def _first_user(event, names: Iterable[str]) -> str | None:
    for name in names:
        user = _user(event.get(name))
        if user and user != "unknown":   # sofia's placeholder for "no digest user"
            return user
    return None


def _int(value: object) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


_SEPARATORS = str.maketrans("", "", " -.()")


def _history_key(rules: bytes | None, number: str | None) -> str | None:
    """The E.164 digits ICM's lookup computes for ``number`` with a company's compiled
    dialling ``rules`` (national, local and international forms alike), else None.
    Separators a person dialling may type (spaces, ``-``, ``.``, parentheses) are
    dropped first.  Never raises: numbers are whatever the far end sent."""
    if not number or rules is None:
        return None
    return normalise(rules, number.translate(_SEPARATORS))


def parse_show_rows(body: bytes, what: str) -> list[dict[str, str]]:
    """Rows of a ``show … as json`` answer (``{"row_count": 0}\\n`` when empty,
    ``{"row_count":N,"rows":[…]}`` without a trailing newline otherwise); the
    plain CSV form (header line, rows, blank line, ``N total.``) is read too."""
    text = body.decode("utf-8", "replace").strip()
    if not text or text.startswith("-ERR") or text.startswith("-USAGE"):
        raise ResyncFailed(f"'{what}' answered {text[:120]!r}")
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ResyncFailed(f"'{what}' answered invalid JSON ({exc.msg} at char {exc.pos}): "
                               f"{text[:120]!r}") from None
        rows = data.get("rows", []) if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("row_count"), int) \
                or not isinstance(rows, list):
            raise ResyncFailed(f"'{what}' answered JSON without row_count/rows: {text[:120]!r}")
        return [{str(k): "" if v is None else str(v) for k, v in row.items()}
                for row in rows if isinstance(row, dict)]
    lines = text.split("\n")
    if not lines[-1].endswith(" total.") or _int(lines[-1].split(" ", 1)[0]) is None:
        raise ResyncFailed(f"'{what}' answered neither JSON nor a table: {text[:120]!r}")
    lines = [line for line in lines[:-1] if line]
    if not lines:
        return []
    header = lines[0].split(",")
    # Values are not quoted by FreeSWITCH: a row with a comma inside a value
    # cannot be split reliably and is skipped.
    return [dict(zip(header, fields)) for fields in (line.split(",") for line in lines[1:])
            if len(fields) == len(header)]


# --- the bookkeeping, sans IO -----------------------------------------------------------

class PresenceTracker:
    """What FreeSWITCH has right now, and the store writes that keep it in sync.

    * registrations: extension -> {SIP Call-ID: deadline}; an extension is
      registered while it has one.  A deadline (``expires`` + LATE_MARGIN) only
      matters for registrations FreeSWITCH drops without an event (a phone that
      re-registers with a new Call-ID on a profile without
      ``multiple-registrations`` replaces its old one silently).
    * channels: UUID -> extension, so a CHANNEL_CREATE seen twice (or replayed
      over a snapshot that already had it) counts once, and only a channel we
      counted is uncounted.

    ``apply(event, now, write=False)`` updates only the model (used while
    replaying over a snapshot); with ``write=True`` each change is also written
    with the store's delta API.  Call history is written either way (it is
    idempotent).  Inside ``with tracker.batch():`` the writes of every event
    applied are collected and written, in order, by one ``store.apply_live``
    transaction at the end (the listener batches each burst it reads);
    outside, each change is written at once.

    Call history is filed under the remote party's number as ICM's lookup
    reads it: normalised to E.164 digits with the compiled dialling rules of
    the employee's company (the store's ``dial`` table), so a caller who sent
    ``84951234567`` or a 7-digit local number is found when they call again.
    """

    def __init__(self, store) -> None:
        self.store = store
        self._pending: list | None = None              # changes held back by batch()
        self.registrations: dict[str, dict[str, float]] = {}
        self.call_ids: dict[str, str] = {}              # Call-ID -> extension
        self.channels: dict[str, str] = {}              # UUID -> extension
        self.history_written = 0
        self.history_skipped = 0

    # -- writing ------------------------------------------------------------
    @contextmanager
    def batch(self):
        """Collect the store writes made inside and write them in one transaction on the way out
        (also when an exception leaves the block: the model already has those changes)."""
        if self._pending is not None:                  # nested: the outer batch writes
            yield
            return
        self._pending = []
        try:
            yield
        except BaseException:
            pending, self._pending = self._pending, None
            if pending:
                try:
                    self.store.apply_live(pending)
                except Exception:
                    log.exception("live listener: %d changes could not be written", len(pending))
            raise
        pending, self._pending = self._pending, None
        if pending:
            self.store.apply_live(pending)

    def _write(self, change) -> None:
        if self._pending is None:
            self.store.apply_live([change])
        else:
            self._pending.append(change)

    # -- queries ------------------------------------------------------------
    def registered(self) -> set[str]:
        return {ext for ext, regs in self.registrations.items() if regs}

    def active_calls(self) -> dict[str, int]:
        return dict(Counter(self.channels.values()))

    # -- snapshot -----------------------------------------------------------
    def resync(self, registrations_body: bytes, channels_body: bytes,
               buffered: Iterable[Event], now: float) -> None:
        """Base state from the two snapshot answers, buffered events replayed
        over it in order, then one ``replace_live`` for the whole picture."""
        reg_rows = parse_show_rows(registrations_body, "show registrations as json")
        channel_rows = parse_show_rows(channels_body, "show channels as json")
        self.registrations.clear()
        self.call_ids.clear()
        self.channels.clear()
        for row in reg_rows:
            ext = _user(row.get("reg_user"))
            if ext is None:
                continue
            call_id = row.get("token") or f"{ext} {row.get('url', '')}"
            deadline = _int(row.get("expires")) or now + DEFAULT_EXPIRES
            if deadline >= now:
                self._add_registration(ext, call_id, deadline)
        for row in channel_rows:
            uuid = row.get("uuid")
            keys = ("presence_id",) if row.get("direction") == "outbound" else ("presence_id", "accountcode")
            ext = _first_user(row, keys)
            if uuid and ext:
                self.channels[uuid] = ext
        with self.batch():                                  # the replay's call history, if any
            for event in buffered:
                self.apply(event, now, write=False)
        self.expire(now, write=False)
        self.store.replace_live(self.registered(), self.active_calls(), now=int(now))

    def push_all(self, now: float) -> None:
        """Write the whole model again (after a config reload added employees)."""
        self.store.replace_live(self.registered(), self.active_calls(), now=int(now))

    # -- events -------------------------------------------------------------
    def apply(self, event: Event, now: float, *, write: bool = True) -> None:
        name = event.get("Event-Name")
        if name == "CUSTOM":
            subclass = event.get("Event-Subclass")
            if subclass == "sofia::register":
                self._register(event, now, write)
            elif subclass in ("sofia::unregister", "sofia::expire"):
                self._unregister(event, now, write)
        elif name in ("CHANNEL_CREATE", "CHANNEL_ANSWER"):
            self._channel_seen(event, now, write)
        elif name == "CHANNEL_BRIDGE":
            self._channel_seen(event, now, write)
            self._bridged(event, now)
        elif name == "CHANNEL_HANGUP_COMPLETE":
            self._hangup(event, now, write)

    def expire(self, now: float, *, write: bool = True) -> list[str]:
        """Forget registrations past their deadline; returns extensions that went unregistered."""
        gone = []
        with self.batch():
            for ext, regs in list(self.registrations.items()):
                for call_id, deadline in list(regs.items()):
                    if deadline < now:
                        del regs[call_id]
                        self.call_ids.pop(call_id, None)
                if not regs:
                    del self.registrations[ext]
                    gone.append(ext)
                    if write:
                        self._write(Registered(ext, False, int(now)))
        return gone

    def _add_registration(self, ext: str, call_id: str, deadline: float) -> None:
        previous = self.call_ids.get(call_id)
        if previous is not None and previous != ext:
            self.registrations.get(previous, {}).pop(call_id, None)
        self.registrations.setdefault(ext, {})[call_id] = deadline
        self.call_ids[call_id] = ext

    def _register(self, event: Event, now: float, write: bool) -> None:
        ext = _first_user(event, ("from-user", "username"))
        if ext is None:
            return
        call_id = event.get("call-id") or f"{ext} {event.get('contact') or ''}"
        expires = _int(event.get("expires"))
        if expires is None or expires <= 0:
            expires = DEFAULT_EXPIRES
        moved_from = self.call_ids.get(call_id)
        self._add_registration(ext, call_id, now + expires + LATE_MARGIN)
        if write:
            # Written on every REGISTER, refreshes included, so an employee added
            # by a config reload picks up a registration that was already there.
            self._write(Registered(ext, True, int(now)))
            if moved_from not in (None, ext) and not self.registrations.get(moved_from):
                self.registrations.pop(moved_from, None)
                self._write(Registered(moved_from, False, int(now)))

    def _unregister(self, event: Event, now: float, write: bool) -> None:
        call_id = event.get("call-id")
        ext = self.call_ids.get(call_id) if call_id else None
        if ext is None:
            ext = _first_user(event, ("from-user", "user", "username"))
        if ext is None:
            return
        regs = self.registrations.get(ext)
        if regs is not None:
            if call_id:
                regs.pop(call_id, None)
            else:                        # nothing to tell registrations apart: all gone
                for known in regs:
                    self.call_ids.pop(known, None)
                regs.clear()
        if call_id:
            self.call_ids.pop(call_id, None)
        if not self.registrations.get(ext):
            self.registrations.pop(ext, None)
            if write:
                self._write(Registered(ext, False, int(now)))

    @staticmethod
    def channel_extension(event: Event) -> str | None:
        """The employee a channel belongs to (see the module docstring), or None."""
        direction = event.get("Call-Direction") or event.get("variable_direction")
        if direction == "outbound":
            return _first_user(event, ("variable_dialed_user",))
        return _first_user(event, ("variable_sip_auth_username", "variable_user_name"))

    def _channel_seen(self, event: Event, now: float, write: bool) -> None:
        uuid = event.get("Unique-ID")
        if not uuid or uuid in self.channels:
            return
        ext = self.channel_extension(event)
        if ext is None:
            return
        self.channels[uuid] = ext
        if write:
            self._write(CallStarted(ext, int(now)))

    def _hangup(self, event: Event, now: float, write: bool) -> None:
        uuid = event.get("Unique-ID")
        ext = self.channels.pop(uuid, None) if uuid else None
        if ext is not None and write:
            self._write(CallEnded(ext, int(now)))

    # -- call history ------------------------------------------------------------
    def _bridged(self, event: Event, now: float) -> None:
        """CHANNEL_BRIDGE is fired on the A leg: ``Caller-*`` describe it,
        ``Other-Leg-*`` the B leg.  One employee and one external party make a
        history entry: the external number (normalised with the dialling rules
        of the employee's company), the employee, ``in`` when the employee is
        the B leg (was called), ``out`` when the A leg (called out)."""
        a_uuid = event.get("Bridge-A-Unique-ID") or event.get("Unique-ID")
        b_uuid = event.get("Bridge-B-Unique-ID") or event.get("Other-Leg-Unique-ID")
        a_ext = self.channels.get(a_uuid) if a_uuid else None
        if a_ext is None and a_uuid == event.get("Unique-ID"):
            a_ext = self.channel_extension(event)
        b_ext = self.channels.get(b_uuid) if b_uuid else None
        if b_ext is None:
            b_ext = self._callee_from_a_leg(event)
        a_company = self._company_of(a_ext)
        b_company = self._company_of(b_ext)
        if (a_company is None) == (b_company is None):      # internal call, or no employee involved
            return
        if b_company is not None:
            ext, company, direction = b_ext, b_company, "in"
            raw = event.get("Caller-Caller-ID-Number") or event.get("Caller-ANI")
        else:
            ext, company, direction = a_ext, a_company, "out"
            raw = (event.get("Other-Leg-Destination-Number") or event.get("Other-Leg-Callee-ID-Number")
                   or event.get("Caller-Destination-Number"))
        digits = _history_key(self.store.dial_rules(company), raw)
        if digits is None:
            self.history_skipped += 1
            log.debug("no call history for %s (%s): %r is no phone number for company %s",
                      ext, direction, raw, company)
            return
        stamp = _int(event.get("Event-Date-Timestamp"))
        when = stamp // 1_000_000 if stamp else int(now)
        self._write(CallRecorded(digits, ext, when, direction))
        self.history_written += 1

    @staticmethod
    def _callee_from_a_leg(event: Event) -> str | None:
        """A B leg we never saw created: bridging to ``user/2001`` sets
        ``dialed_user`` on the A leg too.  Trusted only if the B leg's own
        destination names that user (``2001`` or a contact like ``2001-0x…``),
        so a stale ``dialed_user`` from an earlier attempt does not count."""
        dialed = _user(event.get("variable_dialed_user"))
        if dialed is None:
            return None
        destination = _user(event.get("Other-Leg-Destination-Number")) or ""
        if destination == dialed or destination.startswith(dialed + "-"):
            return dialed
        return None

    def _company_of(self, ext: str | None) -> str | None:
        """The company of employee ``ext``; None when it is no employee."""
        employee = self.store.employee(ext) if ext else None
        return employee.company if employee is not None else None


# --- the connection ----------------------------------------------------------------------

_REPLY_TYPES = ("command/reply", "api/response")


class _Link:
    """One TCP connection: reading with the watchdog, replies in order, events buffered."""

    def __init__(self, sock: socket.socket, listener: LiveListener):
        self.sock = sock
        self.listener = listener
        self.parser = EslParser()
        self.inbox: deque[Message] = deque()
        self.events: list[Event] = []      # events that arrived while we waited for replies
        self.last_rx = listener._monotonic()
        self.core: str | None = None       # Core-UUID seen on this connection

    def send(self, line: str) -> None:
        self.sock.sendall(encode_command(line))

    def read(self, timeout: float) -> list[Message]:
        """Messages from one recv() (possibly none).  Raises on EOF, on the
        watchdog, and on a malformed stream (after handing over what was intact)."""
        listener = self.listener
        remaining = self.last_rx + listener.watchdog - listener._monotonic()
        if remaining <= 0:
            raise ListenerError(f"nothing received for {listener.watchdog:g} s (FreeSWITCH sends "
                                f"HEARTBEAT every 20 s): treating the connection as half-open")
        self.sock.settimeout(max(0.001, min(timeout, remaining)))
        try:
            data = self.sock.recv(262144)
        except (socket.timeout, BlockingIOError):
            return []
        if not data:
            raise ListenerError("FreeSWITCH closed the connection")
        self.last_rx = listener._monotonic()
        listener._note_rx()
        try:
            return self.parser.feed(data)
        except EslProtocolError as exc:
            exc.listener_context = data[:200]
            raise

    def next_message(self, timeout: float) -> Message:
        deadline = self.listener._monotonic() + timeout
        while not self.inbox:
            if self.listener._stopping.is_set():
                raise ListenerError("stopping")
            left = deadline - self.listener._monotonic()
            if left <= 0:
                raise ListenerError(f"FreeSWITCH did not answer within {timeout:g} s")
            self.inbox.extend(self.read(min(left, self.listener._tick)))
        return self.inbox.popleft()

    def next_reply(self, timeout: float, what: str) -> Message:
        """The next command/reply or api/response; events meanwhile are buffered."""
        while True:
            message = self.next_message(timeout)
            kind = message.content_type
            if kind in _REPLY_TYPES:
                return message
            if message.event is not None:
                self.events.append(message.event)
            else:
                _check_goodbye(message, what)

    def buffer_for(self, seconds: float) -> None:
        """Read (buffering events) for ``seconds``, without sleeping."""
        deadline = self.listener._monotonic() + seconds
        while (left := deadline - self.listener._monotonic()) > 0:
            if self.listener._stopping.is_set():
                raise ListenerError("stopping")
            self.inbox.extend(self.read(min(left, self.listener._tick)))
            for message in self.inbox:
                if message.event is not None:
                    self.events.append(message.event)
                elif message.content_type not in _REPLY_TYPES:
                    _check_goodbye(message, "the snapshot delay")
            self.inbox.clear()


def _check_goodbye(message: Message, during: str) -> None:
    kind = message.content_type
    if kind == "text/disconnect-notice":
        raise ListenerError(f"FreeSWITCH sent a disconnect notice during {during}")
    if kind == "text/rude-rejection":
        raise AccessDenied("FreeSWITCH rejected the connection (text/rude-rejection: "
                           "check apply-inbound-acl in event_socket.conf.xml)")


class LiveListener:
    """The inbound ESL connection that keeps presence and call history in the store.

    Construct with an open writable :class:`fastpath.store.Store` and where to
    reach mod_event_socket (or use :meth:`from_config`), then :meth:`start`;
    :meth:`stop` on shutdown; :meth:`status` for the health report.

    ``watchdog``: seconds without a single byte before the connection is
    called half-open and replaced (FreeSWITCH sends HEARTBEAT every 20 s).
    ``backoff_initial``/``backoff_max``: reconnect delays, doubling, with
    jitter (each delay is drawn from [d/2, d]); back to the start after a
    successful resync.  ``auth_retry``: the delay after a refused password.
    ``clock`` (wall time, for store timestamps and registration deadlines) and
    ``monotonic`` (for the watchdog and timeouts) are injectable for tests.
    """

    def __init__(self, store, host: str, port: int, password: str, *,
                 watchdog: float = 60.0, connect_timeout: float = 5.0, reply_timeout: float = 30.0,
                 snapshot_delay: float = 1.0, backoff_initial: float = 0.5, backoff_max: float = 30.0,
                 auth_retry: float = 30.0, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 jitter: Callable[[], float] = random.random) -> None:
        if not password or any(c in password for c in "\r\n\x00"):
            raise ValueError("the ESL password must be non-empty and on one line")
        if watchdog <= 0 or backoff_initial <= 0 or backoff_max < backoff_initial:
            raise ValueError("watchdog and backoff delays must be positive, backoff_max >= backoff_initial")
        self.store = store
        self.host = host
        self.port = int(port)
        self._password = password
        self.watchdog = float(watchdog)
        self.connect_timeout = float(connect_timeout)
        self.reply_timeout = float(reply_timeout)
        self.snapshot_delay = float(snapshot_delay)
        self.backoff_initial = float(backoff_initial)
        self.backoff_max = float(backoff_max)
        self.auth_retry = float(auth_retry)
        self._clock = clock
        self._monotonic = monotonic
        self._jitter = jitter
        self._tick = min(1.0, self.watchdog / 4)
        self.tracker = PresenceTracker(store)
        self._lock = threading.Condition()   # guards the status fields; notified on every change
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._generation: int | None = None
        self._next_housekeeping = 0.0
        # status
        self._connected = False
        self._since = clock()
        self._last_event: float | None = None
        self._last_rx: float | None = None
        self._attempts = 0
        self._sessions = 0
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._core_uuid: str | None = None
        self._events = 0
        self._events_failed = 0

    @classmethod
    def from_config(cls, store, config, **options) -> LiveListener:
        """From a :class:`esl_app.service_config.ServiceConfig` (``esl``, ``esl_password``)."""
        return cls(store, config.esl.host, config.esl.port, config.esl_password, **options)

    def __repr__(self) -> str:            # never shows the password
        return f"<LiveListener {self.host}:{self.port} connected={self._connected}>"

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> LiveListener:
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="esl-live-listener", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> bool:
        """Close the connection and end the thread; True if it ended within ``timeout``."""
        self._stopping.set()
        with self._lock:
            sock = self._sock
        if sock is not None:
            _close(sock)
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def wait_until(self, predicate: Callable[[], object], timeout: float) -> object:
        """Block until ``predicate()`` is truthy, re-checking it after every
        event, resync, connect and disconnect; returns its value, or raises
        TimeoutError.  (For tests and for a service that wants to wait for the
        first resync before taking calls.)"""
        with self._lock:
            result = self._lock.wait_for(predicate, timeout)
        if not result:
            raise TimeoutError(f"live listener: condition not met within {timeout:g} s "
                               f"(status: {self.status()})")
        return result

    def _changed(self) -> None:
        with self._lock:
            self._lock.notify_all()

    def status(self) -> dict:
        """Health: ``connected``; ``since`` (wall time of the last connect or
        disconnect); ``last_event`` and ``last_received`` (wall times, or None);
        ``reconnects`` (successful resyncs after the first); ``attempts``
        (connection attempts); ``last_error`` (text of the latest failure, kept
        after recovery; or None) and ``last_error_at`` (wall time); ``core_uuid``;
        ``events`` (handled); ``events_failed`` (skipped after an error);
        ``registered`` (extensions with a registration) and ``active_channels``
        (channels attributed to an extension); both count users that are not
        employees too, as a config reload may make them employees."""
        with self._lock:
            return {
                "connected": self._connected,
                "since": self._since,
                "last_event": self._last_event,
                "last_received": self._last_rx,
                "reconnects": max(0, self._sessions - 1),
                "attempts": self._attempts,
                "last_error": self._last_error,
                "last_error_at": self._last_error_at,
                "core_uuid": self._core_uuid,
                "events": self._events,
                "events_failed": self._events_failed,
                "registered": len(self.tracker.registrations),
                "active_channels": len(self.tracker.channels),
            }

    # -- the loop ------------------------------------------------------------------
    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            resynced_before = self._sessions
            delay = None
            try:
                self._session()
            except AuthenticationFailed as exc:
                delay = self.auth_retry
                what = "access denied" if isinstance(exc, AccessDenied) else "authentication failed"
                self._failed(f"{what}: {exc}; retrying every {self.auth_retry:g} s", logging.ERROR)
            except EslProtocolError as exc:
                context = getattr(exc, "listener_context", b"")
                self._failed(f"malformed ESL from {self.host}:{self.port} at stream offset "
                             f"{exc.offset}: {exc} (recv chunk began {context[:120]!r}); resetting "
                             f"the connection", logging.ERROR)
            except (ListenerError, OSError) as exc:
                self._failed(f"{type(exc).__name__}: {exc}", logging.WARNING)
            except Exception as exc:          # a bug or a broken store: never let the thread die
                log.exception("live listener: unexpected error; reconnecting")
                self._failed(f"{type(exc).__name__}: {exc}", None)
            if self._stopping.is_set():
                break
            if self._sessions > resynced_before:
                failures = 0
            if delay is None:
                ceiling = min(self.backoff_max, self.backoff_initial * (2 ** min(failures, 30)))
                delay = ceiling / 2 + self._jitter() * ceiling / 2
                failures += 1
            log.info("live listener: reconnecting to %s:%d in %.2f s", self.host, self.port, delay)
            self._stopping.wait(delay)
        self._set_connected(False)

    def _failed(self, message: str, level: int | None) -> None:
        self._set_connected(False)
        if self._stopping.is_set():
            return
        with self._lock:
            self._last_error = message
            self._last_error_at = self._clock()
            self._lock.notify_all()
        if level is not None:
            log.log(level, "live listener (%s:%d): %s", self.host, self.port, message)

    def _set_connected(self, connected: bool) -> None:
        with self._lock:
            if self._connected != connected:
                self._connected = connected
                self._since = self._clock()
                self._lock.notify_all()

    def _note_rx(self) -> None:
        self._last_rx = self._clock()

    def _session(self) -> None:
        with self._lock:
            self._attempts += 1
        sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        with self._lock:
            self._sock = sock
        try:
            if self._stopping.is_set():
                return
            link = _Link(sock, self)
            self._handshake(link)
            self._resync(link)
            self._follow(link)
        finally:
            with self._lock:
                self._sock = None
            _close(sock)

    def _handshake(self, link: _Link) -> None:
        greeting = link.next_message(self.reply_timeout)
        _check_goodbye(greeting, "the greeting")
        if greeting.content_type != "auth/request":
            raise ListenerError(f"expected auth/request, got {greeting.content_type!r}")
        link.send(f"auth {self._password}")
        reply = link.next_reply(self.reply_timeout, "authentication")
        text = reply.reply_text or ""
        if not text.startswith("+OK"):
            raise AuthenticationFailed(f"FreeSWITCH answered {text!r} to our password; check "
                                       f"esl_password against event_socket.conf.xml")
        link.send(SUBSCRIPTION)
        reply = link.next_reply(self.reply_timeout, "the event subscription")
        if not (reply.reply_text or "").startswith("+OK"):
            raise ListenerError(f"event subscription refused: {reply.reply_text!r}")

    def _resync(self, link: _Link) -> None:
        if self.snapshot_delay > 0:
            link.buffer_for(self.snapshot_delay)
        for command in SNAPSHOT_COMMANDS:
            link.send(command)
        bodies = []
        for command in SNAPSHOT_COMMANDS:
            reply = link.next_reply(self.reply_timeout, command)
            if reply.content_type != "api/response":
                raise ResyncFailed(f"'{command}' got {reply.content_type} {reply.reply_text!r}")
            bodies.append(reply.body)
        buffered, link.events = link.events, []
        for event in buffered:
            self._check_core(event, link)
        now = self._clock()
        self.tracker.resync(bodies[0], bodies[1], buffered, now)
        self._generation = self.store.generation()
        with self._lock:
            self._sessions += 1
            self._events += len(buffered)
            if buffered:
                self._last_event = now
            self._lock.notify_all()
        self._set_connected(True)
        log.info("live listener: connected to %s:%d and resynced: %d registered, %d channels "
                 "(%d events replayed over the snapshot)", self.host, self.port,
                 len(self.tracker.registrations), len(self.tracker.channels), len(buffered))

    def _follow(self, link: _Link) -> None:
        pending = list(link.inbox)
        link.inbox = deque()
        while not self._stopping.is_set():
            self._handle_burst(pending, link)
            pending = self._read_handing_over(link)
            self._housekeeping()

    def _read_handing_over(self, link: _Link) -> list[Message]:
        try:
            return link.read(self._tick)
        except EslProtocolError as exc:
            self._handle_burst(exc.messages, link)     # what arrived intact is still applied
            raise

    def _handle_burst(self, messages: Iterable[Message], link: _Link) -> None:
        """The messages of one read: their store writes go in one transaction, and the
        status (what ``wait_until`` watches) moves only once they are written."""
        applied = failed = 0
        try:
            with self.tracker.batch():
                for message in messages:
                    if message.event is None:
                        _check_goodbye(message, "normal operation")
                        continue                     # stray replies (none expected) are ignored
                    if self._handle(message.event, link):
                        applied += 1
                    else:
                        failed += 1
        finally:
            if applied or failed:
                with self._lock:
                    self._events += applied
                    self._events_failed += failed
                    if applied:
                        self._last_event = self._clock()
                    self._lock.notify_all()

    def _handle(self, event: Event, link: _Link) -> bool:
        """Apply one event to the model (its writes join the burst's batch); False if it was skipped."""
        self._check_core(event, link)
        try:
            self.tracker.apply(event, self._clock())
        except (lmdb.Error, StoreError):
            raise                            # the model and the store may now differ: resync
        except Exception:
            log.exception("live listener: skipped a %s event that could not be applied",
                          event.get("Event-Name"))
            return False
        return True

    def _check_core(self, event: Event, link: _Link) -> None:
        """Core-UUID is FreeSWITCH's boot id: a new one on a later connection means
        it restarted (the resync already accounts for that); a change within one
        connection cannot be trusted, so the connection is reset."""
        core = event.get("Core-UUID")
        if not core or core == link.core:
            return
        if link.core is not None:
            raise ListenerError(f"Core-UUID changed from {link.core} to {core} on one connection")
        link.core = core
        with self._lock:
            previous, self._core_uuid = self._core_uuid, core
        if previous is not None and previous != core:
            log.warning("live listener: FreeSWITCH restarted (Core-UUID %s -> %s); state resynced",
                        previous, core)

    def _housekeeping(self) -> None:
        """At most once a tick: drop registrations past their deadline, and
        rewrite presence after a config reload (new employees start unknown)."""
        tick = self._monotonic()
        if tick < self._next_housekeeping:
            return
        self._next_housekeeping = tick + self._tick
        now = self._clock()
        for ext in self.tracker.expire(now):
            log.info("live listener: registration of %s expired without an event", ext)
        generation = self.store.generation()
        if generation != self._generation:
            self._generation = generation
            self.tracker.push_all(now)
            log.info("live listener: config generation %d loaded; presence rewritten", generation)
        self._changed()


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
