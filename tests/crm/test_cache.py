"""The CRM cache in the store, the resolver, the refresher, user mapping, secrets and source config."""
from __future__ import annotations

import json
import logging
import os
import threading
import time

import pytest

from esl_app.crm.base import CrmAnswer, CrmSource, PhoneReader
from esl_app.crm.cache import CrmCache
from esl_app.crm.config import build_company_sources
from esl_app.crm.errors import (CrmAuthError, CrmConfigError, CrmRateLimited, CrmTimeout, CrmUnavailable)
from esl_app.crm.mapping import ExtensionMapper
from esl_app.crm.refresher import CrmRefresher
from esl_app.crm.resolver import Backoff, CrmResolver
from esl_app.crm.secrets import Secret, SecretStore, env_name
from fastpath import icm_lookup
from fastpath import records as rec
from fastpath.store import Store

from ..conftest import config_from_yaml
from .fake_crm import AmoApi, FakeServer

COMPANY = """
id: mos
name: Moscow office
country: RU
city_code: "495"
timezone: Europe/Moscow
employees:
  - {extension: 2001, name: Anna, email: Anna@Mos.Example}
  - {extension: 2002, name: Boris, email: boris@mos.example}
  - {extension: 2003, name: Vera}
"""
NOW = 1_800_000_000
CALLER = "79161234567"


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "store"))
    config = config_from_yaml(COMPANY)
    s.load_config(config)
    yield s
    s.close()


class FakeSource(CrmSource):
    """Scripted outcomes, one per call: a CrmAnswer, None, an exception, or ("sleep", seconds)."""

    kind = "fake"

    def __init__(self, name, *outcomes, timeout=0.3):
        super().__init__(name=name, timeout=timeout)
        self.outcomes = list(outcomes)
        self.calls = 0

    def _find(self, phone, deadline):
        self.calls += 1
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, tuple) and outcome[0] == "sleep":
            time.sleep(min(outcome[1], max(deadline.remaining(), 0)))
            raise CrmTimeout(self.name, "no answer within the budget")
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def anna(source="amocrm"):
    return CrmAnswer("504141", "anna@mos.example", "Anna Ivanova", source)


class Clock:
    def __init__(self, t=0.0):
        self.t = t

    def __call__(self):
        return self.t


def resolver_for(store, *sources, mapping=None, backoff=None):
    cache = CrmCache(store, ttl=86_400, negative_ttl=3_600, clock=lambda: NOW)
    return CrmResolver({"mos": list(sources)}, {"mos": ExtensionMapper(store, "mos", mapping)}, cache,
                       budget=0.3, backoff=backoff or Backoff(jitter=0)), cache


# --- mapping ----------------------------------------------------------------------------

def test_crm_users_map_by_configured_id_or_email_then_by_employee_email(store):
    mapper = ExtensionMapper(store, "mos", {"777": "2003", "Boss@Mos.Example": "2002", "888": "9999"})
    assert mapper.extension_for(CrmAnswer("1", "ANNA@mos.example", "", "x")) == "2001"     # employee e-mail
    assert mapper.extension_for(CrmAnswer("777", "anna@mos.example", "", "x")) == "2003"   # id mapping first
    assert mapper.extension_for(CrmAnswer("5", "boss@mos.example", "", "x")) == "2002"     # e-mail mapping
    assert mapper.extension_for(CrmAnswer("888", "", "", "x")) is None                      # not an employee
    assert mapper.extension_for(CrmAnswer("9", "nobody@x", "", "x")) is None
    assert mapper.extension_for(CrmAnswer("", "", "", "x", extension="2002")) == "2002"
    assert mapper.extension_for(CrmAnswer("", "", "", "x", extension="600")) is None


def test_the_email_index_follows_config_reloads(store):
    mapper = ExtensionMapper(store, "mos")
    assert mapper.extension_for(CrmAnswer("1", "vera@mos.example", "", "x")) is None
    store.load_config(config_from_yaml(COMPANY.replace("name: Vera}", "name: Vera, email: vera@mos.example}")))
    assert mapper.extension_for(CrmAnswer("1", "vera@mos.example", "", "x")) == "2003"


# --- cache ------------------------------------------------------------------------------

def test_answers_are_cached_with_ttl_and_refresh_at_half_life(store):
    cache = CrmCache(store, ttl=1000, negative_ttl=100)
    found = cache.put("mos", CALLER, anna(), "2001", now=NOW)
    assert (found.status, found.refresh_after, found.expires) == (rec.CRM_FOUND, NOW + 500, NOW + 1000)
    assert cache.get("mos", CALLER) == found
    unmapped = cache.put("mos", "79160000000", anna(), None, now=NOW)
    assert unmapped.status == rec.CRM_UNMAPPED and unmapped.user_email == "anna@mos.example"
    missing = cache.put("mos", "79160000001", None, None, now=NOW)
    assert (missing.status, missing.expires) == (rec.CRM_NOT_FOUND, NOW + 100)
    assert [p for _, p, _ in cache.due(NOW + 50)] == ["79160000001"]
    assert sorted(p for _, p, _ in cache.due(NOW + 500)) == sorted([CALLER, "79160000000", "79160000001"])


def test_due_walks_a_big_cache_round_by_round(store):
    cache = CrmCache(store)
    cache.put_many(("mos", f"7916{i:07d}", cache.record_for(anna(), "2001", now=NOW)) for i in range(50))
    seen = []
    for _ in range(6):
        seen += [p for _, p, _ in cache.due(NOW + 86_400, limit=100, scan=10)]
    assert len(seen) == 60 and len(set(seen)) == 50          # wrapped round once, nothing skipped


def test_the_hot_path_reads_what_the_cache_wrote_and_purge_drops_long_expired(store):
    cache = CrmCache(store, ttl=1000)
    cache.put("mos", CALLER, anna(), "2001", now=NOW)
    for impl in icm_lookup.IMPLEMENTATIONS.values():
        assert impl(store, "mos", "89161234567", NOW + 999) == ("2001", "amocrm", NOW)
        assert impl(store, "mos", "89161234567", NOW + 1000) is None          # expired
    assert cache.purge(NOW + 1000 + 86_400) == 0
    assert cache.purge(NOW + 1001 + 86_400) == 1
    assert cache.get("mos", CALLER) is None


def test_a_privacy_request_forgets_the_caller_for_every_company(store):
    cache = CrmCache(store)
    for company in ("mos", "lon"):
        cache.put(company, CALLER, anna(), "2001", now=NOW)
    cache.put("mos", "79161234560", anna(), "2001", now=NOW)
    store.record_call(CALLER, "2001", NOW, "in")
    assert cache.forget_phone(CALLER) == 2
    assert cache.get("mos", CALLER) is None and cache.get("mos", "79161234560") is not None
    assert store.history(CALLER).extension == "2001"           # the cache's, not the call history
    assert cache.forget_phone(CALLER) == 0


# --- resolver ---------------------------------------------------------------------------

def test_sources_are_asked_in_order_until_one_knows_the_caller(store):
    first, second = FakeSource("amocrm", None), FakeSource("bitrix24", anna("bitrix24"))
    resolver, cache = resolver_for(store, first, second)
    result = resolver.resolve("mos", CALLER)
    assert result.record.extension == "2001" and result.record.source == "bitrix24"
    assert result.record.generation == store.generation()
    assert [(a.source, a.outcome) for a in result.attempts] == [("amocrm", "not found"), ("bitrix24", "found")]
    assert "→ ext 2001" in result.explain()
    again = resolver.resolve("mos", CALLER)
    assert again.from_cache and first.calls == 1 and second.calls == 1


def test_a_down_or_slow_source_is_skipped_within_the_budget_and_backed_off(store):
    slow = FakeSource("amocrm", ("sleep", 5.0))
    down = FakeSource("megaplan", CrmUnavailable("megaplan", "HTTP 502", status=502))
    good = FakeSource("bitrix24", anna("bitrix24"))
    resolver, cache = resolver_for(store, slow, down, good)
    resolver.budget = 0.6
    started = time.monotonic()
    result = resolver.resolve("mos", CALLER)
    assert time.monotonic() - started < 0.6 + 0.15
    assert [a.outcome for a in result.attempts] == ["timeout", "unavailable", "found"]
    assert result.record.source == "bitrix24"
    # the next caller does not wait for the failing sources again
    second = resolver.resolve("mos", "79161234500", use_cache=False)
    assert [a.outcome for a in second.attempts][:2] == ["skipped", "skipped"]
    assert slow.calls == 1 and down.calls == 1


def test_not_found_is_cached_only_when_every_source_answered(store):
    failing = FakeSource("amocrm", CrmRateLimited("amocrm", "429", retry_after=5))
    empty = FakeSource("bitrix24", None)
    resolver, cache = resolver_for(store, failing, empty)
    assert resolver.resolve("mos", CALLER).record is None
    assert cache.get("mos", CALLER) is None
    resolver2, cache2 = resolver_for(store, FakeSource("x", None), FakeSource("y", None))
    assert resolver2.resolve("mos", CALLER).record.status == rec.CRM_NOT_FOUND


def test_an_adapter_bug_does_not_stop_the_other_sources(store, caplog):
    resolver, cache = resolver_for(store, FakeSource("broken", KeyError("x")), FakeSource("ok", anna("ok")))
    with caplog.at_level(logging.ERROR, "switchboard.crm"):
        result = resolver.resolve("mos", CALLER)
    assert [a.outcome for a in result.attempts] == ["error", "found"]
    assert "broken" in caplog.text


def test_backoff_is_exponential_capped_and_honours_retry_after():
    clock = Clock(100.0)
    b = Backoff(base=1, cap=60, auth_delay=30, jitter=0, clock=clock)
    assert [b.failed("s", CrmUnavailable("s", "x")) for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert b.blocked_for("s") == 60
    b.succeeded("s")
    assert b.blocked_for("s") == 0
    assert b.failed("s", CrmRateLimited("s", "x", retry_after=20)) == 20
    assert b.failed("t", CrmRateLimited("t", "x", retry_after=3600)) == 60      # capped
    assert b.failed("u", CrmAuthError("u", "x")) == 30
    clock.t += 30
    assert b.blocked_for("u") == 0


# --- refresher --------------------------------------------------------------------------

def test_the_refresher_renews_due_answers_and_queued_callers(store):
    source = FakeSource("amocrm", anna())
    resolver, cache = resolver_for(store, source)
    cache.put("mos", "79160000000", anna(), "2001", now=NOW - 50_000)        # due (half-life passed)
    cache.put("mos", "79160000001", anna(), "2001", now=NOW)                 # fresh
    refresher = CrmRefresher(resolver, cache, batch=10)
    refresher.request("mos", CALLER)
    done = refresher.run_once(now=NOW)
    assert done == {"asked": 2, "found": 2, "not_found": 0, "failed": 0}
    assert cache.get("mos", "79160000000").fetched == NOW
    assert cache.get("mos", CALLER).extension == "2001"
    assert cache.get("mos", "79160000001").fetched == NOW                    # untouched, was fresh


def test_the_refresher_backs_off_a_rate_limited_crm_instead_of_hammering_it(store):
    source = FakeSource("amocrm", CrmRateLimited("amocrm", "429", retry_after=30))
    resolver, cache = resolver_for(store, source)
    refresher = CrmRefresher(resolver, cache, batch=50)
    for i in range(20):
        refresher.request("mos", f"7916000{i:04d}")
    done = refresher.run_once(now=NOW)
    assert source.calls == 1 and done["failed"] == 20
    assert 29 < resolver.backoff.blocked_for("mos/amocrm") <= 30


def test_the_refresher_thread_wakes_on_a_request_and_stops_promptly(store):
    source = FakeSource("amocrm", anna())
    resolver, cache = resolver_for(store, source)
    refresher = CrmRefresher(resolver, cache, interval=30.0).start()
    try:
        refresher.request("mos", CALLER)
        deadline = time.monotonic() + 5
        while cache.get("mos", CALLER) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cache.get("mos", CALLER).extension == "2001"
        assert refresher.health()["status"] == "ok"
    finally:
        started = time.monotonic()
        assert refresher.stop(timeout=5)
        assert time.monotonic() - started < 1
    assert refresher.health()["status"] == "stopped"


def test_a_full_queue_drops_new_callers(store):
    resolver, cache = resolver_for(store, FakeSource("a", None))
    refresher = CrmRefresher(resolver, cache, max_queue=2)
    assert refresher.request("mos", "1") and refresher.request("mos", "2")
    assert refresher.request("mos", "1")                                    # already queued: moves up
    assert not refresher.request("mos", "3")


def test_end_to_end_amocrm_to_the_hot_path(store):
    """A real HTTP exchange with a fake amoCRM, mapped by e-mail, cached, then read by both lookups."""
    api = AmoApi("tok", [{"id": 3, "name": "Client", "responsible_user_id": 504141,
                          "phones": ["8 (916) 123-45-67"]}],
                 {504141: {"name": "Anna Ivanova", "email": "anna@mos.example"}})
    server = FakeServer(api)
    try:
        sources, mapping = build_company_sources(
            [{"type": "amocrm", "base_url": server.url, "token": {"secret": "amo_mos"}}],
            SecretStore(environ={env_name("amo_mos"): "tok"}), company="mos", country="RU", city_code="495")
        cache = CrmCache(store, clock=lambda: NOW)
        resolver = CrmResolver({"mos": sources}, {"mos": ExtensionMapper(store, "mos", mapping)}, cache)
        refresher = CrmRefresher(resolver, cache)
        refresher.request("mos", CALLER)
        assert refresher.run_once(now=NOW)["found"] == 1
        for impl in icm_lookup.IMPLEMENTATIONS.values():
            assert impl(store, "mos", "8 916 123 45 67".replace(" ", ""), NOW + 60) == ("2001", "amocrm", NOW)
        for s in sources:
            s.close()
    finally:
        server.close()


# --- secrets and config -----------------------------------------------------------------

def test_secrets_come_from_the_environment_then_a_private_file(tmp_path):
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"amo_mos": "from-file", "b24": "hook"}))
    os.chmod(path, 0o600)
    store = SecretStore(str(path), environ={"SWITCHBOARD_SECRET_AMO_MOS": "from-env"})
    assert store.get("amo_mos").reveal() == "from-env"
    assert store.get("b24").reveal() == "hook"
    assert "hook" not in repr(store.get("b24")) and "hook" not in str(store.get("b24"))
    with pytest.raises(CrmConfigError, match="SWITCHBOARD_SECRET_NOPE") as caught:
        store.get("nope")
    assert "from-file" not in str(caught.value)
    lines = tmp_path / "secrets.env"
    lines.write_text("# CRM credentials\nmegaplan_pw = s3cret\n")
    os.chmod(lines, 0o600)
    assert SecretStore(str(lines), environ={}).get("megaplan_pw").reveal() == "s3cret"
    os.chmod(lines, 0o644)
    with pytest.raises(CrmConfigError, match="readable by others"):
        SecretStore(str(lines), environ={}).get("megaplan_pw")


def test_secrets_are_never_pickled_or_logged(caplog):
    secret = Secret("hunter2", "pw")
    with pytest.raises(TypeError):
        import pickle
        pickle.dumps(secret)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("t").info("using %s / %r", secret, secret)
    assert "hunter2" not in caplog.text


def test_source_config_reports_every_problem_and_refuses_inline_credentials():
    secrets = SecretStore(environ={env_name("amo"): "t", env_name("hook"): "https://x.bitrix24.ru/rest/1/c/"})
    with pytest.raises(CrmConfigError) as caught:
        build_company_sources([
            {"type": "amocrm", "base_url": "acme.amocrm.ru", "token": "inline-token"},
            {"type": "bitrix24", "webhook": {"secret": "missing"}},
            {"type": "sugarcrm"},
            {"type": "http", "url": "https://x/owner", "headers": {"Authorization": "Bearer inline"}},
            {"type": "megaplan", "base_url": "https://m.megaplan.ru", "token": {"secret": "amo"}, "colour": 1},
        ], secrets, company="mos", country="RU")
    problems = caught.value.problems
    text = "\n".join(problems)
    assert "crm.mos[0]: 'base_url' must be an http(s) URL" in text
    assert "crm.mos[0]: 'token' must name a secret" in text
    assert "crm.mos[1]" in text and "'missing' is not set" in text
    assert "crm.mos[2]: 'type' must be one of" in text
    assert "crm.mos[3]: 'url' must contain {phone" in text and "header 'Authorization'" in text
    assert "crm.mos[4]: unknown keys for a megaplan source: colour" in text
    assert "inline-token" not in text and "Bearer inline" not in text
    sources, mapping = build_company_sources([
        {"type": "amocrm", "base_url": "https://acme.amocrm.ru", "token": {"secret": "amo"},
         "users": {"504141": 2001}, "timeout_ms": 250},
        {"type": "bitrix24", "webhook": {"secret": "hook"}},
        {"type": "http", "name": "billing", "url": "https://b.example/o?phone={phone}", "user_id": "/id"},
    ], secrets, company="mos", country="RU", city_code="495")
    assert [s.name for s in sources] == ["amocrm", "bitrix24", "billing"]
    assert sources[0].timeout == 0.25 and mapping == {"504141": "2001"}
    assert "c/" not in repr(sources[1])
