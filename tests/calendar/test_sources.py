"""The source contract (``contract.py``) against every source.

* CalDAV: a real Radicale 3 server on 127.0.0.1 (subprocess, temporary storage);
* EWS: :mod:`.fake_ews`, the SOAP exchangelib sends and Exchange answers;
* Graph: :mod:`.fake_graph`, Entra ID's token endpoint and Graph's calendarView delta, over TLS.

Each test gets its own calendar or mailbox on a server shared by the module.
"""
from __future__ import annotations

import glob
import http.server
import itertools
import os
import socket
import threading

import pytest

from esl_app.calendar.caldav_source import CalDavSource
from esl_app.calendar.ews_source import EwsSource
from esl_app.calendar.expand import window
from esl_app.calendar.graph_source import GraphAuth, GraphSource
from esl_app.calendar.source import Throttled

from .contract import LONDON, NOW, Backend, SourceContract
from .events import Event, to_ics
from .fake_ews import FakeExchange
from .fake_graph import FakeGraph
from .radicale_server import RadicaleServer

SECRET = "Secr3t-calendar-pw"
WRONG = "wrong-password-123"
_names = itertools.count()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- CalDAV against Radicale ----------------------------------------------------------------------

class CalDavBackend(Backend):
    kind = "caldav"
    capabilities = frozenset({"state-expiry"})
    secret = SECRET

    def __init__(self, server: RadicaleServer, mode: str):
        import caldav

        self.server = server
        self.mode = mode
        self.client = caldav.DAVClient(url=server.url, username="anna", password=SECRET, timeout=10)
        self.name = f"cal{next(_names)}"
        self.calendar = self.client.principal().make_calendar(name=self.name, cal_id=self.name)
        self.url = str(self.calendar.url)

    def put(self, event: Event) -> None:
        response = self.client.put(f"{self.url}{event.uid}.ics", to_ics(event),
                                   {"Content-Type": "text/calendar; charset=utf-8"})
        assert response.status in (201, 204), response.status

    def delete(self, uid: str) -> None:
        response = self.client.delete(f"{self.url}{uid}.ics")
        assert response.status in (200, 204), response.status

    def source(self, *, good_password: bool = True):
        return CalDavSource(self.url, username="anna", password=SECRET if good_password else WRONG,
                            sync=self.mode, timeout=10)

    def unreachable_source(self):
        return CalDavSource(f"http://127.0.0.1:{_closed_port()}/anna/{self.name}/", username="anna",
                            password=SECRET, timeout=2)

    def expire_state(self) -> None:
        # Radicale keeps one file per sync token it handed out; without it the token is unknown
        pattern = os.path.join(self.server.folder, "data", "collection-root", "anna", self.name,
                               ".Radicale.cache", "sync-token", "*")
        for path in glob.glob(pattern):
            os.unlink(path)

    def close(self) -> None:
        self.client.close()


@pytest.fixture(scope="module")
def radicale(tmp_path_factory):
    with RadicaleServer(str(tmp_path_factory.mktemp("radicale")), {"anna": SECRET}) as server:
        yield server


class TestCalDavSyncToken(SourceContract):
    """RFC 6578 sync-collection against Radicale."""

    @pytest.fixture
    def backend(self, radicale):
        backend = CalDavBackend(radicale, "sync-token")
        yield backend
        backend.close()


class TestCalDavCtag(SourceContract):
    """ctag + ETag listing against Radicale (as for servers without sync-collection)."""

    @pytest.fixture
    def backend(self, radicale):
        backend = CalDavBackend(radicale, "ctag")
        backend.capabilities = frozenset()      # no tokens to expire in this mode
        yield backend
        backend.close()


# --- EWS against the fake Exchange --------------------------------------------------------------

class EwsBackend(Backend):
    kind = "ews"
    capabilities = frozenset({"throttle", "state-expiry"})
    secret = SECRET

    def __init__(self, exchange: FakeExchange):
        self.exchange = exchange
        self.mailbox = f"user{next(_names)}@example.com"
        exchange.mailbox(self.mailbox)

    def put(self, event: Event) -> None:
        self.exchange.put(self.mailbox, event)

    def delete(self, uid: str) -> None:
        self.exchange.delete(self.mailbox, uid)

    def source(self, *, good_password: bool = True):
        return EwsSource(self.exchange.url, self.mailbox, username="svc@example.com",
                         password=SECRET if good_password else WRONG, auth="basic", timeout=10)

    def unreachable_source(self):
        return EwsSource(f"http://127.0.0.1:{_closed_port()}/EWS/Exchange.asmx", self.mailbox,
                         username="svc@example.com", password=SECRET, auth="basic", timeout=2)

    def throttle(self, count: int, seconds: int) -> None:
        self.exchange.busy(count, seconds * 1000)

    def expire_state(self) -> None:
        self.exchange.expire_states()


@pytest.fixture(scope="module")
def exchange():
    with FakeExchange({"svc@example.com": SECRET}) as server:
        yield server


class TestEws(SourceContract):
    @pytest.fixture
    def backend(self, exchange):
        return EwsBackend(exchange)


# --- Graph against the fake Microsoft 365 ---------------------------------------------------------

TENANT = "contoso.onmicrosoft.com"
CLIENT_ID = "6731de76-14a6-49ae-97bc-6eba6914391e"


class GraphBackend(Backend):
    kind = "graph"
    capabilities = frozenset({"throttle", "token-expiry", "state-expiry"})
    secret = SECRET

    def __init__(self, graph: FakeGraph):
        self.graph = graph
        self.mailbox = f"user{next(_names)}@contoso.com"
        graph.mailbox(self.mailbox)

    def put(self, event: Event) -> None:
        self.graph.put(self.mailbox, event)

    def delete(self, uid: str) -> None:
        self.graph.delete(self.mailbox, uid)

    def source(self, *, good_password: bool = True):
        auth = GraphAuth(TENANT, CLIENT_ID, SECRET if good_password else WRONG, authority=self.graph.base,
                         verify=self.graph.ca_path, timeout=10)
        return GraphSource(self.mailbox, auth, api=self.graph.api, verify=self.graph.ca_path, timeout=10)

    def unreachable_source(self):
        port = _closed_port()
        auth = GraphAuth(TENANT, CLIENT_ID, SECRET, authority=f"https://127.0.0.1:{port}",
                         verify=self.graph.ca_path, timeout=2)
        return GraphSource(self.mailbox, auth, api=f"https://127.0.0.1:{port}/v1.0", verify=self.graph.ca_path,
                           timeout=2)

    def throttle(self, count: int, seconds: int) -> None:
        self.graph.throttle(count, seconds)

    def expire_token(self) -> None:
        self.graph.revoke_tokens()

    def expire_state(self) -> None:
        self.graph.expire_delta()


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    with FakeGraph(str(tmp_path_factory.mktemp("graph")), tenant=TENANT, client_id=CLIENT_ID,
                   client_secret=SECRET) as server:
        yield server


class TestGraph(SourceContract):
    @pytest.fixture
    def backend(self, graph):
        return GraphBackend(graph)


# --- source-specific checks -----------------------------------------------------------------------

def test_caldav_throttling_answer_becomes_throttled():
    """Should turn a CalDAV server's 429 with Retry-After into Throttled with that delay
    (Radicale never throttles, so a one-line server answers here)."""
    class Busy(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _busy(self):
            self.send_response(429)
            self.send_header("Retry-After", "120")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_REPORT = do_PROPFIND = do_GET = _busy

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        source = CalDavSource(f"http://127.0.0.1:{server.server_address[1]}/anna/cal/", username="anna",
                              password=SECRET, timeout=5)
        with pytest.raises(Throttled) as caught:
            source.sync(window(NOW), LONDON)
        assert caught.value.retry_after == pytest.approx(120)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_graph_pages_follow_next_links(graph):
    """Should follow @odata.nextLink pages to the delta link (page size 200, 450 instances)."""
    backend = GraphBackend(graph)
    from .events import local
    backend.put(Event("many", "lunch", local("2026-10-15 12:00"), local("2026-10-15 12:05"),
                      rrule="FREQ=HOURLY;COUNT=450"))
    source = backend.source()
    result = source.sync(window(NOW), LONDON)
    assert len(result.occurrences) == 450 and source.requests == 3


def test_graph_forbidden_mailbox_is_an_auth_error(graph):
    """Should explain a 403 as missing application permission."""
    from esl_app.calendar.source import AuthError

    backend = GraphBackend(graph)
    graph.forbid(backend.mailbox)
    with pytest.raises(AuthError, match="Calendars.Read"):
        backend.source().sync(window(NOW), LONDON)


def test_ews_impersonation_refused_is_an_auth_error(exchange):
    """Should explain ErrorImpersonateUserDenied as a missing role."""
    from esl_app.calendar.source import AuthError

    backend = EwsBackend(exchange)
    exchange.deny_impersonation.add(backend.mailbox)
    with pytest.raises(AuthError, match="ApplicationImpersonation"):
        backend.source().sync(window(NOW), LONDON)


def test_ews_unknown_mailbox_is_not_found(exchange):
    from esl_app.calendar.source import NotFound

    source = EwsSource(exchange.url, "nobody@example.com", username="svc@example.com", password=SECRET,
                       auth="basic", timeout=5)
    with pytest.raises(NotFound):
        source.sync(window(NOW), LONDON)


def test_ews_sends_what_exchange_expects(exchange):
    """Should probe the version once, find the calendar, then only SyncFolderItems while nothing changes."""
    backend = EwsBackend(exchange)
    from .events import local
    backend.put(Event("x", "m X", local("2026-10-20 10:00"), local("2026-10-20 11:00")))
    source = backend.source()
    start = len(exchange.requests)
    source.sync(window(NOW), LONDON)
    source.sync(window(NOW), LONDON)
    ops = [op for op, box in exchange.requests[start:] if box in (backend.mailbox, "dummy", "")]
    assert ops[-4:] == ["GetFolder", "SyncFolderItems", "FindItem", "SyncFolderItems"] or \
        ops[-5:] == ["GetFolder", "GetFolder", "SyncFolderItems", "FindItem", "SyncFolderItems"]
