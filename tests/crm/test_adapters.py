"""Each CRM adapter against a local server answering like the real API.

One contract (vdirsyncer's habit: written once, run against every adapter):
the responsible user of the contact with the caller's phone; ``None`` for an
unknown number; pagination; loose search results checked against the caller's
number; 401 → CrmAuthError, 429 + Retry-After → CrmRateLimited, 5xx →
CrmUnavailable, a stall past the 300 ms budget → CrmTimeout in time, a body
that is not JSON → CrmBadResponse, nobody listening → CrmUnavailable — and no
credential in any message.  Then what is particular to each CRM.
"""
from __future__ import annotations

import time

import pytest

from esl_app.crm.amocrm import AmoCrm
from esl_app.crm.base import CrmAnswer, PhoneReader
from esl_app.crm.bitrix24 import Bitrix24
from esl_app.crm.errors import (CrmAuthError, CrmBadResponse, CrmError, CrmRateLimited, CrmTimeout,
                                CrmUnavailable)
from esl_app.crm.generic import HttpJsonSource, parse_pointer, resolve_pointer
from esl_app.crm.http import Deadline, retry_after_seconds
from esl_app.crm.megaplan import Megaplan
from esl_app.crm.secrets import Secret

from .fake_crm import AmoApi, BitrixApi, FakeServer, MegaplanApi, OwnerApi

CALLER = "79161234567"
UNKNOWN = "79169999999"
PHONES = PhoneReader("RU", "495")
BUDGET = 0.3
SLACK = 0.15                          # scheduling slack on a loaded CI machine
ANNA = CrmAnswer("504141", "anna@mos.example", "Anna Ivanova", "")

AMO_TOKEN = "amo-long-lived-token-SECRET"
BITRIX_CODE = "k2n4b6v8SECRET"
MEGAPLAN_TOKEN = "static-token"
OWNER_KEY = "owner-key-SECRET"
SECRETS = (AMO_TOKEN, BITRIX_CODE, MEGAPLAN_TOKEN, OWNER_KEY)


def amo(**kw):
    api = AmoApi(AMO_TOKEN, [
        {"id": 1, "name": "Decoy one", "responsible_user_id": 11, "phones": ["+7 916 123-45-68"]},
        {"id": 2, "name": "Decoy two", "responsible_user_id": 12, "phones": ["+7 (916) 123 45 69", "123"]},
        {"id": 3, "name": "ООО Ромашка", "responsible_user_id": 504141, "phones": ["8 (916) 123-45-67"]},
    ], {504141: {"name": "Anna Ivanova", "email": "anna@mos.example"}})
    server = FakeServer(api)
    return server, api, AmoCrm(server.url, Secret(AMO_TOKEN, "amo"), phones=PHONES, timeout=BUDGET, **kw)


def bitrix(**kw):
    prefix = f"/rest/1/{BITRIX_CODE}/"
    api = BitrixApi(prefix, [
        {"ID": "7", "ASSIGNED_BY_ID": "0", "PHONE": ["+79161234567"]},          # a duplicate nobody owns
        {"ID": "8", "ASSIGNED_BY_ID": "1", "PHONE": ["+7 916 123-45-60"]},      # found by the loose search only
        {"ID": "9", "ASSIGNED_BY_ID": "504141", "PHONE": ["8 916 123 45 67"]},
    ], {"504141": {"ID": "504141", "NAME": "Anna", "LAST_NAME": "Ivanova", "EMAIL": "anna@mos.example",
                   "ACTIVE": True}})
    api.loose = True
    server = FakeServer(api)
    webhook = Secret(server.url + prefix, "bitrix webhook")
    return server, api, Bitrix24(webhook, phones=PHONES, timeout=BUDGET, **kw)


def megaplan(**kw):
    api = MegaplanApi([
        {"contentType": "ContractorHuman", "id": "1000010",
         "contactInfo": [{"contentType": "ContactInfo", "type": "phone", "value": "+7 916 123-45-68"}],
         "responsibles": [{"contentType": "Employee", "id": "1000002"}]},
        {"contentType": "ContractorCompany", "id": "1000011",
         "contactInfo": [{"contentType": "ContactInfo", "type": "email", "value": "79161234567@mail.example"}],
         "responsibles": []},
        {"contentType": "ContractorHuman", "id": "1000012",
         "contactInfo": [{"contentType": "ContactInfo", "type": "phone", "value": "8-916-123-45-67"}],
         "responsibles": [{"contentType": "Employee", "id": "504141"}]},
    ], {"504141": {"contentType": "Employee", "id": "504141", "name": "Anna Ivanova", "firstName": "Anna",
                   "lastName": "Ivanova",
                   "contactInfo": [{"contentType": "ContactInfo", "type": "email", "value": "anna@mos.example"}]}})
    server = FakeServer(api)
    creds = kw.pop("creds", {"token": Secret(MEGAPLAN_TOKEN, "megaplan")})
    return server, api, Megaplan(server.url, phones=PHONES, timeout=BUDGET, **creds, **kw)


def generic(**kw):
    api = OwnerApi(OWNER_KEY, {CALLER: {"id": 504141, "email": "anna@mos.example", "name": "Anna Ivanova"}})
    server = FakeServer(api)
    return server, api, HttpJsonSource(server.url + "/api/owner?phone={phone}", user_id="/data/owner/id",
                                       email="/data/owner/email", name_pointer="/data/owner/name",
                                       headers={"X-Api-Key": Secret(OWNER_KEY, "owner")}, timeout=BUDGET, **kw)


MAKERS = {"amocrm": amo, "bitrix24": bitrix, "megaplan": megaplan, "http": generic}


@pytest.fixture(params=list(MAKERS))
def crm(request):
    server, api, source = MAKERS[request.param]()
    yield request.param, server, api, source
    source.close()
    server.close()


def no_secret_in(*texts):
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


# --- the contract ---------------------------------------------------------------------

def test_finds_the_user_responsible_for_the_callers_contact(crm):
    kind, server, api, source = crm
    answer = source.find_responsible(CALLER)
    assert (answer.user_id, answer.user_email, answer.user_name, answer.source) == (
        ANNA.user_id, ANNA.user_email, ANNA.user_name, kind)


def test_an_unknown_number_is_none(crm):
    kind, server, api, source = crm
    assert source.find_responsible(UNKNOWN) is None


def test_loose_search_results_are_checked_and_later_pages_are_read(crm):
    """CRM searches match parts of numbers; only the contact whose phone *is* the caller's counts."""
    kind, server, api, source = crm
    if kind == "http":
        pytest.skip("the generic source asks for one number and gets one answer")
    assert source.find_responsible(CALLER).user_id == "504141"
    pages = [r for r in server.requests if r.path.endswith(("/contacts", "crm.contact.list.json", "/contractor"))]
    assert len(pages) == 2


def test_a_refused_credential_is_an_auth_error(crm):
    kind, server, api, source = crm
    server.fail("401")
    with pytest.raises(CrmAuthError) as caught:
        source.find_responsible(CALLER)
    assert caught.value.status == 401 and caught.value.source == kind
    no_secret_in(str(caught.value), repr(caught.value))


def test_a_rate_limit_carries_the_servers_retry_after(crm):
    kind, server, api, source = crm
    server.fail("429")
    with pytest.raises(CrmRateLimited) as caught:
        source.find_responsible(CALLER)
    assert caught.value.retry_after == 7 and caught.value.transient


@pytest.mark.parametrize("status", ["500", "502"])
def test_server_errors_mean_unavailable(crm, status):
    kind, server, api, source = crm
    server.fail(status)
    with pytest.raises(CrmUnavailable) as caught:
        source.find_responsible(CALLER)
    assert caught.value.status == int(status) and not isinstance(caught.value, CrmTimeout)


def test_a_stalled_server_times_out_within_the_budget(crm):
    """The handler stalls for 2 s; the adapter gives up after 300 ms and the caller sees a timeout."""
    kind, server, api, source = crm
    server.fail("stall")
    started = time.monotonic()
    with pytest.raises(CrmTimeout) as caught:
        source.find_responsible(CALLER)
    took = time.monotonic() - started
    assert BUDGET - 0.05 <= took <= BUDGET + SLACK, took
    assert "300 ms" in str(caught.value)


def test_a_stall_on_a_later_request_still_ends_within_the_budget(crm):
    """The budget covers all requests of one lookup, not each of them."""
    kind, server, api, source = crm
    if kind == "http":
        pytest.skip("one request only")
    server.fail(None, "stall")
    started = time.monotonic()
    with pytest.raises(CrmTimeout):
        source.find_responsible(CALLER)
    assert time.monotonic() - started <= BUDGET + SLACK


def test_a_body_that_is_not_json_is_a_bad_response(crm):
    kind, server, api, source = crm
    server.fail("garbage")
    with pytest.raises(CrmBadResponse):
        source.find_responsible(CALLER)


def test_nobody_listening_is_unavailable_at_once(crm):
    kind, server, api, source = crm
    source.close()
    server.close()
    started = time.monotonic()
    with pytest.raises(CrmUnavailable):
        source.find_responsible(CALLER)
    assert time.monotonic() - started < BUDGET + SLACK


def test_a_shorter_deadline_from_the_caller_wins(crm):
    kind, server, api, source = crm
    server.fail("stall")
    started = time.monotonic()
    with pytest.raises(CrmTimeout):
        source.find_responsible(CALLER, deadline=Deadline(0.1))
    assert time.monotonic() - started <= 0.1 + SLACK


def test_connections_are_kept_alive_between_lookups(crm):
    kind, server, api, source = crm
    source.find_responsible(CALLER)
    source.find_responsible(UNKNOWN)
    assert len(server.requests) >= 2 and server.connections == 1
    assert len(source.http._pool.idle) == 1, "one connection, back in the pool after each lookup"


def test_a_kept_alive_connection_the_server_dropped_is_replaced_transparently(crm):
    kind, server, api, source = crm
    server.fail(*["hangup"] * 10)            # every answer, then the server closes the connection
    assert source.find_responsible(CALLER).user_id == "504141"
    assert source.find_responsible(CALLER).user_id == "504141"
    assert server.connections >= 2


def test_only_e164_digits_are_looked_up(crm):
    kind, server, api, source = crm
    with pytest.raises(ValueError):
        source.find_responsible("+79161234567")
    assert not server.requests


# --- amoCRM ---------------------------------------------------------------------------

def test_amocrm_sends_the_bearer_token_and_searches_the_national_number():
    server, api, source = amo()
    try:
        source.find_responsible(CALLER)
        first = server.requests[0]
        assert first.headers["authorization"] == f"Bearer {AMO_TOKEN}"
        assert first.args["query"] == ["9161234567"] and first.args["page"] == ["1"]
        assert server.requests[-1].path == "/api/v4/users/504141"
    finally:
        source.close()
        server.close()


def test_amocrm_wrong_token_is_an_auth_error_without_the_token():
    server, api, _ = amo()
    source = AmoCrm(server.url, Secret("wrong-" + AMO_TOKEN, "amo"), phones=PHONES)
    try:
        with pytest.raises(CrmAuthError) as caught:
            source.find_responsible(CALLER)
        no_secret_in(str(caught.value))
    finally:
        source.close()
        server.close()


def test_amocrm_users_are_cached_between_lookups():
    server, api, source = amo()
    try:
        source.find_responsible(CALLER)
        source.find_responsible(CALLER)
        assert sum(r.path.startswith("/api/v4/users/") for r in server.requests) == 1
    finally:
        source.close()
        server.close()


def test_amocrm_contact_without_a_responsible_user_is_none_and_a_deleted_user_keeps_the_id():
    server, api, source = amo()
    try:
        api.contacts[2]["responsible_user_id"] = 0
        assert source.find_responsible(CALLER) is None
        api.contacts[2]["responsible_user_id"] = 777
        assert source.find_responsible(CALLER) == CrmAnswer("777", "", "", "amocrm", contact_id="3")
    finally:
        source.close()
        server.close()


def test_amocrm_reads_no_more_than_max_pages():
    server, api, source = amo(max_pages=1)
    try:
        assert source.find_responsible(CALLER) is None
    finally:
        source.close()
        server.close()


# --- Bitrix24 -------------------------------------------------------------------------

def test_bitrix24_asks_findbycomm_then_the_contacts_then_the_user():
    server, api, source = bitrix()
    try:
        source.find_responsible(CALLER)
        methods = [r.path.rsplit("/", 1)[1] for r in server.requests]
        assert methods == ["crm.duplicate.findbycomm.json", "crm.contact.list.json", "crm.contact.list.json",
                           "user.get.json"]
        first = server.requests[0].form
        assert "+79161234567" in first["values[]"] and "89161234567" in first["values[]"]
        assert server.requests[2].form["start"] == ["2"]
    finally:
        source.close()
        server.close()


def test_bitrix24_query_limit_exceeded_is_a_rate_limit():
    """Bitrix24 answers 503 QUERY_LIMIT_EXCEEDED when over 2 requests a second."""
    server, api, source = bitrix()
    try:
        api.limit_exceeded = 1
        with pytest.raises(CrmRateLimited) as caught:
            source.find_responsible(CALLER)
        assert caught.value.retry_after == 1.0 and caught.value.status == 503
        assert source.find_responsible(CALLER).user_id == "504141"
    finally:
        source.close()
        server.close()


def test_bitrix24_expired_token_and_a_wrong_webhook_are_auth_errors_that_never_show_the_webhook():
    server, api, source = bitrix()
    wrong = Bitrix24(Secret(server.url + "/rest/1/wrong" + BITRIX_CODE + "/", "bitrix"), phones=PHONES)
    try:
        api.expired = True
        with pytest.raises(CrmAuthError, match="expired_token") as caught:
            source.find_responsible(CALLER)
        no_secret_in(str(caught.value))
        api.expired = False
        with pytest.raises(CrmAuthError, match="NO_AUTH_FOUND") as caught:
            wrong.find_responsible(CALLER)
        no_secret_in(str(caught.value), repr(wrong))
    finally:
        wrong.close()
        source.close()
        server.close()


def test_bitrix24_with_an_oauth_token_sends_it_as_auth():
    prefix = "/rest/"
    api = BitrixApi(prefix, [{"ID": "9", "ASSIGNED_BY_ID": "504141", "PHONE": ["+79161234567"]}],
                    {"504141": {"ID": "504141", "NAME": "Anna", "LAST_NAME": "", "EMAIL": "a@x"}})
    server = FakeServer(api)
    source = Bitrix24(base_url=server.url + prefix, access_token=Secret("oauth-SECRET", "b24"), phones=PHONES)
    try:
        assert source.find_responsible(CALLER).user_name == "Anna"
        assert all(r.form["auth"] == ["oauth-SECRET"] for r in server.requests)
    finally:
        source.close()
        server.close()


def test_bitrix24_unknown_method_is_a_crm_error():
    server, api, source = bitrix()
    try:
        with pytest.raises(CrmError, match="ERROR_METHOD_NOT_FOUND"):
            source.call("crm.nothing", [], Deadline(BUDGET))
    finally:
        source.close()
        server.close()


# --- Megaplan -------------------------------------------------------------------------

def test_megaplan_sends_the_query_as_json_and_pages_with_page_after():
    server, api, source = megaplan()
    try:
        source.find_responsible(CALLER)
        lists = [r for r in server.requests if r.path == "/api/v3/contractor"]
        import json
        from urllib.parse import unquote
        first, second = (json.loads(unquote(r.query)) for r in lists)
        assert first["q"] == "9161234567" and "pageAfter" not in first
        assert second["pageAfter"] == {"contentType": "ContractorCompany", "id": "1000011"}
    finally:
        source.close()
        server.close()


def test_megaplan_logs_in_with_a_password_and_again_when_the_session_expires():
    creds = {"username": Secret("robot", "u"), "password": Secret("pw", "p")}
    server, api, source = megaplan(creds=creds)
    try:
        assert source.find_responsible(CALLER).user_id == "504141"
        assert api.logins == 1
        api.valid_tokens.discard("session-1")            # the session expired on the server
        assert source.find_responsible(CALLER).user_id == "504141"
        assert api.logins == 2
    finally:
        source.close()
        server.close()


def test_megaplan_wrong_password_is_an_auth_error():
    server, api, source = megaplan(creds={"username": Secret("robot", "u"), "password": Secret("nope", "p")})
    try:
        with pytest.raises(CrmAuthError, match="refused") as caught:
            source.find_responsible(CALLER)
        assert "nope" not in str(caught.value)
    finally:
        source.close()
        server.close()


def test_megaplan_uses_included_employees_without_asking_again():
    server, api, source = megaplan()
    api.include_employees = True
    try:
        assert source.find_responsible(CALLER).user_email == "anna@mos.example"
        assert not any(r.path.startswith("/api/v3/employee/") for r in server.requests)
    finally:
        source.close()
        server.close()


# --- the generic HTTP/JSON source ------------------------------------------------------

def test_generic_source_follows_json_pointers_including_escapes_and_extension():
    server, api, _ = generic()
    source = HttpJsonSource(server.url + "/api/owner?phone={phone}", user_id="/data/a~1b/~0x",
                            extension="/data/owner/ext", headers={"X-Api-Key": Secret(OWNER_KEY, "k")})
    try:
        api.owners[CALLER]["ext"] = 2003
        answer = source.find_responsible(CALLER)
        assert (answer.user_id, answer.extension, answer.user_email) == ("504141", "2003", "")
    finally:
        source.close()
        server.close()


def test_generic_source_without_its_key_is_refused():
    server, api, _ = generic()
    source = HttpJsonSource(server.url + "/api/owner?phone={phone}", user_id="/data/owner/id")
    try:
        with pytest.raises(CrmAuthError):
            source.find_responsible(CALLER)
    finally:
        source.close()
        server.close()


def test_generic_source_refuses_an_object_where_a_value_belongs():
    server, api, _ = generic()
    source = HttpJsonSource(server.url + "/api/owner?phone={phone}", user_id="/data/owner",
                            headers={"X-Api-Key": Secret(OWNER_KEY, "k")})
    try:
        with pytest.raises(CrmBadResponse, match="user_id pointer"):
            source.find_responsible(CALLER)
    finally:
        source.close()
        server.close()


def test_json_pointers_follow_rfc_6901():
    doc = {"a": [{"b/c": 1, "d~e": 2}], "": 3}
    assert resolve_pointer(doc, parse_pointer("/a/0/b~1c")) == 1
    assert resolve_pointer(doc, parse_pointer("/a/0/d~0e")) == 2
    assert resolve_pointer(doc, parse_pointer("/")) == 3
    assert resolve_pointer(doc, parse_pointer("")) is doc
    from esl_app.crm.generic import _MISSING
    assert resolve_pointer(doc, parse_pointer("/a/01")) is _MISSING
    assert resolve_pointer(doc, parse_pointer("/a/5")) is _MISSING
    with pytest.raises(ValueError):
        parse_pointer("a/b")


def test_retry_after_is_read_as_seconds_or_an_http_date():
    assert retry_after_seconds("120") == 120
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470) == 10
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
