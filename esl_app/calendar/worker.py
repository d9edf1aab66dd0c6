"""The calendar sync worker: every configured employee's calendar, again and again.

:class:`CalendarWorker` owns one source per employee (:mod:`.caldav_source`,
:mod:`.ews_source`, :mod:`.graph_source`), syncs each every ``interval``
seconds (±10 % jitter, so a thousand calendars do not hit a server in the
same second) on a pool of ``parallel`` native threads, and writes what
changed with ``Store.put_referrals(ext, "calendar:<kind>", intervals)`` --
one short LMDB transaction per calendar, only when its intervals differ
from the last ones written.  Routing reads the store and never waits on a
calendar server.

When a sync fails, nothing is written: the last known intervals stay in
force until they end.  The calendar is tried again after a capped, jittered
exponential backoff (``backoff_initial`` doubling up to ``backoff_max``,
each delay drawn from [d/2, d]); a server's own hint (HTTP 429/503
``Retry-After``, EWS ``ErrorServerBusy`` ``BackOffMilliseconds``) is
honoured when it asks for longer, up to :data:`RETRY_AFTER_CAP`.  Every
failure is logged once per state change (the URL or mailbox, never a
credential) and visible in :meth:`CalendarWorker.status` and in the status
file ``switchboard status`` reads (:func:`read_status`).

Threads, not greenlets: the HTTP libraries (niquests, requests) block, and
``switchboard serve`` does not monkey-patch, so the worker runs beside the
gevent hub like the presence listener does.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from .config import CalendarConfig, EmployeeCalendar, Secrets, ServerConfig
from .expand import Window, to_intervals, window
from .source import AuthError, CalendarSource, SourceError

log = logging.getLogger(__name__)

#: Longest wait a server's back-off hint can impose (seconds).
RETRY_AFTER_CAP = 3600.0
#: How often the scheduler looks at the clock when nothing is due (seconds).
TICK = 1.0
STATUS_FILE = "calendar-status.json"


def default_status_path(store_path: str) -> str:
    """Where the worker writes its status for ``switchboard status``: beside the LMDB files."""
    return os.path.join(store_path, STATUS_FILE)


@dataclass
class _Job:
    employee: EmployeeCalendar
    server: ServerConfig
    source: CalendarSource
    zone: dt.tzinfo
    next_due: float = 0.0
    running: bool = False
    failures: int = 0
    syncs: int = 0
    last_attempt: float | None = None
    last_success: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    last_kind: str | None = None
    last_written: list | None = None
    cleaned: bool = False

    def status(self) -> dict:
        state = "pending" if self.last_attempt is None else ("failing" if self.failures else "ok")
        return {
            "extension": self.employee.extension, "source": self.source.name, "server": self.server.name,
            "where": self.source.describe(), "state": state, "syncs": self.syncs,
            "last_attempt": self.last_attempt, "last_success": self.last_success,
            "last_sync": self.last_kind, "last_error": self.last_error, "last_error_at": self.last_error_at,
            "failures": self.failures, "next_attempt": None if self.running else self.next_due,
            "intervals": len(self.last_written) if self.last_written is not None else None,
        }


class SourceFactory:
    """Builds the source of one employee; shares connections and tokens per server."""

    def __init__(self, secrets: Secrets):
        self.secrets = secrets
        self._shared: dict = {}

    def __call__(self, server: ServerConfig, employee: EmployeeCalendar, credentials: str | None) -> CalendarSource:
        fields = self.secrets.get(credentials)
        if server.kind == "caldav":
            from .caldav_source import CalDavSource, ClientPool

            pool = self._shared.setdefault(("caldav",), ClientPool())
            return CalDavSource(employee.calendar, username=fields.get("username"), password=fields.get("password"),
                                token=fields.get("token"), sync=server.sync, timeout=server.timeout,
                                verify=server.verify_tls, pool=pool)
        if server.kind == "ews":
            from .ews_source import EwsSource

            return EwsSource(server.url, employee.mailbox, username=fields.get("username", ""),
                             password=fields.get("password", ""), auth=server.auth, access=server.access,
                             timeout=server.timeout, verify=server.verify_tls)
        if server.kind == "graph":
            from .graph_source import GraphAuth, GraphSource

            key = ("graph", server.name, credentials)
            auth = self._shared.get(key)
            if auth is None:
                auth = self._shared[key] = GraphAuth(server.tenant, server.client_id, fields.get("client_secret", ""),
                                                     authority=server.authority, timeout=server.timeout,
                                                     verify=server.verify_tls)
            return GraphSource(employee.mailbox, auth, api=server.url, timeout=server.timeout,
                               verify=server.verify_tls)
        raise ValueError(f"unknown calendar kind {server.kind!r}")

    def close(self) -> None:
        for shared in self._shared.values():
            close = getattr(shared, "close", None)
            if close:
                close()


class CalendarWorker:
    """Syncs every configured calendar into the store.  :meth:`start` / :meth:`stop` for a
    service, :meth:`run_once` for one pass (``switchboard sync --once``, tests, benchmarks).

    ``clock`` (wall time) and ``jitter`` (a random number in [0, 1)) are injectable.
    ``source_factory(server, employee, credentials_entry) -> CalendarSource`` too.
    """

    def __init__(self, store, config: CalendarConfig, secrets: Secrets | None = None, *,
                 clock: Callable[[], float] = time.time, jitter: Callable[[], float] = random.random,
                 source_factory: Callable | None = None, status_path: str | None = None,
                 status_every: float = 1.0) -> None:
        self.store = store
        self.config = config
        self._clock = clock
        self._jitter = jitter
        self._factory = source_factory or SourceFactory(secrets or Secrets())
        self.status_path = status_path
        self.status_every = status_every
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._status_written = 0.0
        self._dirty = False
        self.started_at: float | None = None
        self.jobs: dict[str, _Job] = {}
        for emp in config.employees:
            server = config.servers[emp.server]
            source = self._factory(server, emp, config.credentials_for(emp))
            self.jobs[emp.extension] = _Job(emp, server, source, self._zone(emp))

    def _zone(self, emp: EmployeeCalendar) -> dt.tzinfo:
        name = emp.timezone or self.config.timezone
        if name is None:
            try:
                name = self.store.timezone_of(emp.extension)
            except Exception:          # no company config loaded yet: UTC until there is
                name = None
        return ZoneInfo(name or "UTC")

    def __repr__(self) -> str:
        return f"<CalendarWorker {len(self.jobs)} calendars running={self.running}>"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> "CalendarWorker":
        if self.running:
            return self
        self._stopping.clear()
        self.started_at = self._clock()
        self._pool = ThreadPoolExecutor(max_workers=self.config.parallel, thread_name_prefix="calendar-sync")
        self._thread = threading.Thread(target=self._run, name="calendar-scheduler", daemon=True)
        self._thread.start()
        log.info("calendar sync: %d calendars, every %d s, %d at a time", len(self.jobs), self.config.interval,
                 self.config.parallel)
        return self

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop scheduling, let syncs in progress finish up to ``timeout``; True if all ended."""
        self._stopping.set()
        with self._lock:
            self._lock.notify_all()
        deadline = time.monotonic() + timeout
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        ended = True
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            with self._lock:
                ended = self._lock.wait_for(lambda: not any(j.running for j in self.jobs.values()),
                                            max(0.0, deadline - time.monotonic()))
        self._write_status(force=True)
        if ended:
            for job in self.jobs.values():
                job.source.close()
            close = getattr(self._factory, "close", None)
            if close:
                close()
        return bool(ended) and not (self._thread is not None and self._thread.is_alive())

    def wait_until(self, predicate: Callable[[], object], timeout: float) -> object:
        """Block until ``predicate()`` is truthy (re-checked after every sync); TimeoutError otherwise."""
        with self._lock:
            result = self._lock.wait_for(predicate, timeout)
        if not result:
            raise TimeoutError(f"calendar worker: condition not met within {timeout:g} s")
        return result

    # -- one pass -------------------------------------------------------------------------------

    def run_once(self, now: float | None = None, *, parallel: int | None = None) -> dict:
        """Sync every calendar once, now (ignoring schedules); returns a summary
        ``{"calendars", "ok", "failed", "full", "incremental", "written", "seconds"}``."""
        started = time.perf_counter()
        now = self._clock() if now is None else now
        jobs = list(self.jobs.values())
        written_before = sum(j.syncs for j in jobs)
        with ThreadPoolExecutor(max_workers=parallel or self.config.parallel,
                                thread_name_prefix="calendar-sync") as pool:
            for job in jobs:
                with self._lock:
                    job.running = True
            list(pool.map(lambda j: self._sync(j, now), jobs))
        self._write_status(force=True)
        summary = {"calendars": len(jobs), "ok": sum(1 for j in jobs if not j.failures),
                   "failed": sum(1 for j in jobs if j.failures),
                   "full": sum(1 for j in jobs if j.last_kind == "full" and not j.failures),
                   "incremental": sum(1 for j in jobs if j.last_kind == "incremental" and not j.failures),
                   "syncs": sum(j.syncs for j in jobs) - written_before,
                   "seconds": time.perf_counter() - started}
        return summary

    # -- scheduling -----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            now = self._clock()
            with self._lock:
                due = [j for j in self.jobs.values() if not j.running and j.next_due <= now]
                for job in due:
                    job.running = True
            for job in sorted(due, key=lambda j: j.next_due):
                try:
                    self._pool.submit(self._sync, job, now)
                except RuntimeError:       # pool shut down: we are stopping
                    with self._lock:
                        job.running = False
            self._write_status()
            with self._lock:
                upcoming = [j.next_due for j in self.jobs.values() if not j.running]
                wait = min([TICK] + [max(0.0, t - self._clock()) for t in upcoming])
                if not self._stopping.is_set():
                    self._lock.wait(max(0.01, wait))

    def _sync(self, job: _Job, now: float) -> None:
        horizon = window(now, past_days=self.config.past_days, horizon_days=self.config.horizon_days)
        try:
            job.last_attempt = now
            result = job.source.sync(horizon, job.zone)
            if result.changed or job.last_written is None:
                self._write(job, to_intervals(result.occurrences, job.employee.rules, job.source.name))
            self._succeeded(job, result.kind)
        except SourceError as exc:
            self._failed(job, str(exc), exc.retry_after, auth=isinstance(exc, AuthError))
        except Exception as exc:          # a bug, or the store: never let one calendar stop the others
            log.exception("calendar %s (ext %s): unexpected error", job.source.describe(), job.employee.extension)
            self._failed(job, f"{type(exc).__name__}: {exc}", None)
        finally:
            with self._lock:
                job.running = False
                self._dirty = True
                self._lock.notify_all()

    def _write(self, job: _Job, intervals: list) -> None:
        ext, name = job.employee.extension, job.source.name
        if not job.cleaned:
            # what the store already holds: from before a restart, or another kind of
            # calendar this employee had before the config changed (cleared once)
            held = self.store.referrals(ext)
            for other in held:
                if other.startswith("calendar:") and other != name:
                    self.store.put_referrals(ext, other, [])
            if job.last_written is None and name in held:
                job.last_written = list(held[name])
            job.cleaned = True
        if intervals != job.last_written:
            self.store.put_referrals(ext, name, intervals)
            job.last_written = intervals

    def _succeeded(self, job: _Job, kind: str) -> None:
        now = self._clock()
        if job.failures:
            log.info("calendar %s (ext %s): sync works again after %d failure(s)", job.source.describe(),
                     job.employee.extension, job.failures)
        interval = self.config.interval
        with self._lock:
            job.failures = 0
            job.syncs += 1
            job.last_success = now
            job.last_kind = kind
            job.next_due = now + interval * (0.9 + 0.2 * self._jitter())

    def _failed(self, job: _Job, message: str, retry_after: float | None, *, auth: bool = False) -> None:
        now = self._clock()
        with self._lock:
            job.failures += 1
            ceiling = min(self.config.backoff_max, self.config.backoff_initial * (2 ** min(job.failures - 1, 30)))
            delay = ceiling / 2 + self._jitter() * ceiling / 2
            if retry_after is not None:
                delay = max(delay, min(float(retry_after), RETRY_AFTER_CAP))
            repeated = job.last_error == message
            job.last_error, job.last_error_at = message, now
            job.next_due = now + delay
        level = logging.ERROR if auth else logging.WARNING
        if repeated:
            level = logging.DEBUG
        log.log(level, "calendar sync failed for ext %s (%s); last known statuses stay in force; "
                "retry in %.0f s: %s", job.employee.extension, job.source.describe(), delay, message)

    # -- status ---------------------------------------------------------------------------------

    def status(self) -> dict:
        """Per calendar: ``state`` (pending / ok / failing), ``last_attempt``, ``last_success``,
        ``last_sync`` (full / incremental), ``last_error`` (kept after recovery) and
        ``last_error_at``, ``failures`` in a row, ``next_attempt``, ``intervals`` written.
        Times are POSIX seconds.  No credentials, ever."""
        with self._lock:
            calendars = {ext: job.status() for ext, job in self.jobs.items()}
        return {
            "running": self.running, "started_at": self.started_at, "written_at": self._clock(),
            "interval": self.config.interval, "calendars": calendars,
            "failing": sorted(ext for ext, s in calendars.items() if s["state"] == "failing"),
        }

    def _write_status(self, force: bool = False) -> None:
        if self.status_path is None:
            return
        now = time.monotonic()
        if not force and (not self._dirty or now - self._status_written < self.status_every):
            return
        self._dirty = False
        self._status_written = now
        try:
            write_status(self.status_path, self.status())
        except OSError as exc:
            log.warning("cannot write the calendar status file %s: %s", self.status_path, exc)


def write_status(path: str, status: dict) -> None:
    """Atomically replace the status file (readers see the old or the new one)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".calendar-status.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(status, handle, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_status(path: str) -> dict | None:
    """The last status a worker wrote, or None if there is none (no worker ran)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("cannot read the calendar status file %s: %s", path, exc)
        return None


def horizon_for(config: CalendarConfig, now: float) -> Window:
    return window(now, past_days=config.past_days, horizon_days=config.horizon_days)
