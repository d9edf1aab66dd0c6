"""After a call whose ICM step found no manager: have the CRMs asked about the caller.

Routing never waits on a CRM: the call takes its default or normal route at once.
This hook runs once the executor has the first plan; when that plan says ICM found
nobody (``fastpath.icm_lookup.NO_MANAGER``) and the number's ICM step asks the CRM,
it queues the caller (E.164, read with the company's dialling rules) for the CRM
refresher, unless a fresh answer is already cached.  The refresher asks the sources
in order, each within its timeout, skipping those that are down, and caches the
answer -- the caller's next call reaches their manager.
"""
from __future__ import annotations

import logging

from fastpath import records as rec
from fastpath.errors import StoreError
from fastpath.icm_lookup import NO_MANAGER, caller_key

log = logging.getLogger("switchboard.icm")


class CrmMissRequests:
    """``hook(call, plan)`` for :class:`esl_app.executor.ExecutorSettings`."""

    def __init__(self, store, refresher, clock=None):
        self.store = store
        self.refresher = refresher
        self.clock = clock
        self.requested = 0

    def __call__(self, call, plan) -> bool:
        """True when the caller was queued for the CRM refresher."""
        steps = plan.steps
        if not steps or not call.caller or NO_MANAGER not in steps[0].reason:
            return False
        with self.store.env.begin() as txn:
            raw = txn.get(plan.called.encode(), db=self.store.db["number"])
        if raw is None:
            return False
        number = rec.decode_number(plan.called, raw)
        if number.icm is None or "crm" not in number.icm.sources:
            return False
        try:
            phone = caller_key(self.store, number.company, call.caller)     # read as the lookup reads it
        except StoreError:                  # no rules for the company: nothing ICM could file the caller under
            return False
        if phone is None:
            return False
        cached = self.store.crm_answer(number.company, phone)
        now = int(self.clock() if self.clock else plan.at)
        if cached is not None and now < cached.refresh_after:
            return False
        queued = self.refresher.request(number.company, phone)
        if queued:
            self.requested += 1
        else:
            log.warning("CRM refresher queue full: caller +%s of %s not looked up", phone, number.company)
        return queued
