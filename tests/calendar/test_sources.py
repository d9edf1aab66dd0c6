"""The source contract (``contract.py``) against every source.

* CalDAV: a real Radicale 3 server on 127.0.0.1 (subprocess, temporary storage),
  served by its own HTTP/1.0 server (``sync-token`` and ``ctag`` modes) and over
  HTTP/1.1 keep-alive (``auto`` mode, as the benchmark runs it);
* EWS: :mod:`.fake_ews`, the SOAP exchangelib sends and Exchange answers;
* Graph: :mod:`.fake_graph`, Entra ID's token endpoint and Graph's calendarView delta, over TLS.

Each test gets its own calendar or mailbox on a server shared by the module.
"""
from __future__ import annotations

import datetime as dt
import glob
import http.server
import itertools
import os
import socket
import threading

import pytest

from esl_app.calendar.caldav_source import CalDavSource, ClientPool
from esl_app.calendar.config import CalendarConfig, EmployeeCalendar, ServerConfig
from esl_app.calendar.ews_source import EwsSource
from esl_app.calendar.expand import window
from esl_app.calendar.graph_source import GraphAuth, GraphSource
from esl_app.calendar.keywords import KeywordRules
from esl_app.calendar.source import Throttled, Unavailable
from esl_app.calendar.worker import CalendarWorker

from .contract import LONDON, NOW, Backend, SourceContract
from .events import Event, local, to_ics
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


def _serve_radicale(tmp_path_factory, wsgi: str):
    with RadicaleServer(str(tmp_path_factory.mktemp("radicale")), {"anna": SECRET}, wsgi=wsgi) as server:
        yield server


def _caldav_backend(server: RadicaleServer, mode: str):
    backend = CalDavBackend(server, mode)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def radicale(tmp_path_factory):
    """Radicale's own server (HTTP/1.0, a connection per request)."""
    yield from _serve_radicale(tmp_path_factory, "builtin")


@pytest.fixture(scope="module")
def radicale_keep_alive(tmp_path_factory):
    """Radicale's application over HTTP/1.1 keep-alive."""
    yield from _serve_radicale(tmp_path_factory, "keep-alive")


class TestCalDavSyncToken(SourceContract):
    """RFC 6578 sync-collection against Radicale."""

    @pytest.fixture
    def backend(self, radicale):
        yield from _caldav_backend(radicale, "sync-token")


class TestCalDavAuto(SourceContract):
    """getctag first, sync-collection when it moved (the default), against Radicale over HTTP/1.1."""

    @pytest.fixture
    def backend(self, radicale_keep_alive):
        yield from _caldav_backend(radicale_keep_alive, "auto")


class TestCalDavCtag(SourceContract):
    """ctag + ETag listing against Radicale (as for servers without sync-collection)."""

    @pytest.fixture
    def backend(self, radicale):
        for backend in _caldav_backend(radicale, "ctag"):
            backend.capabilities = frozenset()      # no tokens to expire in this mode
            yield backend


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


def test_caldav_auto_asks_for_the_ctag_first(radicale_keep_alive, monkeypatch):
    """Should cost one getctag PROPFIND when nothing changed, and the sync-collection REPORT
    on top only when the ctag moved."""
    reports = []
    sync_collection = CalDavSource._sync_collection

    def spy(self, calendar, token):
        reports.append(token)
        return sync_collection(self, calendar, token)

    monkeypatch.setattr(CalDavSource, "_sync_collection", spy)
    backend = CalDavBackend(radicale_keep_alive, "auto")
    backend.put(Event("first", "m First", local("2026-10-20 10:00"), local("2026-10-20 11:00")))
    source = backend.source()
    assert source.sync(window(NOW), LONDON).kind == "full"
    assert reports == [None]
    before = source.requests
    unchanged = source.sync(window(NOW), LONDON)
    assert not unchanged.changed and unchanged.kind == "incremental"
    assert source.requests == before + 1 and len(reports) == 1
    backend.put(Event("second", "lunch", local("2026-10-20 12:00"), local("2026-10-20 13:00")))
    changed = source.sync(window(NOW), LONDON)
    assert changed.changed and changed.kind == "incremental" and changed.fetched == 1
    assert sorted(o.title for o in changed.occurrences) == ["lunch", "m First"]
    assert source.requests == before + 3 and len(reports) == 2 and reports[1] is not None
    backend.close()


def test_caldav_auto_without_getctag_uses_sync_collection_alone(radicale, monkeypatch):
    """Should ask a server that returns no getctag only once, then sync with the REPORT alone."""
    asked = []

    def no_ctag(self, calendar):
        asked.append(self.url)
        return None

    monkeypatch.setattr(CalDavSource, "_read_ctag", no_ctag)
    backend = CalDavBackend(radicale, "auto")
    backend.put(Event("first", "m First", local("2026-10-20 10:00"), local("2026-10-20 11:00")))
    source = backend.source()
    source.sync(window(NOW), LONDON)
    backend.delete("first")
    result = source.sync(window(NOW), LONDON)
    assert result.changed and result.kind == "incremental" and result.occurrences == []
    assert not source.sync(window(NOW), LONDON).changed
    assert asked == [source.url]
    backend.close()


CALENDARS = 12
TEAM = "id: acme\nname: Acme\ncountry: GB\ntimezone: Europe/London\nemployees:\n" + "".join(
    f'  - {{extension: "{3001 + i}", name: "Person {i}", role: user}}\n' for i in range(CALENDARS))


def _team_worker(store, backends, pool: ClientPool, parallel: int) -> CalendarWorker:
    server = ServerConfig(name="radicale", kind="caldav", url="http://127.0.0.1/")
    config = CalendarConfig(servers={"radicale": server}, parallel=parallel, timezone="Europe/London",
                            employees=tuple(EmployeeCalendar(str(3001 + i), "radicale", calendar=b.url,
                                                             rules=KeywordRules()) for i, b in enumerate(backends)))
    by_url = {b.url: b for b in backends}
    return CalendarWorker(store, config, clock=lambda: NOW, source_factory=lambda srv, emp, creds: CalDavSource(
        emp.calendar, username="anna", password=SECRET, timeout=10, pool=pool, sync=by_url[emp.calendar].mode))


def _store_content(store) -> dict:
    """Every employee's stored intervals by source, and the presence flag routing reads first."""
    return {ext: (store.referrals(ext), store.live(ext).referral if store.live(ext) else None)
            for ext in (str(3001 + i) for i in range(CALENDARS))}


def test_a_concurrent_sync_writes_what_a_sequential_one_does(radicale_keep_alive, make_store):
    """Should leave the same store content when 12 calendars are synced 8 at a time (sharing
    connections and the LMDB writer) as when they are synced one at a time: after the first
    sync, and after edits and deletions."""
    backends = [CalDavBackend(radicale_keep_alive, "auto") for _ in range(CALENDARS)]
    for i, backend in enumerate(backends):
        day = 19 + i % 5
        backend.put(Event("a", f"m Review {i}", local(f"2026-10-{day} 10:00"), local(f"2026-10-{day} 11:00")))
        backend.put(Event("b", "lunch", local("2026-10-19 12:00"), local("2026-10-19 13:00"),
                          rrule=f"FREQ=DAILY;COUNT={2 + i}"))
        if i % 3 == 0:
            backend.put(Event("c", "va Away", dt.date(2026, 10, 26), dt.date(2026, 10, 28), private=i % 2 == 0))
    pool = ClientPool()
    concurrent, sequential = make_store(TEAM), make_store(TEAM)
    workers = [(_team_worker(concurrent, backends, pool, 8), concurrent),
               (_team_worker(sequential, backends, pool, 1), sequential)]
    for worker, _ in workers:
        assert worker.run_once(now=NOW)["ok"] == CALENDARS
    first = _store_content(concurrent)
    assert first == _store_content(sequential)
    assert all(intervals and flag for intervals, flag in first.values())
    for i, backend in enumerate(backends):
        if i % 2:
            backend.put(Event("a", f"sick Review {i} moved", local("2026-10-21 14:00"), local("2026-10-21 15:00")))
        if i % 3 == 1:
            backend.delete("b")
    for worker, _ in workers:
        summary = worker.run_once(now=NOW)
        assert summary["ok"] == summary["incremental"] == CALENDARS
    second = _store_content(concurrent)
    assert second == _store_content(sequential)
    assert [ext for ext in first if first[ext] != second[ext]] == [
        str(3001 + i) for i in range(CALENDARS) if i % 2 or i % 3 == 1]
    pool.close()
    for backend in backends:
        backend.close()


def test_caldav_clients_are_reused_whichever_thread_syncs(radicale_keep_alive, make_store):
    """Should sync pass after pass over at most ``parallel`` clients (kept-alive connections):
    a client goes back to the pool after each sync, not to the thread that ran it."""
    backends = [CalDavBackend(radicale_keep_alive, "auto") for _ in range(6)]
    for backend in backends:
        backend.put(Event("a", "m Standup", local("2026-10-20 10:00"), local("2026-10-20 10:15")))
    pool = ClientPool()
    worker = _team_worker(make_store(TEAM), backends, pool, 3)
    for _pass in range(3):          # each pass runs on new threads
        assert worker.run_once(now=NOW)["ok"] == 6
    assert 1 <= len(pool._all) <= 3
    pool.close()
    assert pool._all == []
    for backend in backends:
        backend.close()


def test_caldav_client_pool_keeps_few_idle_clients_and_drops_broken_ones(monkeypatch):
    """Should hand an idle client of the same server and account out again, close the least
    recently used ones beyond ``max_idle``, and close rather than reuse a client whose sync
    found the server unreachable."""
    class Client:
        closed = False

        def close(self):
            self.closed = True

    monkeypatch.setattr(ClientPool, "_build", staticmethod(lambda *args, **options: Client()))
    pool = ClientPool(max_idle=2)

    def use(account):
        with pool.client("http://127.0.0.1:1/", account, SECRET, None, timeout=5, verify=True) as client:
            return client

    anna = use("anna")
    assert use("anna") is anna
    bob, carl = use("bob"), use("carl")
    assert anna.closed and not bob.closed and not carl.closed
    assert use("anna") is not anna and bob.closed          # anna back, bob now the oldest idle
    with pytest.raises(Unavailable):
        with pool.client("http://127.0.0.1:1/", "carl", SECRET, None, timeout=5, verify=True) as broken:
            raise Unavailable("server down")
    assert broken is carl and carl.closed and use("carl") is not carl
    with pool.client("http://127.0.0.1:1/", "dora", SECRET, None, timeout=5, verify=True) as dora:
        pool.close()                                       # while dora's sync runs
        assert not dora.closed
    assert dora.closed and pool._all == []
    assert not use("anna").closed                          # usable after close(), as after a restart


def test_graph_pages_follow_next_links(graph):
    """Should follow @odata.nextLink pages to the delta link (page size 200, 450 instances)."""
    backend = GraphBackend(graph)
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
    backend.put(Event("x", "m X", local("2026-10-20 10:00"), local("2026-10-20 11:00")))
    source = backend.source()
    start = len(exchange.requests)
    source.sync(window(NOW), LONDON)
    source.sync(window(NOW), LONDON)
    ops = [op for op, box in exchange.requests[start:] if box in (backend.mailbox, "dummy", "")]
    assert ops[-4:] == ["GetFolder", "SyncFolderItems", "FindItem", "SyncFolderItems"] or \
        ops[-5:] == ["GetFolder", "GetFolder", "SyncFolderItems", "FindItem", "SyncFolderItems"]
