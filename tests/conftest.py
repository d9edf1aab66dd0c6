"""Fixtures shared by the test suite.

``decide`` is parametrised over every engine, so each routing test runs on the
compiled fast path and on the pure-Python reference.  If the fast path was not
built, its tests fail loudly instead of being skipped — unless the package was
deliberately installed without Cython (``SWITCHBOARD_NO_CYTHON=1``).
"""
from __future__ import annotations

import datetime as dt
import os
import textwrap
from zoneinfo import ZoneInfo

import pytest

from fastpath import engine
from fastpath.store import Store
from fastpath.validate import validate
from fastpath.yaml_source import load_yaml

ENGINES = ["fastpath", "reference"]
if os.environ.get("SWITCHBOARD_NO_CYTHON") == "1":
    ENGINES = ["reference"]


@pytest.fixture(params=ENGINES)
def decide(request):
    if request.param not in engine.IMPLEMENTATIONS:
        pytest.fail("the compiled fast path is not built: run `pip install -e .` "
                    "(or set SWITCHBOARD_NO_CYTHON=1 to test the reference alone)")
    return engine.IMPLEMENTATIONS[request.param]


def config_from_yaml(text: str, source: str = "test.yaml"):
    return validate([(load_yaml(textwrap.dedent(text), source), source)])


@pytest.fixture
def make_store(tmp_path):
    """``make_store(yaml_text)`` -> an open Store with that config loaded."""
    stores = []

    def make(text: str) -> Store:
        store = Store(str(tmp_path / f"store{len(stores)}"))
        store.load_config(config_from_yaml(text))
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


def at(text: str, zone: str = "Europe/London") -> float:
    """POSIX time of a local wall-clock time: ``at("2026-11-23 10:00")``."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()
