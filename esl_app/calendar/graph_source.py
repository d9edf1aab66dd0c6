"""Microsoft 365 calendars through Microsoft Graph (``calendarView`` with delta).

Exchange Online turned EWS off in October 2026, so Office 365 mailboxes are
read here, with Graph's documented calendar delta query:

* **Auth**: app-only OAuth 2.0 client credentials through ``msal``
  (``ConfidentialClientApplication.acquire_token_for_client`` with the
  ``https://graph.microsoft.com/.default`` scope); the application needs the
  ``Calendars.Read`` *application* permission with admin consent (an
  Exchange application access policy may limit it to the phone users).
  msal caches the token until it expires; a ``401`` from Graph (token
  expired or revoked early) drops it, fetches a new one and retries once.
  A refused client secret or missing consent is an :class:`AuthError` with
  Entra ID's own error code (``AADSTS…``), never the secret.
* **Full sync**: ``GET /users/{mailbox}/calendarView/delta?startDateTime=…&endDateTime=…``
  with ``Prefer: outlook.timezone="UTC", odata.maxpagesize=200``; pages
  follow ``@odata.nextLink`` until an ``@odata.deltaLink``.  Graph expands
  recurring series itself: occurrences and exceptions come one by one, a
  cancelled or deleted occurrence does not come at all.
* **Incremental sync**: ``GET`` the saved delta link; changed instances come
  whole, deleted ones as ``{"id": …, "@removed": {"reason": "deleted"}}``.
  A delta link is bound to its date window, so when the horizon moves (once
  a day) the next sync is a full one for the new window.  ``410 Gone``
  (sync state expired) also restarts in full.
* **Throttling**: ``429`` and ``503``/``504`` with ``Retry-After`` become
  :class:`Throttled` with the server's delay; the worker waits at least that.
* Times come back in UTC because of the ``Prefer`` header; all-day events are
  floating dates and are laid on the employee's zone (midnight to midnight).
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import urllib.parse
from dataclasses import dataclass

from .expand import Occurrence, Window, all_day_span, instant
from .source import AuthError, BadData, CalendarSource, NotFound, SourceError, SyncResult, Throttled, Unavailable

log = logging.getLogger(__name__)

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
PAGE_SIZE = 200
MAX_PAGES = 500            # a bound on one sync: 100,000 instances
_SHOW_AS = {"free": "free", "tentative": "tentative", "busy": "busy", "oof": "oof",
            "workingelsewhere": "elsewhere", "unknown": "busy"}


class GraphAuth:
    """App-only tokens for one tenant and application, shared by all its mailboxes
    (msal's token cache is per application object)."""

    def __init__(self, tenant: str, client_id: str, client_secret: str, *,
                 authority: str = "https://login.microsoftonline.com", scope: str = GRAPH_SCOPE,
                 timeout: float = 30.0, verify: bool | str = True) -> None:
        self.tenant = tenant
        self.client_id = client_id
        self._secret = client_secret
        self.authority = authority.rstrip("/") + "/" + tenant
        self.scope = scope
        self.timeout = timeout
        self.verify = verify
        self._app = None
        self._lock = threading.Lock()
        self._local = threading.local()
        self.tokens_fetched = 0

    def __repr__(self) -> str:
        return f"<GraphAuth tenant={self.tenant} client_id={self.client_id}>"

    def session(self):
        """A ``requests.Session`` for this thread (sessions are not shared between threads)."""
        session = getattr(self._local, "session", None)
        if session is None:
            import requests

            session = self._local.session = requests.Session()
        return session

    def _application(self):
        if self._app is None:
            import msal
            import requests

            try:
                self._app = msal.ConfidentialClientApplication(
                    self.client_id, client_credential=self._secret, authority=self.authority,
                    http_client=_HttpClient(self.verify, self.timeout),
                    instance_discovery=False if not self.authority.startswith(
                        "https://login.microsoftonline.com/") else None)
            except ValueError as exc:
                raise AuthError(f"Entra ID tenant {self.tenant}: cannot use the authority "
                                f"{self.authority}: {exc}") from None
            except requests.RequestException as exc:
                raise Unavailable(f"Entra ID ({self.authority}) cannot be reached: {type(exc).__name__}") from None
        return self._app

    def token(self, *, renew: bool = False) -> str:
        """A valid access token (from msal's cache unless ``renew``)."""
        import requests

        with self._lock:
            try:
                app = self._application()
                if renew:
                    app.remove_tokens_for_client()
                result = app.acquire_token_for_client(scopes=[self.scope])
            except requests.RequestException as exc:
                raise Unavailable(f"Entra ID ({self.authority}) cannot be reached: {type(exc).__name__}") from None
            if "access_token" in result:
                if result.get("token_source") == "identity_provider":
                    self.tokens_fetched += 1
                return result["access_token"]
        error = result.get("error", "error")
        description = (result.get("error_description") or "").split("\r\n")[0].split("\n")[0]
        if error in ("temporarily_unavailable",) or str(result.get("status", "")).startswith("5"):
            raise Unavailable(f"Entra ID tenant {self.tenant}: {error}: {description}")
        raise AuthError(f"Entra ID refused the application {self.client_id} in tenant {self.tenant}: "
                        f"{error}: {description} (check the client secret, and that Calendars.Read is "
                        f"granted as an application permission with admin consent)")

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()


class _HttpClient:
    """The HTTP client msal is given: ``requests`` with our TLS setting on every request
    (a session's own ``verify`` loses to ``$REQUESTS_CA_BUNDLE``) and a timeout."""

    def __init__(self, verify: bool | str, timeout: float) -> None:
        import requests

        self._session = requests.Session()
        self._verify, self._timeout = verify, timeout

    def get(self, url, **kwargs):
        kwargs.update(verify=self._verify, timeout=kwargs.get("timeout") or self._timeout)
        return self._session.get(url, **kwargs)

    def post(self, url, **kwargs):
        kwargs.update(verify=self._verify, timeout=kwargs.get("timeout") or self._timeout)
        return self._session.post(url, **kwargs)

    def close(self) -> None:
        self._session.close()


@dataclass
class _Page:
    events: list
    next_link: str | None
    delta_link: str | None


def _parse_time(value: dict, zone: dt.tzinfo) -> dt.datetime:
    """A Graph ``dateTimeTimeZone`` as an aware datetime."""
    text = value.get("dateTime") or ""
    name = value.get("timeZone") or "UTC"
    base, _, fraction = text.partition(".")
    try:
        moment = dt.datetime.fromisoformat(base)
    except ValueError:
        raise BadData(f"unreadable dateTime {text!r}") from None
    if name.upper() in ("UTC", "ETC/UTC", "Z"):
        return moment.replace(tzinfo=dt.timezone.utc)
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return moment.replace(tzinfo=ZoneInfo(name))
    except (ZoneInfoNotFoundError, ValueError):
        pass
    try:                                  # a Windows zone name ("W. Europe Standard Time")
        from exchangelib.winzone import MS_TIMEZONE_TO_IANA_MAP
        return moment.replace(tzinfo=ZoneInfo(MS_TIMEZONE_TO_IANA_MAP[name]))
    except (ImportError, KeyError, ZoneInfoNotFoundError):
        raise BadData(f"unknown time zone {name!r}") from None


def occurrence_from_graph(event: dict, zone: dt.tzinfo) -> Occurrence | None:
    """One Graph event instance as an :class:`Occurrence` (``None`` for series masters)."""
    if event.get("type") == "seriesMaster":
        return None
    start = _parse_time(event.get("start") or {}, zone)
    end = _parse_time(event.get("end") or {}, zone)
    if event.get("isAllDay"):
        first, last = all_day_span(start.date(), end.date(), zone)
    else:
        first, last = instant(start, zone), instant(end, zone)
    if last <= first:
        return None
    return Occurrence(
        start=first, end=last, title=event.get("subject") or "",
        private=(event.get("sensitivity") or "normal").lower() in ("private", "confidential"),
        free_busy=_SHOW_AS.get((event.get("showAs") or "busy").lower(), "busy"),
        cancelled=bool(event.get("isCancelled")), uid=event.get("iCalUId") or event.get("id") or "",
    )


class GraphSource(CalendarSource):
    """One mailbox's calendar (``mailbox``: user principal name or object id) via Graph."""

    kind = "graph"

    def __init__(self, mailbox: str, auth: GraphAuth, *, api: str = "https://graph.microsoft.com/v1.0",
                 timeout: float = 30.0, verify: bool | str = True) -> None:
        self.mailbox = mailbox
        self.auth = auth
        self.api = api.rstrip("/")
        self.timeout = timeout
        self.verify = verify
        self._events: dict[str, dict] = {}
        self._delta_link: str | None = None
        self._window: tuple | None = None
        self.requests = 0

    def __repr__(self) -> str:
        return f"<GraphSource {self.mailbox}>"

    def describe(self) -> str:
        return f"graph:{self.mailbox}"

    def reset(self) -> None:
        self._events, self._delta_link, self._window = {}, None, None

    # -- sync ---------------------------------------------------------------------------------------

    def sync(self, horizon: Window, zone: dt.tzinfo) -> SyncResult:
        key = (horizon, str(zone))
        full = self._delta_link is None or self._window != key
        try:
            return self._sync(horizon, zone, key, full)
        except _Gone:
            log.info("%s: the delta state expired (410); syncing in full", self.describe())
            return self._sync(horizon, zone, key, True)

    def _sync(self, horizon: Window, zone: dt.tzinfo, key, full: bool) -> SyncResult:
        if full:
            start = dt.datetime.fromtimestamp(horizon.start, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            end = dt.datetime.fromtimestamp(horizon.end, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            user = urllib.parse.quote(self.mailbox, safe="@.")
            url = (f"{self.api}/users/{user}/calendarView/delta?"
                   + urllib.parse.urlencode({"startDateTime": start, "endDateTime": end}))
        else:
            url = self._delta_link
        events = {} if full else dict(self._events)
        fetched = removed = 0
        delta_link = None
        for _page in range(MAX_PAGES):
            page = self._get(url)
            for item in page.events:
                ident = item.get("id")
                if not ident:
                    continue
                if "@removed" in item:
                    if events.pop(ident, None) is not None:
                        removed += 1
                    continue
                fetched += 1
                events[ident] = item
            if page.delta_link:
                delta_link = page.delta_link
                break
            if not page.next_link:
                raise BadData(f"{self.describe()}: a delta page has neither @odata.nextLink nor @odata.deltaLink")
            url = page.next_link
        else:
            raise BadData(f"{self.describe()}: more than {MAX_PAGES} delta pages")
        occurrences = []
        for item in events.values():
            occ = occurrence_from_graph(item, zone)
            if occ is not None and horizon.overlaps(occ.start, occ.end):
                occurrences.append(occ)
        if full:
            removed = len(set(self._events) - set(events))
        changed = full or fetched > 0 or removed > 0
        self._events, self._delta_link, self._window = events, delta_link, key
        return SyncResult(occurrences=occurrences, changed=changed, kind="full" if full else "incremental",
                          fetched=fetched, removed=removed)

    def _get(self, url: str) -> _Page:
        import requests

        headers = {"Prefer": f'outlook.timezone="UTC", odata.maxpagesize={PAGE_SIZE}',
                   "Accept": "application/json"}
        for attempt in (1, 2):
            headers["Authorization"] = "Bearer " + self.auth.token(renew=attempt == 2)
            self.requests += 1
            try:
                response = self.auth.session().get(url, headers=headers, timeout=self.timeout,
                                                   allow_redirects=False, verify=self.verify)
            except requests.RequestException as exc:
                raise Unavailable(f"{self.describe()}: cannot reach Microsoft Graph ({type(exc).__name__})") from None
            if response.status_code == 401 and attempt == 1:
                log.info("%s: Graph refused the access token (%s); fetching a new one", self.describe(),
                         _error_code(response))
                continue
            break
        status = response.status_code
        if status == 200:
            try:
                body = response.json()
            except ValueError:
                raise BadData(f"{self.describe()}: Graph answered 200 without JSON") from None
            return _Page(body.get("value") or [], body.get("@odata.nextLink"), body.get("@odata.deltaLink"))
        code, message = _error_code(response), _error_message(response)
        if status in (429, 503, 504):
            retry = _retry_after(response.headers.get("Retry-After"))
            raise Throttled(f"{self.describe()}: Graph is throttling (HTTP {status} {code}); retry after "
                            f"{retry if retry is not None else '?'} s", retry_after=retry)
        if status == 410:
            raise _Gone()
        if status == 401:
            raise AuthError(f"{self.describe()}: Graph refused a freshly issued token (HTTP 401 {code}): "
                            f"{message}")
        if status == 403:
            raise AuthError(f"{self.describe()}: access denied (HTTP 403 {code}): the application needs the "
                            f"Calendars.Read application permission with admin consent, and any application "
                            f"access policy must include this mailbox")
        if status == 404:
            raise NotFound(f"{self.describe()}: no such mailbox or calendar (HTTP 404 {code}); check "
                           f"'mailbox' in the config")
        if status >= 500:
            raise Unavailable(f"{self.describe()}: Graph server error (HTTP {status} {code})")
        raise SourceError(f"{self.describe()}: Graph answered HTTP {status} {code}: {message}")


class _Gone(Exception):
    """410: the delta state is gone; start over."""


def _json_error(response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _error_code(response) -> str:
    return str(_json_error(response).get("code") or "")


def _error_message(response) -> str:
    return str(_json_error(response).get("message") or "")[:200]


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
        return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())
    except (TypeError, ValueError):
        return None
