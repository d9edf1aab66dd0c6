"""ICM lookup on the call path: the compiled lookup against its pure-Python twin, in one run.

The store holds one Moscow company (200 employees), **1,000,000 callers in the
call-history base** and **200,000 cached CRM answers** (under
``--benchmark-disable``, as in CI, 20,000 and 5,000 so the file stays quick).
One lookup = normalise the caller number as the switch sent it (``+7…``,
``8…``, ``7…``, 7-digit local) with the company's compiled rules + read the
caller's record (their history entry and the company's cached CRM answer,
one key) + check the extension where the answer needs it, in one LMDB
snapshot.  The call mix makes every lookup read both sources:
85 % are CRM contacts whose last call is older than ``max_age`` (90 days), so
history is read and passed over, then the CRM answer is used; 15 % are callers
nobody knows (both reads miss).  1,000 different callers are cycled, so CPU
caches are cold as in production; each is looked up once before timing (the
warm-up), so the store's pages are mapped into the process as in a service
that has been running a while (a first touch of an LMDB page costs a page
fault, about 1 µs, once per page and process).  Each round is one lookup
(``lookups_per_round`` 1).

Also reported in ``extra_info``: the caller table's bulk-load rate (one write
transaction, sorted keys, ``putmulti(append=True)``) and the store size.
``test_history_write`` measures the history base's insert rate as the presence
listener writes it: ``inserts_per_s`` for batches of 1,000 new callers in one
``Store.apply_live`` transaction each (the listener commits each read burst so),
``record_call_per_s`` for one durable commit per call (``Store.record_call``),
and ``crm_contact_updates_per_s`` for batches of calls from known CRM contacts
(their record is rewritten, its cached answer kept).
"""
from __future__ import annotations

import itertools
import random
import struct
import time

import pytest

from fastpath import icm_lookup
from fastpath import records as rec
from fastpath.store import CallRecorded, Store
from fastpath.validate import validate
from fastpath.yaml_source import load_yaml

NOW = 1_800_000_000
DAY = 86_400
MAX_AGE = 90 * DAY
EMPLOYEES = 200
PREFIXES = ("495", "499", "916", "903", "926", "985")      # Moscow fixed lines and mobiles
CALLS = 1_000
_HISTORY_HEAD = struct.Struct("<BBqBH")


def _company_yaml() -> str:
    lines = ["id: mos", "name: Moscow office", "country: RU", 'city_code: "495"', "timezone: Europe/Moscow",
             "employees:"]
    lines += [f"  - {{extension: {2000 + i}, name: Manager {i}, email: m{i}@mos.example}}" for i in range(EMPLOYEES)]
    return "\n".join(lines) + "\n"


def _number(i: int) -> str:
    """The i-th caller: distinct for i < 60,000,000; +7 495/499 fixed lines and 9xx mobiles."""
    return "7" + PREFIXES[i % len(PREFIXES)] + f"{(i // len(PREFIXES)) * 37 % 10_000_000:07d}"


def _written(number: str, rnd: random.Random) -> str:
    """How the switch presents the caller: E.164 with or without '+', trunk prefix 8, or local."""
    forms = ["+" + number, number, "8" + number[1:]]
    if number.startswith("7495") and number[4] not in "08":     # Moscow subscriber numbers start 1-7, 9
        forms.append(number[4:])
    return rnd.choice(forms)


@pytest.fixture(scope="session")
def icm_store(tmp_path_factory, pytestconfig):
    small = bool(pytestconfig.getoption("benchmark_disable", False))
    history_rows, crm_rows = (20_000, 5_000) if small else (1_000_000, 200_000)
    info = {"history_rows": history_rows, "crm_rows": crm_rows}
    store = Store(str(tmp_path_factory.mktemp("icm") / "store"))
    config = validate([(load_yaml(_company_yaml(), "icm.yaml"), "icm.yaml")])
    store.load_config(config)                               # writes the company's dialling rules too
    rnd = random.Random(5)
    step = history_rows // crm_rows                         # every step-th caller is a CRM contact

    # Callers: one write transaction, keys generated then sorted, appended.  Every step-th caller
    # is a CRM contact: their record also holds amoCRM's answer, fresh and mapped against the
    # loaded config (as the refresher writes them).
    generation = store.generation()
    started = time.perf_counter()
    rows = []
    for i in range(history_rows):
        ext = str(2000 + i % EMPLOYEES).encode()
        age = rnd.randrange(100 * DAY, 365 * DAY) if i % step == 0 else rnd.randrange(0, 365 * DAY)
        answers = {}
        if i % step == 0:
            answers["mos"] = rec.encode_crm_answer(rec.CrmAnswerRec(
                rec.CRM_FOUND, str(2000 + (i // step) % EMPLOYEES), "amocrm", NOW - 3600, NOW + 12 * 3600,
                NOW + 20 * 3600, str(500000 + i), f"Manager {i % EMPLOYEES}", f"m{i % EMPLOYEES}@mos.example",
                generation))
        history = _HISTORY_HEAD.pack(rec.REC_HISTORY, rec.RECORD_VERSION, NOW - age, i & 1, len(ext)) + ext
        rows.append((_number(i).encode(), rec.caller_bytes(history, answers)))
    rows.sort()
    generated = time.perf_counter()
    with store.env.begin(write=True) as txn:
        consumed, added = txn.cursor(db=store.db["caller"]).putmulti(rows, append=True)
    written = time.perf_counter()
    assert added == history_rows
    info["history_generate_s"] = round(generated - started, 3)
    info["history_bulk_write_s"] = round(written - generated, 3)
    info["history_bulk_inserts_per_s"] = round(history_rows / (written - generated))
    del rows

    stats = store.stats()
    info["store_bytes"] = stats["bytes"]
    info["store_mb"] = round(stats["bytes"] / 1e6, 1)
    store.bench_info = info
    yield store
    store.close()


def _call_mix(history_rows: int, crm_rows: int) -> list[tuple[str, tuple | None]]:
    """(caller as written, expected answer): 85 % CRM contacts with stale history, 15 % unknown callers."""
    rnd = random.Random(11)
    step = history_rows // crm_rows
    calls = []
    for _ in range(CALLS):
        if rnd.random() < 0.85:
            i = rnd.randrange(0, history_rows, step)
            calls.append((_written(_number(i), rnd), (str(2000 + (i // step) % EMPLOYEES), "amocrm", NOW - 3600)))
        else:
            unknown = "7" + rnd.choice(PREFIXES) + f"{rnd.randrange(10_000_000):07d}"
            calls.append((_written(unknown, rnd), None))
    return calls


@pytest.mark.parametrize("impl", ["fastpath", "reference"])
def test_icm_lookup(benchmark, icm_store, impl):
    lookup = icm_lookup.IMPLEMENTATIONS[impl]
    info = icm_store.bench_info
    calls = _call_mix(info["history_rows"], info["crm_rows"])
    # Correctness first: every call of the mix answers what the data says (unknown callers may,
    # rarely, collide with a generated number, so only the known ones are checked).
    for raw, expected in calls:
        if expected is not None:
            assert lookup(icm_store, "mos", raw, NOW, MAX_AGE) == expected, raw
    cycle = itertools.cycle(calls)

    def next_call():
        return (icm_store, "mos", next(cycle)[0], NOW, MAX_AGE), {}

    benchmark.group = "icm"
    benchmark.extra_info.update(info, lookups_per_round=1, callers_in_mix=len(calls), implementation=impl,
                                mix="85% CRM contact with history older than max_age, 15% unknown")
    benchmark.pedantic(lookup, setup=next_call, rounds=3 * len(calls), iterations=1, warmup_rounds=len(calls))


HISTORY_BATCH = 1_000


def test_history_write(benchmark, icm_store):
    """Inserts of new callers into the full history base: batches of HISTORY_BATCH in one
    ``apply_live`` transaction (what the listener does per read burst), and call by call."""
    info = icm_store.bench_info
    fresh = itertools.count(info["history_rows"] + 10_000_000)     # callers not in the base: real inserts

    def batch():
        return ([CallRecorded(_number(next(fresh)), str(2000 + i % EMPLOYEES), NOW, "in")
                 for i in range(HISTORY_BATCH)],), {}

    entries = icm_store.stats()["caller"]
    # Call by call, one durable commit each, for up to 1 s.
    started = time.perf_counter()
    singles = 0
    while singles < 5_000 and time.perf_counter() - started < 1.0:
        icm_store.record_call(_number(next(fresh)), "2001", NOW, "in")
        singles += 1
    record_call_per_s = round(singles / (time.perf_counter() - started))
    # Batched, timed here too so the figure exists under --benchmark-disable.
    batches = [batch()[0][0] for _ in range(5)]
    started = time.perf_counter()
    for changes in batches:
        assert icm_store.apply_live(changes) == set()
    inserts_per_s = round(len(batches) * HISTORY_BATCH / (time.perf_counter() - started))
    assert icm_store.stats()["caller"] == entries + singles + len(batches) * HISTORY_BATCH
    # Returning CRM contacts: their record is rewritten with its cached answer kept.
    step = info["history_rows"] // info["crm_rows"]
    known = itertools.cycle(range(0, info["history_rows"], step))
    batches = [[CallRecorded(_number(i), "2001", NOW, "in") for i in itertools.islice(known, HISTORY_BATCH)]
               for _ in range(5)]
    started = time.perf_counter()
    for changes in batches:
        icm_store.apply_live(changes)
    updates_per_s = round(len(batches) * HISTORY_BATCH / (time.perf_counter() - started))
    assert icm_store.crm_answer("mos", batches[0][0].caller).source == "amocrm"
    assert icm_store.history(batches[0][0].caller).extension == "2001"
    benchmark.group = "icm-history-write"
    benchmark.extra_info.update(history_rows=info["history_rows"], inserts_per_round=HISTORY_BATCH,
                                inserts_per_s=inserts_per_s, record_call_per_s=record_call_per_s,
                                crm_contact_updates_per_s=updates_per_s,
                                store_bytes=info["store_bytes"], store_mb=info["store_mb"])
    benchmark.pedantic(icm_store.apply_live, setup=batch, rounds=20, iterations=1)
