"""The live-state listener against the fake FreeSWITCH (and recorded real events).

Every wait is on a condition with a timeout: the listener's ``wait_until`` is
re-checked after each event it handles, the fake's after each change it makes.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import socket
import threading
import time

import pytest

from esl_app.esl_protocol import EslParser, Event, encode_command, encode_sendmsg
from esl_app.live_listener import (
    SUBSCRIPTION,
    LiveListener,
    PresenceTracker,
    ResyncFailed,
    parse_show_rows,
)
from esl_app.service_config import Listen, ServiceConfig
from fastpath import records as rec
from fastpath.store import Store

from .conftest import config_from_yaml
from .esl_trace import load_trace
from .test_icm_lookup import TWO_COMPANIES
from .fake_freeswitch import Caller, FakeFreeSWITCH, Outcome, Scenario, new_uuid

PASSWORD = "s3cret-Passw0rd"
DOMAIN = "pbx.example"
TIMEOUT = 5.0

COMPANY = """
id: acme
name: Acme
country: GB
timezone: Europe/London
employees:
  - {extension: 1000, name: Trace}
  - {extension: 2001, name: Ann}
  - {extension: 2002, name: Ben}
  - {extension: 2003, name: Cat}
departments:
  - {extension: 600, name: Desk, members: [2001, 2002]}
numbers:
  - {number: "+442079460100", route: "department:600"}
"""


# --- fixtures ---------------------------------------------------------------------------

@pytest.fixture
def store(make_store):
    return make_store(COMPANY)


@pytest.fixture
def fake():
    with FakeFreeSWITCH(password=PASSWORD, timeout=TIMEOUT) as switch:
        yield switch


@pytest.fixture
def start_listener(store, fake):
    """``start_listener(**options)`` -> a started LiveListener on the fake, stopped afterwards."""
    listeners = []

    def start(password: str = PASSWORD, **options) -> LiveListener:
        settings = dict(snapshot_delay=0, backoff_initial=0.02, backoff_max=0.1, auth_retry=0.2,
                        watchdog=10.0, connect_timeout=TIMEOUT, reply_timeout=TIMEOUT)
        settings.update(options)
        listener = LiveListener(store, *fake.address, password, **settings)
        listeners.append(listener)
        return listener.start()

    yield start
    for listener in listeners:
        assert listener.stop(TIMEOUT), "the listener thread did not stop"


def connected(listener: LiveListener, sessions: int = 1) -> dict:
    """Wait until the listener has resynced ``sessions`` times and is connected."""
    return listener.wait_until(lambda: (s := listener.status())["connected"]
                               and s["reconnects"] >= sessions - 1 and s, TIMEOUT)


def live(store: Store, ext: str) -> rec.LiveRec:
    return store.live(ext)


# --- realistic events (field sets as in shared/esl-traces; see the module docstring of
# esl_app/live_listener.py for which fields are read) -------------------------------------

def register(fake, user: str, call_id: str, expires: int = 300, contact_user: str | None = None):
    """sofia::register as in inbound_event_plain_sip_call.trace (contact user != user)."""
    contact = f'"" <sip:{contact_user or user + "-0x564ebc1854b0"}@127.0.0.1:5070>'
    return fake.make_event("CUSTOM", [
        ("Event-Subclass", "sofia::register"), ("profile-name", "internal"),
        ("from-user", user), ("from-host", DOMAIN), ("presence-hosts", f"{DOMAIN},{DOMAIN}"),
        ("contact", contact), ("call-id", call_id), ("rpid", "unknown"),
        ("status", "Registered(UDP)"), ("expires", str(expires)), ("to-user", user),
        ("to-host", DOMAIN), ("network-ip", "127.0.0.1"), ("network-port", "5070"),
        ("username", user), ("realm", DOMAIN), ("user-agent", "baresip v1.0.0 (x86_64/linux)"),
        ("sip_number_alias", user), ("sip_auth_username", user), ("user_name", user)])


def unregister(fake, user: str, call_id: str):
    """sofia::unregister, fields as in inbound_event_plain_sip_call.trace."""
    return fake.make_event("CUSTOM", [
        ("Event-Subclass", "sofia::unregister"), ("profile-name", "internal"), ("username", user),
        ("from-user", user), ("from-host", DOMAIN),
        ("contact", f'"" <sip:{user}-0x564ebc1854b0@127.0.0.1:5070>'), ("call-id", call_id),
        ("rpid", "unknown"), ("realm", DOMAIN), ("network-ip", "127.0.0.1"),
        ("network-port", "5070"), ("user-agent", "baresip"), ("expires", "0")])


def expire(fake, user: str, call_id: str):
    """sofia::expire as sofia_reg.c's sofia_reg_del_callback() fires it: ``user``, no from-user."""
    return fake.make_event("CUSTOM", [
        ("Event-Subclass", "sofia::expire"), ("profile-name", "internal"), ("call-id", call_id),
        ("user", user), ("host", DOMAIN), ("contact", f"sip:{user}-0x1@127.0.0.1:5070"),
        ("expires", "1795315263"), ("user-agent", "baresip"), ("realm", DOMAIN)])


def channel(fake, name: str, uuid: str, *, direction: str, variables=(), caller_id="0000000000",
            destination="", channel_name="", extra=()):
    """A channel event laid out like switch_channel_event_set_data() (see the traces)."""
    hangup = name == "CHANNEL_HANGUP_COMPLETE"
    headers = [("Hangup-Cause", "NORMAL_CLEARING")] if hangup else []     # duplicated, as recorded
    headers += list(extra) + [
        ("Channel-State", "CS_REPORTING" if hangup else "CS_INIT"),
        ("Channel-Call-State", "HANGUP" if hangup else "DOWN"),
        ("Channel-Name", channel_name or f"sofia/internal/{destination}@127.0.0.1:5070"),
        ("Unique-ID", uuid), ("Call-Direction", direction), ("Presence-Call-Direction", direction),
        ("Channel-Call-UUID", uuid), ("Answer-State", "hangup" if hangup else "ringing")]
    if hangup:
        headers.append(("Hangup-Cause", "NORMAL_CLEARING"))
    headers += [("Caller-Direction", direction), ("Caller-Logical-Direction", direction),
                ("Caller-Caller-ID-Number", caller_id), ("Caller-ANI", caller_id),
                ("Caller-Destination-Number", destination), ("Caller-Unique-ID", uuid),
                ("Caller-Context", "default")]
    headers += [(f"variable_{n}", v) for n, v in (("direction", direction), ("uuid", uuid),
                                                  *variables)]
    return fake.make_event(name, headers)


def callee_leg(fake, name: str, uuid: str, user: str):
    """A ``user/<user>`` leg (inbound_event_plain_sip_call.trace): its contact user is not the
    extension, dialed_user and presence_id are."""
    contact = f"{user}-0x564ebc1854b0"
    return channel(fake, name, uuid, direction="outbound", destination=contact,
                   variables=[("dialed_user", user), ("dialed_domain", DOMAIN),
                              ("presence_id", f"{user}@{DOMAIN}"), ("sip_contact_user", contact)])


def caller_leg(fake, name: str, uuid: str, user: str, dialled: str):
    """A registered phone calling out: an authenticated inbound leg."""
    return channel(fake, name, uuid, direction="inbound", caller_id=user, destination=dialled,
                   channel_name=f"sofia/internal/{user}@{DOMAIN}",
                   variables=[("sip_auth_username", user), ("sip_auth_realm", DOMAIN),
                              ("user_name", user), ("sip_from_user", user)])


def bridge(fake, a_event, b_uuid: str, b_destination: str, b_name: str):
    """CHANNEL_BRIDGE fired on the A leg, as in outbound_bridge.trace."""
    headers = [(n, v) for n, v in a_event.headers if n != "Event-Name" and not n.startswith("Event-")
               and n not in ("Core-UUID", "FreeSWITCH-Hostname", "FreeSWITCH-Switchname",
                             "FreeSWITCH-IPv4", "FreeSWITCH-IPv6")]
    a_uuid = a_event.get("Unique-ID")
    other = [("Other-Type", "originatee"), ("Other-Leg-Direction", "outbound"),
             ("Other-Leg-Destination-Number", b_destination), ("Other-Leg-Unique-ID", b_uuid),
             ("Other-Leg-Channel-Name", b_name)]
    return fake.make_event("CHANNEL_BRIDGE", [("Bridge-A-Unique-ID", a_uuid),
                                              ("Bridge-B-Unique-ID", b_uuid)] + headers + other)


def registrations_json(*rows: tuple[str, str]) -> str:
    """``show registrations as json``: FreeSWITCH's core ``registrations`` table
    (reg_user, realm, token, url, expires, network_ip, network_port, network_proto,
    hostname, metadata), in the JSON shape ``show channels as json`` has in the traces."""
    if not rows:
        return '{"row_count": 0}\n'
    expires = int(time.time()) + 3600
    return json.dumps({"row_count": len(rows), "rows": [
        {"reg_user": user, "realm": DOMAIN, "token": call_id,
         "url": f"sofia/internal/sip:{user}-0x564ebc1854b0@127.0.0.1:5070", "expires": str(expires),
         "network_ip": "127.0.0.1", "network_port": "5070", "network_proto": "udp",
         "hostname": "fake-fs", "metadata": ""} for user, call_id in rows]}, separators=(",", ":"))


def channels_json(*rows: dict) -> str:
    """``show channels as json`` with the columns recorded in inbound_show_channels.trace."""
    if not rows:
        return '{"row_count": 0}\n'
    columns = ("uuid direction created created_epoch name state cid_name cid_num ip_addr dest "
               "application application_data dialplan context read_codec read_rate read_bit_rate "
               "write_codec write_rate write_bit_rate secure hostname presence_id presence_data "
               "accountcode callstate callee_name callee_num callee_direction call_uuid "
               "sent_callee_name sent_callee_num initial_cid_name initial_cid_num initial_ip_addr "
               "initial_dest initial_dialplan initial_context").split()
    return json.dumps({"row_count": len(rows), "rows": [{c: row.get(c, "") for c in columns}
                                                         for row in rows]}, separators=(",", ":"))


def sent_lines(fake, index: int = 0) -> list[str]:
    return [command.line for command in fake.connections[index].commands]


# --- recorded events, no socket ------------------------------------------------------------

def test_recorded_sip_registration_and_call_drive_the_store(store):
    """Replaying the real baresip session (user 1000 registering with contact user
    1000-0x…, a call to user/1000, hangup, unregister) moves presence step by step."""
    trace = load_trace("inbound_event_plain_sip_call")
    parser = EslParser()
    messages = [m for chunk in trace.recv_chunks() for m in parser.feed(chunk)]
    tracker = PresenceTracker(store)
    seen = []
    for message in messages:
        event = message.event
        if event is None:
            continue
        tracker.apply(event, now=1_795_315_300)
        state = live(store, "1000")
        seen.append((event.name, event.subclass, state.registered, state.active_calls))
    assert ("CUSTOM", "sofia::register", True, 0) in seen
    assert ("CHANNEL_CREATE", None, True, 1) in seen
    assert ("CHANNEL_HANGUP_COMPLETE", None, True, 0) in seen
    assert seen[-1][2:] == (False, 0)              # after sofia::unregister
    assert not tracker.channels and not tracker.registrations

    # The real `show channels as json` taken during that call: the user/1000 leg,
    # named after its contact (1000-0x…), counts against 1000 by its presence_id.
    channels_body = next(m.body for m in messages
                         if m.content_type == "api/response" and m.body.startswith(b'{"row_count":1'))
    PresenceTracker(store).resync(b'{"row_count": 0}\n', channels_body, [], now=1_795_315_400)
    assert live(store, "1000") == rec.LiveRec(True, False, 1, 1_795_315_400)


def parsed(fake_event) -> Event:
    """A fake's event as the listener gets it: framed, then parsed."""
    (message,) = EslParser().feed(b"".join(fake_event.frame()))
    return message.event


def inbound_call(fake, caller_id: str, user: str) -> list[Event]:
    """An outside caller (``caller_id`` as the carrier sent it) bridged to ``user/<user>``."""
    a_leg = channel(fake, "CHANNEL_CREATE", new_uuid(), direction="inbound", caller_id=caller_id,
                    destination="74957000000", channel_name=f"sofia/external/{caller_id}@carrier")
    b_uuid = new_uuid()
    return [parsed(e) for e in (a_leg, callee_leg(fake, "CHANNEL_CREATE", b_uuid, user),
                                bridge(fake, a_leg, b_uuid, f"{user}-0x564ebc1854b0", f"sofia/internal/{user}"))]


def test_call_history_is_filed_under_the_key_the_icm_lookup_computes(make_store, fake):
    """National (trunk prefix 8) and 7-digit local caller IDs of a Moscow office's callers, and a
    local number an employee dials, become +7 495 ... with the company's city code, so the ICM
    lookup finds the manager whatever form the next call arrives in."""
    from fastpath import icm_lookup

    store = make_store(TWO_COMPANIES)                  # a Moscow office (city code 495) and a London one
    tracker = PresenceTracker(store)
    for event in inbound_call(fake, "84951234567", "2001"):
        tracker.apply(event, now=1_800_000_000)
    assert store.history("74951234567").extension == "2001"
    for raw in ("+74951234567", "1234567", "84951234567"):
        assert icm_lookup.lookup(store, "mos", raw, 1_800_000_100)[:2] == ("2001", "history")
    for event in inbound_call(fake, "7654321", "2002"):               # local: city code 495 added
        tracker.apply(event, now=1_800_000_000)
    assert store.history("74957654321").extension == "2002"
    a_leg = caller_leg(fake, "CHANNEL_CREATE", new_uuid(), "2001", "2223344")
    tracker.apply(parsed(a_leg), now=1_800_000_000)
    tracker.apply(parsed(bridge(fake, a_leg, new_uuid(), "2223344", "sofia/external/2223344")), now=1_800_000_000)
    assert (store.history("74952223344").extension, store.history("74952223344").direction) == ("2001", "out")
    assert store.history("2223344") is None and tracker.history_skipped == 0


def test_a_batch_of_events_is_one_transaction_and_writes_what_one_by_one_would(make_store, fake):
    """The recorded SIP session and a mix of calls and registrations, applied event by event to
    one store and in one tracker.batch() to another: the same presence and call history."""
    trace = load_trace("inbound_event_plain_sip_call")
    parser = EslParser()
    events = [m.event for chunk in trace.recv_chunks() for m in parser.feed(chunk) if m.event is not None]
    uuids = [new_uuid() for _ in range(6)]
    for i, uuid in enumerate(uuids):
        ext = ("2001", "2002", "2003")[i % 3]
        events += [parsed(register(fake, ext, f"reg-{i}")), parsed(callee_leg(fake, "CHANNEL_CREATE", uuid, ext))]
    events += inbound_call(fake, "+442079460123", "2001") + inbound_call(fake, "02079460124", "2002")
    events += [parsed(callee_leg(fake, "CHANNEL_HANGUP_COMPLETE", uuid, "x")) for uuid in uuids[:4]]
    events += [parsed(unregister(fake, "2001", "reg-0")), parsed(register(fake, "7777", "not-an-employee"))]
    one_by_one, batched = make_store(COMPANY), make_store(COMPANY)
    single = PresenceTracker(one_by_one)
    for event in events:
        single.apply(event, now=1_795_315_300)
    tracker = PresenceTracker(batched)
    before = batched.env.info()["last_txnid"]
    with tracker.batch():
        for event in events:
            tracker.apply(event, now=1_795_315_300)
    assert batched.env.info()["last_txnid"] == before + 1
    assert _tables(batched) == _tables(one_by_one)
    assert batched.history("442079460124").extension == "2002"
    assert (live(batched, "2002").registered, live(batched, "2002").active_calls) == (True, 2)


def _tables(store: Store) -> tuple[dict, dict]:
    with store.read() as txn:
        return tuple({bytes(k): bytes(v) for k, v in txn.cursor(db=store.db[name])}
                     for name in ("live", "caller"))


def test_show_output_formats():
    """JSON with and without rows, the plain CSV table of the traces, and errors."""
    trace = load_trace("inbound_show_channels")
    parser = EslParser()
    bodies = [m.body for chunk in trace.recv_chunks() for m in parser.feed(chunk)
              if m.content_type == "api/response"]
    csv_body = next(b for b in bodies if b.startswith(b"uuid,direction"))
    json_body = next(b for b in bodies if b.startswith(b'{"row_count":2'))
    assert [r["name"] for r in parse_show_rows(csv_body, "show channels")] == ["null/1234"]
    assert [r["direction"] for r in parse_show_rows(json_body, "x")] == ["outbound", "inbound"]
    assert parse_show_rows(b'{"row_count": 0}\n', "x") == []
    assert parse_show_rows(b"\n0 total.\n", "x") == []
    for bad in (b"-ERR show Command not found!\n", b'{"row_count": 1, "rows": [', b"", b"hello"):
        with pytest.raises(ResyncFailed):
            parse_show_rows(bad, "show registrations as json")


# --- connecting -----------------------------------------------------------------------------

def test_good_password_subscribes_and_resyncs(store, fake, start_listener):
    """Should authenticate, subscribe (CUSTOM last, so its subclasses are not taken
    for event names), snapshot, and replace stale presence with what the switch has."""
    store.set_registered("2002", True)             # stale: 2002 is not registered any more
    store.call_started("2001")                     # stale busy state from before
    fake.script_api("show registrations as json", registrations_json(("2001", "cid-2001")))
    fake.script_api("show channels as json", channels_json(
        {"uuid": "b-leg-2002", "direction": "outbound", "name": "sofia/internal/2002-0x5@127.0.0.1",
         "dest": "2002-0x5", "presence_id": f"2002@{DOMAIN}", "accountcode": "2002"},
        {"uuid": "a-leg-2003", "direction": "inbound", "name": f"sofia/internal/2003@{DOMAIN}",
         "cid_num": "2003", "presence_id": f"2003@{DOMAIN}", "accountcode": "2003"},
        {"uuid": "external", "direction": "inbound", "name": "sofia/external/+442079460123",
         "cid_num": "+442079460123", "presence_id": "+442079460123@carrier"}))
    listener = start_listener()
    status = connected(listener)
    assert sent_lines(fake) == [f"auth {PASSWORD}", SUBSCRIPTION, "api show registrations as json",
                                "api show channels as json"]
    assert SUBSCRIPTION.split()[-4:] == ["CUSTOM", "sofia::register", "sofia::unregister", "sofia::expire"]
    assert (live(store, "2001").registered, live(store, "2001").active_calls) == (True, 0)
    assert (live(store, "2002").registered, live(store, "2002").active_calls) == (False, 1)
    assert (live(store, "2003").registered_known, live(store, "2003").active_calls) == (True, 1)
    assert status["last_error"] is None and status["reconnects"] == 0
    # Tracked by extension whether or not it is an employee (a reload may make it one).
    assert status["registered"] == 1 and status["active_channels"] == 3


def test_wrong_password_is_reported_and_retried_slowly(fake, start_listener, caplog):
    """Should report a refused password clearly, keep retrying at the slow auth
    pace, and never write the password to the log."""
    caplog.set_level(logging.DEBUG, logger="esl_app.live_listener")
    listener = start_listener(password="not-the-password", auth_retry=0.3)
    fake.wait_until(lambda: len(fake.connections) >= 2, what="a second attempt")
    status = listener.status()
    assert not status["connected"]
    assert "authentication failed" in status["last_error"] and "-ERR invalid" in status["last_error"]
    assert "not-the-password" not in caplog.text and "not-the-password" not in str(status)
    assert "not-the-password" not in repr(listener)
    assert any(r.levelno == logging.ERROR and "authentication failed" in r.getMessage()
               for r in caplog.records)
    assert sent_lines(fake, 0) == ["auth not-the-password"]      # nothing else was tried


def test_acl_rejection_is_reported(store):
    """text/rude-rejection (apply-inbound-acl) is reported and retried at the slow pace."""
    with FakeFreeSWITCH(password=PASSWORD, timeout=TIMEOUT, acl=lambda peer: False) as switch:
        listener = LiveListener(store, *switch.address, PASSWORD, auth_retry=0.2).start()
        try:
            listener.wait_until(lambda: "access denied" in (listener.status()["last_error"] or ""),
                                TIMEOUT)
            switch.wait_until(lambda: len(switch.connections) >= 2, what="a retry")
        finally:
            assert listener.stop(TIMEOUT)


def test_built_from_the_service_config(store, fake):
    """The service passes its ServiceConfig (esl address and password)."""
    config = ServiceConfig(esl=Listen(*fake.address), esl_password=PASSWORD)
    listener = LiveListener.from_config(store, config, snapshot_delay=0).start()
    try:
        connected(listener)
        assert sent_lines(fake)[0] == f"auth {PASSWORD}"
    finally:
        assert listener.stop(TIMEOUT)


# --- registrations ---------------------------------------------------------------------------

def test_register_unregister_and_expire_events(store, fake, start_listener):
    """Registrations are per SIP Call-ID: one phone leaving does not unregister an
    extension whose second phone is still there; the directory user is used, not
    the contact user."""
    listener = start_listener()
    connected(listener)
    assert live(store, "2001") == rec.LiveRec(True, False, 0, live(store, "2001").updated)
    fake.emit_event(register(fake, "2001", "desk-phone"))
    listener.wait_until(lambda: live(store, "2001").registered, TIMEOUT)
    fake.emit_event(register(fake, "2001", "softphone", contact_user="x9f3a"))
    fake.emit_event(unregister(fake, "2001", "desk-phone"))
    fake.emit_event(register(fake, "7777", "not-an-employee"))      # ignored by the store
    listener.wait_until(lambda: listener.status()["events"] >= 4, TIMEOUT)
    assert live(store, "2001").registered                            # the softphone still is
    fake.emit_event(expire(fake, "2001", "softphone"))
    listener.wait_until(lambda: not live(store, "2001").registered, TIMEOUT)
    assert live(store, "2001").registered_known
    assert store.live("7777") is None and listener.status()["last_error"] is None


def test_registration_lapses_without_an_event_and_reloads_are_picked_up(store, fake, start_listener):
    """A registration FreeSWITCH drops silently lapses at its deadline (injected
    clock); a config reload that adds an employee gets that employee's presence."""
    now = [1_800_000_000.0]
    listener = start_listener(clock=lambda: now[0])
    connected(listener)
    fake.emit_event(register(fake, "2002", "ben-phone", expires=120))
    fake.emit_event(register(fake, "2004", "not-yet-an-employee"))
    listener.wait_until(lambda: live(store, "2002").registered, TIMEOUT)
    now[0] += 120 + 61
    listener.wait_until(lambda: not live(store, "2002").registered, TIMEOUT)   # re-checked every tick
    assert store.live("2004") is None
    store.load_config(config_from_yaml(COMPANY.replace(
        "  - {extension: 2003, name: Cat}\n", "  - {extension: 2003, name: Cat}\n"
        "  - {extension: 2004, name: Dan}\n")))
    assert store.live("2004") == rec.UNKNOWN_LIVE
    listener.wait_until(lambda: live(store, "2004").registered, TIMEOUT)


# --- calls -------------------------------------------------------------------------------------

def test_busy_counts_follow_channels_without_double_counting(store, fake, start_listener):
    """A channel counts once against its employee (callee: dialed_user of the
    originated leg; caller: the authenticated user), whatever events repeat."""
    listener = start_listener()
    connected(listener)
    b_leg, a_leg, external = new_uuid(), new_uuid(), new_uuid()
    fake.emit_event(callee_leg(fake, "CHANNEL_CREATE", b_leg, "2001"))
    fake.emit_event(callee_leg(fake, "CHANNEL_CREATE", b_leg, "2001"))     # delivered twice
    fake.emit_event(callee_leg(fake, "CHANNEL_ANSWER", b_leg, "2001"))
    fake.emit_event(caller_leg(fake, "CHANNEL_CREATE", a_leg, "2002", "2001"))
    # An external caller's A leg gets dialed_user once it bridges to user/2001: not 2001's channel.
    fake.emit_event(channel(fake, "CHANNEL_ANSWER", external, direction="inbound",
                            caller_id="+442079460123", destination="442079460100",
                            variables=[("dialed_user", "2001")]))
    listener.wait_until(lambda: listener.status()["events"] >= 5, TIMEOUT)
    assert (live(store, "2001").active_calls, live(store, "2002").active_calls) == (1, 1)

    hangup = callee_leg(fake, "CHANNEL_HANGUP_COMPLETE", b_leg, "2001")
    assert [v for n, v in hangup.headers if n == "Hangup-Cause"] == ["NORMAL_CLEARING"] * 2
    fake.emit_event(hangup)
    fake.emit_event(hangup)                                             # again: no effect
    fake.emit_event(channel(fake, "CHANNEL_HANGUP_COMPLETE", external, direction="inbound"))
    fake.emit_event(channel(fake, "CHANNEL_HANGUP_COMPLETE", new_uuid(), direction="outbound",
                            variables=[("dialed_user", "2002")]))      # never counted: ignored
    listener.wait_until(lambda: listener.status()["events"] >= 9, TIMEOUT)
    assert (live(store, "2001").active_calls, live(store, "2002").active_calls) == (0, 1)
    fake.emit_event(caller_leg(fake, "CHANNEL_HANGUP_COMPLETE", a_leg, "2002", "2001"))
    listener.wait_until(lambda: live(store, "2002").active_calls == 0, TIMEOUT)
    assert listener.status()["active_channels"] == 0


def test_answered_external_call_is_remembered_for_icm(store, fake, start_listener):
    """An outside caller bridged to user/2001 by our outbound socket (the fake plays
    the whole call) leaves a history entry: caller digits -> 2001, inbound."""
    listener = start_listener()
    connected(listener)
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(TIMEOUT)
    try:
        call = fake.place_call(*server.getsockname(), caller=Caller(caller_id_number="+442079460123"),
                               scenario=Scenario(legs={f"user/2001@{DOMAIN}": Outcome.ANSWER}))
        sock, _ = server.accept()
        sock.settimeout(TIMEOUT)
        with sock:
            _command(sock, encode_command("connect"))
            _command(sock, encode_sendmsg(None, "bridge", f"user/2001@{DOMAIN}"))
            listener.wait_until(lambda: store.history("442079460123") is not None, TIMEOUT)
            _command(sock, b"sendmsg\ncall-command: hangup\nhangup-cause: NORMAL_CLEARING\n\n")
            call.wait()
    finally:
        server.close()
    entry = store.history("442079460123")
    assert (entry.extension, entry.direction) == ("2001", "in")
    assert abs(entry.when - time.time()) < 120
    assert live(store, "2001").active_calls == 0      # the external A leg never counted


def _command(sock: socket.socket, data: bytes) -> None:
    """Send one command to the fake's channel and read up to its reply."""
    sock.sendall(data)
    parser = EslParser()
    while True:
        chunk = sock.recv(65536)
        assert chunk, "the fake closed the call connection"
        if any(m.content_type == "command/reply" for m in parser.feed(chunk)):
            return


def test_outgoing_call_history_and_numbers_that_cannot_be_stored(store, fake, start_listener):
    """An employee's call out is stored under the dialled number (direction out), read
    with the company's dialling rules (a national number is the company country's);
    unassigned, internal and garbage numbers are skipped without harm."""
    listener = start_listener()
    connected(listener)
    cases = ["+447400900123", "0044 7400 900124", "07400900125", "+447700900126", "abc", "2003", ""]
    for dialled in cases:
        a_leg = caller_leg(fake, "CHANNEL_CREATE", new_uuid(), "2002", dialled)
        fake.emit_event(a_leg)
        fake.emit_event(bridge(fake, a_leg, new_uuid(), dialled, f"sofia/external/{dialled}"))
    listener.wait_until(lambda: listener.status()["events"] >= 2 * len(cases), TIMEOUT)
    entry = store.history("447400900123")
    assert (entry.extension, entry.direction) == ("2002", "out")
    assert store.history("447400900124").extension == "2002"           # 00 is international
    assert store.history("447400900125").extension == "2002"           # national: the company's (GB)
    assert store.history("447700900126") is None                       # unassigned range
    assert store.history("2003") is None and listener.tracker.history_skipped == 4
    assert listener.status()["events_failed"] == 0
    # Internal call 2002 -> 2001: both employees, no history.
    a_leg = caller_leg(fake, "CHANNEL_CREATE", new_uuid(), "2002", "2001")
    b_uuid = new_uuid()
    fake.emit_event(callee_leg(fake, "CHANNEL_CREATE", b_uuid, "2001"))
    fake.emit_event(a_leg)
    fake.emit_event(bridge(fake, a_leg, b_uuid, "2001-0x564ebc1854b0", "sofia/internal/2001-0x5@h"))
    before = listener.tracker.history_written
    listener.wait_until(lambda: listener.status()["events"] >= 2 * len(cases) + 3, TIMEOUT)
    assert listener.tracker.history_written == before


# --- resync, restarts and failures ---------------------------------------------------------------

def test_events_during_resync_are_neither_lost_nor_misordered(store, fake, start_listener):
    """Events FreeSWITCH holds back while the snapshot commands run arrive after
    their replies; they are replayed over the snapshot, and ones the snapshot
    already contains change nothing."""
    b_2003, b_2001, b_2002 = new_uuid(), new_uuid(), new_uuid()

    def registrations(arg: str) -> str:
        # Sent after this reply, before the channels reply.
        fake.emit_event(unregister(fake, "2001", "cid-2001"))
        fake.emit_event(register(fake, "2002", "cid-2002"))
        return registrations_json(("2001", "cid-2001"))

    def channels(arg: str) -> str:
        fake.emit_event(callee_leg(fake, "CHANNEL_HANGUP_COMPLETE", b_2001, "2001"))
        fake.emit_event(callee_leg(fake, "CHANNEL_CREATE", b_2002, "2002"))
        fake.emit_event(callee_leg(fake, "CHANNEL_CREATE", b_2003, "2003"))  # already in the snapshot
        return channels_json(
            {"uuid": b_2003, "direction": "outbound", "presence_id": f"2003@{DOMAIN}"},
            {"uuid": b_2001, "direction": "outbound", "presence_id": f"2001@{DOMAIN}"})

    fake.script_api("show registrations as json", registrations)
    fake.script_api("show channels as json", channels)
    listener = start_listener()
    connected(listener)
    # The registration events were held back behind the first reply and replayed
    # over the snapshot; the channel ones came right after the second reply.
    listener.wait_until(lambda: listener.status()["events"] >= 5, TIMEOUT)
    assert [(e, live(store, e).registered, live(store, e).active_calls) for e in ("2001", "2002", "2003")] \
        == [("2001", False, 0), ("2002", True, 1), ("2003", False, 1)]
    # And the state goes on from there.
    fake.emit_event(callee_leg(fake, "CHANNEL_HANGUP_COMPLETE", b_2003, "2003"))
    listener.wait_until(lambda: live(store, "2003").active_calls == 0, TIMEOUT)


def test_events_during_the_snapshot_delay_are_replayed(store, fake, start_listener):
    """A REGISTER seen after subscribing but missing from a lagging
    ``show registrations`` (scripted empty here) still counts."""
    listener = start_listener(snapshot_delay=0.5)
    fake.wait_until(lambda: fake.connections and fake.connections[0].events_on, what="subscription")
    fake.emit_event(register(fake, "2003", "cid-2003"))
    status = connected(listener)
    assert live(store, "2003").registered and status["events"] == 1
    assert sent_lines(fake)[-2:] == ["api show registrations as json", "api show channels as json"]


def test_freeswitch_restart_reconnects_and_clears_stale_busy_state(store, fake, start_listener):
    """Should reconnect after the connection is reset and resync: channels that
    died with the old FreeSWITCH no longer count."""
    listener = start_listener()
    old_core = fake.core_uuid
    connected(listener)
    fake.emit_event(callee_leg(fake, "CHANNEL_CREATE", new_uuid(), "2001"))
    fake.emit_event(register(fake, "2001", "cid"))
    listener.wait_until(lambda: live(store, "2001").active_calls == 1, TIMEOUT)
    assert listener.status()["core_uuid"] == old_core
    fake.drop()
    status = connected(listener, sessions=2)
    assert status["reconnects"] == 1 and len(fake.connections) == 2
    assert live(store, "2001") == rec.LiveRec(True, False, 0, live(store, "2001").updated)
    fake.emit_event(fake.make_event("HEARTBEAT"))
    listener.wait_until(lambda: listener.status()["core_uuid"] == fake.core_uuid != old_core, TIMEOUT)


def test_half_open_connection_is_detected_by_the_watchdog(fake, start_listener):
    """Silence longer than the watchdog window means a dead peer: reconnect."""
    listener = start_listener(watchdog=0.4)
    connected(listener)
    status = connected(listener, sessions=2)
    assert len(fake.connections) >= 2
    assert "half-open" in status["last_error"] and status["last_error_at"] is not None


def test_heartbeats_keep_the_connection(fake, start_listener):
    """Any traffic within the window keeps the connection alive."""
    listener = start_listener(watchdog=0.5)
    connected(listener)
    started = time.monotonic()
    while time.monotonic() - started < 1.5:
        count = listener.status()["events"]
        fake.emit_event(fake.make_event("HEARTBEAT"))
        listener.wait_until(lambda: listener.status()["events"] > count, TIMEOUT)
    assert len(fake.connections) == 1 and listener.status()["reconnects"] == 0


def test_malformed_frame_resets_the_connection_and_recovers(store, fake, start_listener, caplog):
    """Garbage from the switch is logged with its stream offset; the connection is
    reset, resynced, and events flow again."""
    caplog.set_level(logging.ERROR, logger="esl_app.live_listener")
    listener = start_listener()
    connected(listener)
    fake.connections[0].send(b"Content-Type: text/event-plain\nthis line has no colon\n\n")
    status = connected(listener, sessions=2)
    assert "malformed ESL" in caplog.text and "stream offset" in caplog.text
    fake.emit_event(register(fake, "2001", "cid"))
    listener.wait_until(lambda: live(store, "2001").registered, TIMEOUT)
    # A truncated frame (the peer dies mid-event) is just a lost connection.
    head, payload = register(fake, "2002", "cid2").frame()
    fake.connections[-1].send(head + payload[:40])
    fake.drop()
    connected(listener, sessions=status["reconnects"] + 2)


def test_stop_is_prompt_even_while_backing_off(store):
    """stop() ends the thread within its timeout when nothing listens."""
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()                                    # now nothing listens there
    listener = LiveListener(store, "127.0.0.1", port, PASSWORD, backoff_initial=5, backoff_max=30)
    listener.start()
    listener.wait_until(lambda: listener.status()["attempts"] >= 1
                        and listener.status()["last_error"], TIMEOUT)
    assert "Connection refused" in listener.status()["last_error"]
    started = time.monotonic()
    assert listener.stop(2.0)
    assert time.monotonic() - started < 2.0


def test_constructor_refuses_passwords_that_cannot_go_on_the_wire(store):
    with pytest.raises(ValueError):
        LiveListener(store, "127.0.0.1", 8021, "two\nlines")


# --- other processes and speed ---------------------------------------------------------------------

def test_another_process_sees_updates_without_restarting(store, fake, start_listener):
    """A routing process that opened the store read-only before the change sees it."""
    listener = start_listener()
    connected(listener)
    ctx = multiprocessing.get_context("spawn")
    ready, result = ctx.Queue(), ctx.Queue()
    reader = ctx.Process(target=_watch_registration, args=(store.path, "2003", ready, result))
    reader.start()
    try:
        assert ready.get(timeout=30) is False           # it has looked: not registered yet
        fake.emit_event(register(fake, "2003", "cid"))
        assert result.get(timeout=30) == "registered"
    finally:
        reader.join(timeout=30)
        if reader.is_alive():
            reader.kill()


def _watch_registration(path: str, ext: str, ready, result) -> None:
    with Store(path, readonly=True) as store:
        ready.put(store.live(ext).registered)
        deadline = time.monotonic() + 20
        idle = threading.Event()
        while time.monotonic() < deadline:
            if store.live(ext).registered:
                result.put("registered")
                return
            idle.wait(0.005)                              # polling another process's writes
        result.put("timed out")


def test_throughput(store, fake, start_listener):
    """Measures how many realistic events per second the listener applies (two
    in three move a busy counter); the figure in the module docstring comes from here."""
    listener = start_listener()
    connected(listener)
    # Real CHANNEL_CREATE/ANSWER/HANGUP_COMPLETE events are 4-10 KB (inbound_event_plain_sip_call).
    variables = [(f"variable_padding_{i}", "x" * 40) for i in range(100)]
    pairs = 2000
    chunks = []
    for i in range(pairs):
        uuid = new_uuid()
        ext = ("2001", "2002", "2003")[i % 3]
        for name in ("CHANNEL_CREATE", "CHANNEL_ANSWER", "CHANNEL_HANGUP_COMPLETE"):
            event = callee_leg(fake, name, uuid, ext)
            event.headers += variables
            chunks.extend(event.frame())
    blob = b"".join(chunks)
    total = 3 * pairs
    before = listener.status()["events"]
    txn_before = store.env.info()["last_txnid"]
    started = time.perf_counter()
    fake.connections[0].send(blob)
    listener.wait_until(lambda: listener.status()["events"] >= before + total, 30)
    elapsed = time.perf_counter() - started
    commits = store.env.info()["last_txnid"] - txn_before
    print(f"\nlive listener: {total} events ({len(blob) / total:.0f} B each, {2 * pairs} store writes "
          f"in {commits} commits) in {elapsed:.2f} s = {total / elapsed:,.0f} events/s")
    assert all(live(store, e).active_calls == 0 for e in ("2001", "2002", "2003"))
    assert listener.status()["events_failed"] == 0
