"""Sans-IO framing of FreeSWITCH's Event Socket (ESL), both directions.

:class:`EslParser` turns the bytes FreeSWITCH sends into :class:`Message`
objects and never touches a socket, so recorded streams can be replayed with
any chunking (the approach of switchio's ``protocol.py``; greenswitch's parser
reads ``sock_file.readline()`` and can only be tested through a socket).
:func:`encode_command` and :func:`encode_sendmsg` build what we send and refuse
any value that could smuggle a second command onto the wire.

Wire facts this code relies on (see ``shared/esl-traces/README.md``): a message
is ``Name: value`` lines ending in ``\\n``, a blank line, then exactly
``Content-Length`` bytes of body when that header is present.  Event bodies nest
a second header block whose values are percent-encoded; header names repeat
(``Hangup-Cause`` twice in CHANNEL_HANGUP_COMPLETE), so headers are kept as an
ordered list, never a dict.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from urllib.parse import unquote

from fastpath import esl_frames
from fastpath.esl_frames import MAX_CONTENT_LENGTH, PLAIN_FRAME_NAMES, plain_block, plain_frame_head
from fastpath.esl_frames import unquote_all as _unquote_all

__all__ = [
    "MAX_CONTENT_LENGTH",
    "MAX_HEADER_BYTES",
    "INLINE_ARG_LIMIT",
    "EslProtocolError",
    "EslInjectionError",
    "Event",
    "Message",
    "EslParser",
    "IMPLEMENTATIONS",
    "IMPLEMENTATION",
    "encode_command",
    "encode_sendmsg",
]

#: A header block that is still open after this many bytes is garbage, not ESL
#: (the biggest real one, the outbound ``connect`` reply, is ~3.5 KB).
MAX_HEADER_BYTES = 1024 * 1024
#: Longer ``sendmsg`` arguments go in a ``content-length`` body instead of the
#: ``execute-app-arg`` header line, which libesl's own esl_execute() cuts at 512
#: bytes; FreeSWITCH reads the body whatever its size.
INLINE_ARG_LIMIT = 512


class EslProtocolError(Exception):
    """The bytes are not ESL as FreeSWITCH writes it; drop the connection.

    ``offset`` is the stream offset (bytes since the parser was created or reset)
    of the offending bytes.  ``messages`` holds what the failing ``feed()`` call
    had decoded before the error, so nothing that arrived intact is lost.
    """

    def __init__(self, message: str, offset: int | None = None):
        super().__init__(message)
        self.offset = offset
        self.messages: list[Message] = []


class EslInjectionError(ValueError):
    """A value cannot go on the wire without changing what FreeSWITCH reads.

    mod_event_socket ends a line at CR or LF and a C string at NUL, so any of
    them in caller-controlled data would end our header early and let the rest
    be read as headers or as a second command.
    """


class _HeaderList:
    """Ordered headers where a name may repeat; lookups return the first value."""

    __slots__ = ("_names", "_values", "body")

    def __init__(self, names: list[str], values: list[str], body: bytes = b""):
        self._names = names
        self._values = values
        self.body = body

    @property
    def headers(self) -> list[tuple[str, str]]:
        return list(zip(self._names, self._values))

    def get(self, name: str, default: str | None = None) -> str | None:
        """First value of ``name`` (exact, case-sensitive match), or ``default``."""
        try:
            return self._values[self._names.index(name)]
        except ValueError:
            return default

    def get_all(self, name: str) -> list[str]:
        return [v for n, v in zip(self._names, self._values) if n == name]

    def __getitem__(self, name: str) -> str:
        value = self.get(name, _MISSING)
        if value is _MISSING:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return self.get(name, _MISSING) is not _MISSING

    def __eq__(self, other: object) -> bool:
        # By kind, not exact class: an Event of either parser kernel equals
        # the same event from the other.
        if not isinstance(other, _HeaderList) or isinstance(other, Message) != isinstance(self, Message):
            return NotImplemented
        return self.headers == other.headers and self.body == other.body

    __hash__ = None  # mutable value object


_MISSING: object = object()


class Event(_HeaderList):
    """A FreeSWITCH event: decoded headers in wire order plus its own body.

    A validated plain event starts as its still-encoded header block
    (``"\\nName: value\\n…"``): :meth:`get` finds one header with a C-level
    search and decodes just that value, so a dispatcher reading ``Event-Name``
    and ``Unique-ID`` never pays for splitting ~100 lines.  Anything needing
    every header splits the block once, with the same result a full parse gives
    (``_split_block``: the kernel of the parser that made the event).
    """

    __slots__ = ("_block",)
    _split_block = staticmethod(esl_frames.split_block)

    def __init__(self, names: list[str], values: list[str], body: bytes = b""):
        super().__init__(names, values, body)
        self._block: str | None = None

    @classmethod
    def _from_block(cls, block: str) -> Event:
        """``block``: a body-less event's header lines wrapped in ``"\\n"``,
        proven to be exactly one ``"name: value"`` each."""
        event = cls.__new__(cls)
        event._names = event._values = None
        event.body = b""
        event._block = block
        return event

    def _split(self) -> None:
        block = self._block
        if block is None:  # another thread got here first
            return
        self._names, self._values = self._split_block(block)
        self._block = None

    def get(self, name: str, default: str | None = None) -> str | None:
        block = self._block
        if block is None or "\n" in name:
            if block is not None:
                self._split()
            return super().get(name, default)
        start = block.find(f"\n{name}: ")
        if start < 0:
            return default
        start += len(name) + 3
        value = block[start:block.index("\n", start)]
        return unquote(value) if "%" in value else value

    @property
    def headers(self) -> list[tuple[str, str]]:
        if self._block is not None:
            self._split()
        return super().headers

    def get_all(self, name: str) -> list[str]:
        if self._block is not None:
            self._split()
        return super().get_all(name)

    @property
    def name(self) -> str | None:
        """``Event-Name``; for CUSTOM events the subclass is in :attr:`subclass`."""
        return self.get("Event-Name")

    @property
    def subclass(self) -> str | None:
        return self.get("Event-Subclass")

    def __repr__(self) -> str:
        return f"<Event {self.name} {len(self.headers)} headers, {len(self.body)}-byte body>"


class Message(_HeaderList):
    """One framed ESL message.  ``event`` is set for ``text/event-*`` messages
    and for the outbound ``connect`` reply (a serialized CHANNEL_DATA event)."""

    __slots__ = ("event",)

    def __init__(self, names: list[str], values: list[str], body: bytes = b"",
                 event: Event | None = None):
        super().__init__(names, values, body)
        self.event = event

    @property
    def content_type(self) -> str | None:
        return self.get("Content-Type")

    @property
    def reply_text(self) -> str | None:
        """``Reply-Text`` of a ``command/reply`` (``+OK …`` / ``-ERR …``)."""
        return self.get("Reply-Text")

    def __eq__(self, other: object) -> bool:
        result = super().__eq__(other)
        if result is True:
            return self.event == other.event
        return result

    __hash__ = None

    def __repr__(self) -> str:
        return f"<Message {self.content_type} {len(self.body)}-byte body event={self.event!r}>"


# --- event bodies -------------------------------------------------------------

def _parse_plain_event(raw: bytes, offset: int) -> Event:
    """Parse a ``text/event-plain`` body (``offset``: its stream offset).

    The usual body-less event in the shape FreeSWITCH writes
    (:func:`fastpath.esl_frames.plain_block`) is kept as its header block, split
    only when something needs more than lookups (:class:`Event`).  Anything
    else goes through :func:`_parse_plain_event_slow`, which defines the
    semantics and names the offending bytes.
    """
    block = plain_block(raw)
    if block is not None:
        return Event._from_block(block)
    return _parse_plain_event_slow(raw, offset)


def _parse_plain_event_slow(raw: bytes, offset: int) -> Event:
    """Line-by-line reference parser for plain events; names what is wrong."""
    end = raw.find(b"\n\n")
    if end < 0:
        raise EslProtocolError(
            f"text/event-plain body at stream offset {offset} has no blank line "
            f"after its headers: {raw[-60:]!r}", offset)
    text = _decode_utf8(raw[:end], offset)
    names: list[str] = []
    values: list[str] = []
    for line in text.split("\n"):
        name, sep, value = line.partition(": ")
        if not sep or not name:
            raise _bad_line(text, line, offset, "event header line")
        names.append(name)
        values.append(unquote(value))
    body = raw[end + 2:]
    _check_event_body(names, values, body, offset + end + 2)
    return Event(names, values, body)


def _check_event_body(names: list[str], values: list[str], body: bytes, offset: int) -> None:
    """The event's own ``Content-Length`` (the last one when a ``sendevent``
    client sent its own too) must cover exactly the bytes after its headers."""
    lengths = [v for n, v in zip(names, values) if n == "Content-Length"]
    if lengths:
        expected = _content_length(lengths[-1], offset)
        if expected != len(body):
            raise EslProtocolError(
                f"event says Content-Length {expected} but carries {len(body)} body "
                f"bytes at stream offset {offset}", offset)
    elif body:
        raise EslProtocolError(
            f"event has {len(body)} bytes after its headers but no Content-Length "
            f"at stream offset {offset}: {body[:60]!r}", offset)


def _parse_json_event(raw: bytes, offset: int) -> Event:
    """``text/event-json``: values are plain strings, the body is ``_body``;
    duplicate keys are real, so pairs are kept in order."""
    try:
        pairs = json.loads(_decode_utf8(raw, offset), object_pairs_hook=_JsonPairs)
    except json.JSONDecodeError as exc:
        raise EslProtocolError(
            f"text/event-json body is not JSON ({exc.msg} at char {exc.pos}) "
            f"at stream offset {offset}: {raw[:60]!r}", offset) from None
    if type(pairs) is not _JsonPairs or any(type(v) is not str for _, v in pairs):
        raise EslProtocolError(
            f"text/event-json body at stream offset {offset} is not an object of "
            f"strings: {raw[:60]!r}", offset)
    names = [k for k, _ in pairs if k != "_body"]
    values = [v for k, v in pairs if k != "_body"]
    bodies = [v for k, v in pairs if k == "_body"]
    body = bodies[-1].encode() if bodies else b""
    _check_event_body(names, values, body, offset)
    return Event(names, values, body)


class _JsonPairs(list):
    """A JSON object as its (key, value) pairs, so duplicate keys survive."""


def _parse_xml_event(raw: bytes, offset: int) -> Event:
    """``text/event-xml``: ``<event><headers>…</headers>[<Content-Length>
    <body>]</event>``; header values are percent-encoded, the body is
    XML-escaped and followed by the pretty-printer's indentation, which
    ``Content-Length`` lets us cut off."""
    try:
        root = ElementTree.fromstring(raw)
    except ElementTree.ParseError as exc:
        raise EslProtocolError(
            f"text/event-xml body is not XML ({exc}) at stream offset {offset}: "
            f"{raw[:60]!r}", offset) from None
    headers = root.find("headers")
    if root.tag != "event" or headers is None:
        raise EslProtocolError(
            f"text/event-xml body at stream offset {offset} is not <event><headers>: "
            f"{raw[:60]!r}", offset)
    names = [child.tag for child in headers]
    values = _unquote_all([child.text or "" for child in headers])
    length = root.find("Content-Length")
    body_node = root.find("body")
    body = b""
    if length is not None:
        size = _content_length(length.text or "", offset)
        body = ((body_node.text or "") if body_node is not None else "").encode()
        if len(body) < size:
            raise EslProtocolError(
                f"text/event-xml <body> holds {len(body)} bytes, fewer than its "
                f"Content-Length {size}, at stream offset {offset}", offset)
        body = body[:size]
        names.append("Content-Length")
        values.append(str(size))
    elif body_node is not None:
        raise EslProtocolError(
            f"text/event-xml at stream offset {offset} has a <body> but no "
            f"<Content-Length>", offset)
    return Event(names, values, body)


# --- framing ------------------------------------------------------------------

def _bad_line(text: str, line: str, offset: int, what: str) -> EslProtocolError:
    """Error for a line of ``text`` (which starts at ``offset``) lacking ``': '``."""
    before = text.split("\n")
    before = before[:before.index(line)]
    at = offset + sum(len(b.encode()) + 1 for b in before)
    return EslProtocolError(
        f"{what} without 'name: ' at stream offset {at}: {line[:80]!r}", at)


def _refuse_head(head: bytes, offset: int) -> None:
    """Raise the error for a header block the kernel's ``split_head`` refused."""
    text = _decode_utf8(head, offset)
    for line in text.split("\n"):
        name, sep, _ = line.partition(": ")
        if not sep or not name:
            raise _bad_line(text, line, offset, "header line")
    raise EslProtocolError(f"header block at stream offset {offset} refused: {text[:80]!r}", offset)


def _decode_utf8(data: bytes, offset: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = offset + exc.start
        raise EslProtocolError(
            f"non-UTF-8 byte {data[exc.start:exc.start + 1]!r} at stream offset {bad}: "
            f"{data[max(exc.start - 30, 0):exc.start + 10]!r}", bad) from None


def _content_length(value: str, offset: int) -> int:
    if not (value.isascii() and value.isdigit()):
        raise EslProtocolError(
            f"Content-Length {value[:40]!r} at stream offset {offset} is not a "
            f"non-negative decimal number", offset)
    size = int(value)
    if size > MAX_CONTENT_LENGTH:
        raise EslProtocolError(
            f"Content-Length {size} at stream offset {offset} exceeds the "
            f"{MAX_CONTENT_LENGTH}-byte limit", offset)
    return size


_EVENT_PARSERS = {
    "text/event-plain": _parse_plain_event,
    "text/event-json": _parse_json_event,
    "text/event-xml": _parse_xml_event,
}


class _EncodedValues:
    """Header values that stay percent-encoded until read: :meth:`get` decodes
    the one value asked for; :attr:`headers` and :meth:`get_all` decode them
    all once.  Same answers as decoding up front (the ``connect`` reply)."""

    __slots__ = ()

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self._values
        try:
            index = self._names.index(name)
        except ValueError:
            return default
        if values is not None:
            return values[index]
        value = self._raw[index]
        return unquote(value) if "%" in value else value

    @property
    def headers(self) -> list[tuple[str, str]]:
        self._decode()
        return list(zip(self._names, self._values))

    def get_all(self, name: str) -> list[str]:
        self._decode()
        return _HeaderList.get_all(self, name)

    def _decode(self) -> None:
        if self._values is None:
            self._values = _unquote_all(self._raw)


class _EncodedEvent(_EncodedValues, Event):
    """The ``connect`` reply's CHANNEL_DATA :class:`Event` (see :class:`_EncodedValues`)."""

    __slots__ = ("_raw",)

    @classmethod
    def _of(cls, names: list[str], raw: list[str]) -> _EncodedEvent:
        event = cls.__new__(cls)
        event._names, event._values, event._raw, event.body, event._block = names, None, raw, b"", None
        return event


class _EncodedMessage(_EncodedValues, Message):
    """The ``connect`` reply's :class:`Message` (see :class:`_EncodedValues`)."""

    __slots__ = ("_raw",)

    @classmethod
    def _of(cls, names: list[str], raw: list[str], body: bytes, event: Event) -> _EncodedMessage:
        message = cls.__new__(cls)
        message._names, message._values, message._raw, message.body, message.event = names, None, raw, body, event
        return message


class _CompiledEvent(Event):
    """An :class:`Event` of the compiled kernel, which also splits its block."""

    __slots__ = ()
    if "fastpath" in esl_frames.IMPLEMENTATIONS:
        _split_block = staticmethod(esl_frames.IMPLEMENTATIONS["fastpath"].split_block)


#: Parser kernels by name (``fastpath.esl_frames``), each with the Event class it makes.
IMPLEMENTATIONS = {name: (kernel, _CompiledEvent if name == "fastpath" else Event)
                   for name, kernel in esl_frames.IMPLEMENTATIONS.items()}
#: The kernel ``EslParser()`` uses unless told: ``fastpath`` when compiled
#: (``SWITCHBOARD_PUREPYTHON=1`` / ``SWITCHBOARD_FORCE_CYTHON=1`` force it).
IMPLEMENTATION = esl_frames.IMPLEMENTATION


class EslParser:
    """Incremental parser: ``feed(bytes) -> [Message, ...]``.

    Any chunking works: a message split anywhere, many in one chunk, a lone
    53-byte ``Content-Length…text/event-plain`` framing chunk.  Bytes are only
    joined once enough have arrived to finish the next message, and parsing
    walks one buffer by offset instead of re-slicing it per message.  Runs of
    FreeSWITCH's plain-event frames go to the kernel (``implementation``:
    ``"fastpath"`` compiled, ``"reference"`` pure; default
    :data:`IMPLEMENTATION`); everything else, errors included, is framed here.
    After an :class:`EslProtocolError` the parser refuses input until :meth:`reset`.
    """

    __slots__ = ("_chunks", "_size", "_need", "_scan", "_head", "_offset", "_failed",
                 "_scan_plain", "_split_head", "_event_cls", "implementation")

    def __init__(self, implementation: str | None = None) -> None:
        self.implementation = implementation or IMPLEMENTATION
        kernel, self._event_cls = IMPLEMENTATIONS[self.implementation]
        self._scan_plain = kernel.scan_plain_frames
        self._split_head = kernel.split_head
        self.reset()

    def reset(self) -> None:
        """Forget all state, e.g. for a new connection after an error."""
        self._chunks: list[bytes] = []
        self._size = 0          # bytes in _chunks
        self._need = 1          # bytes _chunks must hold before parsing can progress
        self._scan = 0          # header-end search resumes here (relative to _chunks)
        self._head: tuple | None = None  # parsed header block awaiting its body
        self._offset = 0        # stream offset of _chunks[0][0]
        self._failed: EslProtocolError | None = None

    def feed(self, data: bytes) -> list[Message]:
        if self._failed is not None:
            raise EslProtocolError(
                f"parser stopped at stream offset {self._failed.offset} "
                f"({self._failed}); call reset() before feeding more", self._failed.offset)
        if not data:
            return []
        self._chunks.append(bytes(data))
        self._size += len(data)
        if self._size < self._need:
            return []
        buf = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        messages: list[Message] = []
        try:
            pos = self._frame(buf, messages)
        except EslProtocolError as exc:
            exc.messages = messages
            self._failed = exc
            raise
        self._offset += pos
        rest = buf[pos:] if pos else buf
        self._chunks = [rest] if rest else []
        self._size = len(rest)
        return messages

    def _frame(self, buf: bytes, messages: list[Message]) -> int:
        """Cut ``buf`` into messages; returns how many bytes were consumed."""
        pos = 0
        size = len(buf)
        head = self._head
        scan = self._scan
        while pos < size:
            if head is None:
                if scan == 0:
                    pos = self._scan_plain(buf, pos, messages, self._event_cls, Message)
                    if pos == size:
                        continue
                head = self._plain_event_head(buf, pos)
                if head is None:
                    end = buf.find(b"\n\n", pos + scan)
                    if end < 0:
                        if size - pos > MAX_HEADER_BYTES:
                            raise EslProtocolError(
                                f"no blank line within {MAX_HEADER_BYTES} bytes of the "
                                f"header block at stream offset {self._offset + pos}: "
                                f"{buf[pos:pos + 60]!r}", self._offset + pos)
                        scan = size - pos - 1  # the last byte may be the first '\n'
                        self._need = size - pos + 1
                        break
                    head = self._parse_head(buf, pos, end)
                scan = 0
            names, values, body_at, length = head
            stop = pos + body_at + length
            if stop > size:
                self._need = body_at + length
                break
            messages.append(self._message(names, values, buf[pos + body_at:stop],
                                          self._offset + pos + body_at))
            head = None
            pos = stop
        else:
            self._need = 1
        self._head = head
        self._scan = scan
        return pos

    @staticmethod
    def _plain_event_head(buf: bytes, pos: int) -> tuple | None:
        """FreeSWITCH frames every plain event as ``Content-Length: N`` +
        ``Content-Type: text/event-plain``; match those bytes directly.  None
        sends anything else (or an incomplete frame) to :meth:`_parse_head`."""
        head = plain_frame_head(buf, pos)
        if head is None:
            return None
        digits, body_at, stop = head
        return PLAIN_FRAME_NAMES, [digits, "text/event-plain"], body_at - pos, stop - body_at

    def _parse_head(self, buf: bytes, pos: int, end: int) -> tuple:
        offset = self._offset + pos
        parts = self._split_head(buf, pos, end)
        if parts is None:
            _refuse_head(buf[pos:end], offset)
        names, values = parts
        length = 0
        if "Content-Length" in names:
            lengths = {v for n, v in zip(names, values) if n == "Content-Length"}
            if len(lengths) > 1:
                raise EslProtocolError(
                    f"conflicting Content-Length headers {sorted(lengths)} at stream "
                    f"offset {offset}", offset)
            length = _content_length(lengths.pop(), offset)
        if "Content-Type" not in names:
            raise EslProtocolError(
                f"message without Content-Type at stream offset {offset}: "
                f"{buf[pos:end].decode()[:80]!r}", offset)
        return names, values, end + 2 - pos, length

    @staticmethod
    def _message(names: list[str], values: list[str], body: bytes, offset: int) -> Message:
        content_type = values[names.index("Content-Type")]
        parse_event = _EVENT_PARSERS.get(content_type)
        if parse_event is not None:
            return Message(names, values, body, parse_event(body, offset))
        if content_type == "command/reply" and "Event-Name" in names:
            # The outbound ``connect`` reply: a whole CHANNEL_DATA event as
            # percent-encoded headers, including ``Reply-Text: %2BOK%0A``.
            # ~130 of them, of which a call reads about ten: each is decoded
            # when read, all of them only when something lists them.
            return _EncodedMessage._of(names, values, body, _EncodedEvent._of(names, values))
        return Message(names, values, body)


# --- what we send ---------------------------------------------------------------

_WIRE_BREAKERS = ("\r", "\n", "\x00")


def _check_wire_value(what: str, value: str, *, single_word: bool = False) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be str, not {type(value).__name__}")
    for char in _WIRE_BREAKERS:
        if char in value:
            raise EslInjectionError(
                f"{what} contains {char!r} at index {value.index(char)}, which would "
                f"end the line on the wire: {value[:80]!r}")
    if single_word and (not value or any(c.isspace() for c in value)):
        raise EslInjectionError(f"{what} must be one non-empty word: {value[:80]!r}")


def encode_command(line: str) -> bytes:
    """One ESL command line, e.g. ``"api status"`` -> ``b"api status\\n\\n"``."""
    _check_wire_value("command", line)
    if not line.strip():
        raise EslInjectionError("empty command")
    return line.encode() + b"\n\n"


def encode_sendmsg(uuid: str | None, app: str, arg: str | None = None, *,
                   event_lock: bool = False, loops: int | None = None,
                   event_uuid: str | None = None,
                   arg_in_body: bool | None = None) -> bytes:
    """``sendmsg`` executing ``app`` on the channel, framed like the traces::

        sendmsg [uuid]
        call-command: execute
        execute-app-name: playback
        event-lock: true
        execute-app-arg: tone_stream://%(200,0,500,600,700)

    ``uuid=None`` targets the outbound socket's own channel.  ``event_uuid``
    comes back as ``Application-UUID`` in CHANNEL_EXECUTE[_COMPLETE].  The
    argument goes in a ``content-type: text/plain`` body (FreeSWITCH uses the
    body when ``execute-app-arg`` is absent) when ``arg_in_body`` is true, or by
    default when it is longer than :data:`INLINE_ARG_LIMIT` or starts with a
    space (mod_event_socket strips leading spaces from header values).  CR, LF
    and NUL are refused everywhere, body included.
    """
    lines = ["sendmsg"]
    if uuid is not None:
        _check_wire_value("uuid", uuid, single_word=True)
        lines[0] = f"sendmsg {uuid}"
    _check_wire_value("application name", app, single_word=True)
    lines += ["call-command: execute", f"execute-app-name: {app}"]
    if event_lock:
        lines.append("event-lock: true")
    if loops is not None:
        if type(loops) is not int or loops < 1:
            raise ValueError(f"loops must be a positive int, not {loops!r}")
        lines.append(f"loops: {loops}")
    if event_uuid is not None:
        _check_wire_value("event uuid", event_uuid, single_word=True)
        lines.append(f"event-uuid: {event_uuid}")
    if not arg:
        return ("\n".join(lines) + "\n\n").encode()
    _check_wire_value("application argument", arg)
    data = arg.encode()
    if arg_in_body is None:
        arg_in_body = len(data) > INLINE_ARG_LIMIT or arg.startswith(" ")
    if arg_in_body:
        lines += ["content-type: text/plain", f"content-length: {len(data)}"]
        return ("\n".join(lines) + "\n\n").encode() + data
    lines.append(f"execute-app-arg: {arg}")
    return ("\n".join(lines) + "\n\n").encode()
