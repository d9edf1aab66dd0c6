"""The outbound Event Socket server: FreeSWITCH's ``socket`` application connects here.

Per connection (one call), in one greenlet of a bounded pool:

1. ``connect`` — the reply is the channel as a CHANNEL_DATA event;
2. in the same write (mod_event_socket answers commands one by one, in
   order): ``myevents`` (this channel's events; async mode parks the
   channel), ``nixevent`` for the ones the executor never reads
   (:data:`esl_app.executor.UNUSED_EVENTS`), ``linger`` (keep the socket
   after hangup until we say ``exit``, so no event of the call is lost)
   and ``resume`` (if this connection goes away
   while the call is up, the dialplan carries on after ``socket``: in
   mod_event_socket.c's ``socket_function`` the async branch puts the channel
   back to CS_EXECUTE when LFLAG_RESUME is set; freeswitch_conf's next action
   is the transfer to the ``switchboard_fallback`` context);
3. the called and calling numbers and the channel UUID are read and
   validated (:meth:`esl_app.executor.CallInfo.from_channel_data`);
4. while FreeSWITCH answers step 2 (its replies are checked before anything
   runs), the engine decides (``fastpath.engine.decide``, the compiled fast
   path when built) with ``clock()`` — ``time.time`` unless injected — and the
   :class:`~esl_app.executor.Executor` runs the plan;
5. ``exit``; one log line per call (:func:`esl_app.executor.log_call`).

Backpressure: ``StreamServer(listener, handle, spawn=Pool(max_calls))`` stops
accepting while ``max_calls`` calls are in progress; FreeSWITCH's connect then
waits in the listen backlog.  Isolation: everything a handler does is inside
one ``try``; an exception is logged with the call's context and only that
connection is closed (``resume`` sends the call on to the dialplan's
fallback); a malformed frame fails just that call's waiters.

Stopping (:meth:`OutboundServer.stop`), gunicorn-style in stages: stop
accepting, wait for the calls in progress up to a deadline, then detach the
rest.  Detaching sends ``exit``: a bridged call stays bridged — FreeSWITCH
owns it from then on and ``hangup_after_bridge`` ends it — and a call still
in an IVR or ringing resumes the dialplan's static fallback.

Threads and gevent
------------------
Nothing here monkey-patches.  The server uses gevent's own sockets and pool,
so it runs on whichever thread's hub calls :meth:`OutboundServer.start`: the
main thread of a gevent service, or — via :class:`ServerThread` — a dedicated
OS thread with its own hub inside an otherwise threaded process (the tests
do this, next to the thread-based fake FreeSWITCH).  Other threads talk to
that hub only through ``loop.run_callback_threadsafe``.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Callable

import gevent
import gevent.event
from gevent.pool import Pool
from gevent.server import StreamServer

from fastpath import engine

from .executor import (
    LOG,
    CallChannel,
    CallGone,
    CallInfo,
    CallReport,
    CallTimeout,
    UNUSED_EVENTS,
    CommandError,
    Executor,
    ExecutorSettings,
    log_call,
)

__all__ = ["OutboundServer", "ServerThread", "Detach"]

SERVER_LOG = logging.getLogger("switchboard.outbound")

#: Sent with ``connect``, in one write (replies come back in order).
HANDSHAKE = ("myevents", "nixevent " + " ".join(UNUSED_EVENTS), "linger", "resume")


class Detach(BaseException):
    """Raised in a call's greenlet to let go of the call at shutdown (a
    BaseException, like GreenletExit, so no ``except Exception`` swallows it)."""


class OutboundServer:
    """Accepts FreeSWITCH's outbound ESL connections and routes each call.

    ``store`` is an open :class:`fastpath.store.Store` (read-only is enough
    unless callers use the status feature codes).  ``listener``: an already
    bound and listening gevent socket (``switchboard serve`` with ``workers``
    shares one between processes); else it binds ``listen``.
    ``clock`` gives the routing time (POSIX seconds); ``decide`` defaults to
    ``fastpath.engine.decide``.  Create it anywhere; call :meth:`start` and
    :meth:`stop` on the thread whose gevent hub serves it.
    """

    def __init__(self, store, *, listen: tuple[str, int] = ("127.0.0.1", 8084), max_calls: int = 4000,
                 gateway: str = "carrier", clock: Callable[[], float] = time.time,
                 decide: Callable | None = None, settings: ExecutorSettings | None = None,
                 handshake_timeout: float = 5.0,
                 on_wire: Callable[[str, bytes], None] | None = None, listener=None):
        if not 1 <= int(max_calls) <= 100_000:
            raise ValueError(f"max_calls must be from 1 to 100000, not {max_calls!r}")
        self.store = store
        self.listen = (listen[0], int(listen[1]))
        self.listener = listener    # a bound, listening gevent socket to accept on instead of binding `listen`
        self.max_calls = int(max_calls)
        self.clock = clock
        self.decide = decide or engine.decide
        self.engine_name = engine.IMPLEMENTATION if decide is None else getattr(decide, "__module__", "custom")
        if settings is None:
            settings = ExecutorSettings(gateway=gateway)
        self.settings = settings
        self.handshake_timeout = handshake_timeout
        self.on_wire = on_wire
        self._server: StreamServer | None = None
        self._pool: Pool | None = None
        self._stopped: gevent.event.Event | None = None
        self._channels: dict = {}
        self.calls_handled = 0
        self.calls_failed = 0

    @classmethod
    def from_config(cls, config, store, **overrides) -> OutboundServer:
        """From a :class:`esl_app.service_config.ServiceConfig`: its ``outbound``
        address, ``gateway`` and ``max_calls``."""
        options = {"listen": (config.outbound.host, config.outbound.port), "max_calls": config.max_calls,
                   "gateway": config.gateway}
        options.update(overrides)
        return cls(store, **options)

    # lifecycle
    def start(self) -> tuple[str, int]:
        """Bind and start accepting; returns the bound ``(host, port)``."""
        if self._server is not None:
            raise RuntimeError("the outbound server is already started")
        self._pool = Pool(self.max_calls)
        self._stopped = gevent.event.Event()
        self._server = StreamServer(self.listener if self.listener is not None else self.listen, self._handle,
                                    spawn=self._pool)
        self._server.start()
        SERVER_LOG.info("outbound ESL server listening on %s:%d (max_calls=%d, engine=%s)",
                        *self.address, self.max_calls, self.engine_name)
        return self.address

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None or self._server.socket is None:
            return self.listen
        host, port = self._server.socket.getsockname()[:2]
        return host, port

    def serve_forever(self) -> None:
        """Start if needed and block this greenlet until :meth:`stop`."""
        if self._server is None:
            self.start()
        self._stopped.wait()

    @property
    def active_calls(self) -> int:
        return len(self._channels)

    def health(self) -> dict:
        return {"component": "outbound_server", "listening": bool(self._server and self._server.started),
                "address": "%s:%d" % self.address, "active_calls": self.active_calls,
                "max_calls": self.max_calls, "engine": self.engine_name,
                "calls_handled": self.calls_handled, "calls_failed": self.calls_failed}

    def stop(self, timeout: float = 10.0) -> int:
        """Stop accepting, wait up to ``timeout`` s for calls in progress, then
        detach the rest (left to FreeSWITCH).  Returns how many were detached."""
        server, pool = self._server, self._pool
        if server is None:
            return 0
        server.close()
        pool.join(timeout=timeout)
        left = len(pool)
        if left:
            bridged = sum(1 for channel in list(self._channels.values()) if channel.bridged is not None)
            SERVER_LOG.warning("stopping with %d call(s) in progress after %.1f s: detaching "
                               "(%d bridged, left to FreeSWITCH; the rest resume the dialplan)",
                               left, timeout, bridged)
            pool.kill(exception=Detach, block=True, timeout=5.0)
        self._stopped.set()
        SERVER_LOG.info("outbound ESL server stopped (%d calls handled)", self.calls_handled)
        return left

    # one call
    def _handle(self, sock, peer) -> None:
        me = gevent.getcurrent()
        try:  # small request/reply frames: do not let Nagle hold them back
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        channel = CallChannel(sock, timeout=self.settings.command_timeout, on_wire=self.on_wire)
        self._channels[me] = channel
        report = CallReport()
        call = None
        try:
            connect, *handshake = channel.send_commands(("connect",) + HANDSHAKE)
            # Not kept in a local: the parsed CHANNEL_DATA (~130 headers, ~13 KiB)
            # would otherwise live as long as the call.
            call = CallInfo.from_channel_data(channel.channel_data(
                channel.replies(("connect",), [connect], self.handshake_timeout)[0]))
            del connect
            report.uuid = call.uuid or channel.uuid or ""
            report.called, report.caller = call.called or call.raw_called, call.caller
            executor = Executor(channel, self.store, call, decide=self.decide, clock=self.clock,
                                settings=self.settings, report=report)
            plan = executor.first_plan()   # decided while FreeSWITCH answers the handshake
            channel.replies(HANDSHAKE, handshake)
            del handshake   # its replies need not live as long as the call
            executor.run(plan)
        except Detach:
            if channel.bridged is not None:
                report.finish("detached", "bridged at shutdown: left to FreeSWITCH")
            else:
                report.finish("detached", "at shutdown: the dialplan's fallback takes the call")
        except CallGone as gone:
            if channel.bridged is not None:
                report.finish("answered", "bridged")
            elif gone.reason == "hangup":
                report.finish("caller_hung_up", gone.cause or "")
            else:
                report.finish(gone.reason, gone.detail)
        except (CallTimeout, CommandError) as exc:
            report.finish("error", f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # isolate: one broken call never takes the server down
            self.calls_failed += 1
            report.finish("error", f"{type(exc).__name__}: {exc}")
            SERVER_LOG.exception("call handler failed: uuid=%s peer=%s:%s called=%s caller=%s",
                                 report.uuid or "-", peer[0], peer[1],
                                 report.called or "-", report.caller or "-")
        finally:
            try:
                channel.exit()
            except Exception:  # pragma: no cover - exit() swallows its own errors
                channel.close()
            self._channels.pop(me, None)
            self.calls_handled += 1
            try:
                log_call(report, LOG, engine=self.engine_name)
            except Exception:  # pragma: no cover - logging must not kill the greenlet
                pass


class ServerThread:
    """Run an :class:`OutboundServer` on its own gevent hub in a separate OS thread.

    For hosts that are threaded rather than gevent-based (and for the tests,
    which drive the thread-based fake FreeSWITCH from the main thread).  No
    monkey-patching: the hub thread uses gevent's sockets explicitly; the
    other threads reach it only through ``run_callback_threadsafe``.
    """

    def __init__(self, server: OutboundServer, *, name: str = "switchboard-outbound"):
        self.server = server
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._ready = threading.Event()
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._hub = None
        self._stop_event = None
        self._stop_timeout = 10.0
        self.detached = 0

    def start(self, timeout: float = 5.0) -> tuple[str, int]:
        """Start the thread and the server; the bound address."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the outbound server thread did not start in time")
        if self._error is not None:
            raise self._error
        return self.server.address

    def stop(self, timeout: float = 10.0) -> int:
        """Graceful stop (see :meth:`OutboundServer.stop`); waits for the thread."""
        if self._hub is None or self._done.is_set():
            return self.detached
        self._stop_timeout = timeout
        self._hub.loop.run_callback_threadsafe(self._stop_event.set)
        if not self._done.wait(timeout + 10.0):
            raise TimeoutError("the outbound server thread did not stop in time")
        self._thread.join(5.0)
        return self.detached

    def _run(self) -> None:
        hub = gevent.get_hub()
        try:
            self.server.start()
            self._stop_event = gevent.event.Event()
            self._hub = hub
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            hub.destroy(destroy_loop=True)
            return
        self._ready.set()
        try:
            self._stop_event.wait()
            self.detached = self.server.stop(self._stop_timeout)
        finally:
            self._done.set()
            hub.destroy(destroy_loop=True)
