"""What every calendar source is: one interface, one set of errors.

A source is one employee's calendar on one server.  It keeps what it needs
for incremental sync (sync token, ctag and ETags, change keys, delta link)
and the calendar's current occurrences; :meth:`CalendarSource.sync` brings
them up to date and returns all of them within the horizon.  The worker
(:mod:`.worker`) turns them into status intervals and writes them; a source
never touches the store.  ``tests/calendar/contract.py`` is the contract
every source passes, against a real server or a faithful local one.

Errors are the few kinds the worker acts on differently; their messages
name the server and what to do, never a credential.
"""
from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from .expand import Occurrence, Window


class SourceError(Exception):
    """A sync failed; the last known statuses stay in force.  ``retry_after``: seconds the
    server asked us to wait (``None``: our own backoff decides)."""

    retry_after: float | None = None


class AuthError(SourceError):
    """The server refused our credentials (or the application's consent / rights)."""


class NotFound(SourceError):
    """The calendar or mailbox does not exist (or is not visible to our account)."""


class Unavailable(SourceError):
    """The server could not be reached or failed (network, timeout, 5xx)."""


class Throttled(Unavailable):
    """The server asked us to slow down (HTTP 429/503, EWS ErrorServerBusy)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class BadData(SourceError):
    """The server answered with something we cannot read."""


@dataclass
class SyncResult:
    """``occurrences``: the calendar's complete current set within the horizon.
    ``changed``: whether it differs from what the previous sync returned (``False``
    lets the worker skip all further work).  ``kind``: ``"full"`` or ``"incremental"``.
    ``fetched``: objects/items transferred; ``removed``: deletions seen."""

    occurrences: list[Occurrence] = field(default_factory=list)
    changed: bool = True
    kind: str = "full"
    fetched: int = 0
    removed: int = 0


class CalendarSource(ABC):
    """One employee's calendar.  ``kind`` is ``caldav``, ``ews`` or ``graph``; the store
    source name is ``calendar:<kind>``."""

    kind: str = ""

    @property
    def name(self) -> str:
        return f"calendar:{self.kind}"

    @abstractmethod
    def sync(self, horizon: Window, zone: dt.tzinfo) -> SyncResult:
        """Bring the calendar up to date (incrementally when the server and our state
        allow) and return every occurrence overlapping ``horizon``.  Raises a
        :class:`SourceError`; the source's state is then as before the call, so the
        next attempt resumes from the last good sync."""

    def reset(self) -> None:
        """Forget incremental state: the next sync is a full one."""

    def close(self) -> None:
        """Release connections."""

    def describe(self) -> str:
        """Where this calendar is, for logs and status (no credentials)."""
        return self.kind
