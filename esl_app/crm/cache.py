"""The CRM cache in the store (table ``crm``), so the call path reads LMDB only.

One record per (company, caller): :class:`fastpath.records.CrmAnswerRec`,
key ``b"<company>/<E.164 digits>"``.  What it holds and for how long:

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
        items = sorted((rec.crm_key(c, p), rec.encode_crm_answer(r)) for c, p, r in entries)
        with self.store.env.begin(write=True) as txn:
            cursor = txn.cursor(db=self.store.db["crm"])
            consumed, added = cursor.putmulti(items)
        return added

    def forget(self, company: str, phone: str) -> None:
        self.store.put_crm_answer(company, phone, None)

    def forget_phone(self, phone: str) -> int:
        """Drop what is cached about ``phone`` for every company (a privacy request); returns how many."""
        suffix = b"/" + phone.encode()
        db = self.store.db["crm"]
        with self.store.env.begin(write=True) as txn:
            keys = [bytes(k) for k in txn.cursor(db=db).iternext(keys=True, values=False) if k.endswith(suffix)]
            for key in keys:
                txn.delete(key, db=db)
        return len(keys)

    def due(self, now: int | None = None, *, limit: int = 200, scan: int = 20_000):
        """Up to ``limit`` entries whose ``refresh_after`` has passed: ``[(company, phone, record)]``.

        Looks at no more than ``scan`` records per call and resumes where the
        previous call stopped, so a big cache is walked round by round.
        """
        now = int(self.clock() if now is None else now)
        out = []
        db = self.store.db["crm"]
        with self.store.env.begin() as txn:
            cursor = txn.cursor(db=db)
            positioned = cursor.set_range(self._resume) if self._resume else cursor.first()
            looked = 0
            while positioned and looked < scan and len(out) < limit:
                key, value = cursor.item()
                looked += 1
                record = rec.decode_crm_answer(value)
                if record.refresh_after <= now:
                    company, _, phone = bytes(key).decode().partition("/")
                    out.append((company, phone, record))
                positioned = cursor.next()
            self._resume = bytes(cursor.key()) if positioned else None      # None: start over next time
        return out

    def purge(self, now: int | None = None, *, grace: int = DEFAULT_TTL) -> int:
        """Delete answers expired more than ``grace`` seconds ago; returns how many."""
        now = int(self.clock() if now is None else now)
        stale = []
        with self.store.env.begin() as txn:
            for key, value in txn.cursor(db=self.store.db["crm"]):
                if rec.decode_crm_answer(value).expires + grace < now:
                    stale.append(key)
        if stale:
            with self.store.env.begin(write=True) as txn:
                for key in stale:
                    txn.delete(key, db=self.store.db["crm"])
        return len(stale)
