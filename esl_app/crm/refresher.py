"""The refresher: keeps cached CRM answers fresh before they expire, off the call path.

It runs in its own native thread (its LMDB commits and HTTP requests must not
stall the gevent hub; the service does no monkey-patching), and each pass:

1. asks about callers queued with :meth:`CrmRefresher.request` (a caller the
   call path found no answer for, or one a CRM webhook said changed — see
   :meth:`CrmRefresher.invalidate`), newest first;
2. re-asks about cached answers past their ``refresh_after`` (half their
   lifetime), a bounded batch per pass.

A source that answers 429 or 5xx, times out or refuses the credentials is
skipped with capped exponential backoff (the resolver's :class:`Backoff`,
honouring ``Retry-After``), so a struggling CRM gets fewer requests, not
more; the other sources go on.  The thread wakes every ``interval`` seconds,
at once when something is queued, and stops within one request's budget.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

from .cache import CrmCache
from .resolver import CrmResolver

log = logging.getLogger("switchboard.crm")


class CrmRefresher:
    def __init__(self, resolver: CrmResolver, cache: CrmCache, *, interval: float = 30.0, batch: int = 200,
                 budget: float = 2.0, max_queue: int = 10_000):
        self.resolver = resolver
        self.cache = cache
        self.interval = interval
        self.batch = batch
        self.budget = budget                 # per caller; background work can be patient
        self.max_queue = max_queue
        self._queue: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = {"passes": 0, "asked": 0, "found": 0, "not_found": 0, "failed": 0, "last_pass": 0.0,
                      "errors": 0}

    # -- feeding --------------------------------------------------------------------

    def request(self, company: str, phone: str) -> bool:
        """Queue a caller to ask the CRMs about; False when the queue is full (the caller is dropped)."""
        with self._lock:
            key = (company, phone)
            if key in self._queue:
                self._queue.move_to_end(key)
            elif len(self._queue) >= self.max_queue:
                return False
            else:
                self._queue[key] = None
        self._wake.set()
        return True

    def invalidate(self, company: str, phone: str) -> bool:
        """A CRM said this contact changed (webhook): ask again soon, keep serving the old answer meanwhile."""
        return self.request(company, phone)

    def _take_queued(self, limit: int) -> list[tuple[str, str]]:
        with self._lock:
            out = []
            while self._queue and len(out) < limit:
                out.append(self._queue.popitem(last=True)[0])
            return out

    # -- one pass -------------------------------------------------------------------

    def run_once(self, now: int | None = None) -> dict:
        """One pass over the queue and the due answers; returns what it did."""
        done = {"asked": 0, "found": 0, "not_found": 0, "failed": 0}
        work = self._take_queued(self.batch)
        seen = set(work)
        if len(work) < self.batch:
            for company, phone, _ in self.cache.due(now, limit=self.batch - len(work)):
                if (company, phone) not in seen and company in self.resolver.sources:
                    work.append((company, phone))
                    seen.add((company, phone))
        for company, phone in work:
            if self._stop.is_set():
                break
            try:
                resolution = self.resolver.resolve(company, phone, budget=self.budget, use_cache=False, now=now)
            except Exception:                 # isolated: one bad entry must not stop the worker
                log.exception("CRM refresh of a caller of %s failed", company)
                self.stats["errors"] += 1
                continue
            done["asked"] += 1
            outcomes = {a.outcome for a in resolution.attempts}
            if outcomes & {"found", "unmapped"}:
                done["found"] += 1
            elif resolution.attempts and outcomes <= {"not found"}:
                done["not_found"] += 1
            else:
                done["failed"] += 1
        self.stats["passes"] += 1
        self.stats["last_pass"] = time.time()
        for k, v in done.items():
            self.stats[k] += v
        return done

    # -- the thread -----------------------------------------------------------------

    def start(self) -> "CrmRefresher":
        if self._thread is not None:
            raise RuntimeError("the CRM refresher is already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="crm-refresher", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()              # a request() during the pass sets it again: no lost wake-up
            try:
                self.run_once()
            except Exception:
                log.exception("CRM refresher pass failed")
                self.stats["errors"] += 1
            with self._lock:
                more = bool(self._queue)
            if not more:
                self._wake.wait(timeout=self.interval)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the thread; True when it ended within ``timeout``."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def health(self) -> dict:
        alive = self._thread is not None and self._thread.is_alive()
        with self._lock:
            queued = len(self._queue)
        return {"status": "ok" if alive else "stopped", "queued": queued, **self.stats}
