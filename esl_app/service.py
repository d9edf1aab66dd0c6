"""``switchboard serve``: the composition root (wazo-calld's controller pattern).

Every component is built here and nowhere else, reports its health, and stops
in a fixed order in a ``finally``:

1. the outbound ESL server stops accepting and lets calls in progress finish
   up to a deadline (bridged calls are left to FreeSWITCH, which keeps them up);
2. the directory HTTP server (also serving ``GET /health``);
3. the presence listener;
4. the CRM refresher (``crm:`` in the service config), within one request's budget;
5. the calendar sync worker (``calendars:``), letting syncs in progress finish
   up to a deadline, then writing its status file;
6. the store.

With ``workers: 1`` (the default), one process: the gevent hub on the main
thread runs the outbound server and the HTTP server; the presence listener,
the calendar worker and the CRM refresher have their own native threads
(their LMDB commits and HTTP requests must not stall the hub).  No
monkey-patching.  Both workers are optional and built before anything starts,
so a bad calendar or CRM config stops ``serve`` with every problem before it
listens anywhere.  SIGTERM and SIGINT only spawn the shutdown greenlet
(gunicorn #1126: nothing heavy in a signal handler).

With ``workers: N`` (:class:`OutboundWorkers`), the parent binds the outbound
port once and forks N processes that accept on that one socket (the kernel
hands each connection to one of them; a busy worker accepts less), each
running its own outbound server on its own Store opened after the fork (an
LMDB environment never crosses a fork: the parent checks the store and the
calendar / CRM configs with a Store it closes before forking, and opens its
own afterwards).  The parent keeps the directory and ``/health``, the
presence listener, the calendar worker and the CRM refresher; a worker's
"ask the CRMs about this caller" requests reach the refresher through a pipe.
Each worker publishes its counters (active calls, calls handled and failed,
a heartbeat) in a row of shared memory (:class:`WorkerSlots`) that
``/health`` sums.  A worker that dies or stops publishing is reported, and
makes the service unhealthy (503); it is not restarted -- the others keep
taking calls on the shared socket, and the operator's supervisor restarts
``serve``.  SIGTERM stops the workers first (each drains its calls like the
single-process server), and the parent waits for every one; a worker whose
parent is gone stops by itself.

Call log: every call is one line of the ``switchboard.calls`` logger;
:class:`CallLogHandler` writes those lines in batches of whole lines (at most
every half second, or every 8 KiB) instead of one write per call, and flushes
at shutdown.
"""
from __future__ import annotations

import json
import logging
import mmap
import os
import select
import signal
import socket
import sys
import threading
import time

import gevent
import gevent.event
import gevent.os
import gevent.socket
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer

from fastpath import engine
from fastpath.errors import ConfigError, Problem
from fastpath.store import Store
from fastpath.yaml_source import DOCUMENT, load_yaml

from .calendar.service import build_worker
from .calendar.worker import CalendarWorker
from .crm.cache import DEFAULT_NEGATIVE_TTL, DEFAULT_TTL, CrmCache
from .crm.config import build_company_sources
from .crm.errors import CrmConfigError
from .crm.mapping import ExtensionMapper
from .crm.refresher import CrmRefresher
from .crm.resolver import CrmResolver
from .crm.secrets import SecretStore
from .directory import make_app
from .executor import ExecutorSettings
from .fs_conf import read_store
from .icm_requests import CrmMissRequests
from .live_listener import LiveListener
from .outbound_server import SERVER_LOG, OutboundServer
from .service_config import ServiceConfig

log = logging.getLogger("switchboard.service")


class Service:
    """The running Switchboard: store, outbound server, directory/health HTTP, presence listener."""

    def __init__(self, store_path: str, config: ServiceConfig, *, directory_credentials: str | None = None,
                 drain_seconds: float = 10.0, listener_options: dict | None = None):
        self.store_path = store_path
        self.config = config
        self.directory_credentials = directory_credentials
        self.drain_seconds = drain_seconds
        self.listener_options = listener_options or {}
        self.started_at: float | None = None
        self.store: Store | None = None
        self.outbound: OutboundServer | None = None
        self.workers: OutboundWorkers | None = None      # workers > 1: the outbound servers run in these
        self.http: WSGIServer | None = None
        self.listener: LiveListener | None = None
        self.calendars: CalendarWorker | None = None
        self.crm: CrmRefresher | None = None
        self._stopped = gevent.event.Event()

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> "Service":
        """Open the store and start every component; on any failure, stop what started."""
        try:
            if self.config.workers > 1:
                self._check_before_fork()
                self.workers = OutboundWorkers(self.store_path, self.config, drain_seconds=self.drain_seconds)
                self.workers.start()       # forks: the workers never return from here
            # Writable: the presence listener writes live state into it.  Opened
            # with create=False, so a missing store is an error (`switchboard load` first).
            self.store = Store(self.store_path, create=False)
            if self.config.calendars:
                self.calendars = build_worker(self.store, self.config.calendars)
            if self.config.crm:
                self.crm = build_crm_refresher(self.store, self.config.crm)
            if self.workers is None:
                options = {}
                if self.crm is not None:     # ICM found nobody: have the CRMs asked about the caller, off the call path
                    options["settings"] = ExecutorSettings(gateway=self.config.gateway,
                                                           on_first_plan=CrmMissRequests(self.store, self.crm))
                self.outbound = OutboundServer.from_config(self.config, self.store, **options)
                self.outbound.start()
            elif self.crm is not None:
                self.workers.forward_crm_requests(self.crm)
            directory = make_app(self.store, credentials=self.directory_credentials)
            self.http = WSGIServer((self.config.directory.host, self.config.directory.port),
                                   self._http_app(directory), spawn=Pool(256), log=None, error_log=log)
            self.http.start()
            self.listener = LiveListener.from_config(self.store, self.config, **self.listener_options)
            self.listener.start()
            if self.crm is not None:
                self.crm.start()
            if self.calendars is not None:
                self.calendars.start()
        except BaseException:
            self.stop()
            raise
        self.started_at = time.time()
        outbound = self.outbound or self.workers
        log.info("switchboard serving: outbound %s:%d (%d worker process(es)), directory+health %s:%d, "
                 "FreeSWITCH ESL %s, engine %s, calendar sync %s, CRM refresher %s", *outbound.address,
                 self.config.workers, *self.http_address, self.config.esl, engine.IMPLEMENTATION,
                 self.config.calendars or "off", self.config.crm or "off")
        return self

    def _check_before_fork(self) -> None:
        """The store opens, the calendar and CRM configs build: checked with a Store
        that is closed again before the workers fork, so a problem stops ``serve``
        before anything listens, and no LMDB environment crosses the fork."""
        with Store(self.store_path, create=False) as store:
            if self.config.calendars:
                build_worker(store, self.config.calendars)
            if self.config.crm:
                crm = build_crm_refresher(store, self.config.crm)
                for sources in crm.resolver.sources.values():
                    for source in sources:
                        source.close()

    @property
    def http_address(self) -> tuple[str, int]:
        return self.http.address[0], self.http.server_port

    def wait(self) -> None:
        """Block this greenlet until :meth:`stop` has run."""
        self._stopped.wait()

    def stop(self) -> None:
        """Stop in order; safe to call twice and from a half-started service.  Every step
        runs even if an earlier one failed; the first failure is raised at the end."""
        failure = None
        for step in (self._stop_outbound, self._stop_http, self._stop_listener, self._stop_crm,
                     self._stop_calendars, self._close_store):
            try:
                step()
            except BaseException as exc:        # noqa: BLE001 -- the later steps must still run
                log.exception("shutdown step %s failed", step.__name__)
                failure = failure or exc
        self._stopped.set()
        if failure is not None:
            raise failure

    def _stop_outbound(self) -> None:
        workers, self.workers = self.workers, None
        if workers is not None:
            workers.stop()
        outbound, self.outbound = self.outbound, None
        if outbound is not None:
            detached = outbound.stop(timeout=self.drain_seconds)
            if detached:
                log.warning("%d call(s) left to FreeSWITCH at shutdown", detached)

    def _stop_http(self) -> None:
        http, self.http = self.http, None
        if http is not None:
            http.stop(timeout=2)

    def _stop_listener(self) -> None:
        listener, self.listener = self.listener, None
        if listener is not None and not listener.stop(timeout=5):
            log.warning("presence listener did not stop within 5 s")

    def _stop_crm(self) -> None:
        crm, self.crm = self.crm, None
        if crm is not None:
            if not crm.stop(timeout=5):
                log.warning("CRM refresher did not stop within 5 s")
            for sources in crm.resolver.sources.values():
                for source in sources:
                    source.close()
            log.info("CRM refresher stopped")

    def _stop_calendars(self) -> None:
        calendars, self.calendars = self.calendars, None
        if calendars is not None:
            if calendars.stop(timeout=10):
                log.info("calendar sync stopped")
            else:
                log.warning("calendar sync did not stop within 10 s; its syncs in progress were abandoned")

    def _close_store(self) -> None:
        store, self.store = self.store, None
        if store is not None:
            store.close()

    # -- health ----------------------------------------------------------------

    def health(self) -> dict:
        if self.workers is not None:
            outbound = self.workers.health()
        else:
            outbound = self.outbound.health() if self.outbound else {"listening": False}
        parts = {
            "outbound": outbound,
            "presence": self.listener.status() if self.listener else {"connected": False},
            "store": {"path": self.store_path, **(self.store.meta() if self.store else {})},
            "calendars": self._calendar_health(),
            "crm": self.crm.health() if self.crm else {"status": "off" if not self.config.crm else "stopped"},
        }
        # a configured worker that is not running is a fault; a calendar server that fails is not
        # (its last known statuses stay in force, and the failure shows under "calendars")
        workers_up = ((not self.config.calendars or parts["calendars"]["status"] == "ok")
                      and (not self.config.crm or parts["crm"]["status"] == "ok"))
        healthy = bool(parts["outbound"].get("listening")) and self.store is not None and workers_up
        return {"healthy": healthy, "switch_connected": bool(parts["presence"].get("connected")),
                "engine": engine.IMPLEMENTATION, "started_at": self.started_at, **parts}

    def _calendar_health(self) -> dict:
        if self.calendars is None:
            return {"status": "off" if not self.config.calendars else "stopped"}
        report = self.calendars.status()
        states = [c["state"] for c in report["calendars"].values()]
        return {"status": "ok" if report["running"] else "stopped", "config": self.config.calendars,
                "interval": report["interval"], "calendars": len(states), "synced": states.count("ok"),
                "pending": states.count("pending"), "failing": report["failing"]}

    def _http_app(self, directory):
        """``GET /health`` (loopback peers only, like the directory), everything else the directory."""
        def app(environ, start_response):
            if environ.get("PATH_INFO") == "/health" and environ.get("REQUEST_METHOD") == "GET":
                if environ.get("REMOTE_ADDR") not in ("127.0.0.1", "::1"):
                    start_response("403 Forbidden", [("Content-Type", "text/plain")])
                    return [b"health is served to loopback callers only\n"]
                report = self.health()
                body = json.dumps(report, default=str, indent=2).encode()
                status = "200 OK" if report["healthy"] else "503 Service Unavailable"
                start_response(status, [("Content-Type", "application/json"),
                                        ("Content-Length", str(len(body)))])
                return [body]
            return directory(environ, start_response)
        return app


def run(store_path: str, config: ServiceConfig, *, directory_credentials: str | None = None) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    call_log = CallLogHandler.install()
    try:
        service = Service(store_path, config, directory_credentials=directory_credentials)
        service.start()
        stopping = []

        def on_signal():
            if not stopping:
                log.info("signal received: shutting down")
                stopping.append(gevent.spawn(service.stop))

        handlers = [gevent.signal_handler(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)]
        flusher = gevent.spawn(call_log.flush_every, CALL_LOG_FLUSH_SECONDS)
        try:
            service.wait()
        finally:
            for handler in handlers:
                handler.cancel()
            service.stop()
            flusher.kill()
    finally:
        call_log.uninstall()
    return 0


# --- the call log -------------------------------------------------------------------

CALL_LOG_FLUSH_SECONDS = 0.5


class CallLogHandler(logging.Handler):
    """The ``switchboard.calls`` lines, written in batches instead of one write per call.

    Formats like the handler it stands in for (the root logger's stream
    handler) and writes to the same stream, but only whole lines: at
    ``max_bytes`` buffered, on :meth:`flush` (every ``CALL_LOG_FLUSH_SECONDS``
    while serving), and on :meth:`close` / :meth:`uninstall` -- so nothing is
    lost at shutdown, and worker processes sharing the stream never split each
    other's lines (each batch is one ``write()`` of at most about ``max_bytes``).
    """

    def __init__(self, stream, formatter: logging.Formatter | None = None, max_bytes: int = 8192):
        super().__init__()
        self.stream = stream
        self.max_bytes = max_bytes
        self.setFormatter(formatter)
        self._lines: list[str] = []
        self._size = 0
        self._logger: logging.Logger | None = None
        self._propagate = True

    @classmethod
    def install(cls, logger_name: str = "switchboard.calls") -> CallLogHandler:
        """Take over ``logger_name`` from the root's stream handler (stderr when it has none)."""
        root = next((h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)), None)
        handler = cls(root.stream if root is not None else sys.stderr,
                      root.formatter if root is not None else logging.Formatter(logging.BASIC_FORMAT))
        logger = logging.getLogger(logger_name)
        handler._logger, handler._propagate = logger, logger.propagate
        logger.addHandler(handler)
        logger.propagate = False
        return handler

    def uninstall(self) -> None:
        logger, self._logger = self._logger, None
        if logger is not None:
            logger.removeHandler(self)
            logger.propagate = self._propagate
        self.close()

    def forget(self) -> None:
        """Drop what is buffered without writing it (a forked child: the parent writes it)."""
        with self.lock:
            self._lines.clear()
            self._size = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:   # noqa: BLE001 -- logging's own contract
            self.handleError(record)
            return
        self._lines.append(line)
        self._size += len(line)
        if self._size >= self.max_bytes:
            self.flush()

    def flush(self) -> None:
        with self.lock:
            if not self._lines:
                return
            text = "".join(self._lines)
            self._lines.clear()
            self._size = 0
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):     # a closed stream: nothing better to do at this point
                pass

    def flush_every(self, seconds: float) -> None:
        """Flush every ``seconds`` until killed (a greenlet while serving)."""
        while True:
            gevent.sleep(seconds)
            self.flush()

    def close(self) -> None:
        self.flush()
        super().close()


# --- outbound worker processes ---------------------------------------------------------

#: A worker that has not published for this long is reported as not responding.
WORKER_STALE_SECONDS = 5.0
WORKER_PUBLISH_SECONDS = 0.25
OUTBOUND_BACKLOG = 1024


class WorkerSlots:
    """One row of 64-bit counters per worker in anonymous shared memory.

    Made before the fork (``mmap`` of no file is MAP_SHARED), so each worker
    writes its own row and the parent reads every row.  A row is written a
    field at a time; a health check may see one mid-update, which for counters
    sampled twice a second is harmless.
    """

    FIELDS = ("pid", "started", "active_calls", "calls_handled", "calls_failed", "heartbeat_ms")

    def __init__(self, count: int):
        self.count = count
        self._memory = mmap.mmap(-1, 8 * len(self.FIELDS) * count)
        self._cells = memoryview(self._memory).cast("q")

    def write(self, index: int, **values) -> None:
        base = index * len(self.FIELDS)
        for name, value in values.items():
            self._cells[base + self.FIELDS.index(name)] = int(value)

    def read(self, index: int) -> dict[str, int]:
        base = index * len(self.FIELDS)
        return dict(zip(self.FIELDS, self._cells[base:base + len(self.FIELDS)].tolist()))

    def close(self) -> None:
        self._cells.release()
        self._memory.close()


class _CrmRequestPipe:
    """A worker's stand-in for the CRM refresher (which runs in the parent):
    ``request(company, phone)`` writes one line to a pipe the parent reads.
    Writes this small are atomic, so workers share the pipe; a full pipe drops
    the request (False), as a full refresher queue does."""

    def __init__(self, fd: int):
        self.fd = fd

    def request(self, company: str, phone: str) -> bool:
        try:
            os.write(self.fd, f"{company}\t{phone}\n".encode())
        except OSError:
            return False
        return True


class OutboundWorkers:
    """``workers`` forked outbound-server processes sharing one listening socket.

    :meth:`start` binds the outbound address, forks the workers (each opens its
    own Store and runs :class:`OutboundServer` on the shared socket, publishing
    its counters in :class:`WorkerSlots`), closes the parent's copy of the
    socket, and waits until every worker accepts calls.  :meth:`stop` sends
    each SIGTERM (a worker drains its calls for up to ``drain_seconds``, then
    detaches the rest) and reaps them all, killing any that overstay.
    """

    def __init__(self, store_path: str, config: ServiceConfig, *, drain_seconds: float = 10.0):
        self.store_path = store_path
        self.config = config
        self.count = config.workers
        self.drain_seconds = drain_seconds
        self.address = (config.outbound.host, config.outbound.port)
        self.slots: WorkerSlots | None = None
        self.pids: list[int] = []
        self.exit_codes: dict[int, int] = {}        # by worker index, once reaped
        self._crm_read: int | None = None
        self._crm_write: int | None = None
        self._crm_thread: threading.Thread | None = None
        self._crm_stop = threading.Event()

    def start(self, timeout: float = 30.0) -> tuple[str, int]:
        host, port = self.address
        family, kind, proto, _, where = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        listener = socket.socket(family, kind, proto)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(where)
            listener.listen(OUTBOUND_BACKLOG)
            self.address = listener.getsockname()[:2]
            self.slots = WorkerSlots(self.count)
            if self.config.crm:
                self._crm_read, self._crm_write = os.pipe()
                os.set_blocking(self._crm_write, False)
            for index in range(self.count):
                pid = gevent.os.fork_gevent()    # fork + the child's hub reinit; we reap the workers ourselves
                if pid == 0:
                    self._become_worker(index, listener)      # never returns
                self.pids.append(pid)
        finally:
            listener.close()                # the workers hold it now
            if self._crm_write is not None:
                os.close(self._crm_write)
                self._crm_write = None
        deadline = time.monotonic() + timeout
        while not all(self.slots.read(i)["started"] for i in range(self.count)):
            self.reap()
            if self.exit_codes:
                raise RuntimeError(f"outbound worker(s) {sorted(self.exit_codes)} exited while starting "
                                   f"(exit codes {sorted(self.exit_codes.values())}): see the log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"outbound workers did not start within {timeout:g} s")
            gevent.sleep(0.02)          # other processes: nothing to wait on but time
        SERVER_LOG.info("%d outbound workers accepting on %s:%d (pids %s)", self.count, *self.address,
                        " ".join(map(str, self.pids)))
        return self.address

    def _become_worker(self, index: int, listener: socket.socket) -> None:
        """The forked child: serve calls until SIGTERM (or the parent is gone), then exit."""
        code = 1
        try:
            if self._crm_read is not None:
                os.close(self._crm_read)
            for handler in logging.getLogger("switchboard.calls").handlers:
                if isinstance(handler, CallLogHandler):
                    handler.forget()
            code = _worker_main(index, listener.detach(), listener.family, self.store_path, self.config,
                                self.slots, _CrmRequestPipe(self._crm_write) if self._crm_write else None,
                                self.drain_seconds)
        except BaseException:            # noqa: BLE001 -- whatever happens, the child must not return
            try:
                log.exception("outbound worker %d failed", index)
            except BaseException:        # noqa: BLE001
                pass
        finally:
            for handler in logging.getLogger("switchboard.calls").handlers + logging.getLogger().handlers:
                try:
                    handler.flush()
                except BaseException:    # noqa: BLE001
                    pass
            os._exit(code)

    def forward_crm_requests(self, refresher: CrmRefresher) -> None:
        """Hand the workers' CRM requests to ``refresher``, in a thread of the parent."""
        if self._crm_read is None:
            return
        self._crm_thread = threading.Thread(target=self._forward, args=(refresher,),
                                            name="switchboard-crm-requests", daemon=True)
        self._crm_thread.start()

    def _forward(self, refresher: CrmRefresher) -> None:
        pending = b""
        while not self._crm_stop.is_set():
            ready, _, _ = select.select([self._crm_read], [], [], 0.5)
            if not ready:
                continue
            data = os.read(self._crm_read, 65536)
            if not data:                 # every worker is gone
                return
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                company, _, phone = line.decode("utf-8", "replace").partition("\t")
                if company and phone and not refresher.request(company, phone):
                    log.warning("CRM refresher queue full: caller +%s of %s not looked up", phone, company)

    def reap(self) -> None:
        """Collect the exit status of workers that ended."""
        for index, pid in enumerate(self.pids):
            if index in self.exit_codes:
                continue
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                self.exit_codes[index] = os.waitstatus_to_exitcode(status)
                if self.slots is not None:
                    self.slots.write(index, active_calls=0)
                log.log(logging.INFO if self._crm_stop.is_set() else logging.ERROR,
                        "outbound worker %d (pid %d) exited with code %d", index, pid, self.exit_codes[index])

    def stop(self) -> None:
        """SIGTERM every worker, wait for them (draining calls), kill those that overstay."""
        self._crm_stop.set()
        self.reap()
        for index, pid in enumerate(self.pids):
            if index not in self.exit_codes:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + self.drain_seconds + 10.0
        while len(self.exit_codes) < len(self.pids) and time.monotonic() < deadline:
            gevent.sleep(0.05)          # other processes: nothing to wait on but time
            self.reap()
        for index, pid in enumerate(self.pids):
            if index not in self.exit_codes:
                log.warning("outbound worker %d (pid %d) did not stop: killed", index, pid)
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                self.exit_codes[index] = -signal.SIGKILL
        if self._crm_thread is not None:
            self._crm_thread.join(2.0)
        if self._crm_read is not None:
            os.close(self._crm_read)
            self._crm_read = None
        log.info("outbound workers stopped (exit codes %s)", [self.exit_codes[i] for i in sorted(self.exit_codes)])

    def health(self) -> dict:
        """The workers' counters summed, and each worker's liveness."""
        self.reap()
        now_ms = time.monotonic() * 1000
        workers = []
        for index, pid in enumerate(self.pids):
            row = self.slots.read(index)
            alive = index not in self.exit_codes
            age = (now_ms - row["heartbeat_ms"]) / 1000 if row["heartbeat_ms"] else None
            workers.append({"index": index, "pid": pid, "alive": alive,
                            "responding": alive and age is not None and age < WORKER_STALE_SECONDS,
                            "exit_code": self.exit_codes.get(index),
                            "heartbeat_age_s": round(age, 2) if age is not None else None,
                            **{k: row[k] for k in ("active_calls", "calls_handled", "calls_failed")}})
        return {"component": "outbound_server", "listening": bool(workers) and all(w["responding"] for w in workers),
                "address": "%s:%d" % self.address[:2], "workers": workers,
                "active_calls": sum(w["active_calls"] for w in workers if w["alive"]),
                "max_calls": self.config.max_calls * self.count, "engine": engine.IMPLEMENTATION,
                "calls_handled": sum(w["calls_handled"] for w in workers),
                "calls_failed": sum(w["calls_failed"] for w in workers)}


def _worker_main(index: int, fd: int, family: int, store_path: str, config: ServiceConfig, slots: WorkerSlots,
                 crm_requests: _CrmRequestPipe | None, drain_seconds: float) -> int:
    """One outbound worker, in its own process: its own Store, the shared socket ``fd``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # Ctrl-C reaches the whole group: the parent stops us
    stop = gevent.event.Event()
    on_term = gevent.signal_handler(signal.SIGTERM, stop.set)
    parent = os.getppid()
    store = Store(store_path, create=False)
    try:
        options = {}
        if crm_requests is not None:
            options["settings"] = ExecutorSettings(gateway=config.gateway,
                                                   on_first_plan=CrmMissRequests(store, crm_requests))
        server = OutboundServer.from_config(config, store, listener=gevent.socket.socket(family, fileno=fd),
                                            **options)
        server.start()

        def publish(**extra) -> None:
            slots.write(index, active_calls=server.active_calls, calls_handled=server.calls_handled,
                        calls_failed=server.calls_failed, heartbeat_ms=time.monotonic() * 1000, **extra)

        publish(pid=os.getpid(), started=1)
        calls = next((h for h in logging.getLogger("switchboard.calls").handlers
                      if isinstance(h, CallLogHandler)), None)
        ticks = 0
        while not stop.wait(WORKER_PUBLISH_SECONDS) and os.getppid() == parent:
            publish()
            ticks += 1
            if calls is not None and ticks % 2 == 0:
                calls.flush()
        detached = server.stop(timeout=drain_seconds)
        if detached:
            log.warning("outbound worker %d: %d call(s) left to FreeSWITCH at shutdown", index, detached)
        publish()
        return 0
    finally:
        on_term.cancel()
        store.close()


# --- CRM config file -------------------------------------------------------------

_CRM_KEYS = ("crm", "interval", "ttl", "negative_ttl", "secrets_file")


def build_crm_refresher(store, path: str, *, environ=None) -> CrmRefresher:
    """The CRM refresher for the sources in ``path``: YAML with ``crm: {COMPANY: [source, ...]}``
    (sources as in :mod:`esl_app.crm.config`; every company must be in the store) and optional
    ``interval`` (seconds between refresh passes, default 30), ``ttl`` / ``negative_ttl``
    (cache lifetimes in seconds, default a day / an hour) and ``secrets_file`` (else
    ``$SWITCHBOARD_SECRETS_FILE``).  Raises ConfigError with every problem."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError([Problem(DOCUMENT, f"cannot read the CRM config: {exc.strerror}", None, path)]) from None
    data = load_yaml(text, path)
    if not isinstance(data, dict) or not isinstance(data.get("crm"), dict):
        raise ConfigError([Problem(DOCUMENT, "expected a mapping with 'crm: {COMPANY: [sources]}'",
                                   getattr(data, "line", 1), path)])
    lines = getattr(data, "key_lines", {})
    problems = [Problem(str(key), f"unknown key; expected one of {', '.join(_CRM_KEYS)}", lines.get(key), path)
                for key in data if key not in _CRM_KEYS]
    settings = {}
    for key, low, high, default in (("interval", 1, 86_400, 30), ("ttl", 60, 30 * 86_400, DEFAULT_TTL),
                                    ("negative_ttl", 60, 30 * 86_400, DEFAULT_NEGATIVE_TTL)):
        value = data.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            problems.append(Problem(key, f"expected a whole number of seconds from {low} to {high}",
                                    lines.get(key), path))
        settings[key] = value
    secrets_file = data.get("secrets_file")
    if secrets_file is not None and (not isinstance(secrets_file, str) or not secrets_file):
        problems.append(Problem("secrets_file", "expected the path of the secrets file", lines.get("secrets_file"),
                                path))
        secrets_file = None
    elif secrets_file:
        secrets_file = os.path.join(os.path.dirname(os.path.abspath(path)), os.path.expanduser(secrets_file))
    secrets = SecretStore(secrets_file, environ)
    companies = read_store(store).companies
    crm_lines = getattr(data["crm"], "key_lines", {})
    sources, mappers = {}, {}
    for company, specs in data["crm"].items():
        line = crm_lines.get(company)
        conf = companies.get(str(company))
        if conf is None:
            problems.append(Problem(f"crm.{company}", f"no company {company!r} in the store; companies: "
                                    f"{', '.join(sorted(companies)) or '(none loaded)'}", line, path))
            continue
        try:
            found, mapping = build_company_sources(specs, secrets, company=conf.company.id,
                                                   country=conf.company.country,
                                                   city_code=conf.company.city_code or None)
        except CrmConfigError as exc:
            for message in exc.problems:        # "crm.acme[0]: 'token' is required, as {secret: NAME}"
                where, _, what = message.partition(": ")
                problems.append(Problem(where, what, line, path) if what else Problem(f"crm.{company}", message,
                                                                                      line, path))
            continue
        sources[conf.company.id] = found
        mappers[conf.company.id] = ExtensionMapper(store, conf.company.id, mapping)
    if problems:
        for found in sources.values():
            for source in found:
                source.close()
        raise ConfigError(problems)
    cache = CrmCache(store, ttl=settings["ttl"], negative_ttl=settings["negative_ttl"])
    return CrmRefresher(CrmResolver(sources, mappers, cache), cache, interval=settings["interval"])
