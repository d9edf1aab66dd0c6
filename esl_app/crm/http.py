"""A small JSON-over-HTTP client with a hard time budget, for the CRM adapters.

Standard library only (``http.client``).  Every request runs against a
:class:`Deadline`: connecting, sending, waiting for the headers and each read
of the body get the time that is left, and the body is read in chunks so a
server that trickles bytes cannot stretch the budget either.  When time runs
out the connection is dropped and :class:`CrmTimeout` raised.

Connections are kept alive per host (a few idle ones) because a TLS handshake
to a CRM costs a good part of a 300 ms budget.  Errors name the source and a
*label* chosen by the adapter (``GET /api/v4/contacts``), never the URL with
its query or the headers, which may carry credentials (Bitrix24 webhooks keep
their secret in the path).
"""
from __future__ import annotations

import email.utils
import http.client
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .errors import CrmAuthError, CrmBadResponse, CrmRateLimited, CrmTimeout, CrmUnavailable

MAX_BODY = 4 << 20              # a CRM answer about one phone number is small
CHUNK = 64 << 10
USER_AGENT = "switchboard-icm/1"


class Deadline:
    """A point in time (monotonic clock) a piece of work must finish by."""

    __slots__ = ("budget", "end")

    def __init__(self, seconds: float):
        self.budget = float(seconds)
        self.end = time.monotonic() + self.budget

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def sub(self, seconds: float) -> "Deadline":
        """A deadline at most ``seconds`` from now and no later than this one."""
        return Deadline(max(0.0, min(seconds, self.remaining())))

    def left_or_raise(self, source: str, label: str) -> float:
        left = self.remaining()
        if left <= 0:
            raise CrmTimeout(source, f"{label}: no answer within {self.budget * 1000:.0f} ms")
        return left


@dataclass
class Response:
    status: int
    headers: dict[str, str]               # lower-case names
    body: bytes
    label: str = ""
    source: str = ""

    def json(self):
        """The body as JSON, or :class:`CrmBadResponse`."""
        try:
            return json.loads(self.body)
        except ValueError:
            raise CrmBadResponse(self.source, f"{self.label}: HTTP {self.status} with a body that is not JSON "
                                 f"({len(self.body)} bytes)", status=self.status) from None


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass
class _Pool:
    idle: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class HttpClient:
    """Requests to one CRM (one base URL), each within a deadline."""

    def __init__(self, source: str, base_url: str, *, max_idle: int = 2, ssl_context: ssl.SSLContext | None = None):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{source}: base URL must be http(s)://host[:port]/...")
        self.source = source
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        self.max_idle = max_idle
        self.ssl_context = ssl_context
        self._pool = _Pool()

    # -- connections --------------------------------------------------------------

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        if self.scheme == "https":
            ctx = self.ssl_context or ssl.create_default_context()
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=ctx)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def _take(self, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        """A connection, and whether it was kept alive from an earlier request."""
        with self._pool.lock:
            if self._pool.idle:
                conn = self._pool.idle.pop()
                conn.timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
                return conn, True
        return self._connect(timeout), False

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._pool.lock:
            if len(self._pool.idle) < self.max_idle:
                self._pool.idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._pool.lock:
            idle, self._pool.idle = self._pool.idle, []
        for conn in idle:
            conn.close()

    # -- requests -----------------------------------------------------------------

    def request(self, method: str, path: str, *, deadline: Deadline, label: str,
                headers: dict[str, str] | None = None, body: bytes | None = None) -> Response:
        """Send one request; ``path`` is appended to the base URL's path (query included).

        Raises :class:`CrmTimeout` when the deadline passes, :class:`CrmUnavailable`
        when the server cannot be reached or drops the connection.
        """
        all_headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        all_headers.update(headers or {})
        conn, kept = self._take(deadline.left_or_raise(self.source, label))
        try:
            return self._exchange(conn, method, path, all_headers, body, deadline, label)
        except _Stale:
            if not kept:
                raise CrmUnavailable(self.source, f"{label}: the server closed the connection") from None
        # A kept-alive connection the server had closed meanwhile: once more on a new one.
        conn = self._connect(deadline.left_or_raise(self.source, label))
        try:
            return self._exchange(conn, method, path, all_headers, body, deadline, label)
        except _Stale:
            raise CrmUnavailable(self.source, f"{label}: the server closed the connection") from None

    def _exchange(self, conn, method, path, headers, body, deadline: Deadline, label: str) -> Response:
        reusable = False
        answered = False
        try:
            conn.request(method, self.base_path + path, body=body, headers=headers)
            sock = conn.sock            # kept: getresponse() detaches it when the server closes
            sock.settimeout(deadline.left_or_raise(self.source, label))
            resp = conn.getresponse()
            answered = True
            chunks = []
            size = 0
            while resp.length != 0:     # None: until the server closes (or the last chunk)
                sock.settimeout(deadline.left_or_raise(self.source, label))
                chunk = resp.read1(CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_BODY:
                    raise CrmBadResponse(self.source, f"{label}: answer larger than {MAX_BODY >> 20} MB")
                chunks.append(chunk)
            resp.read()                 # marks the response done, so the connection can serve the next one
            deadline.left_or_raise(self.source, label)
            reusable = not resp.will_close
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, b"".join(chunks),
                            label, self.source)
        except (socket.timeout, TimeoutError):
            raise CrmTimeout(self.source, f"{label}: no answer within {deadline.budget * 1000:.0f} ms") from None
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if answered:
                raise CrmUnavailable(self.source, f"{label}: the server closed the connection mid-answer") from None
            raise _Stale() from None
        except (http.client.HTTPException, OSError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise CrmUnavailable(self.source, f"{label}: cannot reach the server ({why})") from None
        finally:
            if reusable:
                self._give_back(conn)
            else:
                conn.close()


class _Stale(Exception):
    """The server closed the connection before answering (a kept-alive connection it had dropped)."""


def raise_for_status(resp: Response, *, auth_statuses=(401, 403)) -> None:
    """The errors every CRM shares: refused credentials, rate limits, server errors."""
    if resp.status in auth_statuses:
        raise CrmAuthError(resp.source, f"{resp.label}: HTTP {resp.status}: credentials refused "
                           f"(check the token; it may have expired)", status=resp.status)
    if resp.status == 429:
        retry = retry_after_seconds(resp.headers.get("retry-after"))
        raise CrmRateLimited(resp.source, f"{resp.label}: HTTP 429, rate limited"
                             + (f", retry after {retry:.0f} s" if retry is not None else ""),
                             retry_after=retry, status=429)
    if resp.status >= 500:
        raise CrmUnavailable(resp.source, f"{resp.label}: HTTP {resp.status}", status=resp.status)
