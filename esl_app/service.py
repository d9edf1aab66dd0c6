"""``switchboard serve``: the composition root (wazo-calld's controller pattern).

Every component is built here and nowhere else, reports its health, and stops
in a fixed order in a ``finally``:

1. the outbound ESL server stops accepting and lets calls in progress finish
   up to a deadline (bridged calls are left to FreeSWITCH, which keeps them up);
2. the directory HTTP server (also serving ``GET /health``);
3. the presence listener;
4. the store.

One process: the gevent hub on the main thread runs the outbound server and
the HTTP server; the presence listener has its own native thread (its LMDB
commits must not stall the hub).  No monkey-patching.  SIGTERM and SIGINT only
spawn the shutdown greenlet (gunicorn #1126: nothing heavy in a signal handler).
"""
from __future__ import annotations

import json
import logging
import signal
import time

import gevent
import gevent.event
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer

from fastpath import engine
from fastpath.store import Store

from .directory import make_app
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
        self._stopped = gevent.event.Event()

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> "Service":
        """Open the store and start every component; on any failure, stop what started."""
        try:
            # Writable: the presence listener writes live state into it.  Opened
            # with create=False, so a missing store is an error (`switchboard load` first).
            self.store = Store(self.store_path, create=False)
            self.outbound = OutboundServer.from_config(self.config, self.store)
            self.outbound.start()
            directory = make_app(self.store, credentials=self.directory_credentials)
            self.http = WSGIServer((self.config.directory.host, self.config.directory.port),
                                   self._http_app(directory), spawn=Pool(256), log=None, error_log=log)
            self.http.start()
            self.listener = LiveListener.from_config(self.store, self.config, **self.listener_options)
            self.listener.start()
        except BaseException:
            self.stop()
            raise
        self.started_at = time.time()
        log.info("switchboard serving: outbound %s:%d, directory+health %s:%d, FreeSWITCH ESL %s, engine %s",
                 *self.outbound.address, *self.http_address, self.config.esl, engine.IMPLEMENTATION)
        return self

    @property
    def http_address(self) -> tuple[str, int]:
        return self.http.address[0], self.http.server_port

    def wait(self) -> None:
        """Block this greenlet until :meth:`stop` has run."""
        self._stopped.wait()

    def stop(self) -> None:
        """Stop in order; safe to call twice and from a half-started service."""
        try:
            if self.outbound is not None:
                detached = self.outbound.stop(timeout=self.drain_seconds)
                if detached:
                    log.warning("%d call(s) left to FreeSWITCH at shutdown", detached)
        finally:
            try:
                if self.http is not None:
                    self.http.stop(timeout=2)
            finally:
                try:
                    if self.listener is not None and not self.listener.stop(timeout=5):
                        log.warning("presence listener did not stop within 5 s")
                finally:
                    if self.store is not None:
                        self.store.close()
                    self.outbound = self.http = self.listener = self.store = None
                    self._stopped.set()

    # -- health ----------------------------------------------------------------

    def health(self) -> dict:
        parts = {
            "outbound": self.outbound.health() if self.outbound else {"listening": False},
            "presence": self.listener.status() if self.listener else {"connected": False},
            "store": {"path": self.store_path, **(self.store.meta() if self.store else {})},
        }
        healthy = bool(self.outbound and parts["outbound"].get("listening")) and self.store is not None
        return {"healthy": healthy, "switch_connected": bool(parts["presence"].get("connected")),
                "engine": engine.IMPLEMENTATION, "started_at": self.started_at, **parts}

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
