"""Asking a company's CRM sources, in order, within one time budget; caching what they say.

:meth:`CrmResolver.resolve` is what the refresher runs for each caller due for
refresh, and what ``switchboard icm lookup`` can run to show which source
answered and why.  Sources are asked in the configured order until one knows
the caller:

* a source that is down, slow, rate-limited or refuses the credentials is
  skipped (and remembered in :class:`Backoff`, so the next callers do not wait
  for it either), never stops the others;
* the first source that finds the contact wins; its CRM user is mapped to an
  extension (:class:`ExtensionMapper`) and the answer cached;
* "not found" is cached only when *every* source answered; when one failed,
  the old cached answer (if any) stays.

The call path never runs this: it reads the cache (``fastpath.icm_lookup``).
"""
from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field

from fastpath import records as rec

from .base import CrmSource
from .cache import CrmCache
from .errors import CrmAuthError, CrmError, CrmRateLimited
from .http import Deadline
from .mapping import ExtensionMapper

log = logging.getLogger("switchboard.crm")


class Backoff:
    """Capped exponential backoff per source, honouring the server's ``Retry-After`` (capped too)."""

    def __init__(self, *, base: float = 1.0, cap: float = 300.0, auth_delay: float = 300.0, jitter: float = 0.1,
                 clock=time.monotonic, rng: random.Random | None = None):
        self.base = base
        self.cap = cap
        self.auth_delay = auth_delay
        self.jitter = jitter
        self.clock = clock
        self.rng = rng or random.Random()
        self._lock = threading.Lock()
        self._state: dict[str, tuple[int, float]] = {}       # source -> (failures in a row, blocked until)

    def blocked_for(self, source: str) -> float:
        """Seconds until ``source`` may be asked again (0: now)."""
        with self._lock:
            state = self._state.get(source)
        return max(0.0, state[1] - self.clock()) if state else 0.0

    def failed(self, source: str, error: CrmError) -> float:
        """Record a failure; returns the delay chosen."""
        with self._lock:
            failures = self._state.get(source, (0, 0.0))[0] + 1
            delay = min(self.cap, self.base * 2 ** (failures - 1))
            if isinstance(error, CrmRateLimited) and error.retry_after is not None:
                delay = min(self.cap, max(delay, error.retry_after))
            elif isinstance(error, CrmAuthError):
                delay = min(self.cap, max(delay, self.auth_delay))
            if self.jitter:
                delay = min(self.cap, delay * (1 + self.rng.uniform(0, self.jitter)))
            self._state[source] = (failures, self.clock() + delay)
            return delay

    def succeeded(self, source: str) -> None:
        with self._lock:
            self._state.pop(source, None)


@dataclass
class Attempt:
    source: str
    outcome: str            # found | unmapped | not found | skipped | timeout | rate limited | unavailable | ...
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Resolution:
    company: str
    phone: str
    record: rec.CrmAnswerRec | None          # what the cache holds now
    attempts: list[Attempt] = field(default_factory=list)
    from_cache: bool = False

    def explain(self) -> str:
        lines = []
        if self.from_cache and self.record is not None:
            lines.append(f"cached answer from {self.record.source or 'the CRM sources'} "
                         f"(fetched at {self.record.fetched}, fresh until {self.record.refresh_after})")
        for a in self.attempts:
            lines.append(f"{a.source}: {a.outcome}" + (f" ({a.detail})" if a.detail else "")
                         + (f" in {a.seconds * 1000:.0f} ms" if a.seconds else ""))
        r = self.record
        if r is None:
            lines.append("no answer cached")
        elif r.status == rec.CRM_FOUND:
            lines.append(f"→ ext {r.extension} ({r.user_name or r.user_id} in {r.source})")
        elif r.status == rec.CRM_UNMAPPED:
            lines.append(f"→ CRM user {r.user_name or r.user_id} in {r.source} has no extension")
        else:
            lines.append("→ no CRM knows this caller")
        return "\n".join(lines)


_OUTCOMES = {"crm_timeout": "timeout", "crm_rate_limited": "rate limited", "crm_unavailable": "unavailable",
             "crm_auth": "credentials refused", "crm_bad_response": "bad response"}


class CrmResolver:
    def __init__(self, sources: dict[str, list[CrmSource]], mappers: dict[str, ExtensionMapper], cache: CrmCache,
                 *, budget: float = 0.3, backoff: Backoff | None = None):
        self.sources = sources
        self.mappers = mappers
        self.cache = cache
        self.budget = budget
        self.backoff = backoff or Backoff()

    def companies(self) -> list[str]:
        return list(self.sources)

    def resolve(self, company: str, phone: str, *, budget: float | None = None, use_cache: bool = True,
                now: int | None = None) -> Resolution:
        """Ask the company's sources about ``phone`` (E.164 digits) and cache the outcome."""
        now = int(self.cache.clock() if now is None else now)
        if use_cache:
            cached = self.cache.get(company, phone)
            if cached is not None and now < cached.refresh_after:
                return Resolution(company, phone, cached, from_cache=True)
        deadline = Deadline(self.budget if budget is None else budget)
        attempts: list[Attempt] = []
        everyone_answered = True
        for source in self.sources.get(company, ()):
            key = f"{company}/{source.name}"
            wait = self.backoff.blocked_for(key)
            if wait > 0:
                attempts.append(Attempt(source.name, "skipped", f"backing off for {wait:.0f} s"))
                everyone_answered = False
                continue
            if deadline.expired():
                attempts.append(Attempt(source.name, "skipped", "no time left"))
                everyone_answered = False
                continue
            started = time.monotonic()
            try:
                answer = source.find_responsible(phone, deadline=deadline.sub(source.timeout))
            except CrmError as exc:
                delay = self.backoff.failed(key, exc)
                attempts.append(Attempt(source.name, _OUTCOMES.get(exc.error_id, "error"),
                                        f"{exc}; not asked again for {delay:.0f} s", time.monotonic() - started))
                log.warning("CRM %s for %s: %s (next try in %.0f s)", source.name, company, exc, delay)
                everyone_answered = False
                continue
            except Exception as exc:        # a bug in one adapter must not stop the others
                delay = self.backoff.failed(key, CrmError(source.name, type(exc).__name__))
                attempts.append(Attempt(source.name, "error", f"{type(exc).__name__} in the adapter",
                                        time.monotonic() - started))
                log.exception("CRM %s for %s failed unexpectedly (next try in %.0f s)", source.name, company, delay)
                everyone_answered = False
                continue
            self.backoff.succeeded(key)
            took = time.monotonic() - started
            if answer is None:
                attempts.append(Attempt(source.name, "not found", "", took))
                continue
            mapper = self.mappers.get(company)
            extension, generation = mapper.map(answer) if mapper is not None else (None, 0)
            record = self.cache.put(company, phone, answer, extension, now, generation)
            attempts.append(Attempt(source.name, "found" if extension else "unmapped",
                                    f"user {answer.user_id}" + (f" ({answer.user_email})" if answer.user_email else ""),
                                    took))
            return Resolution(company, phone, record, attempts)
        if everyone_answered:
            return Resolution(company, phone, self.cache.put(company, phone, None, None, now), attempts)
        return Resolution(company, phone, self.cache.get(company, phone), attempts)
