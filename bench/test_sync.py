"""Calendar sync throughput against a real Radicale server on 127.0.0.1.

Workload: ``CALENDARS`` calendars of ``EVENTS`` events each (one employee per
calendar), in the next 60 days: 80 % single events in UTC (``…Z``), 10 % weekly
series (8 occurrences), 10 % events in ``Europe/London`` with their
VTIMEZONE, as CalDAV clients write them; a third carry a keyword.  The
calendars are written straight into Radicale's storage folder, and
Radicale's own item cache is built once before timing (in two processes);
that folder is kept in ``.benchmarks/`` and reused by later runs, because
building it costs Radicale 2-11 ms per item (vobject), minutes for 50,000.

Timed, through the real worker (``CalendarWorker.run_once``: sources, parsing,
expansion, keywords, one LMDB write per calendar):

* ``full_sync_s`` -- every calendar from scratch: ``getctag`` PROPFIND,
  sync-collection REPORT (Radicale sends the calendar data with it; servers
  that leave it out get a calendar-multiget REPORT), parse and expand all
  objects, write all intervals;
* ``incremental_sync_s`` -- all calendars again after 1 % of them changed (an
  event edited and one deleted through CalDAV): one ``getctag`` PROPFIND per
  calendar, plus a sync-collection REPORT and a store write for the changed
  ones (``incremental_requests`` counts them).

Targets on this machine (2 cores): 1,000 × 50 fully synced in < 60 s, re-synced
incrementally in < 10 s.  Under ``--benchmark-disable`` (CI) the size is 20 × 50.
Radicale and the worker share the 2 cores.  Radicale's cost is per item (it
reads every item's cache entry to compute a ctag or a sync token: about 3 ms
for 50 items), so the worker's share is kept small: Radicale's application is
served over HTTP/1.1 with keep-alive (``RadicaleServer(wsgi="keep-alive")``,
see ``tests/calendar/radicale_server.py``; its own server speaks HTTP/1.0 and
costs a connection and a thread per request, about 2.5 ms more), and the
worker reuses ``parallel`` connections.  ``RADICALE_WSGI=builtin`` in the
environment measures Radicale's own server instead.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time

import pytest

from esl_app.calendar.caldav_source import CalDavSource, ClientPool
from esl_app.calendar.config import CalendarConfig, EmployeeCalendar, ServerConfig
from esl_app.calendar.keywords import KeywordRules
from esl_app.calendar.worker import CalendarWorker
from fastpath.store import Store
from fastpath.validate import validate
from fastpath.yaml_source import load_yaml
from tests.calendar.radicale_server import RadicaleServer, radicale_configuration

FULL = {"calendars": 1000, "events": 50}
CI = {"calendars": 20, "events": 50}
PARALLEL = 4
GENERATOR_VERSION = 1
NOW = dt.datetime(2026, 11, 23, 6, 0, tzinfo=dt.timezone.utc)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

VTIMEZONE = ("BEGIN:VTIMEZONE\r\nTZID:Europe/London\r\nBEGIN:DAYLIGHT\r\nTZOFFSETFROM:+0000\r\nTZOFFSETTO:+0100\r\n"
             "TZNAME:BST\r\nDTSTART:19700329T010000\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\nEND:DAYLIGHT\r\n"
             "BEGIN:STANDARD\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0000\r\nTZNAME:GMT\r\nDTSTART:19701025T020000\r\n"
             "RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n")
TITLES = ("m Board meeting", "Customer call", "lunch with the team", "Design review", "[va] Long weekend",
          "1:1 with Jack")


def event_ics(cal: int, index: int, revision: int = 0) -> str:
    uid = f"c{cal}-e{index}"
    start = NOW + dt.timedelta(hours=3 + index * 27 + cal % 7)
    end = start + dt.timedelta(minutes=30 + 30 * (index % 3))
    title = TITLES[(cal + index) % len(TITLES)] + (f" (rev {revision})" if revision else "")
    kind = index % 10
    lines = ["BEGIN:VEVENT", f"UID:{uid}", "DTSTAMP:20261101T000000Z", f"SUMMARY:{title}", f"SEQUENCE:{revision}"]
    tz = ""
    if kind == 9:                                     # written in London time, with its VTIMEZONE
        tz = VTIMEZONE
        lines += [f"DTSTART;TZID=Europe/London:{start:%Y%m%dT%H%M%S}",
                  f"DTEND;TZID=Europe/London:{end:%Y%m%dT%H%M%S}"]
    else:
        lines += [f"DTSTART:{start:%Y%m%dT%H%M%SZ}", f"DTEND:{end:%Y%m%dT%H%M%SZ}"]
        if kind == 0:
            lines.append("RRULE:FREQ=WEEKLY;COUNT=8")
    body = "\r\n".join(lines + ["END:VEVENT"]) + "\r\n"
    return f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//switchboard bench//EN\r\n{tz}{body}END:VCALENDAR\r\n"


def _warm(args):
    """Build Radicale's item cache of one calendar, in a worker process."""
    folder, name = args
    from radicale import storage

    configuration = radicale_configuration(folder, 1)          # the port is not used here
    store = storage.load(configuration)
    with store.acquire_lock("r"):
        collection = next(iter(store.discover(f"/bench/{name}/")))
        return sum(1 for _ in collection.get_all())


def build_storage(folder: str, calendars: int, events: int) -> float:
    """Write the calendars into Radicale's folder layout and warm its cache; seconds taken."""
    import multiprocessing

    started = time.perf_counter()
    names = []
    for cal in range(calendars):
        name = f"cal{cal:04d}"
        names.append((folder, name))
        path = os.path.join(folder, "collection-root", "bench", name)
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, ".Radicale.props"), "w") as handle:
            json.dump({"tag": "VCALENDAR"}, handle)
        for index in range(events):
            with open(os.path.join(path, f"c{cal}-e{index}.ics"), "w", newline="") as handle:
                handle.write(event_ics(cal, index))
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        assert sum(pool.map(_warm, names, chunksize=8)) == calendars * events
    return time.perf_counter() - started


def company_yaml(calendars: int) -> str:
    employees = "\n".join(f'  - {{extension: "{10000 + i}", name: "Bench {i}", role: user}}' for i in range(calendars))
    return f"id: bench\nname: Bench\ncountry: GB\ntimezone: Europe/London\nemployees:\n{employees}\n"


@pytest.fixture
def profile(benchmark):
    return CI if benchmark.disabled else FULL


def test_sync_throughput(benchmark, profile, tmp_path):
    calendars, events = profile["calendars"], profile["events"]
    if benchmark.disabled:
        folder, cached = str(tmp_path / "radicale"), False
    else:
        folder = os.environ.get("SWITCHBOARD_BENCH_RADICALE") or os.path.join(
            ROOT, ".benchmarks", f"radicale-{calendars}x{events}-v{GENERATOR_VERSION}")
        cached = os.path.isdir(os.path.join(folder, "data", "collection-root"))
        if not cached:
            shutil.rmtree(folder, ignore_errors=True)
    data = os.path.join(folder, "data")
    build_s = 0.0 if cached else build_storage(data, calendars, events)

    store = Store(str(tmp_path / "store"))
    store.load_config(validate([(load_yaml(company_yaml(calendars), "bench.yaml"), "bench.yaml")]))
    wsgi = os.environ.get("RADICALE_WSGI", "keep-alive")
    with RadicaleServer(folder, None, max_connections=2 * PARALLEL, wsgi=wsgi) as radicale:
        server = ServerConfig(name="radicale", kind="caldav", url=radicale.url)
        config = CalendarConfig(
            servers={"radicale": server}, parallel=PARALLEL, timezone="Europe/London",
            employees=tuple(EmployeeCalendar(str(10000 + i), "radicale", calendar=f"{radicale.url}bench/cal{i:04d}/",
                                             rules=KeywordRules()) for i in range(calendars)))
        changed = list(range(0, calendars, 100)) or [0]
        import caldav
        if cached:          # a reused storage folder: put back what the last run changed (not timed)
            with caldav.DAVClient(url=radicale.url, username="bench", password="bench") as client:
                for cal in changed:
                    for index in (1, 2):
                        client.put(f"{radicale.url}bench/cal{cal:04d}/c{cal}-e{index}.ics", event_ics(cal, index),
                                   {"Content-Type": "text/calendar"})
        pool = ClientPool()
        worker = CalendarWorker(store, config, source_factory=lambda srv, emp, creds: CalDavSource(
            emp.calendar, username="bench", password="bench", pool=pool, timeout=60))
        now = NOW.timestamp()

        full = worker.run_once(now)
        assert full["ok"] == calendars and full["full"] == calendars, full
        written = sum(len(store.referrals(str(10000 + i)).get("calendar:caldav", ())) for i in range(calendars))

        # 1 % of the calendars change: one event edited, one deleted
        with caldav.DAVClient(url=radicale.url, username="bench", password="bench") as client:
            for cal in changed:
                base = f"{radicale.url}bench/cal{cal:04d}/"
                assert client.put(f"{base}c{cal}-e1.ics", event_ics(cal, 1, revision=1),
                                  {"Content-Type": "text/calendar"}).status in (201, 204)
                assert client.delete(f"{base}c{cal}-e2.ics").status in (200, 204)

        results = {}
        requests_before = sum(job.source.requests for job in worker.jobs.values())

        def incremental():
            results["summary"] = worker.run_once(now)

        benchmark.pedantic(incremental, rounds=1, iterations=1)
        inc = results["summary"]
        inc_requests = sum(job.source.requests for job in worker.jobs.values()) - requests_before
        assert inc["ok"] == calendars and inc["incremental"] == calendars, inc
        for cal in changed:
            reasons = [iv.reason for iv in store.referrals(str(10000 + cal))["calendar:caldav"]]
            assert any("(rev 1)" in r for r in reasons)
        pool.close()
    store.close()

    benchmark.extra_info.update(
        calendars=calendars, events_per_calendar=events, parallel=PARALLEL, radicale_wsgi=wsgi,
        incremental_requests=inc_requests,
        full_sync_s=round(full["seconds"], 3), incremental_sync_s=round(inc["seconds"], 3),
        full_calendars_per_s=round(calendars / full["seconds"], 1),
        incremental_calendars_per_s=round(calendars / inc["seconds"], 1),
        intervals_written=written, changed_calendars=len(changed),
        radicale_storage_build_s=round(build_s, 1), radicale_storage_reused=cached,
        full_target_met=full["seconds"] < 60 * calendars / 1000,
        incremental_target_met=inc["seconds"] < 10 * calendars / 1000)
    # The targets are reported, not asserted: runs on this 2-core machine vary by about 20 %.
    print("\n" + json.dumps(benchmark.extra_info, indent=1))
