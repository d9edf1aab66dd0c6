"""End to end: the fake FreeSWITCH places calls into the real outbound server.

How gevent and threads meet here: the fake switch is plain ``socket`` +
``threading``, and the test thread waits on it.  The server is gevent's
``StreamServer`` with a ``Pool``, *without* monkey-patching: it runs on its
own hub in a dedicated OS thread (:class:`esl_app.outbound_server.ServerThread`),
uses gevent sockets explicitly, and is stopped from the test thread through
``loop.run_callback_threadsafe``.  Nothing in the test process is patched, so
the fake's threads and the test's waits keep their ordinary blocking
semantics.  Every wait has a timeout; time inside a call is the fake's
virtual clock, and the routing clock is injected.
"""
from __future__ import annotations

import logging
import re
import socket
import threading

import pytest

from esl_app.esl_protocol import EslParser
from esl_app.executor import UNUSED_EVENTS
from esl_app.outbound_server import OutboundServer, ServerThread
from esl_app.service_config import Listen, ServiceConfig
from fastpath import engine
from tests.conftest import at
from tests.fake_freeswitch import Caller, CommandReader, FakeFreeSWITCH, Outcome, Scenario, parse_dial_string

TIMEOUT = 5.0
D = "acme.example"
GW = "sofia/gateway/carrier"

#: The header every end-to-end test company shares (the ICM and referral e2e tests import it).
ACME_HEAD = """\
id: acme
name: Acme Ltd
country: GB
timezone: Europe/London
sip_domain: acme.example
"""

COMPANY = ACME_HEAD + """\
defaults: {no_answer_seconds: 20, ring_timeout: 45}
outbound_caller_id: "+442079460000"
employees:
  - {extension: 2001, name: Alice, mobile: "+447400100001"}
  - {extension: 2002, name: Bob, mobile: "+447400100002", mobile_after: 15, diverts: {no_answer: voicemail}}
  - {extension: 2003, name: Carol, diverts: {always: "extension:2004"}}
  - {extension: 2004, name: Dan, diverts: {busy: voicemail, no_answer: {to: "extension:2005", after: 12}}}
  - {extension: 2005, name: Eve, diverts: {unreachable: "external:+447400100005", busy: "extension:2001"}}
  - {extension: 2010, name: Judy, role: receptionist}
departments:
  - {extension: 600, name: Sales, strategy: simultaneous, members: [2001, 2010, 2005], timeout: 30,
     no_answer: "voicemail:600"}
  - {extension: 601, name: Support, strategy: sequential, members: [2001, 2010, 2005], step_seconds: 10,
     timeout: 25, no_answer: "department:602"}
  - {extension: 602, name: Escalation, strategy: cumulative, members: [2010, 2005, 2001], step_seconds: 8,
     timeout: 20, no_answer: "department:601"}
schedules:
  office:
    hours:
      mon: ["09:00-17:30"]
      tue: ["09:00-17:30"]
      wed: ["09:00-17:30"]
      thu: ["09:00-17:30"]
      fri: ["09:00-17:30"]
    holidays: ["2026-12-25"]
numbers:
  - {number: "+44 20 7946 0000", schedule: office, open: {to: "ivr:main", greeting: welcome.wav},
     closed: {to: "voicemail:600", greeting: closed.wav}}
  - {number: "+442079460001", route: "department:600"}
  - {number: "+442079460002", route: "department:601"}
  - {number: "+442079460003", route: "fax:2001"}
  - {number: "+442079460005", route: "hangup:CALL_REJECTED"}
ivr:
  main:
    greeting: main.wav
    options: {1: "department:600", 2: "employee:2002", 9: "external:+447400100099"}
    on_timeout: "employee:2010"
    on_invalid: "voicemail:600"
"""

MONDAY_10 = at("2026-11-23 10:00")
SUNDAY_11 = at("2026-11-22 11:00")


def user(ext: str) -> str:
    return f"user/{ext}@{D}"


# --- fixtures ------------------------------------------------------------------------------------

class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


class LogWatch(logging.Handler):
    """Collects log records from any thread; waits with a timeout."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._changed:
            self.records.append(record)
            self._changed.notify_all()

    def wait_for(self, predicate, what: str, timeout: float = TIMEOUT) -> logging.LogRecord:
        def found():
            return next((r for r in self.records if predicate(r)), None)
        with self._changed:
            record = self._changed.wait_for(found, timeout)
        if record is None:
            raise TimeoutError(f"no log record: {what}; got {[r.getMessage() for r in self.records]}")
        return record

    def call_line(self, uuid: str) -> str:
        return self.wait_for(lambda r: r.name == "switchboard.calls" and f"uuid={uuid} " in r.getMessage(),
                             f"the call line of {uuid}").getMessage()


@pytest.fixture
def logs():
    watch = LogWatch()
    loggers = [logging.getLogger(name) for name in ("switchboard.calls", "switchboard.outbound")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(watch)
        lg.setLevel(logging.INFO)
    yield watch
    for lg, level in zip(loggers, levels):
        lg.removeHandler(watch)
        lg.setLevel(level)


@pytest.fixture
def store(make_store):
    return make_store(COMPANY)


@pytest.fixture
def clock():
    return Clock(MONDAY_10)


@pytest.fixture
def wire():
    sent: list[bytes] = []
    return sent


@pytest.fixture
def fake():
    with FakeFreeSWITCH(timeout=TIMEOUT) as switch:
        yield switch


@pytest.fixture
def start_server(store, clock, wire):
    threads = []

    def start(**options):
        options.setdefault("listen", ("127.0.0.1", 0))
        options.setdefault("clock", clock)
        options.setdefault("on_wire", lambda direction, data: direction == ">>>" and wire.append(data))
        server = OutboundServer(store, gateway="carrier", **options)
        thread = ServerThread(server)
        thread.start()
        threads.append(thread)
        return server, thread

    yield start
    for thread in threads:
        thread.stop(timeout=2.0)


@pytest.fixture
def server(start_server):
    return start_server()[0]


class Dialler:
    def __init__(self, fake, server, logs):
        self.fake, self.server, self.logs = fake, server, logs

    def call(self, called: str, *, caller: str = "+447700900123", name: str = "", legs=None, digits=(),
             hangs_up_after=None, channel_vars=None, unknown_leg=Outcome.NO_ANSWER):
        scenario = Scenario(legs=legs or {}, digits=list(digits), caller_hangs_up_after=hangs_up_after,
                            unknown_leg=unknown_leg)
        call = self.fake.place_call(*self.server.address, channel_vars or {}, scenario,
                                    Caller(caller_id_number=caller, caller_id_name=name,
                                           destination_number=called))
        call.wait()
        return call, self.logs.call_line(call.uuid)


@pytest.fixture
def dial(fake, server, logs):
    return Dialler(fake, server, logs).call


def field(line: str, name: str) -> str:
    match = re.search(rf'\b{name}=("(?:[^"\\]|\\.)*"|\S+)', line)
    assert match, f"no {name}= in {line}"
    value = match.group(1)
    return value[1:-1] if value.startswith('"') else value


def dial_strings(call) -> list[str]:
    return [b.dial_string for b in call.bridges]


def legs_of(dial: str) -> list[list[tuple[str, dict]]]:
    return parse_dial_string(dial)[1]


# --- the engine and the handshake -------------------------------------------------------------------

def test_calls_are_routed_by_the_compiled_engine(server, dial):
    assert engine.IMPLEMENTATION == "fastpath"
    assert "cyfunction" in repr(server.decide) or "cython" in type(server.decide).__name__
    _, line = dial("442079460005")
    assert field(line, "engine") == "fastpath"


def test_handshake_then_plan_then_exit(dial, wire):
    call, line = dial("442079460005")
    names = [c.line for c in call.commands]
    assert names[:5] == ["connect", "myevents", "nixevent " + " ".join(UNUSED_EVENTS), "linger", "resume"]
    assert [c.line for c in CommandReader().feed(wire[0])] == names[:5]     # all in the first write
    assert names[-1] == "exit"
    assert call.executed == [("hangup", "CALL_REJECTED")]
    assert call.hangup_cause == "CALL_REJECTED" and not call.abandoned and call.errors == []
    assert (field(line, "outcome"), field(line, "detail"), field(line, "company")) == \
        ("hangup", "CALL_REJECTED", "acme")


def test_the_number_normalised_by_the_dialplan_is_routed(dial):
    """The carrier sent national format; freeswitch_conf's dialplan set switchboard_called."""
    call, line = dial("02079460005", channel_vars={"switchboard_called": "442079460005",
                                                   "switchboard_called_company": "acme"})
    assert call.executed == [("hangup", "CALL_REJECTED")]
    assert field(line, "called") == "442079460005"


def test_unknown_number_is_unallocated(dial):
    call, line = dial("15550100")
    assert call.executed == [("hangup", "UNALLOCATED_NUMBER")]
    assert field(line, "company") == "-"


# --- departments ----------------------------------------------------------------------------------------

def test_simultaneous_department_rings_all_then_its_voicemail(dial):
    call, line = dial("442079460001")
    (dial_string,) = dial_strings(call)
    assert dial_string == ("{ignore_early_media=true,call_timeout=30,origination_caller_id_number=+447700900123,"
                           f"origination_caller_id_name=+447700900123}}{user('2001')},{user('2010')},{user('2005')}")
    assert call.executed[-2:] == [("voicemail", f"default {D} 600"), ("hangup", "NORMAL_CLEARING")]
    assert (field(line, "outcome"), field(line, "detail")) == ("voicemail", "box 600")


def test_sequential_department_overflows_into_cumulative_then_stops_at_the_loop(dial):
    """601 (sequential) → 602 (cumulative) → back to 601 would loop: the
    continuation decides then and hangs up NO_ANSWER."""
    call, line = dial("442079460002")
    sequential, cumulative = dial_strings(call)
    assert legs_of(sequential) == [[(user("2001"), {"leg_timeout": "10"})], [(user("2010"), {"leg_timeout": "10"})],
                                   [(user("2005"), {"leg_timeout": "5"})]]
    assert legs_of(cumulative) == [[(user("2010"), {"leg_delay_start": "0", "leg_timeout": "20"}),
                                    (user("2005"), {"leg_delay_start": "8", "leg_timeout": "20"}),
                                    (user("2001"), {"leg_delay_start": "16", "leg_timeout": "20"})]]
    assert call.executed[-1] == ("hangup", "NO_ANSWER")
    assert field(line, "decisions") == "2"
    assert "divert loop 601 → 602 → 601 ignored" in field(line, "reasons")


def test_cumulative_department_answered_by_a_later_member(dial):
    call, line = dial("602", legs={user("2005"): Outcome.ANSWER})
    assert call.bridges[-1].answered == user("2005")
    assert (field(line, "outcome"), field(line, "detail")) == ("answered", "ext 2005 (Eve)")
    assert call.executed[-1][0] == "bridge"             # hangup_after_bridge ends it


# --- schedules ----------------------------------------------------------------------------------------

def test_business_hours_play_the_greeting_then_the_menu(dial, clock):
    clock.now = MONDAY_10
    call, line = dial("+442079460000", digits=["1"], legs={user("2010"): Outcome.ANSWER})
    apps = [app for app, _ in call.executed]
    assert apps[:4] == ["answer", "playback", "play_and_get_digits", "multiset"]
    assert call.executed[1] == ("playback", "welcome.wav")
    assert "Monday 10:00 in Europe/London: working hours" in field(line, "reasons")


def test_outside_hours_play_the_closed_greeting_then_voicemail(dial, clock):
    clock.now = SUNDAY_11
    call, line = dial("442079460000")
    assert call.executed == [("answer", ""), ("playback", "closed.wav"), ("voicemail", f"default {D} 600"),
                             ("hangup", "NORMAL_CLEARING")]
    assert "outside working hours" in field(line, "reasons")


def test_holiday_uses_the_closed_route(dial, clock):
    clock.now = at("2026-12-25 10:00")
    call, _ = dial("442079460000")
    assert ("playback", "closed.wav") in call.executed


# --- IVR -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("digits, expected_dial_tail, reason", [
    (["1"], f"{user('2001')},{user('2010')},{user('2005')}", "IVR main: caller pressed 1 → dept 600"),
    (["2"], user("2002"), "IVR main: caller pressed 2 → ext 2002 (Bob)"),
    (["9"], f"{GW}/+447400100099", "IVR main: caller pressed 9 → +447400100099"),
    ([None], user("2010"), "IVR main: no choice made → ext 2010 (Judy)"),
])
def test_ivr_choice_is_decided_again_and_rung(dial, digits, expected_dial_tail, reason):
    call, line = dial("442079460000", digits=digits, unknown_leg=Outcome.ANSWER)
    pagd = next(arg for app, arg in call.executed if app == "play_and_get_digits")
    assert pagd.split()[:9] == ["1", "1", "3", "5000", "none", "main.wav",
                                "ivr/ivr-that_was_an_invalid_entry.wav", "switchboard_ivr_choice_1", "^[129]$"]
    assert call.bridges[0].dial_string.endswith("}" + expected_dial_tail)
    assert reason in field(line, "reasons")
    assert field(line, "outcome") == "answered"


def test_invalid_ivr_digit_goes_to_the_invalid_route(dial):
    call, line = dial("442079460000", digits=["7"])
    assert not call.bridges
    assert call.executed[-2] == ("voicemail", f"default {D} 600")
    assert "IVR main: invalid choice → voicemail 600" in field(line, "reasons")


# --- diverts ---------------------------------------------------------------------------------------------------

def test_always_divert_rings_the_target_directly(dial):
    call, line = dial("2003", legs={user("2004"): Outcome.ANSWER})
    assert [legs for legs in legs_of(call.bridges[0].dial_string)] == [[(user("2004"), {})]]
    assert field(line, "detail") == "ext 2004 (Dan)"


def test_busy_divert_after_the_switch_reports_busy(dial):
    call, line = dial("2004", legs={user("2004"): Outcome.BUSY})
    assert call.executed[-2:] == [("voicemail", f"default {D} 2004"), ("hangup", "NORMAL_CLEARING")]
    assert "ring failed: busy (USER_BUSY)" in field(line, "notes")


def test_no_answer_divert_rings_the_next_extension(dial):
    call, line = dial("2004", legs={user("2004"): Outcome.NO_ANSWER, user("2005"): Outcome.ANSWER})
    first, second = dial_strings(call)
    assert legs_of(first) == [[(user("2004"), {})]] and "call_timeout=12" in first
    assert legs_of(second) == [[(user("2005"), {})]]
    assert field(line, "detail") == "ext 2005 (Eve)"


def test_unreachable_divert_goes_out_through_the_gateway(dial):
    call, line = dial("2005", legs={user("2005"): Outcome.UNREGISTERED, f"{GW}/+447400100005": Outcome.ANSWER})
    assert dial_strings(call)[1].endswith(f"}}{GW}/+447400100005")
    assert "ring failed: unreachable (USER_NOT_REGISTERED)" in field(line, "notes")
    assert field(line, "detail") == "+447400100005"


def test_divert_chain_continues_through_a_fresh_decision(dial):
    """2003 always → 2004, no answer → 2005, busy → continuation then:2005/busy/… → 2001 answers."""
    legs = {user("2004"): Outcome.NO_ANSWER, user("2005"): Outcome.BUSY, user("2001"): Outcome.ANSWER}
    call, line = dial("2003", legs=legs)
    assert [legs_of(d)[0][0][0] for d in dial_strings(call)] == [user("2004"), user("2005"), user("2001")]
    assert field(line, "decisions") == "2"
    assert "ext 2005 is busy, busy divert → ext 2001 (Alice)" in field(line, "reasons")
    assert field(line, "detail") == "ext 2001 (Alice)"


def test_no_answer_goes_to_the_mobile_through_the_gateway(dial):
    call, line = dial("2002", legs={user("2002"): Outcome.NO_ANSWER, f"{GW}/+447400100002": Outcome.ANSWER})
    desk, mobile = dial_strings(call)
    assert "call_timeout=15" in desk
    assert mobile.endswith(f"}}{GW}/+447400100002") and "call_timeout=20" in mobile
    assert field(line, "detail") == "+447400100002 (Bob (mobile))"


def test_mobile_not_answering_ends_in_voicemail_via_continuation(dial):
    call, line = dial("2002", legs={user("2002"): Outcome.NO_ANSWER, f"{GW}/+447400100002": Outcome.NO_ANSWER})
    assert len(call.bridges) == 2
    assert call.executed[-2] == ("voicemail", f"default {D} 2002")
    assert field(line, "decisions") == "2"


def test_fax_number_receives_into_the_spool(dial):
    call, line = dial("442079460003")
    assert ("rxfax", f"/var/spool/switchboard/fax/{call.uuid}-2001.tif") in call.executed
    assert field(line, "outcome") == "fax"


# --- who is calling --------------------------------------------------------------------------------------------

def test_authenticated_employee_dials_out_with_the_company_caller_id(fake, server, logs):
    call = fake.place_call(*server.address, {"sip_authorized": "true", "user_name": "2001"},
                           Scenario(unknown_leg=Outcome.ANSWER),
                           Caller(caller_id_number="2001", caller_id_name="Alice", destination_number="02079460999",
                                  context="default"))
    call.wait()
    (dial_string,) = dial_strings(call)
    global_vars, groups = parse_dial_string(dial_string)
    assert groups == [[(f"{GW}/+442079460999", {})]]
    assert global_vars["origination_caller_id_number"] == "+442079460000"
    assert field(logs.call_line(call.uuid), "caller") == "2001"


def test_spoofed_extension_caller_id_cannot_dial_out(dial):
    """Without authentication, caller ID 2001 is not employee 2001: no toll fraud."""
    call, line = dial("02079460999", caller="2001")
    assert not call.bridges and call.executed == [("hangup", "UNALLOCATED_NUMBER")]
    assert "looks like an extension" in field(line, "notes")


def test_destination_that_is_an_internal_address_is_refused(dial):
    call, line = dial("then:2002/mobile/2002")
    assert call.executed == [("hangup", "UNALLOCATED_NUMBER")] and field(line, "decisions") == "0"


def test_only_the_events_the_executor_reads_are_delivered(start_server, fake, logs):
    """Should nix what myevents adds but the executor never reads, and still get
    the answer, the bridge and the completions a bridged call needs."""
    received = []
    server, _ = start_server(on_wire=lambda direction, data: direction == "<<<" and received.append(data))
    call, line = Dialler(fake, server, logs).call("442079460001", legs={user("2010"): Outcome.ANSWER})
    assert field(line, "outcome") == "answered"
    names = [m.event.name for m in EslParser().feed(b"".join(received))
             if m.content_type == "text/event-plain"]
    assert {"CHANNEL_EXECUTE_COMPLETE", "CHANNEL_ANSWER", "CHANNEL_BRIDGE", "CHANNEL_HANGUP"} <= set(names)
    assert names.count("CHANNEL_PARK") <= 1                   # may beat the nixevent: it follows myevents
    assert not set(names) & (set(UNUSED_EVENTS) - {"CHANNEL_PARK"}), names


def test_hostile_caller_id_cannot_inject_a_command(fake, dial, wire):
    name = ('Mallory"\r\n\r\napi originate sofia/gateway/gw/447700900123 &park\n\n'
            "bgapi originate loopback/9999 &park\n\n}{origination_uuid=x}[a=b]|${system(id)}^^:")
    call, line = dial("442079460001", caller="+447700900123\n\napi status", name=name,
                      legs={user("2010"): Outcome.ANSWER})
    # What the fake switch parsed, by mod_event_socket's own rules.
    assert {c.name for c in call.commands} <= {"connect", "myevents", "nixevent", "linger", "resume", "sendmsg",
                                              "exit"}
    assert fake.connections == []
    assert [app for app, _ in call.executed] == ["multiset", "bridge"]
    global_vars, groups = parse_dial_string(call.executed[-1][1])
    assert set(global_vars) == {"ignore_early_media", "call_timeout", "origination_caller_id_number",
                                "origination_caller_id_name"}
    assert global_vars["origination_caller_id_number"] == "anonymous"
    shown = global_vars["origination_caller_id_name"]
    assert shown.startswith("Mallory api originate sofia gateway gw") and len(shown) <= 40
    assert [leg for group in groups for leg, _ in group] == [user("2001"), user("2010"), user("2005")]
    # The bytes our server wrote: no line of them starts a command of its own.
    sent = b"".join(wire)
    commands = CommandReader().feed(sent)
    assert [c.name for c in commands if c.name not in ("sendmsg",)] == \
        ["connect", "myevents", "nixevent", "linger", "resume", "exit"]
    assert b"\napi" not in sent and b"bgapi" not in sent and b"\r" not in sent
    assert b"originate sofia/" not in sent and b"${" not in sent
    assert "\n" not in line and field(line, "outcome") == "answered"


# --- hangups --------------------------------------------------------------------------------------------------

def test_caller_hanging_up_mid_plan_stops_the_executor(dial):
    """connect, myevents, nixevent, linger, resume = commands 0-4; answer 5; the greeting is 6."""
    call, line = dial("442079460000", hangs_up_after=6)
    assert [app for app, _ in call.executed] == ["answer", "playback"]
    assert call.commands[-1].line == "exit" and call.errors == [] and not call.abandoned
    assert (field(line, "outcome"), field(line, "detail")) == ("caller_hung_up", "NORMAL_CLEARING")


def test_caller_hanging_up_while_ringing(dial):
    call, line = dial("442079460001", hangs_up_after=6)   # multiset 5, bridge 6
    assert call.bridges[-1].cause == "ORIGINATOR_CANCEL"
    assert field(line, "outcome") == "caller_hung_up" and call.errors == []


# --- the server: isolation, backpressure, shutdown -----------------------------------------------------------------

def raw_client(address) -> socket.socket:
    sock = socket.create_connection(address, timeout=TIMEOUT)
    sock.settimeout(TIMEOUT)
    return sock


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


CHANNEL_DATA = (b"Event-Name: CHANNEL_DATA\nUnique-ID: 0f0e0d0c-0000-4000-8000-000000000001\n"
                b"Caller-Destination-Number: 600\nCaller-Caller-ID-Number: %2B447700900123\n"
                b"Content-Type: command/reply\nReply-Text: %2BOK%0A\nSocket-Mode: async\nControl: full\n\n")


def test_a_malformed_frame_resets_only_that_connection(server, dial, logs):
    bad = raw_client(server.address)
    assert read_until(bad, b"resume\n\n").startswith(b"connect\n\n")
    bad.sendall(b"Content-Type: command/reply\nnot a header line\n\n")
    assert read_until(bad, b"\x00never") == b""          # we closed it
    bad.close()
    logs.wait_for(lambda r: "outcome=protocol_error" in r.getMessage(), "the protocol error")
    call, line = dial("442079460005")
    assert field(line, "outcome") == "hangup"


def test_a_handler_exception_is_isolated_and_logged(start_server, store, fake, logs):
    def decide(store_, called, caller, now):
        if called == "442079460001":
            raise RuntimeError("engine exploded")
        return engine.decide(store_, called, caller, now)

    server, _ = start_server(decide=decide)
    dialler = Dialler(fake, server, logs)
    broken, line = dialler.call("442079460001")
    assert field(line, "outcome") == "error" and "engine exploded" in field(line, "detail")
    assert broken.commands[-1].line == "exit" and broken.executed == []   # left to the dialplan (resume)
    record = logs.wait_for(lambda r: r.name == "switchboard.outbound" and r.exc_info, "the traceback")
    assert broken.uuid in record.getMessage()
    fine, line = dialler.call("442079460005")
    assert field(line, "outcome") == "hangup"
    assert server.health()["calls_failed"] == 1


def test_max_calls_is_backpressure(start_server, fake, logs):
    server, _ = start_server(max_calls=1)
    hog = raw_client(server.address)
    assert read_until(hog, b"resume\n\n").startswith(b"connect\n\nmyevents\n\n")
    waiting = fake.place_call(*server.address, {}, Scenario(), Caller(destination_number="442079460005"))
    with pytest.raises(TimeoutError):       # the pool is full: nobody serves it yet
        fake.wait_until(lambda: waiting.commands, timeout=0.3, what="a command to the waiting call")
    hog.close()
    waiting.wait()
    assert waiting.executed == [("hangup", "CALL_REJECTED")]


def test_graceful_stop_detaches_calls_still_in_progress(start_server, logs):
    server, thread = start_server()
    stuck = raw_client(server.address)
    assert read_until(stuck, b"resume\n\n").startswith(b"connect\n\nmyevents\n\n")
    stuck.sendall(CHANNEL_DATA)                                           # and never answer the rest
    address = server.address
    assert thread.stop(timeout=0.2) == 1
    assert read_until(stuck, b"exit\n\n").endswith(b"exit\n\n")            # let go, not hung up
    line = logs.call_line("0f0e0d0c-0000-4000-8000-000000000001")
    assert field(line, "outcome") == "detached"
    with pytest.raises(OSError):
        socket.create_connection(address, timeout=1.0).close()
    stuck.close()


def test_server_from_service_config(store):
    config = ServiceConfig(outbound=Listen("127.0.0.1", 0), gateway="uplink", max_calls=7, esl_password="x")
    server = OutboundServer.from_config(config, store)
    assert (server.listen, server.max_calls, server.settings.gateway) == (("127.0.0.1", 0), 7, "uplink")
    health = server.health()
    assert health["listening"] is False and health["engine"] == engine.IMPLEMENTATION
    with pytest.raises(ValueError):
        OutboundServer(store, max_calls=0)
