"""The benchmark company, built once per session through the real load path."""
from __future__ import annotations

import time

import pytest
import yaml

from fastpath.store import Store
from fastpath.validate import validate
from fastpath.yaml_source import load_yaml

from .company_gen import generate_company, live_state


@pytest.fixture(scope="session")
def big_company_yaml() -> str:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(generate_company(), Dumper=dumper, sort_keys=False)


def build_big_store(path, company_yaml: str) -> Store:
    """The 10,000-employee company loaded through the real path, with a busy afternoon's presence."""
    started = time.perf_counter()
    config = validate([(load_yaml(company_yaml, "big.yaml"), "big.yaml")])
    store = Store(str(path))
    store.load_config(config)
    live_state(store)
    store.build_seconds = time.perf_counter() - started
    return store


@pytest.fixture(scope="session")
def big_store(tmp_path_factory, big_company_yaml):
    """A store holding the 10,000-employee company, with a busy afternoon's presence."""
    store = build_big_store(tmp_path_factory.mktemp("big") / "store", big_company_yaml)
    yield store
    store.close()
