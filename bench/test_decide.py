"""Routing decisions: the compiled fast path against the reference, in one run.

Both engines route the same mixed call set (``company_gen.call_mix``) against
the same store.  Each round is one decision, cycling through the call set, so
the reported median *is* the median decision; ``decisions_per_round`` is 1.
Read the ratio from the two medians of the same run.
"""
from __future__ import annotations

import itertools
import time

import pytest

from fastpath import engine
from fastpath.validate import validate
from fastpath.yaml_source import load_yaml
from fastpath.store import Store

from .company_gen import call_mix, referral_state
from .conftest import build_big_store

CALLS = call_mix()
ROUNDS = 3 * len(CALLS)


def _route_the_mix(benchmark, store, impl: str, group: str, **extra):
    """One decision per round, cycling through the call mix; returns the engine used."""
    decide = engine.IMPLEMENTATIONS[impl]
    calls = itertools.cycle(CALLS)

    def next_call():
        called, caller, now = next(calls)
        return (store, called, caller, now), {}

    benchmark.group = group
    benchmark.extra_info.update(decisions_per_round=1, calls_in_mix=len(CALLS), engine=impl, **extra)
    plan = benchmark.pedantic(decide, setup=next_call, rounds=ROUNDS, iterations=1, warmup_rounds=100)
    assert plan.steps
    return decide


@pytest.mark.parametrize("impl", ["fastpath", "reference"])
def test_decide(benchmark, big_store, impl):
    _route_the_mix(benchmark, big_store, impl, "decide")


@pytest.fixture(scope="module")
def store_with_statuses(tmp_path_factory, big_company_yaml):
    """The benchmark company with referral statuses for 10 % of the employees."""
    store = build_big_store(tmp_path_factory.mktemp("statuses") / "store", big_company_yaml)
    store.flagged = referral_state(store)
    yield store
    store.close()


@pytest.mark.parametrize("impl", ["fastpath", "reference"])
def test_decide_with_statuses(benchmark, store_with_statuses, impl):
    """The same call mix with statuses in play (issue 4: within the core target)."""
    decide = _route_the_mix(benchmark, store_with_statuses, impl, "decide with statuses",
                            employees_with_statuses=store_with_statuses.flagged)
    says = sum(1 for c in CALLS if decide(store_with_statuses, *c).steps[0].action == "say")
    assert says > 0                 # statuses are really in force for some of the calls


def test_load_config(benchmark, big_company_yaml, tmp_path):
    """`switchboard load` of the big company: YAML, validation, one LMDB write transaction."""
    phases = {}

    def load():
        t0 = time.perf_counter()
        document = load_yaml(big_company_yaml, "big.yaml")
        t1 = time.perf_counter()
        config = validate([(document, "big.yaml")])
        t2 = time.perf_counter()
        with Store(str(tmp_path / "store")) as store:
            store.load_config(config)
            phases["store_bytes"] = store.stats()["bytes"]
        t3 = time.perf_counter()
        phases.update(yaml_s=round(t1 - t0, 3), validate_s=round(t2 - t1, 3), store_write_s=round(t3 - t2, 3))

    benchmark.group = "load"
    benchmark.pedantic(load, rounds=1, iterations=1)
    benchmark.extra_info.update(phases, yaml_bytes=len(big_company_yaml))
