"""CalDAV calendars (Nextcloud, Radicale, Google, iCloud, Baïkal…) with the ``caldav`` library.

Incremental sync, in the order the server allows (``sync:`` in the config):

* ``sync-token`` -- RFC 6578 ``sync-collection`` REPORT: the server lists what
  changed and what was removed since our token.  A token the server no
  longer knows (``DAV:valid-sync-token``) makes the next request a full one,
  and the objects it does not list again are dropped.
* ``ctag`` -- a depth-0 PROPFIND for the collection's ``getctag`` (Apple's
  calendarserver extension); when it moved, a depth-1 PROPFIND for every
  ETag, compared with ours: new and changed objects are fetched, missing
  ones removed.  Servers without ``getctag`` get the ETag listing every time.
* ``auto`` (default) -- both: the ``getctag`` PROPFIND first, and only
  when the ctag moved, the sync-collection REPORT.  A calendar that did not
  change costs the one PROPFIND, which most servers answer faster than the
  REPORT (Radicale: no sync history to update).  The ctag is read *before*
  the REPORT, so a change between the two is seen again next time.  A server
  without ``getctag`` gets the REPORT alone every time; one that refuses the
  REPORT, the ETag listing (``ctag`` mode) from then on.

Changed objects are fetched with one ``calendar-multiget`` REPORT per 200
objects, not one GET each.  The calendar's objects are kept as text with
their ETags, and each object's occurrences are cached until the horizon
moves (once a day) -- a sync that finds nothing changed costs one request
and no parsing.

Connections: ``caldav.DAVClient`` objects are pooled per server and account
(:class:`ClientPool`), one per sync running at a time, so a thousand
calendars on one server share ``parallel`` keep-alive connections (HTTP/1.1
servers) instead of opening one each.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import threading
import urllib.parse
from dataclasses import dataclass

from .expand import CalendarDataError, Occurrence, Window, expand_calendar, parse_ical
from .source import (AuthError, BadData, CalendarSource, NotFound, SourceError, SyncResult, Throttled,
                     Unavailable)

log = logging.getLogger(__name__)

MULTIGET_CHUNK = 200
MAX_SYNC_PAGES = 50
_CTAG = "{http://calendarserver.org/ns/}getctag"
_VALID_SYNC_TOKEN = "{DAV:}valid-sync-token"


def _ctag_element():
    from caldav.elements.base import ValuedBaseElement

    class GetCtag(ValuedBaseElement):
        tag = _CTAG

    return GetCtag()


class ClientPool:
    """``caldav.DAVClient`` objects shared by the sources of one worker, per server and account.

    A client (one niquests session: its keep-alive connections) serves one sync at
    a time: :meth:`client` takes an idle one, or builds one, and puts it back after
    the sync, so there are never more clients, nor connections, than syncs running
    at once -- whichever threads run them.  A client whose connection failed is closed
    instead: the next sync builds a fresh one.  At most ``max_idle`` clients wait
    between syncs (each holds a connection and niquests' keep-alive watcher thread):
    with an account per employee, the least recently used are closed."""

    def __init__(self, max_idle: int = 32) -> None:
        self.max_idle = max_idle
        self._idle: dict[tuple, list] = {}
        self._lru: list[tuple] = []          # (key, client) of the idle clients, oldest first
        self._all: list = []
        self._lock = threading.Lock()
        self._closes = 0                     # close() calls: a client out during one is not kept

    @contextlib.contextmanager
    def client(self, base: str, username: str | None, password: str | None, token: str | None, *,
               timeout: float, verify: bool | str):
        digest = hashlib.sha256(f"{username}\0{password}\0{token}".encode()).hexdigest()
        key = (base, digest, timeout, verify)
        with self._lock:
            closes = self._closes
            idle = self._idle.get(key)
            client = idle.pop() if idle else None
            if client is not None:
                self._lru.remove((key, client))
        if client is None:
            client = self._build(base, username, password, token, timeout=timeout, verify=verify)
            with self._lock:
                self._all.append(client)
        broken = False
        try:
            yield client
        except Unavailable:
            broken = True
            raise
        finally:
            evicted = []
            with self._lock:
                if broken or closes != self._closes:
                    evicted.append(client)
                else:
                    self._idle.setdefault(key, []).append(client)
                    self._lru.append((key, client))
                    while len(self._lru) > self.max_idle:
                        old_key, old = self._lru.pop(0)
                        self._idle[old_key].remove(old)
                        evicted.append(old)
                for gone in evicted:
                    self._all.remove(gone)
            for gone in evicted:
                _close_quietly(gone)

    @staticmethod
    def _build(base: str, username: str | None, password: str | None, token: str | None, *,
               timeout: float, verify: bool | str):
        import caldav

        options = dict(url=base, timeout=timeout, ssl_verify_cert=verify)
        if token:
            from caldav.requests import HTTPBearerAuth
            options["auth"] = HTTPBearerAuth(token)
        else:
            options.update(username=username, password=password)
        return caldav.DAVClient(**options)

    def close(self) -> None:
        """Close every client (those in use when their sync ends); the pool stays usable."""
        with self._lock:
            self._closes += 1
            clients = [client for _key, client in self._lru]
            self._idle, self._lru = {}, []
            for client in clients:
                self._all.remove(client)
        for client in clients:
            _close_quietly(client)


def _close_quietly(client) -> None:
    try:
        client.close()
    except Exception:          # closing a broken session must not mask the real error
        pass


@dataclass
class _Object:
    etag: str
    text: str
    occurrences: list[Occurrence]


def _redact(url: str) -> str:
    """A URL without any user name or password in it."""
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        parts = parts._replace(netloc=netloc)
    return urllib.parse.urlunsplit(parts)


class CalDavSource(CalendarSource):
    """One CalDAV calendar collection (``url``), read with ``username``/``password``
    or a bearer ``token``."""

    kind = "caldav"

    def __init__(self, url: str, *, username: str | None = None, password: str | None = None,
                 token: str | None = None, sync: str = "auto", timeout: float = 30.0,
                 verify: bool | str = True, pool: ClientPool | None = None) -> None:
        if sync not in ("auto", "sync-token", "ctag"):
            raise ValueError(f"sync must be auto, sync-token or ctag, not {sync!r}")
        self.url = url if url.endswith("/") else url + "/"
        parts = urllib.parse.urlsplit(self.url)
        self.base = f"{parts.scheme}://{parts.netloc}/"
        self._username, self._password, self._token = username, password, token
        self.mode = sync
        self.timeout = float(timeout)
        self.verify = verify
        self._own_pool = pool is None
        self._pool = pool or ClientPool()
        self._objects: dict[str, _Object] = {}
        self._sync_token: str | None = None
        self._ctag: str | None = None
        self._has_ctag: bool | None = None   # whether the server returns getctag (None: not asked yet)
        self._expanded_for: tuple | None = None
        self._synced = False
        self.requests = 0                 # REPORT/PROPFIND requests made, for tests and benchmarks

    def __repr__(self) -> str:
        return f"<CalDavSource {_redact(self.url)} mode={self.mode}>"

    def describe(self) -> str:
        return _redact(self.url)

    def reset(self) -> None:
        self._sync_token = self._ctag = self._has_ctag = None
        self._objects = {}
        self._expanded_for = None
        self._synced = False

    def close(self) -> None:
        if self._own_pool:
            self._pool.close()

    # -- sync ---------------------------------------------------------------------------------------

    def sync(self, horizon: Window, zone: dt.tzinfo) -> SyncResult:
        with self._pool.client(self.base, self._username, self._password, self._token,
                               timeout=self.timeout, verify=self.verify) as client:
            try:
                calendar = client.calendar(url=self.url)
                changes = self._changes(calendar)
                fetched = dict(changes.data or {})
                if changes.fetch:
                    fetched.update(self._fetch(calendar, changes.fetch))
            except SourceError:
                raise
            except Exception as exc:
                raise self._map_error(exc) from exc
        return self._apply(changes, fetched, horizon, zone)

    @dataclass
    class _Changes:
        full: bool
        fetch: dict          # canonical url -> etag expected ("" when unknown)
        removed: set
        sync_token: str | None = None
        ctag: str | None = None
        mode: str = "sync-token"
        data: dict = None              # url -> (etag, text) already received with the changes

    def _changes(self, calendar) -> "CalDavSource._Changes":
        ctag = None
        if self.mode == "auto" and self._has_ctag is not False:
            ctag = self._read_ctag(calendar)
            if ctag is None:
                log.info("%s: the server returns no getctag; asking for changes with sync-collection only",
                         self.describe())
                self._has_ctag = False
            else:
                self._has_ctag = True
                if self._synced and self._sync_token is not None and ctag == self._ctag:
                    return self._Changes(full=False, fetch={}, removed=set(), ctag=ctag, mode="sync-token")
        if self.mode in ("auto", "sync-token"):
            try:
                changes = self._changes_by_token(calendar)
                changes.ctag = ctag
                return changes
            except Exception as exc:
                if self.mode == "auto" and self._refuses_report(exc):
                    log.info("%s: the server refuses sync-collection (%s); using ctag/ETags from now on",
                             self.describe(), exc)
                    self.mode = "ctag"
                else:
                    raise
        return self._changes_by_ctag(calendar, ctag)

    @staticmethod
    def _refuses_report(exc: Exception) -> bool:
        """Whether a failed sync-collection REPORT means "this server does not do it"
        (rather than: we may not read, it is not there, it is down or busy)."""
        from caldav.lib import error

        if isinstance(exc, (error.RateLimitError, error.NotFoundError)) or not isinstance(exc, error.DAVError):
            return False
        status = exc.status or 0
        if status == 401 or (status >= 500 and status != 501):
            return False
        if status == 403:
            return "{DAV:}supported-report" in exc.preconditions
        return True

    def _changes_by_token(self, calendar) -> "CalDavSource._Changes":
        from caldav.lib import error

        token = self._sync_token if self._synced else None
        try:
            pages = self._sync_collection(calendar, token)
        except error.DAVError as exc:
            if token is None or _VALID_SYNC_TOKEN not in exc.preconditions:
                raise
            log.info("%s: the server no longer knows our sync token; syncing in full", self.describe())
            token = None
            pages = self._sync_collection(calendar, None)
        fetch, removed, data = {}, set(), {}
        new_token = token
        for page_token, changed, gone in pages:
            new_token = page_token or new_token
            for url, (etag, text) in changed.items():
                removed.discard(url)
                known = self._objects.get(url)
                if token is None or known is None or not etag or known.etag != etag or text is not None:
                    fetch[url] = etag
                    if text is not None:
                        data[url] = (etag, text)
                    else:
                        data.pop(url, None)
            for url in gone:
                fetch.pop(url, None)
                data.pop(url, None)
                removed.add(url)
        changes = self._Changes(full=token is None, fetch={u: e for u, e in fetch.items() if u not in data},
                                removed=removed, sync_token=new_token, mode="sync-token")
        changes.data = data
        return changes

    def _sync_collection(self, calendar, token: str | None) -> list:
        """RFC 6578 sync-collection REPORT asking for ETags *and* calendar data, so a sync
        is one request (servers that leave the data out get a multiget afterwards).
        Follows truncated replies (507 on the collection) with the new token, a bounded
        number of times.  Returns ``[(token, {url: (etag, text|None)}, {removed urls})]``."""
        from caldav.elements import cdav, dav
        from caldav.lib import error
        from xml.sax.saxutils import escape

        here = calendar.url
        pages = []
        for _page in range(MAX_SYNC_PAGES):
            body = ('<?xml version="1.0" encoding="utf-8"?>'
                    '<D:sync-collection xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
                    f'<D:sync-token>{escape(token or "")}</D:sync-token><D:sync-level>1</D:sync-level>'
                    '<D:prop><D:getetag/><C:calendar-data/></D:prop></D:sync-collection>')
            self.requests += 1
            response = calendar.client.report(str(here), body, depth=1)
            if response.status >= 400:
                raise error.error_from_response(
                    error.NotFoundError if response.status == 404 else error.ReportError, response)
            props = response.expand_simple_props([dav.GetEtag(), cdav.CalendarData()])
            changed, gone, truncated = {}, set(), False
            own = str(here.canonical()).rstrip("/")
            for href, status in response.statuses.items():
                url = str(here.join(href).canonical())
                code = status.split()[1] if status and len(status.split()) > 1 else ""
                if url.rstrip("/") == own:
                    truncated = truncated or code == "507"
                elif code == "404":
                    gone.add(url)
            for href, found in props.items():
                url = str(here.join(href).canonical())
                if url.rstrip("/") == own or url in gone:
                    continue
                text = found.get(cdav.CalendarData.tag)
                etag = found.get(dav.GetEtag.tag) or ""
                if etag or text:
                    changed[url] = (etag, text if text else None)
            new_token = response.sync_token
            pages.append((new_token, changed, gone))
            if not truncated or not new_token or new_token == token:
                break
            token = new_token
        else:
            log.warning("%s: sync-collection still truncated after %d pages; the rest follows next sync",
                        self.describe(), MAX_SYNC_PAGES)
        return pages

    def _read_ctag(self, calendar) -> str | None:
        """The collection's ``getctag`` (depth-0 PROPFIND), or None if the server has none."""
        self.requests += 1
        props = calendar.get_properties([_ctag_element()])
        return (props.get(_CTAG) if isinstance(props, dict) else None) or None

    def _changes_by_ctag(self, calendar, ctag: str | None = None) -> "CalDavSource._Changes":
        from caldav.elements import dav

        if ctag is None:
            ctag = self._read_ctag(calendar)
        if ctag and self._synced and ctag == self._ctag:
            return self._Changes(full=False, fetch={}, removed=set(), ctag=ctag, mode="ctag")
        self.requests += 1
        response = calendar.get_properties([dav.GetEtag()], depth=1, parse_response_xml=False)
        listed = response.expand_simple_props([dav.GetEtag()])
        here = str(calendar.url.canonical())
        current = {}
        for href, found in listed.items():
            url = str(calendar.url.join(href).canonical())
            if url == here or url.rstrip("/") == here.rstrip("/"):
                continue
            current[url] = found.get(dav.GetEtag.tag) or ""
        fetch = {url: etag for url, etag in current.items()
                 if url not in self._objects or not etag or self._objects[url].etag != etag}
        removed = set(self._objects) - set(current)
        return self._Changes(full=not self._synced, fetch=fetch, removed=removed, ctag=ctag, mode="ctag")

    def _fetch(self, calendar, wanted: dict) -> dict[str, tuple[str, str]]:
        """``{url: (etag, text)}`` for the wanted objects: calendar-multiget REPORTs of
        :data:`MULTIGET_CHUNK` hrefs (RFC 4791 7.9), read straight from the multistatus."""
        from caldav.elements import cdav, dav
        from caldav.lib import error
        from caldav.lib.url import URL
        from xml.sax.saxutils import escape

        out = {}
        urls = sorted(wanted)
        for i in range(0, len(urls), MULTIGET_CHUNK):
            hrefs = "".join(f"<D:href>{escape(URL.objectify(u).path)}</D:href>" for u in urls[i:i + MULTIGET_CHUNK])
            body = ('<?xml version="1.0" encoding="utf-8"?>'
                    '<C:calendar-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
                    f'<D:prop><D:getetag/><C:calendar-data/></D:prop>{hrefs}</C:calendar-multiget>')
            self.requests += 1
            response = calendar.client.report(str(calendar.url), body, depth=None)
            if response.status >= 400:
                raise error.error_from_response(
                    error.NotFoundError if response.status == 404 else error.ReportError, response)
            for href, found in response.expand_simple_props([dav.GetEtag(), cdav.CalendarData()]).items():
                url = str(calendar.url.join(href).canonical())
                data = found.get(cdav.CalendarData.tag)
                if not data:
                    continue            # deleted between listing and fetching: next sync says so
                etag = found.get(dav.GetEtag.tag) or wanted.get(url, "")
                out[url] = (etag, data if isinstance(data, str) else data.decode("utf-8", "replace"))
        return out

    def _apply(self, changes, fetched, horizon: Window, zone: dt.tzinfo) -> SyncResult:
        expand_key = (horizon, str(zone))
        objects = {} if changes.full else dict(self._objects)
        removed = 0
        for url in changes.removed:
            if objects.pop(url, None) is not None:
                removed += 1
        for url, (etag, text) in fetched.items():
            objects[url] = _Object(etag, text, self._expand(url, text, horizon, zone))
        if changes.full:
            removed += len(set(self._objects) - set(objects))
        rewindowed = self._expanded_for != expand_key
        if rewindowed:
            for url, obj in objects.items():
                if url not in fetched:
                    obj.occurrences = self._expand(url, obj.text, horizon, zone)
        changed = bool(fetched) or removed > 0 or rewindowed or not self._synced
        # commit: only now, so a failure above leaves the previous state intact
        kind = "full" if changes.full else "incremental"
        self._objects = objects
        self._expanded_for = expand_key
        if changes.sync_token is not None:
            self._sync_token = changes.sync_token
        self._ctag = changes.ctag
        self._synced = True
        occurrences = [occ for obj in objects.values() for occ in obj.occurrences]
        return SyncResult(occurrences=occurrences, changed=changed, kind=kind, fetched=len(fetched),
                          removed=removed)

    def _expand(self, url: str, text: str, horizon: Window, zone: dt.tzinfo) -> list[Occurrence]:
        try:
            return expand_calendar(parse_ical(text), horizon, zone)
        except CalendarDataError as exc:
            log.warning("%s: %s is not readable iCalendar (%s); it is ignored until it changes",
                        self.describe(), url.rsplit("/", 1)[-1], exc)
            return []

    # -- errors -------------------------------------------------------------------------------------

    def _map_error(self, exc: Exception) -> SourceError:
        from caldav.lib import error

        where = self.describe()
        if isinstance(exc, error.RateLimitError):
            return Throttled(f"{where}: the server asks us to slow down (HTTP 429/503)",
                             retry_after=exc.retry_after_seconds)
        if isinstance(exc, error.AuthorizationError):
            if exc.status == 403:
                return AuthError(f"{where}: HTTP 403, the account may not read this calendar; give it read "
                                 f"access or check the calendar URL")
            return AuthError(f"{where}: the server refused the credentials (HTTP {exc.status or 401}); "
                             f"check the credentials entry's username and password")
        if isinstance(exc, error.NotFoundError):
            return NotFound(f"{where}: no calendar at this URL (HTTP 404); check 'calendar' in the config")
        if isinstance(exc, error.DAVError):
            status = exc.status or 0
            if status >= 500 or status == 0:
                return Unavailable(f"{where}: server error ({exc.reason}"
                                   f"{f', HTTP {status}' if status else ''})")
            return BadData(f"{where}: unexpected answer ({exc.reason}, HTTP {status})")
        name = type(exc).__name__
        if isinstance(exc, (OSError, TimeoutError)) or "Timeout" in name or "Connection" in name \
                or type(exc).__module__.split(".")[0] in ("niquests", "urllib3", "requests"):
            return Unavailable(f"{where}: cannot reach the server ({name})")
        if isinstance(exc, (ValueError, KeyError, AttributeError)):
            return BadData(f"{where}: unreadable answer ({name}: {exc})")
        return SourceError(f"{where}: {name}: {exc}")
