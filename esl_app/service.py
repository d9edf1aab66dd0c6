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

One process: the gevent hub on the main thread runs the outbound server and
the HTTP server; the presence listener, the calendar worker and the CRM
refresher have their own native threads (their LMDB commits and HTTP requests
must not stall the hub).  No monkey-patching.  Both workers are optional and
built before anything starts, so a bad calendar or CRM config stops ``serve``
with every problem before it listens anywhere.  SIGTERM and SIGINT only
spawn the shutdown greenlet (gunicorn #1126: nothing heavy in a signal handler).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import time

import gevent
import gevent.event
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
from .outbound_server import OutboundServer
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
        self.http: WSGIServer | None = None
        self.listener: LiveListener | None = None
        self.calendars: CalendarWorker | None = None
        self.crm: CrmRefresher | None = None
        self._stopped = gevent.event.Event()

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> "Service":
        """Open the store and start every component; on any failure, stop what started."""
        try:
            # Writable: the presence listener writes live state into it.  Opened
            # with create=False, so a missing store is an error (`switchboard load` first).
            self.store = Store(self.store_path, create=False)
            if self.config.calendars:
                self.calendars = build_worker(self.store, self.config.calendars)
            if self.config.crm:
                self.crm = build_crm_refresher(self.store, self.config.crm)
            options = {}
            if self.crm is not None:     # ICM found nobody: have the CRMs asked about the caller, off the call path
                options["settings"] = ExecutorSettings(gateway=self.config.gateway,
                                                       on_first_plan=CrmMissRequests(self.store, self.crm))
            self.outbound = OutboundServer.from_config(self.config, self.store, **options)
            self.outbound.start()
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
        log.info("switchboard serving: outbound %s:%d, directory+health %s:%d, FreeSWITCH ESL %s, engine %s, "
                 "calendar sync %s, CRM refresher %s", *self.outbound.address, *self.http_address, self.config.esl,
                 engine.IMPLEMENTATION, self.config.calendars or "off", self.config.crm or "off")
        return self

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
        parts = {
            "outbound": self.outbound.health() if self.outbound else {"listening": False},
            "presence": self.listener.status() if self.listener else {"connected": False},
            "store": {"path": self.store_path, **(self.store.meta() if self.store else {})},
            "calendars": self._calendar_health(),
            "crm": self.crm.health() if self.crm else {"status": "off" if not self.config.crm else "stopped"},
        }
        # a configured worker that is not running is a fault; a calendar server that fails is not
        # (its last known statuses stay in force, and the failure shows under "calendars")
        workers_up = ((not self.config.calendars or parts["calendars"]["status"] == "ok")
                      and (not self.config.crm or parts["crm"]["status"] == "ok"))
        healthy = (bool(self.outbound and parts["outbound"].get("listening")) and self.store is not None
                   and workers_up)
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
    service = Service(store_path, config, directory_credentials=directory_credentials)
    service.start()
    stopping = []

    def on_signal():
        if not stopping:
            log.info("signal received: shutting down")
            stopping.append(gevent.spawn(service.stop))

    handlers = [gevent.signal_handler(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)]
    try:
        service.wait()
    finally:
        for handler in handlers:
            handler.cancel()
        service.stop()
    return 0


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
