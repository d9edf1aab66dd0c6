"""The CRM cache in the store, so the call path reads LMDB only.

One :class:`fastpath.records.CrmAnswerRec` per (company, caller), kept in the
caller's record of table ``caller`` (key: E.164 digits) beside their
call-history entry, so the call path reads both at once.  What it holds and
for how long:

* a found contact whose CRM user maps to an extension (``CRM_FOUND``), or to
  none (``CRM_UNMAPPED``): valid for ``ttl`` (default a day);
* "no CRM knows this caller" (``CRM_NOT_FOUND``, only when every source
  answered): valid for ``negative_ttl`` (default an hour), so unknown callers
  do not cost a CRM request per call.

Each answer is due for refresh at half its lifetime (``refresh_after``); the
refresher re-asks then, so answers are renewed well before ``expires`` and a
CRM outage shorter than half the TTL is invisible to callers.  Past
``expires`` the call path ignores an answer; :meth:`CrmCache.purge` deletes
those long expired.
"""
from __future__ import annotations

import time

from fastpath import records as rec

from .base import CrmAnswer

DEFAULT_TTL = 86_400
DEFAULT_NEGATIVE_TTL = 3_600


class CrmCache:
    def __init__(self, store, *, ttl: int = DEFAULT_TTL, negative_ttl: int = DEFAULT_NEGATIVE_TTL, clock=time.time):
        if ttl < 2 or negative_ttl < 2:
            raise ValueError("CRM cache lifetimes must be at least 2 seconds")
        self.store = store
        self.ttl = int(ttl)
        self.negative_ttl = int(negative_ttl)
        self.clock = clock
        self._resume: bytes | None = None      # where the last due() scan stopped

    def get(self, company: str, phone: str) -> rec.CrmAnswerRec | None:
        return self.store.crm_answer(company, phone)

    def record_for(self, answer: CrmAnswer | None, extension: str | None, now: int | None = None,
                   generation: int = 0) -> rec.CrmAnswerRec:
        """``generation``: the config generation ``extension`` was checked against (0: unknown)."""
        now = int(self.clock() if now is None else now)
        if answer is None:
            return rec.CrmAnswerRec(rec.CRM_NOT_FOUND, "", "", now, now + self.negative_ttl // 2,
                                    now + self.negative_ttl)
        status = rec.CRM_FOUND if extension else rec.CRM_UNMAPPED
        return rec.CrmAnswerRec(status, extension or "", answer.source, now, now + self.ttl // 2, now + self.ttl,
                                answer.user_id, answer.user_name, answer.user_email,
                                generation if extension else 0)

    def put(self, company: str, phone: str, answer: CrmAnswer | None, extension: str | None,
            now: int | None = None, generation: int = 0) -> rec.CrmAnswerRec:
        """Cache an answer (``None``: no CRM knows the caller) and return the record written."""
        record = self.record_for(answer, extension, now, generation)
        self.store.put_crm_answer(company, phone, record)
        return record

    def put_many(self, entries) -> int:
        """Write ``(company, phone, CrmAnswerRec)`` entries in one transaction (bulk loads, benchmarks)."""
        return self.store.put_crm_answers(entries)

    def forget(self, company: str, phone: str) -> None:
        self.store.put_crm_answer(company, phone, None)

    def forget_phone(self, phone: str) -> int:
        """Drop what is cached about ``phone`` for every company (a privacy request); returns how many."""
        return self.store.forget_crm_answers(phone)

    def _walk(self, txn, start: bytes | None):
        """``(phone key, {company: CrmAnswerRec})`` of each caller record from ``start`` on
        (callers with a call history but no cached answer included, with ``{}``)."""
        cursor = txn.cursor(db=self.store.db["caller"])
        positioned = cursor.set_range(start) if start else cursor.first()
        while positioned:
            key, value = cursor.item()
            answers = rec.caller_parts(value)[1]        # the history entry is not decoded
            yield bytes(key), {company: rec.decode_crm_answer(a) for company, a in answers.items()}
            positioned = cursor.next()

    def due(self, now: int | None = None, *, limit: int = 200, scan: int = 20_000):
        """Up to ``limit`` entries whose ``refresh_after`` has passed: ``[(company, phone, record)]``.

        Looks at no more than ``scan`` callers per call and resumes where the
        previous call stopped, so a big cache is walked round by round.
        """
        now = int(self.clock() if now is None else now)
        out = []
        looked = 0
        start, self._resume = self._resume, None        # None: start over next time
        with self.store.env.begin() as txn:
            for key, answers in self._walk(txn, start):
                if looked >= scan or len(out) >= limit:
                    self._resume = key
                    break
                looked += 1
                phone = key.decode()
                out += [(company, phone, a) for company, a in answers.items() if a.refresh_after <= now]
        return out

    def purge(self, now: int | None = None, *, grace: int = DEFAULT_TTL) -> int:
        """Delete answers expired more than ``grace`` seconds ago; returns how many."""
        now = int(self.clock() if now is None else now)
        with self.store.env.begin() as txn:
            stale = [(company, key.decode(), None) for key, answers in self._walk(txn, None)
                     for company, a in answers.items() if a.expires + grace < now]
        if stale:
            self.store.put_crm_answers(stale)
        return len(stale)
