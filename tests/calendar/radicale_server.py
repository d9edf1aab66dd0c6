"""A real Radicale CalDAV server on 127.0.0.1, in a subprocess, for tests and benchmarks.

``RadicaleServer(folder, users={"anna": "pw"})`` starts Radicale 3 on a free
loopback port with its multifilesystem storage in ``folder`` and htpasswd
(plain) logins, or no authentication when ``users`` is None.  fsync is off,
as in Radicale's own test suite (a hidden option, hence this launcher rather
than ``python -m radicale``).  Started and stopped with bounded waits.

Two ways to serve it (``wsgi``):

* ``"builtin"`` (default) -- Radicale's own server: HTTP/1.0, a new
  connection and a new thread for every request, as ``radicale`` runs out of
  the box;
* ``"keep-alive"`` -- Radicale's WSGI application (``radicale.Application``,
  the same code) under gevent's HTTP/1.1 server, as Radicale is deployed
  behind a WSGI server in production: persistent connections, TCP_NODELAY,
  requests handled one at a time in one thread.  About 2.5 ms less per
  request on loopback (no connect, no thread, no socket pair per request).

Run as ``python -m tests.calendar.radicale_server FOLDER PORT MAX_CONNECTIONS
[--htpasswd FILE] [--wsgi builtin|keep-alive]``.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time

START_TIMEOUT = 20.0
WSGI_SERVERS = ("builtin", "keep-alive")
KEEP_ALIVE_IDLE = 5.0          # seconds a kept-alive connection may wait for its next request


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RadicaleServer:
    def __init__(self, folder: str, users: dict[str, str] | None = None, *, max_connections: int = 20,
                 wsgi: str = "builtin") -> None:
        if wsgi not in WSGI_SERVERS:
            raise ValueError(f"wsgi must be one of {', '.join(WSGI_SERVERS)}, not {wsgi!r}")
        self.folder = folder
        self.users = users
        self.max_connections = max_connections
        self.wsgi = wsgi
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self.log_path = os.path.join(folder, "radicale.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> "RadicaleServer":
        os.makedirs(self.folder, exist_ok=True)
        args = ["--wsgi", self.wsgi]
        if self.users is not None:
            htpasswd = os.path.join(self.folder, "htpasswd")
            with open(htpasswd, "w", encoding="utf-8") as handle:
                handle.writelines(f"{user}:{password}\n" for user, password in self.users.items())
            args += ["--htpasswd", htpasswd]
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        for _attempt in range(3):                    # a free port can be taken before Radicale binds it
            self.port = _free_port()
            log = open(self.log_path, "ab")
            try:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "tests.calendar.radicale_server", os.path.join(self.folder, "data"),
                     str(self.port), str(self.max_connections), *args],
                    cwd=root, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
            finally:
                log.close()
            if self._wait_listening():
                return self
            self.stop()
        raise RuntimeError(f"Radicale did not start; see {self.log_path}")

    def _wait_listening(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def __enter__(self) -> "RadicaleServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def radicale_configuration(folder: str, port: int, max_connections: int = 20, htpasswd: str | None = None):
    """Radicale's configuration as the launcher uses it (also for warming its cache in-process)."""
    from radicale import config

    configuration = config.load()
    auth = {"type": "none"} if htpasswd is None else {
        "type": "htpasswd", "htpasswd_filename": htpasswd, "htpasswd_encryption": "plain", "delay": "0"}
    configuration.update({
        "server": {"hosts": f"127.0.0.1:{port}", "max_connections": str(max_connections)},
        "storage": {"filesystem_folder": folder, "use_mtime_and_size_for_item_cache": "True"},
        "auth": auth,
        "logging": {"level": "warning"},
    }, "switchboard tests")
    configuration.update({"storage": {"_filesystem_fsync": "False"}}, "switchboard tests", privileged=True)
    return configuration


def serve_keep_alive(configuration, port: int, max_connections: int) -> None:
    """Radicale's WSGI application under gevent's HTTP/1.1 server, until terminated.

    Without monkey-patching, and one request at a time: Radicale keeps per-request
    state by thread (its log stream), so the body is read first (a greenlet may
    wait for it) and the application then runs without yielding -- as the GIL
    would serialise threads anyway, without their switching.  Radicale's server
    sets no TCP_NODELAY, but closes the connection after every response; on a
    kept-alive one, Nagle's algorithm would hold the body back behind the headers
    until the client's delayed ACK (40 ms a request)."""
    import io

    import radicale
    from gevent.lock import Semaphore
    from gevent.pool import Pool
    from gevent.pywsgi import WSGIHandler, WSGIServer

    class Handler(WSGIHandler):
        def handle(self):
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.socket.settimeout(KEEP_ALIVE_IDLE)     # an idle connection is closed, as servers do
            return super().handle()

    inner = radicale.Application(configuration)
    one_at_a_time = Semaphore()

    def application(environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        environ["wsgi.input"] = io.BytesIO(environ["wsgi.input"].read(length) if length > 0 else b"")
        with one_at_a_time:
            return inner(environ, start_response)

    WSGIServer(("127.0.0.1", port), application, handler_class=Handler, spawn=Pool(max_connections),
               log=None).serve_forever()


def main(argv: list[str]) -> None:
    from radicale import log, server

    parser = argparse.ArgumentParser(prog="python -m tests.calendar.radicale_server")
    parser.add_argument("folder")
    parser.add_argument("port", type=int)
    parser.add_argument("max_connections", type=int)
    parser.add_argument("--htpasswd")
    parser.add_argument("--wsgi", choices=WSGI_SERVERS, default="builtin")
    args = parser.parse_args(argv)
    log.setup()
    log.set_level("warning", False)
    configuration = radicale_configuration(args.folder, args.port, args.max_connections, args.htpasswd)
    if args.wsgi == "keep-alive":
        serve_keep_alive(configuration, args.port, args.max_connections)
    else:
        server.serve(configuration)


if __name__ == "__main__":
    main(sys.argv[1:])
