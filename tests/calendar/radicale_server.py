"""A real Radicale CalDAV server on 127.0.0.1, in a subprocess, for tests and benchmarks.

``RadicaleServer(folder, users={"anna": "pw"})`` starts Radicale 3 on a free
loopback port with its multifilesystem storage in ``folder`` and htpasswd
(plain) logins, or no authentication when ``users`` is None.  fsync is off,
as in Radicale's own test suite (a hidden option, hence this launcher rather
than ``python -m radicale``).  Started and stopped with bounded waits.

Run as ``python -m tests.calendar.radicale_server FOLDER PORT [HTPASSWD]``.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

START_TIMEOUT = 20.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RadicaleServer:
    def __init__(self, folder: str, users: dict[str, str] | None = None, *, max_connections: int = 20) -> None:
        self.folder = folder
        self.users = users
        self.max_connections = max_connections
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self.log_path = os.path.join(folder, "radicale.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> "RadicaleServer":
        os.makedirs(self.folder, exist_ok=True)
        args = []
        if self.users is not None:
            htpasswd = os.path.join(self.folder, "htpasswd")
            with open(htpasswd, "w", encoding="utf-8") as handle:
                handle.writelines(f"{user}:{password}\n" for user, password in self.users.items())
            args.append(htpasswd)
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


def main(argv: list[str]) -> None:
    from radicale import log, server

    folder, port, max_connections = argv[0], int(argv[1]), int(argv[2])
    htpasswd = argv[3] if len(argv) > 3 else None
    log.setup()
    log.set_level("warning", False)
    server.serve(radicale_configuration(folder, port, max_connections, htpasswd))


if __name__ == "__main__":
    main(sys.argv[1:])
