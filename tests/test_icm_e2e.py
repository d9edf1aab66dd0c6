"""End to end through the fake switch: ICM sends returning callers to their manager.

Call history and CRM answers get into the store the way production writes them (the
store API the presence listener uses; the CRM refresher asking local HTTP CRMs); the
outbound server routes each call with the compiled engine.
"""
from __future__ import annotations

import pytest

from esl_app.executor import ExecutorSettings
from esl_app.icm_requests import CrmMissRequests
from esl_app.service import build_crm_refresher
from tests.conftest import at
from tests.crm.fake_crm import FakeServer, OwnerApi
from tests.fake_freeswitch import Outcome
from tests.test_outbound_e2e import (ACME_HEAD, Clock, Dialler, field, fake, logs, start_server,  # noqa: F401
                                     wire)

D = "acme.example"
COMPANY = ACME_HEAD + """\
employees:
  - {extension: 2001, name: Alice, role: admin}
  - {extension: 2002, name: Bob, mobile: "+447400100002"}
  - {extension: 2004, name: Dan}
  - {extension: 2010, name: Judy, role: receptionist}
departments:
  - {extension: 600, name: Reception, members: [2010], timeout: 20, no_answer: "voicemail:600"}
  - {extension: 601, name: Sales queue, members: [2004], timeout: 15, no_answer: "voicemail:601"}
numbers:
  - number: "+442079460001"
    route: "department:600"
    icm: {on_failure: "department:601", except: [2001], ring: manager_and_mobile, timeout: 25}
  - number: "+442079460002"
    route: "department:600"
    icm: {sources: [history, crm], default: "employee:2004"}
"""
NOW = at("2026-11-23 10:00")
CALLER = "+447911123456"
KEY = "k-7f3a"


def user(ext: str) -> str:
    return f"user/{ext}@{D}"


@pytest.fixture
def store(make_store):
    s = make_store(COMPANY)
    s.replace_live({"2001", "2002", "2004", "2010"}, {})
    return s


@pytest.fixture
def clock():
    return Clock(NOW)


@pytest.fixture
def dial(fake, start_server, logs):          # noqa: F811
    return Dialler(fake, start_server()[0], logs).call


def test_a_returning_caller_reaches_the_manager_and_mobile(dial, store):
    store.record_call("447911123456", "2002", int(NOW) - 86400, "in")
    call, line = dial("442079460001", caller=CALLER, legs={user("2002"): Outcome.ANSWER})
    (bridge,) = call.bridges
    assert user("2002") in bridge.dial_string and "sofia/gateway/carrier/+447400100002" in bridge.dial_string
    assert field(line, "outcome") == "answered"
    assert "ICM: last talked to ext 2002 on 2026-11-22 via call history" in field(line, "reasons")


def test_manager_busy_then_queue_then_back_to_the_normal_route(dial, store):
    store.record_call("447911123456", "2002", int(NOW) - 86400, "in")
    call, line = dial("442079460001", caller=CALLER, legs={
        user("2002"): Outcome.BUSY, "sofia/gateway/carrier/+447400100002": Outcome.BUSY,
        user("2004"): Outcome.NO_ANSWER, user("2010"): Outcome.ANSWER})
    rung = [b.dial_string for b in call.bridges]
    assert len(rung) == 3
    assert user("2002") in rung[0]                     # the manager (and mobile)
    assert rung[1].endswith(user("2004"))              # the ICM queue
    assert rung[2].endswith(user("2010"))              # the number's normal route: reception
    assert field(line, "outcome") == "answered"
    assert "back to the normal route of +442079460001" in field(line, "reasons")


def test_an_exception_extension_is_not_routed_to(dial, store):
    store.record_call("447911123456", "2001", int(NOW) - 86400, "in")
    call, line = dial("442079460001", caller=CALLER, legs={user("2010"): Outcome.ANSWER})
    assert [b.dial_string.endswith(user("2010")) for b in call.bridges] == [True]
    assert "an ICM exception: normal route" in field(line, "reasons")


def test_unknown_caller_goes_to_the_default_and_the_crm_down_is_skipped_for_the_next(start_server, fake, logs,
                                                                                     store, tmp_path):  # noqa: F811
    down = FakeServer(OwnerApi(KEY, {}))
    down.fail(*["stall"] * 5)                                   # accepts, never answers
    good = FakeServer(OwnerApi(KEY, {"447911123456": {"id": 77, "ext": "2002"}}))
    try:
        conf = tmp_path / "crm.yaml"
        conf.write_text(f"""
crm:
  acme:
    - {{type: http, name: slowcrm, url: "{down.url}/api/owner?phone={{phone}}", extension: /data/owner/ext,
        user_id: /data/owner/id, timeout_ms: 300, headers: {{X-Api-Key: {{secret: owner}}}}}}
    - {{type: http, name: goodcrm, url: "{good.url}/api/owner?phone={{phone}}", extension: /data/owner/ext,
        user_id: /data/owner/id, timeout_ms: 300, headers: {{X-Api-Key: {{secret: owner}}}}}}
""")
        refresher = build_crm_refresher(store, str(conf), environ={"SWITCHBOARD_SECRET_OWNER": KEY})
        settings = ExecutorSettings(gateway="carrier", on_first_plan=CrmMissRequests(store, refresher))
        server, _ = start_server(settings=settings)
        dial = Dialler(fake, server, logs).call

        call, line = dial("442079460002", caller=CALLER, legs={user("2004"): Outcome.ANSWER})
        assert call.bridges[0].dial_string.endswith(user("2004"))          # the default, at once
        assert "ICM: no manager known for this caller, default" in field(line, "reasons")

        done = refresher.run_once(now=int(NOW))
        assert done == {"asked": 1, "found": 1, "not_found": 0, "failed": 0}
        assert len(down.requests) == 1 and len(good.requests) == 1             # the slow one was given up on
        answer = store.crm_answer("acme", "447911123456")
        assert (answer.extension, answer.source) == ("2002", "goodcrm")

        call, line = dial("442079460002", caller=CALLER, legs={user("2002"): Outcome.ANSWER})
        assert call.bridges[0].dial_string.endswith(user("2002"))
        assert "ICM: ext 2002 is responsible for this caller in goodcrm" in field(line, "reasons")
    finally:
        down.close()
        good.close()
