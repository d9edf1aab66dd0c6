"""The call executor in three layers: the sans-IO protocol against real FreeSWITCH
recordings, the pure helpers, and the Executor driving the fake switch over a
plain socket from the test thread (no gevent, no server)."""
from __future__ import annotations

import logging
import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esl_app.esl_protocol import Event
from esl_app.executor import (
    CallChannel,
    CallGone,
    CallInfo,
    CallProtocol,
    CallReport,
    CallTimeout,
    CommandError,
    Executor,
    ExecutorSettings,
    classify_failure,
    ivr_arguments,
    log_call,
)
from fastpath.route_plan import Announce, Continue, Fax, Hangup, Ivr, Ring, RoutePlan, Target, Voicemail
from tests.esl_trace import read_trace, TRACE_DIR
from tests.fake_freeswitch import Caller, CommandReader, FakeEvent, FakeFreeSWITCH, Outcome, Scenario

TIMEOUT = 5.0


def trace_chunks(name: str) -> list[bytes]:
    return read_trace(TRACE_DIR / f"{name}.trace").recv_chunks()


def event(**headers) -> Event:
    return Event(list(headers), list(headers.values()))


# --- the sans-IO protocol against the recordings ------------------------------------------

def test_replies_resolve_in_order_and_completions_by_application_uuid():
    """outbound_bridge.trace: connect, myevents, answer, set, bridge (answered,
    callee hung up), our hangup, disconnect."""
    protocol = CallProtocol()
    replies = [protocol.expect_reply() for _ in range(6)]
    answer = protocol.expect_completion("c5878557-edbb-4c56-b7dd-e795e5b33862", "answer")
    bridge = protocol.expect_completion("46489264-f4d8-4147-aa29-9b013a93eb7d", "bridge")
    for chunk in trace_chunks("outbound_bridge"):
        protocol.feed(chunk)
    assert replies[0].value().event.name == "CHANNEL_DATA"
    assert [r.value().reply_text for r in replies[1:]] == ["+OK Events Enabled", "+OK", "+OK", "+OK", "+OK"]
    assert answer.value()["Application"] == "answer"
    done = bridge.value()
    assert done["variable_originate_disposition"] == "SUCCESS"
    assert protocol.uuid == replies[0].value().event["Unique-ID"]
    assert protocol.answered and protocol.bridged is not None
    assert protocol.hangup_cause == "NORMAL_CLEARING"
    assert protocol.closed is not None and protocol.closed.reason == "disconnected"


@pytest.mark.parametrize("name, playback_uuid", [
    ("outbound_caller_hangup_nolinger", "61be6191-d03e-4660-9af7-ceada56574ad"),
    ("outbound_caller_hangup_linger5", "8a03a822-3300-43b7-b74f-09f8f25d669f"),
])
def test_caller_hangup_fails_the_running_application(name, playback_uuid):
    protocol = CallProtocol()
    playback = protocol.expect_completion(playback_uuid, "playback")
    for chunk in trace_chunks(name):
        protocol.feed(chunk)
    with pytest.raises(CallGone) as gone:
        playback.value()
    assert (gone.value.reason, gone.value.cause) == ("hangup", "NORMAL_CLEARING")
    assert protocol.lingering is name.endswith("linger5")
    assert protocol.closed is not None


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(1, 400), max_size=60))
def test_any_chunking_gives_the_same_outcome(cuts):
    data = b"".join(trace_chunks("outbound_async_full_linger"))
    protocol = CallProtocol()
    replies = [protocol.expect_reply() for _ in range(9)]
    playback = protocol.expect_completion("7475d870-5de8-4e3c-920c-bd9bc3b4b7a5", "playback")
    pos = 0
    for cut in cuts:
        protocol.feed(data[pos:pos + cut])
        pos += cut
    protocol.feed(data[pos:])
    assert [r.value().reply_text for r in replies[2:]] == [
        "+OK will linger", "+OK", "+OK", "+OK", "+OK", "+OK", "+OK bye"]
    assert playback.value()["Application-Response"] == "FILE PLAYED"
    assert protocol.hangup_cause == "NORMAL_CLEARING" and protocol.lingering
    assert protocol.closed.reason == "disconnected"      # after our exit


def test_a_malformed_frame_fails_every_waiter():
    protocol = CallProtocol()
    reply = protocol.expect_reply()
    app = protocol.expect_completion("u-1", "playback")
    with pytest.raises(CallGone) as gone:
        protocol.feed(b"Content-Type: command/reply\nthis line has no colon\n\n")
    assert gone.value.reason == "protocol_error"
    for waiter in (reply, app):
        with pytest.raises(CallGone):
            waiter.value()
    late = protocol.expect_reply()
    assert late.done and isinstance(late.error, CallGone)


def test_eof_fails_replies_and_applications_alike():
    protocol = CallProtocol()
    reply, app = protocol.expect_reply(), protocol.expect_completion("u-1", "bridge")
    closer = protocol.expect_close()
    protocol.eof()
    assert isinstance(reply.error, CallGone) and isinstance(app.error, CallGone)
    assert closer.done and closer.error is None


def test_after_a_hangup_new_applications_fail_at_once_but_commands_still_work():
    """With linger, FreeSWITCH still answers exit after the hangup."""
    protocol = CallProtocol()
    protocol._on_event(event(**{"Event-Name": "CHANNEL_HANGUP", "Hangup-Cause": "USER_BUSY"}))
    assert isinstance(protocol.expect_completion("x", "playback").error, CallGone)
    assert not protocol.expect_reply().done


# --- helpers -------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers, expected", [
    ({"variable_originate_disposition": "USER_BUSY"}, ("busy", "USER_BUSY")),
    ({"variable_originate_disposition": "CALL_REJECTED"}, ("busy", "CALL_REJECTED")),
    ({"variable_originate_disposition": "NO_ANSWER"}, ("no_answer", "NO_ANSWER")),
    ({"variable_originate_disposition": "NO_USER_RESPONSE"}, ("no_answer", "NO_USER_RESPONSE")),
    ({"variable_originate_disposition": "ORIGINATOR_CANCEL"}, ("no_answer", "ORIGINATOR_CANCEL")),
    ({"variable_originate_disposition": "ALLOTTED_TIMEOUT"}, ("no_answer", "ALLOTTED_TIMEOUT")),
    *[({"variable_originate_disposition": c}, ("unreachable", c)) for c in (
        "USER_NOT_REGISTERED", "SUBSCRIBER_ABSENT", "NO_ROUTE_DESTINATION", "UNALLOCATED_NUMBER",
        "DESTINATION_OUT_OF_ORDER", "NORMAL_TEMPORARY_FAILURE", "RECOVERY_ON_TIMER_EXPIRE")],
    # originate_disposition wins; "failure" is FreeSWITCH's placeholder, not a cause
    ({"variable_originate_disposition": "failure", "variable_bridge_hangup_cause": "USER_BUSY"},
     ("busy", "USER_BUSY")),
    ({"variable_originate_disposition": "NO_ANSWER", "variable_DIALSTATUS": "BUSY"}, ("no_answer", "NO_ANSWER")),
    ({"variable_DIALSTATUS": "BUSY"}, ("busy", "USER_BUSY")),
    ({"variable_DIALSTATUS": "NOANSWER"}, ("no_answer", "NO_ANSWER")),
    ({"variable_DIALSTATUS": "DONTCALL"}, ("busy", "CALL_REJECTED")),
    ({"variable_DIALSTATUS": "USER_NOT_REGISTERED"}, ("unreachable", "USER_NOT_REGISTERED")),
    ({"variable_originate_disposition": "INCOMPATIBLE_DESTINATION"}, ("unreachable", "INCOMPATIBLE_DESTINATION")),
    ({}, ("unreachable", "NORMAL_TEMPORARY_FAILURE")),
])
def test_classify_failure(headers, expected):
    assert classify_failure(event(**headers)) == expected


def test_classify_failure_without_an_event():
    assert classify_failure(None) == ("unreachable", "NORMAL_TEMPORARY_FAILURE")


def channel_data(**overrides) -> Event:
    headers = {"Event-Name": "CHANNEL_DATA", "Unique-ID": "1f7c3f46-9b3e-4c53-9d4c-4a1c1b0e2a11",
               "Caller-Destination-Number": "442079460001", "Caller-Caller-ID-Number": "+447700900123",
               "Caller-Caller-ID-Name": "Alice Smith"}
    headers.update(overrides)
    return event(**{k: v for k, v in headers.items() if v is not None})


def test_call_info_from_an_external_call():
    call = CallInfo.from_channel_data(channel_data())
    assert (call.uuid, call.called, call.caller, call.caller_number, call.caller_name) == (
        "1f7c3f46-9b3e-4c53-9d4c-4a1c1b0e2a11", "442079460001", "+447700900123", "+447700900123", "Alice Smith")
    assert not call.authenticated and call.notes == ()


@pytest.mark.parametrize("destination", ["then:2002/mobile/2002", "ivr:acme/main/9", "2001@evil", "600 x", "+"])
def test_destinations_that_are_not_numbers_never_reach_the_engine(destination):
    """An INVITE to sip:then:2002/mobile/2002@pbx must not jump into an internal address."""
    call = CallInfo.from_channel_data(channel_data(**{"Caller-Destination-Number": destination}))
    assert call.called == "" and "destination is not a dialable number" in call.notes


def test_destination_falls_back_to_the_sip_request_user():
    call = CallInfo.from_channel_data(channel_data(**{"Caller-Destination-Number": None,
                                                      "variable_sip_req_user": "+442079460002"}))
    assert call.called == "+442079460002"


def test_destination_prefers_the_number_our_dialplan_normalised():
    call = CallInfo.from_channel_data(channel_data(**{"Caller-Destination-Number": "02079460001",
                                                      "variable_switchboard_called": "442079460001"}))
    assert call.called == "442079460001"
    hostile = CallInfo.from_channel_data(channel_data(**{"variable_switchboard_called": "ivr:acme/main/9"}))
    assert hostile.called == ""


@pytest.mark.parametrize("number", ["2001\r\n\r\napi originate x", "+44 20 7946", "<sip:x>", "1" * 40])
def test_malformed_caller_numbers_make_the_caller_anonymous(number):
    call = CallInfo.from_channel_data(channel_data(**{"Caller-Caller-ID-Number": number}))
    assert call.caller == call.caller_number == ""
    assert "caller ID number malformed: anonymous" in call.notes


def test_an_unauthenticated_caller_id_cannot_pose_as_an_extension():
    call = CallInfo.from_channel_data(channel_data(**{"Caller-Caller-ID-Number": "2001"}))
    assert call.caller == "" and call.caller_number == "2001"
    assert any("looks like an extension" in note for note in call.notes)


def test_an_authenticated_phone_is_routed_as_its_directory_user():
    call = CallInfo.from_channel_data(channel_data(**{
        "Caller-Caller-ID-Number": "2001", "variable_sip_authorized": "true", "variable_user_name": "2001"}))
    assert call.caller == "2001" and call.authenticated


def test_caller_names_are_cleaned():
    call = CallInfo.from_channel_data(channel_data(**{"Caller-Caller-ID-Name": 'Eve"\r\n\r\napi x'}))
    assert call.caller_name == "Eve api x"


def test_ivr_arguments_collect_exactly_one_option_digit():
    assert ivr_arguments("3#1*", 3, 5000, "main.wav", "bad.wav", "choice") == \
        "1 1 3 5000 none main.wav bad.wav choice ^[13*#]$ 5000"
    assert ivr_arguments("", 1, 1000, "m.wav", "b.wav", "v").split()[8] == "^$"


def test_log_call_writes_one_line_that_no_value_can_break(caplog):
    report = CallReport(uuid="u-1", called="600", caller="+447700900123", company="acme",
                        reasons=["a → b", "c"], notes=["x\ny"])
    report.finish("hangup", 'USER_BUSY\n\ncall uuid=forged')
    with caplog.at_level(logging.INFO, logger="switchboard.calls"):
        log_call(report, engine="fastpath")
    (record,) = caplog.records
    line = record.getMessage()
    assert "\n" not in line
    assert line.startswith("call uuid=u-1 called=600 caller=+447700900123 company=acme outcome=hangup ")
    assert 'detail="USER_BUSY\\n\\ncall uuid=forged"' in line and 'reasons="a → b | c"' in line
    assert line.endswith("engine=fastpath notes=\"x\\ny\"")


# --- the executor against the fake switch ---------------------------------------------------------

COMPANY = """
id: acme
name: Acme
country: GB
timezone: Europe/London
sip_domain: acme.example
employees:
  - {extension: 2001, name: Alice}
  - {extension: 2002, name: Bob}
"""
NOW = 1795428000.0          # Monday 2026-11-23 10:00 London


@pytest.fixture
def store(make_store):
    return make_store(COMPANY)


@pytest.fixture
def fake():
    with FakeFreeSWITCH(timeout=TIMEOUT) as switch:
        yield switch


@pytest.fixture
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(TIMEOUT)
    yield server
    server.close()


class Decider:
    """A scripted engine: address -> steps; records what it was asked."""

    def __init__(self, plans=None, default=None):
        self.plans = dict(plans or {})
        self.default = default
        self.asked: list[tuple[str, str, float]] = []

    def __call__(self, store, called, caller, now):
        self.asked.append((called, caller, now))
        steps = self.plans.get(called, self.default)
        if steps is None:
            steps = (Hangup("UNALLOCATED_NUMBER", f"nothing for {called}"),)
        return RoutePlan(called, caller, int(now), "acme", steps)


class Harness:
    def __init__(self, fake, listener, store):
        self.fake, self.listener, self.store = fake, listener, store

    def start(self, scenario=None, caller=None, channel_vars=None):
        call = self.fake.place_call(*self.listener.getsockname(), channel_vars or {}, scenario, caller)
        sock, _ = self.listener.accept()
        channel = CallChannel(sock, timeout=TIMEOUT)
        info = CallInfo.from_channel_data(channel.connect())
        channel.command("myevents")
        channel.command("linger")
        return call, channel, info

    def run(self, steps, *, scenario=None, caller=None, decider=None, settings=None):
        call, channel, info = self.start(scenario, caller)
        decider = decider or Decider()
        executor = Executor(channel, self.store, info, decide=decider, clock=lambda: NOW,
                            settings=settings or ExecutorSettings(gateway="gw"))
        report = executor.run(RoutePlan(info.called, info.caller, int(NOW), "acme", tuple(steps)))
        channel.exit()
        call.wait()
        return call, report, decider


@pytest.fixture
def harness(fake, listener, store):
    return Harness(fake, listener, store)


def ring_ext(number="2001", name="Alice", **fallbacks):
    return Ring((Target("extension", number, name, 0, 20),), "simultaneous", 20, f"ring {number}", **fallbacks)


def test_announcement_answers_first_then_plays_then_hangs_up(harness):
    call, report, _ = harness.run([Announce("welcome.wav", "greeting"), Hangup("CALL_REJECTED", "closed")])
    assert call.executed == [("answer", ""), ("playback", "welcome.wav"), ("hangup", "CALL_REJECTED")]
    assert (report.outcome, report.detail) == ("hangup", "CALL_REJECTED")
    assert report.reasons == ["greeting", "closed"] and report.steps == 2
    assert call.hangup_cause == "CALL_REJECTED" and not call.abandoned and call.errors == []
    assert [c.name for c in call.commands][-1] == "exit"


def test_every_application_is_sent_with_event_lock_and_its_own_event_uuid(harness):
    call, _, _ = harness.run([Announce("a.wav", "a"), Announce("b.wav", "b"), Hangup("NORMAL_CLEARING", "x")])
    sent = [c for c in call.commands if c.name == "sendmsg"]
    assert all(c.header("event-lock") == "true" for c in sent)
    uuids = [c.header("event-uuid") for c in sent]
    assert len(set(uuids)) == len(uuids) == 4


def test_unplayable_sound_is_skipped_not_played(harness):
    call, report, _ = harness.run([Announce("${system(id)}.wav", "bad"), Hangup("NORMAL_CLEARING", "x")])
    assert ("playback", "${system(id)}.wav") not in call.executed
    assert any("unplayable sound" in note for note in report.notes)


def test_answered_ring_ends_the_plan(harness):
    legs = {"user/2001@acme.example": Outcome.ANSWER}
    call, report, _ = harness.run([ring_ext(), Hangup("NORMAL_CLEARING", "never reached")],
                                  scenario=Scenario(legs=legs))
    assert call.executed[0] == ("multiset", "continue_on_fail=true hangup_after_bridge=true")
    assert call.executed[1][0] == "bridge" and len(call.executed) == 2
    assert (report.outcome, report.detail) == ("answered", "ext 2001 (Alice)")
    assert call.bridges[-1].answered == "user/2001@acme.example"
    assert call.hangup_cause == "NORMAL_CLEARING"    # hangup_after_bridge


@pytest.mark.parametrize("outcome, branch, cause", [
    (Outcome.BUSY, "on_busy", "USER_BUSY"),
    (Outcome.REJECT, "on_busy", "CALL_REJECTED"),
    (Outcome.NO_ANSWER, "on_no_answer", "NO_ANSWER"),
    (Outcome.UNREGISTERED, "on_unreachable", "USER_NOT_REGISTERED"),
])
def test_failed_ring_runs_the_fallback_for_how_it_failed(harness, outcome, branch, cause):
    fallbacks = {"on_busy": (Hangup("USER_BUSY", "busy branch"),),
                 "on_no_answer": (Voicemail("2001", "no answer branch"),),
                 "on_unreachable": (Hangup("SUBSCRIBER_ABSENT", "unreachable branch"),)}
    call, report, _ = harness.run([ring_ext(**fallbacks), Hangup("NORMAL_CLEARING", "never reached")],
                                  scenario=Scenario(legs={"user/2001@acme.example": outcome}))
    assert report.reasons[-1] == fallbacks[branch][0].reason
    assert f"ring failed: {branch[3:]} ({cause})" in report.notes
    last = {"on_busy": ("hangup", "USER_BUSY"), "on_no_answer": ("hangup", "NORMAL_CLEARING"),
            "on_unreachable": ("hangup", "SUBSCRIBER_ABSENT")}[branch]
    assert call.executed[-1] == last and call.errors == []


def test_failed_ring_without_fallback_goes_on_with_the_next_step(harness):
    call, report, _ = harness.run([ring_ext(), Hangup("NO_ANSWER", "next step")],
                                  scenario=Scenario(legs={"user/2001@acme.example": Outcome.NO_ANSWER}))
    assert report.reasons == ["ring 2001", "next step"] and report.outcome == "hangup"


def test_plan_that_runs_out_hangs_up_with_the_last_failure(harness):
    call, report, _ = harness.run([ring_ext()],
                                  scenario=Scenario(legs={"user/2001@acme.example": Outcome.BUSY}))
    assert (report.outcome, report.detail) == ("hangup", "USER_BUSY")
    assert call.executed[-1] == ("hangup", "USER_BUSY")


def test_undialable_ring_counts_as_unreachable(harness):
    bad = Ring((Target("extension", "20a1", "", 0, 20),), "simultaneous", 20, "bad",
               on_unreachable=(Hangup("USER_NOT_REGISTERED", "unreachable branch"),))
    call, report, _ = harness.run([bad])
    assert not any(app == "bridge" for app, _ in call.executed)
    assert report.reasons == ["bad", "unreachable branch"]


def test_continue_asks_the_engine_again_with_the_address(harness):
    decider = Decider({"then:2001/busy/2001": (Hangup("USER_BUSY", "decided then"),)})
    sub = (Continue("then:2001/busy/2001", "ext 2001 is busy: next step decided then"),)
    call, report, decider = harness.run([ring_ext(on_busy=sub)], decider=decider,
                                        scenario=Scenario(legs={"user/2001@acme.example": Outcome.BUSY}),
                                        caller=Caller(caller_id_number="+447700900123"))
    assert decider.asked == [("then:2001/busy/2001", "+447700900123", NOW)]
    assert report.reasons[-1] == "decided then" and report.decisions == 1


MENU = Ivr("acme/main", "main.wav", 5, 3, (("1", "department:600"), ("2", "employee:2002"), ("#", "voicemail:2001")),
           "employee:2001", "voicemail:2001", "IVR main")


@pytest.mark.parametrize("typed, address", [
    ("1", "ivr:acme/main/1"), ("#", "ivr:acme/main/#"), (None, "ivr:acme/main/timeout"),
    ("7", "ivr:acme/main/invalid"), ("12", "ivr:acme/main/1"),   # max 1 digit: the 2 is not read
])
def test_ivr_collects_one_digit_and_decides_again(harness, typed, address):
    call, report, decider = harness.run([MENU], scenario=Scenario(digits=[typed]))
    app, arg = call.executed[1]
    assert app == "play_and_get_digits"
    assert arg == "1 1 3 5000 none main.wav ivr/ivr-that_was_an_invalid_entry.wav " \
                  "switchboard_ivr_choice_1 ^[12#]$ 5000"
    assert [a for a, _, _ in decider.asked] == [address]


def test_ivr_choices_use_a_fresh_variable_each_visit(harness):
    """A timeout on the second visit must not reuse the first visit's digit."""
    decider = Decider({"ivr:acme/main/1": (MENU,)})
    call, report, decider = harness.run([MENU], scenario=Scenario(digits=["1", None]), decider=decider)
    assert [a for a, _, _ in decider.asked] == ["ivr:acme/main/1", "ivr:acme/main/timeout"]


def test_voicemail_uses_the_company_domain_then_hangs_up(harness):
    call, report, _ = harness.run([Voicemail("2001", "to voicemail")])
    assert call.executed == [("answer", ""), ("voicemail", "default acme.example 2001"),
                             ("hangup", "NORMAL_CLEARING")]
    assert (report.outcome, report.detail) == ("voicemail", "box 2001")


def test_fax_is_received_into_a_spool_file_named_by_call_and_extension(harness):
    settings = ExecutorSettings(gateway="gw", fax_spool="/var/spool/sb/fax/")
    call, report, _ = harness.run([Fax("2001", "fax")], settings=settings)
    assert call.executed[1] == ("rxfax", f"/var/spool/sb/fax/{call.uuid}-2001.tif")
    assert report.outcome == "fax" and call.executed[-1] == ("hangup", "NORMAL_CLEARING")


def test_a_plan_that_loops_for_ever_is_stopped(harness):
    loop = (Continue("then:2001/busy/2001", "again"),)
    decider = Decider(default=loop)
    call, report, decider = harness.run(list(loop), decider=decider,
                                        settings=ExecutorSettings(gateway="gw", max_steps=20))
    assert report.outcome == "step_limit" and len(decider.asked) == 20   # one per step executed
    assert call.executed[-1] == ("hangup", "RECOVERY_ON_TIMER_EXPIRE")


def test_caller_hanging_up_mid_plan_stops_cleanly(harness):
    """connect, myevents, linger = commands 0-2; the 2nd playback is command 5."""
    steps = [Announce("a.wav", "one"), Announce("b.wav", "two"), Announce("c.wav", "three"),
             Hangup("NORMAL_CLEARING", "end")]
    call, report, _ = harness.run(steps, scenario=Scenario(caller_hangs_up_after=5))
    assert (report.outcome, report.detail) == ("caller_hung_up", "NORMAL_CLEARING")
    assert [a for a, _ in call.executed] == ["answer", "playback", "playback"]
    assert report.reasons == ["one", "two"]
    assert call.errors == [] and not call.abandoned          # nothing sent to a dead channel


def test_caller_hanging_up_while_ringing(harness):
    scenario = Scenario(legs={"user/2001@acme.example": Outcome.NO_ANSWER}, caller_hangs_up_after=4)
    call, report, _ = harness.run([ring_ext(on_no_answer=(Voicemail("2001", "vm"),))], scenario=scenario)
    assert report.outcome == "caller_hung_up"
    assert call.bridges[-1].cause == "ORIGINATOR_CANCEL" and call.errors == []


# --- timeouts and errors on a scripted peer -------------------------------------------------------

def scripted_peer():
    ours, theirs = socket.socketpair()
    theirs.settimeout(TIMEOUT)
    return ours, theirs


def test_every_wait_times_out_and_the_call_is_then_hung_up(store):
    """A switch that accepts applications but never completes them."""
    ours, theirs = scripted_peer()
    theirs.sendall(b"Content-Type: command/reply\nReply-Text: +OK\n\n" * 2)   # answer, then the hangup
    info = CallInfo.from_channel_data(channel_data())
    channel = CallChannel(ours, timeout=0.2)
    executor = Executor(channel, store, info, decide=Decider(), clock=lambda: NOW,
                        settings=ExecutorSettings(command_timeout=0.2))
    report = executor.run(RoutePlan("600", "", int(NOW), "acme", (Announce("a.wav", "a"),)))
    assert report.outcome == "timeout" and "answer to complete" in report.detail
    theirs.settimeout(1.0)
    received = b""
    while b"call-command: hangup" not in received:
        received += theirs.recv(65536)
    assert b"hangup-cause: RECOVERY_ON_TIMER_EXPIRE" in received
    channel.close()
    theirs.close()


def frames(*items) -> bytes:
    """Replies (str) and events (dict of headers) as FreeSWITCH frames them."""
    out = b""
    for item in items:
        if isinstance(item, str):
            out += f"Content-Type: command/reply\nReply-Text: {item}\n\n".encode()
        else:
            out += b"".join(FakeEvent(item).frame())
    return out


def scripted_switch(sock: socket.socket, script: list[bytes], seen: list | None = None) -> threading.Thread:
    """Answer the n-th command with ``script[n]``, in a thread (reads time out);
    ``seen`` collects ``(command, how many came in the same read)``."""
    def serve():
        reader = CommandReader()
        answered = 0
        try:
            while answered < len(script):
                data = sock.recv(65536)
                if not data:
                    return
                commands = reader.feed(data)
                for command in commands:
                    if seen is not None:
                        seen.append((command, len(commands)))
                    sock.sendall(script[answered])
                    answered += 1
        except OSError:
            return
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_hangup_before_the_bridge_completes_still_counts_as_answered(store):
    """With hangup_after_bridge, real FreeSWITCH may hang the caller up inside the
    bridge application, before its EXECUTE_COMPLETE."""
    ours, theirs = scripted_peer()
    uuid = "0f0e0d0c-0000-4000-8000-000000000002"
    thread = scripted_switch(theirs, [
        frames("+OK", {"Event-Name": "CHANNEL_EXECUTE_COMPLETE", "Unique-ID": uuid, "Application-UUID": "app-1"}),
        frames("+OK", {"Event-Name": "CHANNEL_BRIDGE", "Unique-ID": uuid,
                       "Other-Leg-Channel-Name": "sofia/internal/2002@acme.example"},
               {"Event-Name": "CHANNEL_HANGUP", "Unique-ID": uuid, "Hangup-Cause": "NORMAL_CLEARING"},
               {"Event-Name": "CHANNEL_EXECUTE_COMPLETE", "Unique-ID": uuid, "Application-UUID": "app-2"}),
    ])
    ids = iter(["app-1", "app-2"])
    channel = CallChannel(ours, timeout=TIMEOUT, new_uuid=lambda: next(ids))
    info = CallInfo.from_channel_data(channel_data(**{"Unique-ID": uuid}))
    ring = Ring((Target("extension", "2001", "Alice", 0, 20), Target("extension", "2002", "Bob", 0, 20)),
                "simultaneous", 20, "ring", on_no_answer=(Voicemail("2001", "never"),))
    report = Executor(channel, store, info, decide=Decider(), clock=lambda: NOW).run(
        RoutePlan("600", "", int(NOW), "acme", (ring,)))
    assert (report.outcome, report.detail) == ("answered", "ext 2002 (Bob)")
    channel.close()
    thread.join(TIMEOUT)
    theirs.close()


def test_a_reply_that_never_comes_times_out():
    ours, theirs = scripted_peer()
    channel = CallChannel(ours, timeout=0.1)
    with pytest.raises(CallTimeout):
        channel.command("myevents")
    channel.close()
    theirs.close()


def test_an_error_reply_is_a_command_error():
    ours, theirs = scripted_peer()
    theirs.sendall(b"Content-Type: command/reply\nReply-Text: -ERR command not found\n\n")
    channel = CallChannel(ours, timeout=1.0)
    with pytest.raises(CommandError):
        channel.command("nosuchcommand")
    channel.close()
    theirs.close()


def test_a_closed_connection_fails_the_wait_at_once():
    ours, theirs = scripted_peer()
    theirs.close()
    channel = CallChannel(ours, timeout=1.0)
    with pytest.raises(CallGone) as gone:
        channel.command("connect")
    assert gone.value.reason == "disconnected"
    with pytest.raises(CallGone):
        channel.start("answer")
    channel.exit()   # never raises


# --- pipelined commands ------------------------------------------------------------------------------

def test_commands_go_in_one_write_and_every_reply_is_read_before_an_error():
    """Should send the commands together, and read all their replies before
    raising for the first -ERR, so no reply is left for the next waiter."""
    ours, theirs = scripted_peer()
    theirs.sendall(frames("+OK Events Enabled", "-ERR no keywords supplied", "+OK will linger"))
    channel = CallChannel(ours, timeout=1.0)
    with pytest.raises(CommandError, match="nixevent: -ERR no keywords supplied"):
        channel.commands(("myevents", "nixevent", "linger"))
    assert theirs.recv(65536) == b"myevents\n\nnixevent\n\nlinger\n\n"
    theirs.sendall(frames("+OK bye"))
    assert channel.command("exit").reply_text == "+OK bye"     # its own reply, not linger's
    channel.close()
    theirs.close()


def test_the_first_bridge_is_sent_with_its_multiset_in_one_write(store):
    """Should pipeline multiset then bridge (event-lock runs them in order) and
    still wait for the multiset to complete."""
    ours, theirs = scripted_peer()
    uuid = "0f0e0d0c-0000-4000-8000-000000000003"

    def completion(app_uuid, **headers):
        return {"Event-Name": "CHANNEL_EXECUTE_COMPLETE", "Unique-ID": uuid, "Application-UUID": app_uuid,
                **headers}

    seen = []
    thread = scripted_switch(theirs, [
        frames("+OK"),
        frames("+OK", completion("app-1"),
               completion("app-2", variable_originate_disposition="USER_BUSY")),
        frames("+OK", completion("app-3")),
    ], seen)
    ids = iter(["app-1", "app-2", "app-3"])
    channel = CallChannel(ours, timeout=TIMEOUT, new_uuid=lambda: next(ids))
    info = CallInfo.from_channel_data(channel_data(**{"Unique-ID": uuid}))
    report = Executor(channel, store, info, decide=Decider(), clock=lambda: NOW).run(
        RoutePlan("600", "", int(NOW), "acme", (ring_ext(on_busy=(Hangup("USER_BUSY", "busy"),)),)))
    assert (report.outcome, report.detail) == ("hangup", "USER_BUSY")
    thread.join(TIMEOUT)
    assert [(c.header("execute-app-name"), c.header("execute-app-arg"), batch) for c, batch in seen] == [
        ("multiset", "continue_on_fail=true hangup_after_bridge=true", 2),
        ("bridge", seen[1][0].header("execute-app-arg"), 2), ("hangup", "USER_BUSY", 1)]
    channel.close()
    theirs.close()


def test_a_refused_application_in_a_batch_drops_every_waiter_of_it():
    ours, theirs = scripted_peer()
    theirs.sendall(frames("+OK", "-ERR invalid application"))
    channel = CallChannel(ours, timeout=1.0)
    with pytest.raises(CommandError, match="bridge: -ERR"):
        channel.start_all((("set", "a=b"), ("bridge", "user/2001@acme.example")))
    assert channel.protocol._apps == {}
    channel.close()
    theirs.close()


# --- the connect reply, decoded when read --------------------------------------------------------

def test_the_connect_reply_decodes_a_value_only_when_read_and_reads_like_decoding_all():
    """Should give, header by header and as a whole, what decoding every value up front gives."""
    from urllib.parse import unquote

    from esl_app.esl_protocol import EslParser
    from tests.esl_trace import freeswitch_bytes, load_trace

    stream = freeswitch_bytes(load_trace("outbound_bridge"))
    for fresh in (lambda m: m, lambda m: (m.headers, m.event.headers) and m):   # lazily, then after listing all
        connect = fresh(EslParser().feed(stream)[0])
        raw = stream[:stream.index(b"\n\n")].decode().split("\n")
        expected = [(name, unquote(value)) for name, _, value in (line.partition(": ") for line in raw)]
        assert connect.reply_text == "+OK\n" and connect.content_type == "command/reply"
        assert connect.event.name == "CHANNEL_DATA"
        for name, value in expected:
            assert connect.event.get(name) == dict(reversed(expected))[name] == connect.get(name)
        assert connect.event.get("No-Such-Header", "x") == "x" and "No-Such-Header" not in connect.event
        assert connect.event.headers == expected == connect.headers
        assert connect.event.get_all("Event-Name") == ["CHANNEL_DATA"]
        assert connect.event == Event([n for n, _ in expected], [v for _, v in expected])
    info = CallInfo.from_channel_data(connect.event)
    assert info.uuid == connect.event.get("Unique-ID") and info.uuid
