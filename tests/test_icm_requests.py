"""Which calls make Switchboard ask the CRMs about their caller (never on the call path)."""
from __future__ import annotations

import pytest

from esl_app.executor import CallInfo
from esl_app.icm_requests import CrmMissRequests
from fastpath import engine, records as rec

from .test_icm_e2e import COMPANY, NOW


class Queue:
    def __init__(self, room=True):
        self.asked, self.room = [], room

    def request(self, company, phone):
        if self.room:
            self.asked.append((company, phone))
        return self.room


def call(caller):
    return CallInfo("a34e790d-d27e-4eb0-b32c-bd866bf73e95", "", caller, caller, "", False)


@pytest.fixture
def store(make_store):
    return make_store(COMPANY)


def ask(store, called, caller, queue):
    plan = engine.decide(store, called, caller, NOW)
    return CrmMissRequests(store, queue)(call(caller), plan)


def test_an_unknown_caller_of_a_crm_number_is_queued_in_e164(store):
    queue = Queue()
    assert ask(store, "442079460002", "07911123456", queue) is True
    assert queue.asked == [("acme", "447911123456")]


@pytest.mark.parametrize("called, caller", [
    ("2002", "+447911123456"),               # no ICM step at all
    ("442079460002", "anonymous"),
    ("442079460002", ""),
])
def test_nothing_is_queued_where_no_crm_could_help(store, called, caller):
    queue = Queue()
    assert ask(store, called, caller, queue) is False and queue.asked == []


def test_a_fresh_cached_answer_is_not_asked_again_but_a_due_one_is(store):
    queue = Queue()
    store.put_crm_answer("acme", "447911123456", rec.CrmAnswerRec(rec.CRM_NOT_FOUND, "", "", int(NOW) - 60,
                                                                  int(NOW) + 3600, int(NOW) + 7200))
    assert ask(store, "442079460002", "+447911123456", queue) is False
    store.put_crm_answer("acme", "447911123456", rec.CrmAnswerRec(rec.CRM_NOT_FOUND, "", "", int(NOW) - 7200,
                                                                  int(NOW) - 60, int(NOW) + 3600))
    assert ask(store, "442079460002", "+447911123456", queue) is True


def test_a_full_queue_is_reported_not_raised(store, caplog):
    assert ask(store, "442079460002", "+447911123456", Queue(room=False)) is False
    assert "queue full" in caplog.text


def test_a_caller_ICM_found_is_not_queued(store):
    store.record_call("447911123456", "2002", int(NOW) - 60, "in")
    queue = Queue()
    assert ask(store, "442079460002", "+447911123456", queue) is False and queue.asked == []
