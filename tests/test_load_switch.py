"""The load switch (tests/load_switch.py) against the fake FreeSWITCH: same call, same wire.

Each scenario places one call into the real outbound server twice — through
``tests.fake_freeswitch`` (threads, one header at a time) and through
``tests.load_switch`` (asyncio, cached header blocks) — and compares, in
order, every command our server sent and every frame it received: content
type, header names and values.  Only what differs between any two runs of
the same call is masked: UUIDs, times, sequence numbers and host names.  So
the benchmark's calls are the calls the end-to-end tests check.
"""
from __future__ import annotations

import asyncio
import re
import threading
import time

import pytest

from esl_app.esl_protocol import EslParser
from esl_app.outbound_server import OutboundServer, ServerThread
from tests.fake_freeswitch import Caller, FakeFreeSWITCH, Outcome, Scenario
from tests.load_switch import LoadCallSpec, LoadSettings, LoadSwitch, _due, play_call
from tests.test_outbound_e2e import COMPANY, MONDAY_10, SUNDAY_11, Clock

TIMEOUT = 5.0

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_MASKED = {"Core-UUID", "FreeSWITCH-Hostname", "FreeSWITCH-Switchname", "Event-Date-Local",
           "Event-Date-GMT", "Event-Date-Timestamp", "Event-Sequence", "variable_duration",
           "variable_billsec"}


def _mask(name: str, value: str) -> str:
    if name in _MASKED or name.endswith("-Time") or name.endswith("_epoch"):
        return "*"
    return _UUID.sub("<uuid>", value)


def normalised(received: list[bytes]) -> list[tuple]:
    """What our server read, message by message, with run-specific values masked."""
    out = []
    for message in EslParser().feed(b"".join(received)):
        headers = [(n, _mask(n, v)) for n, v in message.headers]
        event = message.event
        inner = [(n, _mask(n, v)) for n, v in event.headers] if event is not None else None
        out.append((headers, _UUID.sub("<uuid>", message.body.decode()) if event is None else "", inner))
    return out


def wait_for(predicate, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():       # the server runs on its own hub: nothing to wait on but time
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)


def commands(received) -> list[tuple]:
    return [(c.line, [(n, _UUID.sub("<uuid>", v)) for n, v in c.headers], c.body) for c in received]


@pytest.fixture
def store(make_store):
    return make_store(COMPANY)


class Wire:
    def __init__(self):
        self.received: list[bytes] = []
        self.lock = threading.Lock()

    def __call__(self, direction: str, data: bytes) -> None:
        if direction == "<<<":
            with self.lock:
                self.received.append(data)

    def take(self) -> list[bytes]:
        with self.lock:
            data, self.received = self.received, []
        return data


@pytest.fixture
def server(store):
    wire = Wire()
    clock = Clock(MONDAY_10)
    server = OutboundServer(store, listen=("127.0.0.1", 0), gateway="carrier", clock=clock, on_wire=wire)
    thread = ServerThread(server)
    thread.start()
    yield server, wire, clock
    thread.stop(timeout=2.0)


CALLS = {
    "greeting, IVR timeout, then a ring": (
        MONDAY_10, LoadCallSpec("442079460000", caller_number="+447700900123")),
    "simultaneous department": (
        MONDAY_10, LoadCallSpec("442079460001", caller_number="+447700900124", caller_name="Ann O'Neil",
                                vars={"switchboard_called": "442079460001",
                                      "switchboard_called_company": "acme"})),
    "authenticated internal call through a divert": (
        MONDAY_10, LoadCallSpec("2003", caller_number="2005", caller_name="Eve", username="2005",
                                context="switchboard", channel_name="sofia/internal/2005@acme.example",
                                vars={"sip_authorized": "true", "user_name": "2005",
                                      "domain_name": "acme.example"})),
    "closed: greeting then voicemail": (SUNDAY_11, LoadCallSpec("442079460000")),
    "refused number": (MONDAY_10, LoadCallSpec("442079460005")),
}


def _loops():
    """asyncio's loop, and uvloop's (what the benchmark uses) when installed."""
    from tests.load_switch import event_loop_factory

    factory, name = event_loop_factory()
    return [None] + ([factory] if factory is not None else [])


@pytest.mark.parametrize("loop_factory", _loops(), ids=lambda f: "asyncio" if f is None else "uvloop")
@pytest.mark.parametrize("name", list(CALLS))
def test_one_call_through_both_switches_is_the_same_on_the_wire(server, name, loop_factory):
    server, wire, clock = server
    clock.now, spec = CALLS[name]
    host, port = server.address

    with FakeFreeSWITCH(timeout=TIMEOUT) as fake:
        caller = Caller(caller_id_number=spec.caller_number, caller_id_name=spec.caller_name,
                        destination_number=spec.destination, context=spec.context,
                        username=spec.username, channel_name=spec.channel_name)
        fake_call = fake.place_call(host, port, dict(spec.vars),
                                    Scenario(unknown_leg=Outcome.ANSWER, ring_seconds=0.05, talk_seconds=0.05),
                                    caller)
        fake_call.wait()
        wait_for(lambda: server.calls_handled >= 1, "the fake's call to be logged")
    via_fake = wire.take()

    settings = LoadSettings(answer_delay=0.05, hold=0.05, call_timeout=TIMEOUT)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        load_call = runner.run(play_call(host, port, spec, switch=LoadSwitch(settings, hostname="fake-fs")))
    wait_for(lambda: server.calls_handled >= 2, "the load switch's call to be logged")
    via_load = wire.take()

    assert fake_call.errors == [] and not fake_call.abandoned
    assert load_call.error == "", load_call.error
    assert commands(load_call.commands) == commands(fake_call.commands)
    assert [c.name for c in load_call.commands][:5] == ["connect", "myevents", "nixevent", "linger", "resume"]
    assert load_call.dial == (fake_call.bridges[0].dial_string if fake_call.bridges else None)
    ours, theirs = normalised(via_load), normalised(via_fake)
    assert len(ours) == len(theirs)
    for index, (mine, expected) in enumerate(zip(ours, theirs)):
        assert mine == expected, f"message {index} differs"


@pytest.mark.parametrize("stream", [
    b"connect\n\nmyevents\n\nlinger\n\nresume\n\n",
    b"sendmsg\ncall-command: execute\nexecute-app-name: set\nevent-lock: true\n"
    b"event-uuid: 1\nexecute-app-arg: hangup_after_bridge=true\n\n\n\nexit\n\n",
    b"sendmsg\nexecute-app-name: x\nexecute-app-name: y\nno colon here\nempty:\n\n",
    b"sendmsg\r\ncall-command: execute\r\n\r\nexit\n\n",                          # CRs: the slow reader
    b"sendmsg\ncall-command: execute\ncontent-type: text/plain\ncontent-length: 5\n\nab\ncdexit\n\n",
])
@pytest.mark.parametrize("chunk", [1, 7, 10_000])
def test_the_fast_command_reader_reads_like_mod_event_socket(stream, chunk):
    from tests.fake_freeswitch import CommandReader
    from tests.load_switch import _CommandReader

    fast, reference = _CommandReader(), CommandReader()
    got, expected = [], []
    for i in range(0, len(stream), chunk):
        got += fast.feed(stream[i:i + chunk])
        expected += reference.feed(stream[i:i + chunk])
    assert [(c.line, c.headers, c.body) for c in got] == [(c.line, c.headers, c.body) for c in expected]
    assert [c.name for c in got] == [c.name for c in expected]
    assert [c.header("EXECUTE-APP-NAME") for c in got] == [c.header("execute-app-name") for c in expected]


def test_the_ramp_places_calls_at_the_rate():
    assert _due(0, 100, 2, 10) == 0
    assert _due(1, 100, 2, 10) == 25            # half way up the ramp: a quarter of its calls
    assert _due(2, 100, 2, 10) == 100
    assert _due(12, 100, 2, 10) == 1100
    assert _due(99, 100, 2, 10) == 1100         # nothing after the sustained part
    assert _due(5, 100, 0, 10) == 500
