"""On-premises Exchange (2007 SP1, 2010, 2013, 2016, 2019, SE) through EWS with ``exchangelib``.

One service account reads the phone users' calendars, by **impersonation**
(the ``ApplicationImpersonation`` role; ``ExchangeImpersonation`` SOAP
header) or as a **delegate** with read access to each calendar.  NTLM or
basic authentication over HTTPS; the server version is asked once per
server (exchangelib's ``ConvertId`` probe) and kept.

Per sync:

1. ``SyncFolderItems`` on the calendar folder (item ids only, 512 changes a
   call) from our saved sync state tells whether anything was created,
   changed or deleted since the last sync.  The first sync (no state) walks
   the folder once to get a state.  ``ErrorInvalidSyncStateData`` makes the
   next sync start over.
2. Only when something changed, when the horizon moved (once a day), or on
   the first sync: ``FindItem`` with a ``CalendarView`` over the horizon.
   Exchange expands recurring series itself in a calendar view: every
   occurrence and every modified occurrence comes as its own item, deleted
   occurrences do not come at all, cancelled meetings come with
   ``IsCancelled``.  That is Exchange's own reading of its recurrence
   patterns and time zones, which no client-side re-implementation matches.

A sync that finds no change costs one small ``SyncFolderItems`` request.

``ErrorServerBusy`` (Exchange's throttling, EWS 2013+) carries
``BackOffMilliseconds``; exchangelib puts it on ``ErrorServerBusy.back_off``
and we raise :class:`Throttled` with it (exchangelib's ``FailFast`` policy:
no sleeping inside the library, the worker schedules the retry).
"""
from __future__ import annotations

import datetime as dt
import logging
import threading

from .expand import Occurrence, Window, all_day_span, instant
from .source import AuthError, BadData, CalendarSource, NotFound, SourceError, SyncResult, Throttled, Unavailable

log = logging.getLogger(__name__)

SYNC_PAGE = 512                       # SyncFolderItems MaxChangesReturned (EWS allows 1-512)
MAX_SYNC_PAGES = 400                  # a bound on one sync: 204,800 changes
VIEW_FIELDS = ("subject", "start", "end", "is_all_day", "sensitivity", "legacy_free_busy_status",
               "is_cancelled", "type", "_start_timezone", "_end_timezone")
_FREE_BUSY = {"Free": "free", "Tentative": "tentative", "Busy": "busy", "OOF": "oof",
              "WorkingElsewhere": "elsewhere", "NoData": "busy"}
_protocol_lock = threading.Lock()


def occurrence_from_ews(item, zone: dt.tzinfo) -> Occurrence | None:
    """One calendar view item (an ``exchangelib.CalendarItem``) as an :class:`Occurrence`."""
    start, end = item.start, item.end
    if start is None or end is None:
        return None
    if item.is_all_day or not isinstance(start, dt.datetime):
        # exchangelib gives dates for all-day items (end already made inclusive: add the day back)
        first = start if not isinstance(start, dt.datetime) else start.date()
        last = end if not isinstance(end, dt.datetime) else end.date()
        if not isinstance(end, dt.datetime):
            last = last + dt.timedelta(days=1)
        begin, finish = all_day_span(first, last, zone)
    else:
        begin, finish = instant(start, zone), instant(end, zone)
    if finish <= begin:
        return None
    return Occurrence(
        start=begin, end=finish, title=item.subject or "",
        private=(item.sensitivity or "Normal") in ("Private", "Confidential"),
        free_busy=_FREE_BUSY.get(item.legacy_free_busy_status or "Busy", "busy"),
        cancelled=bool(item.is_cancelled), uid=getattr(item, "id", None) or "",
    )


class EwsSource(CalendarSource):
    """The default calendar of ``mailbox`` on the EWS ``endpoint``."""

    kind = "ews"

    def __init__(self, endpoint: str, mailbox: str, *, username: str, password: str, auth: str = "ntlm",
                 access: str = "impersonation", timeout: float = 30.0, verify: bool | str = True,
                 version: tuple[int, ...] | None = None) -> None:
        if auth not in ("ntlm", "basic") or access not in ("impersonation", "delegate"):
            raise ValueError("auth must be ntlm or basic, access impersonation or delegate")
        self.endpoint = endpoint
        self.mailbox = mailbox
        self._username, self._password = username, password
        self.auth = auth
        self.access = access
        self.timeout = timeout
        self.verify = verify
        self.version = version
        self._account = None
        self._calendar = None
        self._sync_state: str | None = None
        self._window: tuple | None = None
        self._occurrences: list[Occurrence] = []
        self.requests = 0

    def __repr__(self) -> str:
        return f"<EwsSource {self.mailbox} at {self.endpoint}>"

    def describe(self) -> str:
        return f"ews:{self.mailbox}"

    def reset(self) -> None:
        self._sync_state = None
        self._window = None
        self._calendar = None

    def close(self) -> None:
        self._account = self._calendar = None

    # -- exchangelib objects --------------------------------------------------------------------

    def _connect(self):
        if self._calendar is not None:
            return self._calendar
        from exchangelib import BASIC, DELEGATE, IMPERSONATION, NTLM, Account, Configuration, Credentials, FailFast
        from exchangelib.ewsdatetime import UTC
        from exchangelib.version import Build, Version

        _tls(self.verify)
        version = Version(build=Build(*self.version)) if self.version else None
        with _protocol_lock:        # exchangelib probes the version once per server; do not race it
            config = Configuration(service_endpoint=self.endpoint,
                                   credentials=Credentials(self._username, self._password),
                                   auth_type=NTLM if self.auth == "ntlm" else BASIC, version=version,
                                   retry_policy=FailFast(), max_connections=4)
            config.protocol_timeout = self.timeout
            account = Account(self.mailbox, config=config, autodiscover=False,
                              access_type=IMPERSONATION if self.access == "impersonation" else DELEGATE,
                              default_timezone=UTC)
        self._account = account
        self._calendar = account.calendar
        return self._calendar

    # -- sync -----------------------------------------------------------------------------------

    def sync(self, horizon: Window, zone: dt.tzinfo) -> SyncResult:
        try:
            return self._sync(horizon, zone)
        except SourceError:
            raise
        except Exception as exc:
            mapped = self._map_error(exc)
            if isinstance(mapped, AuthError) or type(exc).__name__ == "ErrorInvalidSyncStateData":
                self.reset()
            raise mapped from exc

    def _sync(self, horizon: Window, zone: dt.tzinfo) -> SyncResult:
        from exchangelib import EWSDateTime
        from exchangelib.errors import ErrorInvalidSyncStateData
        from exchangelib.ewsdatetime import UTC as EWS_UTC

        calendar = self._connect()
        key = (horizon, str(zone))
        first = self._sync_state is None
        state = self._sync_state
        changes = 0
        try:
            for _page in range(MAX_SYNC_PAGES):
                self.requests += 1
                seen = 0
                for _change, _item in calendar.sync_items(sync_state=state, only_fields=["changekey"],
                                                          max_changes_returned=SYNC_PAGE):
                    seen += 1
                state = calendar.item_sync_state
                changes += seen
                if seen < SYNC_PAGE:
                    break
        except ErrorInvalidSyncStateData:
            log.info("%s: Exchange no longer knows our sync state; starting over", self.describe())
            self.reset()
            raise Unavailable(f"{self.describe()}: the sync state expired; the next sync starts over") from None
        if not first and changes == 0 and self._window == key:
            return SyncResult(occurrences=list(self._occurrences), changed=False, kind="incremental")
        start = EWSDateTime.fromtimestamp(horizon.start, tz=EWS_UTC)
        end = EWSDateTime.fromtimestamp(horizon.end, tz=EWS_UTC)
        self.requests += 1
        occurrences = []
        fetched = 0
        for item in calendar.view(start=start, end=end).only(*VIEW_FIELDS):
            if isinstance(item, Exception):
                raise item
            fetched += 1
            occ = occurrence_from_ews(item, zone)
            if occ is not None and horizon.overlaps(occ.start, occ.end):
                occurrences.append(occ)
        before = set(self._occurrences)
        changed = first or set(occurrences) != before
        self._sync_state, self._window, self._occurrences = state, key, occurrences
        return SyncResult(occurrences=list(occurrences), changed=changed, kind="full" if first else "incremental",
                          fetched=fetched, removed=len(before - set(occurrences)))

    def _map_error(self, exc: Exception) -> SourceError:
        from exchangelib import errors as e

        where = self.describe()
        name = type(exc).__name__
        if isinstance(exc, e.ErrorServerBusy):
            return Throttled(f"{where}: Exchange is busy (ErrorServerBusy); back off "
                             f"{exc.back_off if exc.back_off is not None else '?'} s", retry_after=exc.back_off)
        if isinstance(exc, e.UnauthorizedError):
            return AuthError(f"{where}: Exchange refused the service account's credentials ({self.auth}); "
                             f"check the credentials entry")
        if isinstance(exc, (e.ErrorImpersonateUserDenied, e.ErrorImpersonationDenied)):
            return AuthError(f"{where}: the service account may not impersonate this mailbox ({name}); give it "
                             f"the ApplicationImpersonation role or use access: delegate")
        if isinstance(exc, e.ErrorAccessDenied):
            return AuthError(f"{where}: access denied to the calendar ({name})")
        if isinstance(exc, (e.ErrorNonExistentMailbox, e.ErrorFolderNotFound, e.ErrorItemNotFound)):
            return NotFound(f"{where}: no such mailbox or calendar ({name}); check 'mailbox' in the config")
        if isinstance(exc, e.ErrorInvalidSyncStateData):
            return Unavailable(f"{where}: the sync state expired; the next sync starts over")
        if isinstance(exc, (e.RateLimitError,)):
            return Throttled(f"{where}: Exchange is throttling ({name})", retry_after=getattr(exc, "wait", None))
        if isinstance(exc, (e.ErrorMailboxStoreUnavailable, e.ErrorMailboxMoveInProgress, e.ErrorTimeoutExpired,
                            e.ErrorInternalServerTransientError, e.ErrorConnectionFailed,
                            e.ErrorTooManyObjectsOpened)):
            return Unavailable(f"{where}: Exchange is temporarily unavailable ({name})")
        if isinstance(exc, e.ResponseMessageError):
            return SourceError(f"{where}: Exchange answered {name}: {exc}"[:300])
        if isinstance(exc, (e.TransportError, e.CASError, OSError, TimeoutError)) or "requests" in type(exc).__module__:
            return Unavailable(f"{where}: cannot reach Exchange at {self.endpoint} ({name})")
        if isinstance(exc, (ValueError, KeyError, AttributeError, TypeError)):
            return BadData(f"{where}: unreadable answer ({name}: {exc})"[:300])
        return SourceError(f"{where}: {name}: {exc}"[:300])


_tls_mode = None


def _tls(verify: bool | str) -> None:
    """exchangelib's TLS settings are process-wide (``BaseProtocol.HTTP_ADAPTER_CLS``)."""
    global _tls_mode
    if verify is True or verify == _tls_mode:
        return
    import requests.adapters
    from exchangelib.protocol import BaseProtocol, NoVerifyHTTPAdapter

    if verify is False:
        BaseProtocol.HTTP_ADAPTER_CLS = NoVerifyHTTPAdapter
    else:
        bundle = verify

        class CaBundleAdapter(requests.adapters.HTTPAdapter):
            def cert_verify(self, conn, url, verify, cert):
                super().cert_verify(conn=conn, url=url, verify=bundle, cert=cert)

        BaseProtocol.HTTP_ADAPTER_CLS = CaBundleAdapter
    _tls_mode = verify
