"""ICM's hot path: caller number → manager, from the call history or the cached CRM answer.

Every test runs on the Cython lookup and its pure-Python twin; the store
additions (the ``crm`` table and its record) are tested here too.
"""
from __future__ import annotations

import os
import struct

import pytest

from fastpath import icm_lookup as icm
from fastpath import records as rec
from fastpath.caller_numbers import compile_rules
from fastpath.errors import StoreError
from fastpath.store import CONFIG_DBS, Store

from .conftest import config_from_yaml

IMPLS = ["fastpath", "reference"]
if os.environ.get("SWITCHBOARD_NO_CYTHON") == "1":
    IMPLS = ["reference"]

TWO_COMPANIES = """
companies:
  - id: mos
    name: Moscow office
    country: RU
    city_code: "495"
    timezone: Europe/Moscow
    employees:
      - {extension: 2001, name: Anna, email: anna@mos.example}
      - {extension: 2002, name: Boris}
      - {extension: 2003, name: Director}
    departments:
      - {extension: 600, name: Sales, members: [2001, 2002]}
  - id: lon
    name: London office
    country: GB
    city_code: "20"
    timezone: Europe/London
    employees:
      - {extension: 3001, name: Oliver}
"""
DAY = 86_400
NOW = 1_800_000_000


@pytest.fixture(params=IMPLS)
def lookup(request):
    if request.param not in icm.IMPLEMENTATIONS:
        pytest.fail("the compiled ICM lookup is not built: run `pip install -e .` "
                    "(or set SWITCHBOARD_NO_CYTHON=1 to test the pure twin alone)")
    return icm.IMPLEMENTATIONS[request.param]


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "store"))
    config = config_from_yaml(TWO_COMPANIES)
    s.load_config(config)
    yield s
    s.close()


def crm(ext, source="amocrm", fetched=NOW - 100, ttl=DAY, status=rec.CRM_FOUND):
    return rec.CrmAnswerRec(status, ext, source, fetched, fetched + ttl // 2, fetched + ttl, "504141", "Anna",
                            "anna@mos.example")


def test_a_returning_caller_is_found_in_the_call_history_in_any_written_form(store, lookup):
    store.record_call("74951234567", "2001", NOW - 3 * DAY, "in")
    for raw in ("+74951234567", "74951234567", "84951234567", "4951234567", "1234567"):
        assert lookup(store, "mos", raw, NOW) == ("2001", "history", NOW - 3 * DAY), raw


def test_history_older_than_max_age_is_skipped_for_the_next_source(store, lookup):
    store.record_call("79161234567", "2001", NOW - 100 * DAY, "out")
    store.put_crm_answer("mos", "79161234567", crm("2002"))
    assert lookup(store, "mos", "89161234567", NOW, 90 * DAY) == ("2002", "amocrm", NOW - 100)
    assert lookup(store, "mos", "89161234567", NOW, 0) == ("2001", "history", NOW - 100 * DAY)


def test_sources_are_asked_in_the_configured_order(store, lookup):
    store.record_call("79161234567", "2001", NOW - DAY, "in")
    store.put_crm_answer("mos", "79161234567", crm("2002", source="bitrix24"))
    assert lookup(store, "mos", "89161234567", NOW, 0, ("crm", "history"))[:2] == ("2002", "bitrix24")
    assert lookup(store, "mos", "89161234567", NOW, 0, ("history", "crm"))[:2] == ("2001", "history")
    assert lookup(store, "mos", "89161234567", NOW, 0, ("crm",))[:2] == ("2002", "bitrix24")
    assert lookup(store, "mos", "89161234567", NOW, 0, ()) is None


@pytest.mark.parametrize("answer", [
    crm("2002", fetched=NOW - 2 * DAY),                     # expired
    crm("", status=rec.CRM_UNMAPPED),                       # CRM user without an extension
    crm("", status=rec.CRM_NOT_FOUND),                      # negative answer
    crm("3001"),                                            # an extension of another company
    crm("600"),                                             # a department, not an employee
    crm("2999"),                                            # no longer in the config
])
def test_cached_crm_answers_that_name_no_employee_of_the_company_are_not_used(store, lookup, answer):
    store.put_crm_answer("mos", "79161234567", answer)
    assert lookup(store, "mos", "89161234567", NOW) is None


def test_a_crm_answer_checked_at_an_older_config_is_checked_again(store, lookup):
    """An answer records the generation its extension was verified at; a reload makes it re-verified."""
    generation = store.generation()
    store.put_crm_answer("mos", "79161234567", rec.CrmAnswerRec(
        rec.CRM_FOUND, "2003", "amocrm", NOW - 100, NOW + DAY, NOW + 2 * DAY, generation=generation))
    assert lookup(store, "mos", "89161234567", NOW) == ("2003", "amocrm", NOW - 100)
    store.load_config(config_from_yaml(TWO_COMPANIES.replace("      - {extension: 2003, name: Director}\n", "")))
    assert store.generation() == generation + 1
    assert lookup(store, "mos", "89161234567", NOW) is None


def test_new_dialling_rules_apply_at_once(store, lookup):
    """Rules are config: a reload with another city code writes them with the generation bump,
    and the next lookup (whose rules are cached per generation) reads them."""
    store.record_call("74991234567", "2001", NOW - DAY, "in")
    assert lookup(store, "mos", "1234567", NOW) is None                  # local numbers are 495 ones
    store.load_config(config_from_yaml(TWO_COMPANIES.replace('city_code: "495"', 'city_code: "499"')))
    assert lookup(store, "mos", "1234567", NOW) == ("2001", "history", NOW - DAY)


def test_the_config_load_writes_every_companys_rules_and_a_reload_drops_a_removed_ones(store, lookup):
    assert store.dial_rules("mos") == compile_rules("RU", "495")
    assert store.dial_rules("lon") == compile_rules("GB", "20")
    assert "dial" in CONFIG_DBS and store.stats()["dial"] == 2
    store.record_call("442079460123", "3001", NOW - DAY, "in")
    assert lookup(store, "lon", "79460123", NOW) == ("3001", "history", NOW - DAY)
    store.load_config(config_from_yaml(TWO_COMPANIES[:TWO_COMPANIES.index("  - id: lon")]))
    assert store.dial_rules("lon") is None and store.stats()["dial"] == 1
    with pytest.raises(StoreError, match="no dialling rules for company 'lon'"):
        lookup(store, "lon", "79460123", NOW)


def test_caller_key_reads_a_number_as_the_lookup_does(store):
    for raw in ("+74951234567", "84951234567", "1234567"):
        assert icm.caller_key(store, "mos", raw) == "74951234567"
    assert icm.caller_key(store, "lon", "02079460123") == "442079460123"
    assert icm.caller_key(store, "mos", "anonymous") is None
    with pytest.raises(StoreError, match="no dialling rules for company 'nope'"):
        icm.caller_key(store, "nope", "1234567")


def test_history_is_kept_per_caller_but_only_used_by_the_company_of_the_extension(store, lookup):
    """A Londoner who talked to ext 3001 is no returning caller of the Moscow office."""
    store.record_call("442079460123", "3001", NOW - DAY, "in")
    assert lookup(store, "mos", "+442079460123", NOW) is None
    assert lookup(store, "lon", "02079460123", NOW) == ("3001", "history", NOW - DAY)
    assert lookup(store, "lon", "79460123", NOW) == ("3001", "history", NOW - DAY)


def test_unknown_and_anonymous_callers_get_none(store, lookup):
    assert lookup(store, "mos", "84957777777", NOW) is None
    for raw in ("anonymous", "", "+", "0", "Анна"):
        assert lookup(store, "mos", raw, NOW) is None


def test_a_forgotten_caller_is_no_longer_found(store, lookup):
    store.record_call("74951234567", "2001", NOW - DAY, "in")
    assert store.forget_caller("74951234567")
    assert lookup(store, "mos", "1234567", NOW) is None


def test_a_company_without_rules_or_an_unknown_source_is_an_error(store, lookup):
    with pytest.raises(StoreError, match="no dialling rules"):
        lookup(store, "nope", "1234567", NOW)
    store.record_call("74951234567", "2001", NOW - DAY, "in")
    with pytest.raises(ValueError, match="unknown ICM source"):
        lookup(store, "mos", "1234567", NOW, 0, ("calendar",))


def _caller_record(history: bytes, answers: dict[str, bytes]) -> bytes:
    """A caller record built by hand, so the parts can be damaged."""
    out = bytes([rec.REC_CALLER, 1]) + struct.pack("<I", len(history)) + history + struct.pack("<H", len(answers))
    for company, answer in answers.items():
        out += struct.pack("<H", len(company)) + company.encode() + struct.pack("<I", len(answer)) + answer
    return out


GOOD_HISTORY = rec.encode_history(rec.HistoryRec("2001", NOW - DAY, "in"))
GOOD_ANSWER = rec.encode_crm_answer(crm("2002"))


@pytest.mark.parametrize("damaged", [
    bytes([rec.REC_HISTORY, 1, 0, 0]),                                         # another record type
    bytes([rec.REC_CALLER, 1, 0, 0]),                                          # cut inside its header
    _caller_record(bytes([rec.REC_HISTORY, 1, 0, 0]), {}),                     # history cut short
    _caller_record(GOOD_ANSWER, {}),                                           # a CRM answer as history
    _caller_record(GOOD_HISTORY, {"mos": GOOD_ANSWER[:-3]}),                   # the user's e-mail cut short
    _caller_record(GOOD_HISTORY, {"lon": bytes([rec.REC_CRM, 1, 1])}),        # another company's, cut
    _caller_record(GOOD_HISTORY, {"mos": GOOD_ANSWER[:2] + b"\x07" + GOOD_ANSWER[3:]}),   # unknown status
    _caller_record(GOOD_HISTORY, {"mos": GOOD_ANSWER}) + b"\x00",              # bytes past its end
    _caller_record(GOOD_HISTORY, {"mos": GOOD_ANSWER})[:-1],                   # cut at the very end
], ids=["type", "header", "history", "history-type", "answer", "other-answer", "status", "trailing", "cut"])
def test_corrupt_caller_records_raise_store_errors_from_every_source(store, lookup, damaged):
    with store.env.begin(write=True) as txn:
        txn.put(b"74951234567", damaged, db=store.db["caller"])
    for order in (("history", "crm"), ("crm",), ("history",)):
        with pytest.raises(StoreError):
            lookup(store, "mos", "1234567", NOW, 0, order)


def test_a_hand_built_caller_record_reads_as_the_store_writes_it(store, lookup):
    with store.env.begin(write=True) as txn:
        txn.put(b"74951234567", _caller_record(GOOD_HISTORY, {"mos": GOOD_ANSWER}), db=store.db["caller"])
    assert lookup(store, "mos", "1234567", NOW) == ("2001", "history", NOW - DAY)
    assert lookup(store, "mos", "1234567", NOW, 0, ("crm",)) == ("2002", "amocrm", crm("2002").fetched)
    assert store.caller("74951234567") == rec.CallerRec(rec.HistoryRec("2001", NOW - DAY, "in"), {"mos": crm("2002")})


def test_both_implementations_share_one_signature_and_the_compiled_one_is_chosen():
    import inspect
    assert list(inspect.signature(icm.lookup_ref).parameters) == ["store", "company", "caller", "now",
                                                                   "max_age", "order"]
    if "fastpath" in icm.IMPLEMENTATIONS:
        from fastpath import _icm_lookup
        assert "cyfunction" in repr(_icm_lookup.lookup)
        if os.environ.get("SWITCHBOARD_PUREPYTHON") != "1":
            assert icm.lookup is _icm_lookup.lookup


def test_rules_survive_reopening_the_store_read_only(tmp_path, lookup):
    path = str(tmp_path / "store")
    with Store(path) as s:
        config = config_from_yaml(TWO_COMPANIES)
        s.load_config(config)
        s.record_call("74951234567", "2002", NOW - DAY, "in")
    with Store(path, readonly=True) as ro:
        assert lookup(ro, "mos", "84951234567", NOW) == ("2002", "history", NOW - DAY)


# --- the store additions: CRM answers in the callers' records -------------------------

def test_crm_answer_records_round_trip():
    answer = rec.CrmAnswerRec(rec.CRM_FOUND, "2001", "amocrm", 10, 20, 30, "504141", "Анна Иванова", "anna@x.ru", 7)
    assert rec.decode_crm_answer(rec.encode_crm_answer(answer)) == answer
    empty = rec.CrmAnswerRec(rec.CRM_NOT_FOUND, "", "", 1, 2, 3)
    assert rec.decode_crm_answer(rec.encode_crm_answer(empty)) == empty
    with pytest.raises(StoreError):
        rec.decode_crm_answer(rec.encode_history(rec.HistoryRec("2001", 1, "in")))
    with pytest.raises(StoreError, match="unknown CRM answer status"):
        rec.decode_crm_answer(bytes([rec.REC_CRM, rec.RECORD_VERSION, 7]) + bytes(40))


def test_caller_records_round_trip_and_the_writers_splices_keep_the_other_part():
    history = rec.HistoryRec("2001", NOW, "out")
    both = rec.CallerRec(history, {"mos": crm("2002"), "lon": crm("3001")})
    assert rec.decode_caller(rec.encode_caller(both)) == both
    assert rec.decode_caller(rec.encode_caller(rec.CallerRec())) == rec.CallerRec() and not rec.CallerRec()
    fresh = rec.encode_history(rec.HistoryRec("2003", NOW + 1, "in"))
    assert rec.caller_with_history(None, fresh) == rec.encode_caller(rec.CallerRec(rec.decode_history(fresh)))
    assert rec.caller_with_history(None, b"") is None
    spliced = rec.decode_caller(rec.caller_with_history(rec.encode_caller(both), fresh))
    assert spliced == rec.CallerRec(rec.decode_history(fresh), both.crm)
    assert rec.decode_caller(rec.caller_with_answer(rec.encode_caller(both), "lon", None)) == \
        rec.CallerRec(history, {"mos": crm("2002")})
    assert rec.caller_with_answer(rec.encode_caller(rec.CallerRec(None, {"mos": crm("2002")})), "mos", None) is None
    with pytest.raises(StoreError, match="bad company id"):
        rec.encode_caller(rec.CallerRec(None, {"a/b": crm("2002")}))


def test_store_keeps_crm_answers_per_company_and_caller(store):
    answer = crm("2001")
    store.put_crm_answer("mos", "79161234567", answer)
    assert store.crm_answer("mos", "79161234567") == answer
    assert store.crm_answer("lon", "79161234567") is None
    store.put_crm_answer("mos", "79161234567", None)
    assert store.crm_answer("mos", "79161234567") is None
    assert store.caller("79161234567") is None and store.stats()["caller"] == 0     # nothing left: no record
    for company, phone in (("", "7"), ("a/b", "7"), ("mos", "+7916"), ("mos", "")):
        with pytest.raises(StoreError, match="bad CRM cache key"):
            store.put_crm_answer(company, phone, answer)


def test_crm_answers_survive_a_config_reload(store):
    store.put_crm_answer("mos", "79161234567", crm("2001"))
    store.load_config(config_from_yaml(TWO_COMPANIES))
    assert store.crm_answer("mos", "79161234567") == crm("2001")


# --- what the CLI and the plan's reasons use ------------------------------------------

def test_explain_says_what_each_source_found_and_agrees_with_the_lookup(store):
    store.record_call("79161234567", "2001", NOW - 100 * DAY, "out")
    store.put_crm_answer("mos", "79161234567", crm("2002"))
    e = icm.explain(store, "mos", "89161234567", NOW, 90 * DAY)
    assert e.phone == "79161234567" and e.answer == ("2002", "amocrm", NOW - 100)
    assert e.answer == icm.lookup_ref(store, "mos", "89161234567", NOW, 90 * DAY)
    text = str(e)
    assert "call history: last call to them with ext 2001" in text and "passed over" in text
    assert "ext 2002 (Anna), used" in text
    assert "not a phone number" in str(icm.explain(store, "mos", "anonymous", NOW))
    nobody = icm.explain(store, "mos", "84957777777", NOW)
    assert nobody.answer is None and "answer: none (normal route)" in str(nobody)


def test_reasons_name_the_source_and_the_day():
    when = 1_795_126_380                     # 2026-11-19 22:13 UTC, already the 20th in Moscow
    assert icm.reason("2003", "history", when, "Europe/Moscow") == \
        "ICM: last talked to ext 2003 on 2026-11-20 via call history"
    assert icm.reason("2003", "amocrm", when) == \
        "ICM: ext 2003 is responsible for this caller in amoCRM (checked 2026-11-19)"


# --- the twins agree on random data -------------------------------------------------------

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

PHONES = ["74951234567", "74991234567", "79161234567", "442079460123", "78001234567"]
EXTS = ["2001", "2002", "2003", "3001", "600", "2999", ""]


def written(phone: str) -> st.SearchStrategy:
    forms = ["+" + phone, phone, "00" + phone, "810" + phone]
    if phone.startswith("7"):
        forms.append("8" + phone[1:])
    if phone.startswith("7495"):
        forms.append(phone[4:])
    return st.sampled_from(forms)


history_entries = st.dictionaries(st.sampled_from(PHONES), st.tuples(
    st.sampled_from(EXTS[:-1]), st.integers(0, 200 * DAY), st.sampled_from(["in", "out"])))
crm_entries = st.dictionaries(st.tuples(st.sampled_from(["mos", "lon"]), st.sampled_from(PHONES)), st.tuples(
    st.sampled_from([rec.CRM_FOUND, rec.CRM_UNMAPPED, rec.CRM_NOT_FOUND]), st.sampled_from(EXTS),
    st.integers(-2 * DAY, 2 * DAY), st.booleans()))


@pytest.mark.skipif(os.environ.get("SWITCHBOARD_NO_CYTHON") == "1", reason="deliberately built without Cython")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history_entries, crm_entries, st.sampled_from(PHONES).flatmap(written), st.sampled_from(["mos", "lon"]),
       st.sampled_from([0, 30 * DAY, 90 * DAY]), st.sampled_from([("history", "crm"), ("crm", "history"), ("crm",)]))
def test_both_lookups_agree_on_random_histories_and_crm_caches(store, history, cache, caller, company, max_age, order):
    with store.env.begin(write=True) as txn:
        txn.drop(store.db["caller"], delete=False)
    for phone, (ext, age, direction) in history.items():
        store.record_call(phone, ext, NOW - age, direction)
    generation = store.generation()
    for (comp, phone), (status, ext, expires_in, verified) in cache.items():
        store.put_crm_answer(comp, phone, rec.CrmAnswerRec(
            status, ext, "bitrix24", NOW - 60, NOW, NOW + expires_in, "1", "n", "e",
            generation if verified and ext in ("2001", "2002", "2003") and comp == "mos" else 0))
    fast = icm.IMPLEMENTATIONS["fastpath"](store, company, caller, NOW, max_age, order)
    assert fast == icm.lookup_ref(store, company, caller, NOW, max_age, order)
    assert fast == icm.explain(store, company, caller, NOW, max_age, order).answer


def _answer_naming(name: bytes) -> bytes:
    """A cached CRM answer whose user name is ``name`` as stored, whatever the bytes."""
    a = crm("2002")
    return (rec.Writer(rec.REC_CRM).u8(a.status).i64(a.fetched).i64(a.refresh_after).i64(a.expires)
            .i64(a.generation).str(a.extension).str(a.source).str(a.user_id).u16(len(name)).raw(name)
            .str(a.user_email).bytes())


NOT_UTF8 = [b"\xc0\x80", b"\xe0\x80\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xff",
            b"\xd0", b"\xe2\x82", b"a\x80", b"\xf0\x9f\x98"]
UTF8 = [b"", "Анна".encode(), "€".encode(), "😀".encode(), "\U0010ffff".encode(), "\ud7ff".encode()]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.tuples(st.integers(0, 17), st.one_of(st.sampled_from(NOT_UTF8 + UTF8), st.binary(max_size=6)),
                      st.integers(0, 9)).map(lambda t: b"n" * t[0] + t[1] + b"e" * t[2]))
def test_a_stored_name_that_is_not_utf8_is_refused_by_both_lookups_alike(store, lookup, name):
    """The compiled lookup checks every string of the record as the reference's decoder does, so
    a damaged byte even in a field the answer does not show is the same StoreError in both."""
    with store.env.begin(write=True) as txn:
        txn.put(b"74951234567", _caller_record(GOOD_HISTORY, {"mos": _answer_naming(name)}), db=store.db["caller"])
    try:
        name.decode("utf-8")
    except UnicodeDecodeError:
        with pytest.raises(StoreError):
            lookup(store, "mos", "1234567", NOW, 0, ("crm",))
    else:
        assert lookup(store, "mos", "1234567", NOW, 0, ("crm",)) == ("2002", "amocrm", crm("2002").fetched)
