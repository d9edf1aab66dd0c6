"""The LMDB store: atomic config loads, the workers' write API, schema and corruption checks."""
from __future__ import annotations

import datetime as dt
import multiprocessing
import random
import struct
import textwrap
from zoneinfo import ZoneInfo

import lmdb
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from fastpath import records as rec
from fastpath.caller_numbers import compile_rules
from fastpath.errors import SchemaMismatch, StoreError
from fastpath.records import ReferralInterval
from fastpath.store import CallEnded, CallRecorded, CallStarted, Registered, Store
from fastpath.tz_table import compile_zone, offset_at
from esl_app.cli import main

from .conftest import at, config_from_yaml

SMALL = """
id: small
name: Small
country: GB
timezone: Europe/London
employees:
  - {extension: 2001, name: Ann, diverts: {busy: voicemail}}
  - {extension: 2002, name: Ben}
  - {extension: 2003, name: Cat}
departments:
  - {extension: 600, name: Desk, members: [2003, 2001]}
numbers:
  - {number: "+442079460100", route: "department:600"}
"""


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "store"))
    s.load_config(config_from_yaml(SMALL))
    yield s
    s.close()               # closing twice is harmless


def test_load_reports_what_it_wrote_and_bumps_the_generation(store):
    assert store.generation() == 1
    report = store.load_config(config_from_yaml(SMALL))
    assert (report.generation, report.companies, report.numbers, report.extensions) == (2, 1, 1, 4)
    meta = store.meta()
    assert meta["schema"] == rec.SCHEMA_VERSION and meta["generation"] == 2


def test_reload_replaces_the_config_and_keeps_presence(store):
    """A reload drops what the new config no longer has; presence follows each extension to its new slot."""
    store.set_registered("2002", False)
    store.call_started("2003")
    smaller = SMALL.replace("  - {extension: 2001, name: Ann, diverts: {busy: voicemail}}\n", "").replace(
        "members: [2003, 2001]", "members: [2002, 2003]")
    store.load_config(config_from_yaml(smaller))
    assert store.live("2001") is None                 # no longer an employee
    assert store.live("2002").registered_known and not store.live("2002").registered
    assert store.live("2003").active_calls == 1
    with store.read() as txn:
        assert txn.get(b"2001", db=store.db["ext"]) is None


def test_department_members_get_neighbouring_slots(store):
    """Ring groups read their members' presence from one block."""
    with store.read() as txn:
        dept = rec.decode_department("600", txn.get(b"600", db=store.db["ext"]))
    slots = [slot for _, _, slot in dept.members]
    assert slots == [0, 1]


def test_presence_write_api(store):
    assert store.live("2001") == rec.UNKNOWN_LIVE
    assert store.set_registered("2001", True, now=100)
    assert store.live("2001") == rec.LiveRec(True, True, 0, 100)
    store.call_started("2001", now=101)
    store.call_started("2001", now=102)
    store.call_ended("2001", now=103)
    assert store.live("2001").active_calls == 1
    store.call_ended("2001")
    store.call_ended("2001")                          # never below zero
    assert store.live("2001").active_calls == 0
    assert store.set_registered("9999", True) is False    # not an employee: nothing stored


def _live_and_history(store: Store) -> tuple[dict, dict]:
    """Everything presence and call history are: raw records of both tables."""
    with store.read() as txn:
        return ({bytes(k): bytes(v) for k, v in txn.cursor(db=store.db["live"])},
                {bytes(k): bytes(v) for k, v in txn.cursor(db=store.db["caller"])})


def _one_by_one(store: Store, change) -> bool | None:
    if isinstance(change, Registered):
        return store.set_registered(change.extension, change.registered, now=change.now)
    if isinstance(change, CallStarted):
        return store.call_started(change.extension, now=change.now)
    if isinstance(change, CallEnded):
        return store.call_ended(change.extension, now=change.now)
    return store.record_call(*change)


EXTENSIONS = ["2001", "2002", "2003", "600", "9999", ""]      # employees, a department, unknown, empty
change_lists = st.lists(st.one_of(
    st.builds(Registered, st.sampled_from(EXTENSIONS), st.booleans(), st.integers(0, 2**32 + 5)),
    st.builds(CallStarted, st.sampled_from(EXTENSIONS), st.integers(0, 1000)),
    st.builds(CallEnded, st.sampled_from(EXTENSIONS), st.integers(0, 1000)),
    st.builds(CallRecorded, st.sampled_from(["447400900123", "74951234567"]), st.sampled_from(EXTENSIONS[:3]),
              st.integers(0, 2_000_000_000), st.sampled_from(["in", "out"]))), max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=change_lists)
@example(changes=[CallStarted("2003", 1), CallStarted("2003", 2), CallEnded("2003", 3)])    # past the u16 limit
def test_a_batch_leaves_the_store_as_the_same_changes_one_by_one(make_store, changes):
    """apply_live is the one-by-one write API in one transaction: same records, same unknown extensions."""
    batched, single = make_store(SMALL), make_store(SMALL)
    for s in (batched, single):       # some state to start from, 2003 one call below the record's limit
        s.replace_live({"2002"}, {"2003": 0xFFFE}, now=5)
    unknown = batched.apply_live(changes)
    results = [_one_by_one(single, change) for change in changes]
    assert _live_and_history(batched) == _live_and_history(single)
    assert unknown == {c.extension for c, ok in zip(changes, results) if ok is False}
    batched.close()
    single.close()


def test_a_batch_is_one_transaction(store):
    """A hundred presence changes and calls cost one commit, not a hundred."""
    before = store.env.info()["last_txnid"]
    unknown = store.apply_live([CallStarted("2001", 10), CallRecorded("447400900123", "2001", 10, "in"),
                                Registered("7777", True, 10)] * 34)
    assert store.env.info()["last_txnid"] == before + 1
    assert unknown == {"7777"}
    assert store.live("2001").active_calls == 34
    assert store.history("447400900123") == rec.HistoryRec("2001", 10, "in")


@pytest.mark.parametrize("bad, match", [
    (CallRecorded("+447400900123", "2001", 1, "in"), r"change 2 of 3\): caller '\+447400900123'"),
    (CallRecorded("447400900123", "2001", 1, "sideways"), r"change 2 of 3\).*direction 'sideways'"),
    (CallRecorded("447400900123", "2001", 2**70, "in"), r"change 2 of 3\).*time 1180591620717411303424"),
    (CallRecorded("4" * 33, "2001", 1, "in"), r"change 2 of 3\): caller '4{33}'"),
    (("2001", True), r"change 2 of 3\): \('2001', True\) is none of Registered"),
    (Registered(2001, True), r"change 2 of 3\): extension 2001 is not a string"),
])
def test_a_bad_change_names_itself_and_nothing_of_the_batch_is_written(store, bad, match):
    before = _live_and_history(store)
    with pytest.raises(StoreError, match=match):
        store.apply_live([CallStarted("2001", 1), bad, CallRecorded("447400900124", "2002", 1, "out")])
    assert _live_and_history(store) == before


def test_replace_live_makes_everyone_else_unregistered(store):
    store.call_started("2002")
    store.replace_live({"2001"}, {"2003": 2}, now=50)
    assert store.live("2001") == rec.LiveRec(True, True, 0, 50)
    assert store.live("2002") == rec.LiveRec(True, False, 0, 50)     # stale busy state is gone
    assert store.live("2003") == rec.LiveRec(True, False, 2, 50)


def test_referral_intervals_per_source(store):
    meeting = ReferralInterval(1000, 2000, "meeting", "Board", "2002", "receptionists", "calendar:exchange")
    store.put_referrals("2001", "calendar:exchange", [meeting])
    store.put_referrals("2001", "manual", [ReferralInterval(1500, 1600, "lunch")])
    assert store.referrals("2001") == {"calendar:exchange": (meeting,),
                                       "manual": (ReferralInterval(1500, 1600, "lunch"),)}
    store.put_referrals("2001", "manual", [])
    assert list(store.referrals("2001")) == ["calendar:exchange"]
    with pytest.raises(StoreError, match="ends before it starts"):
        store.put_referrals("2001", "manual", [ReferralInterval(5, 5, "sick")])
    assert list(store.referrals("2001")) == ["calendar:exchange"]    # nothing half-written


def test_call_history_for_icm(store):
    store.record_call("447400900123", "2001", 1_790_000_000, "in")
    store.record_call("447400900123", "2002", 1_790_000_100, "out")
    assert store.history("447400900123") == rec.HistoryRec("2002", 1_790_000_100, "out")
    assert store.forget_caller("447400900123") is True
    assert store.history("447400900123") is None
    with pytest.raises(StoreError, match="bad call-history entry"):
        store.record_call("+44 7400", "2001", 1, "in")


def test_call_history_and_crm_answers_share_the_callers_record_without_touching_each_other(store):
    answer = rec.CrmAnswerRec(rec.CRM_FOUND, "2001", "amocrm", 1, 2, 3)
    store.put_crm_answer("small", "447400900123", answer)
    store.record_call("447400900123", "2002", 10, "in")
    store.record_call("447400900123", "2003", 20, "out")               # the last call wins
    assert store.caller("447400900123") == rec.CallerRec(rec.HistoryRec("2003", 20, "out"), {"small": answer})
    assert store.forget_caller("447400900123") is True                # the history only
    assert store.caller("447400900123") == rec.CallerRec(None, {"small": answer})
    assert store.forget_caller("447400900123") is False
    store.put_crm_answer("small", "447400900123", None)
    assert store.caller("447400900123") is None and store.stats()["caller"] == 0


def test_a_corrupt_caller_record_is_replaced_by_a_call_but_never_by_a_crm_answer(store):
    with store.env.begin(write=True) as txn:
        txn.put(b"447400900123", b"\x0b\x01\xff", db=store.db["caller"])
    answer = rec.CrmAnswerRec(rec.CRM_FOUND, "2001", "amocrm", 1, 2, 3)
    with pytest.raises(StoreError, match="caller 447400900123.*corrupt.*icm forget 447400900123"):
        store.put_crm_answer("small", "447400900123", answer)
    store.record_call("447400900123", "2002", 10, "in")               # the listener never stalls on it
    assert store.caller("447400900123") == rec.CallerRec(rec.HistoryRec("2002", 10, "in"), {})
    store.put_crm_answer("small", "447400900123", answer)
    assert store.crm_answer("small", "447400900123") == answer


def test_erasing_a_caller_removes_their_history_and_every_cached_crm_answer(store):
    store.record_call("447400900123", "2001", 1_790_000_000, "in")
    store.record_call("447400900124", "2002", 1_790_000_000, "in")
    answer = rec.CrmAnswerRec(rec.CRM_FOUND, "2001", "amocrm", 1, 2, 3)
    for company, phone in (("small", "447400900123"), ("other", "447400900123"), ("small", "447400900124"),
                           ("small", "1447400900123")):
        store.put_crm_answer(company, phone, answer)
    erased = store.erase_caller("447400900123")
    assert (erased.history_removed, erased.history) == (True, rec.HistoryRec("2001", 1_790_000_000, "in"))
    assert erased.crm == {"small": answer, "other": answer}
    assert store.history("447400900123") is None and store.crm_answer("other", "447400900123") is None
    assert store.history("447400900124") is not None                      # nobody else's data
    assert store.crm_answer("small", "447400900124") == answer == store.crm_answer("small", "1447400900123")
    again = store.erase_caller("447400900123")
    assert (again.history_removed, again.crm) == (False, {})
    with pytest.raises(StoreError, match="bad caller to erase: '\\+44'"):
        store.erase_caller("+44")


def test_employee_and_dial_rules_lookups(store):
    assert store.employee("2001").company == "small" and store.employee("2001").name == "Ann"
    assert store.employee("600") is None and store.employee("9999") is None and store.employee("") is None
    assert store.dial_rules("small") == compile_rules("GB", None)
    assert store.dial_rules("nope") is None and store.dial_rules("") is None


def _make_old_schema(path: str, version: int) -> None:
    """What a store written by schema 1 or 2 looked like: call history (key: digits) and CRM
    answers (key: company/digits) in tables of their own; for schema 1 also no dial table and
    config records without their status actions, ICM steps and language (cut here to the
    schema-1 length)."""
    env = lmdb.open(path, max_dbs=16)
    with env.begin(write=True) as txn:
        caller = env.open_db(b"caller", txn=txn)
        history, crm = env.open_db(b"history", txn=txn), env.open_db(b"crm", txn=txn)
        for key, value in list(txn.cursor(db=caller)):
            known, answers = rec.caller_parts(value)
            if known:
                txn.put(key, known, db=history)
            for company, answer in answers.items():
                txn.put(company.encode() + b"/" + key, answer, db=crm)
        txn.drop(caller, delete=True)
        txn.put(b"schema", struct.pack("<I", version), db=env.open_db(b"meta", txn=txn))
        if version == 1:
            txn.drop(env.open_db(b"dial", txn=txn), delete=True)
            ext = env.open_db(b"ext", txn=txn)
            for key, value in list(txn.cursor(db=ext)):
                if value[0] == rec.REC_EMPLOYEE:
                    txn.put(key, value[:-8], db=ext)    # the 8 bytes of "no actions, default voicemail, no delegates"
    env.close()


@pytest.mark.parametrize("version", [1, 2])
def test_an_old_schema_store_is_refused_until_load_rewrites_it(store, tmp_path, version):
    store.record_call("447400900123", "2001", 1_790_000_000, "in")
    store.record_call("447400900124", "2002", 1_790_000_000, "out")
    answer = rec.CrmAnswerRec(rec.CRM_FOUND, "2001", "amocrm", 1, 2, 3)
    store.put_crm_answer("small", "447400900123", answer)
    store.put_crm_answer("other", "447400900123", answer)
    store.put_crm_answer("small", "447400900999", answer)      # a CRM answer, no call history
    store.set_registered("2001", True)
    before = {phone: store.caller(phone) for phone in ("447400900123", "447400900124", "447400900999")}
    generation = store.generation()
    store.close()
    _make_old_schema(store.path, version)
    for readonly in (True, False):       # routing processes and `serve` alike
        with pytest.raises(SchemaMismatch, match=f"schema version {version}.*run `switchboard load CONFIG` once"):
            Store(store.path, readonly=readonly)
    config = tmp_path / "small.yaml"
    config.write_text(textwrap.dedent(SMALL))
    assert main(["--store", store.path, "load", str(config)]) == 0
    with Store(store.path, readonly=True) as upgraded:
        assert upgraded.meta()["schema"] == rec.SCHEMA_VERSION == 3
        assert upgraded.generation() == generation + 1
        assert upgraded.dial_rules("small") == compile_rules("GB", None)
        assert {phone: upgraded.caller(phone) for phone in before} == before
        assert before["447400900123"].crm == {"small": answer, "other": answer}
        assert upgraded.live("2001").registered
        assert "history" not in upgraded.db and "crm" not in upgraded.db
    env = lmdb.open(store.path, max_dbs=16)
    with env.begin() as txn:
        assert txn.get(b"history") is None and txn.get(b"crm") is None      # the old tables are gone
    env.close()


def test_a_corrupt_old_call_history_stops_the_upgrade_and_changes_nothing(store, tmp_path):
    store.record_call("447400900123", "2001", 1_790_000_000, "in")
    store.close()
    _make_old_schema(store.path, 2)
    env = lmdb.open(store.path, max_dbs=16)
    with env.begin(write=True) as txn:
        txn.put(b"447400900124", b"\x09\x01", db=env.open_db(b"history", txn=txn))
    env.close()
    config = tmp_path / "small.yaml"
    config.write_text(textwrap.dedent(SMALL))
    with pytest.raises(StoreError, match="call-history entry b'447400900124'.*nothing was changed"):
        with Store(store.path, reload=True) as s:
            s.load_config(config_from_yaml(SMALL))
    with pytest.raises(SchemaMismatch, match="schema version 2"):
        Store(store.path, readonly=True)


def test_a_store_of_an_unknown_schema_is_left_untouched(tmp_path):
    path = str(tmp_path / "future")
    Store(path).close()
    env = lmdb.open(path, max_dbs=16)
    with env.begin(write=True) as txn:
        txn.drop(env.open_db(b"dial", txn=txn), delete=True)
        txn.put(b"schema", struct.pack("<I", 7), db=env.open_db(b"meta", txn=txn))
    env.close()
    for readonly in (False, True):
        with pytest.raises(SchemaMismatch, match="schema version 7.*move the old store away"):
            Store(path, readonly=readonly)
    env = lmdb.open(path, max_dbs=16)
    with env.begin() as txn:
        assert txn.get(b"dial") is None                 # the writer did not create its tables
    env.close()


def test_readonly_store_refuses_writes(store):
    store.close()           # LMDB allows one environment per path in a process
    with Store(store.path, readonly=True) as ro:
        with pytest.raises(StoreError, match="read-only"):
            ro.set_registered("2001", True)
        assert ro.live("2001") == rec.UNKNOWN_LIVE


def test_missing_store_says_how_to_create_it(tmp_path):
    with pytest.raises(StoreError, match="run `switchboard load CONFIG` first"):
        Store(str(tmp_path / "nope"), readonly=True)


def test_schema_mismatch_is_refused_with_advice(tmp_path):
    path = str(tmp_path / "old")
    Store(path).close()
    env = lmdb.open(path, max_dbs=16)
    with env.begin(write=True) as txn:
        txn.put(b"schema", struct.pack("<I", rec.SCHEMA_VERSION + 1), db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(SchemaMismatch, match=f"schema version {rec.SCHEMA_VERSION + 1}.*move the old store away"):
        Store(path)


@pytest.mark.parametrize("damage", [b"", b"\x02", b"\x02\x01\x05\x00ab", b"\x09\x01" + b"x" * 40])
def test_corrupt_records_raise_store_errors_in_both_engines(decide, store, damage):
    """A damaged record is a clear StoreError, never a crash or a wrong plan."""
    with store.env.begin(write=True) as txn:
        txn.put(b"2002", damage, db=store.db["ext"])
    with pytest.raises(StoreError):
        decide(store, "2002", "", at("2026-11-23 10:00"))


def test_a_load_is_atomic_for_readers_in_other_processes(tmp_path):
    """A reader never sees half of a config: generation and records always match."""
    path = str(tmp_path / "store")
    with Store(path) as writer:
        writer.load_config(_versioned(0))
        ctx = multiprocessing.get_context("spawn")
        stop = ctx.Event()
        result = ctx.Queue()
        reader = ctx.Process(target=_read_consistently, args=(path, stop, result))
        reader.start()
        try:
            assert result.get(timeout=30) == "ready"
            for version in range(1, 25):
                writer.load_config(_versioned(version))
        finally:
            stop.set()
            outcome = result.get(timeout=30)
            reader.join(timeout=30)
    assert outcome[0] == "ok", outcome
    assert outcome[1] > 0                       # it did read while loads happened


def test_presence_written_here_is_seen_by_another_process(store):
    store.call_started("2001")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        assert pool.apply(_active_calls, (store.path, "2001")) == 1
        store.call_ended("2001")
        assert pool.apply(_active_calls, (store.path, "2001")) == 0


def _active_calls(path: str, ext: str) -> int:
    with Store(path, readonly=True) as s:
        return s.live(ext).active_calls


def _versioned(version: int):
    """A config whose every employee name carries the version, with version-many employees."""
    employees = "\n".join(f"  - {{extension: {3000 + i}, name: v{version}}}" for i in range(version + 1))
    return config_from_yaml(f"id: v\nname: V\ncountry: GB\ntimezone: UTC\nemployees:\n{employees}\n")


def _read_consistently(path: str, stop, result) -> None:
    try:
        reads = 0
        with Store(path, readonly=True) as s:
            result.put("ready")
            while not stop.is_set() and reads < 200_000:
                with s.read() as txn:
                    generation = struct.unpack("<Q", txn.get(b"generation", db=s.db["meta"]))[0]
                    names = {rec.decode_employee(bytes(k).decode(), v).name
                             for k, v in txn.cursor(db=s.db["ext"])}
                    count = txn.stat(s.db["ext"])["entries"]
                if names != {f"v{generation - 1}"} or count != generation:
                    result.put(("mixed", generation, sorted(names), count))
                    return
                reads += 1
        result.put(("ok", reads))
    except Exception as exc:       # reported to the parent, which fails the test
        result.put(("error", repr(exc)))


@pytest.mark.parametrize("zone", ["Europe/London", "America/New_York", "Australia/Lord_Howe",
                                  "Asia/Kolkata", "Europe/Moscow", "Pacific/Chatham", "UTC"])
def test_compiled_zone_tables_agree_with_zoneinfo(zone):
    """The table the fast path searches gives zoneinfo's offset at random instants and at every change."""
    table = compile_zone(zone)
    tz = ZoneInfo(zone)
    rnd = random.Random(zone)
    instants = [rnd.randrange(table.valid_from, table.valid_until) for _ in range(2000)]
    for when, _ in table.transitions[1:]:
        instants += [when - 1, when]
    for when in instants:
        expected = dt.datetime.fromtimestamp(when, tz).utcoffset().total_seconds()
        assert offset_at(table, when) == expected, (zone, when)
    assert offset_at(table, table.valid_until) is None
