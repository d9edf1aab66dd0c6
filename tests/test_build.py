"""The compiled fast path is really what runs, with the reference's API (falcon / py-lmdb habit)."""
from __future__ import annotations

import inspect
import os

import pytest

from fastpath import engine, engine_ref

NO_CYTHON = os.environ.get("SWITCHBOARD_NO_CYTHON") == "1"


@pytest.mark.skipif(NO_CYTHON, reason="deliberately built without Cython")
def test_compiled_engine_is_loaded_and_chosen():
    from fastpath import _engine
    assert "cyfunction" in repr(_engine.decide)
    assert _engine.__file__.endswith((".so", ".pyd"))
    if os.environ.get("SWITCHBOARD_PUREPYTHON") != "1":
        assert engine.IMPLEMENTATION == "fastpath"
        assert engine.decide is _engine.decide


def test_both_engines_share_one_signature():
    assert list(inspect.signature(engine_ref.decide).parameters) == ["store", "called", "caller", "now"]
    for name, decide in engine.IMPLEMENTATIONS.items():
        assert decide.__name__ == "decide", name
