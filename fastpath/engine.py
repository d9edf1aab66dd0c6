"""Choose the engine: the compiled fast path, or the pure-Python reference.

Like msgpack and py-lmdb, the choice can be forced both ways so a broken build
never falls back silently where speed matters:

* ``SWITCHBOARD_PUREPYTHON=1``: always the reference;
* ``SWITCHBOARD_FORCE_CYTHON=1``: the compiled engine or an ImportError;
* neither: the compiled engine when it was built, else the reference.
"""
from __future__ import annotations

import os

from . import engine_ref

IMPLEMENTATIONS = {"reference": engine_ref.decide}
try:
    from . import _engine
except ImportError:
    if os.environ.get("SWITCHBOARD_FORCE_CYTHON") == "1":
        raise
else:
    IMPLEMENTATIONS["fastpath"] = _engine.decide

if os.environ.get("SWITCHBOARD_PUREPYTHON") == "1" or "fastpath" not in IMPLEMENTATIONS:
    IMPLEMENTATION = "reference"
else:
    IMPLEMENTATION = "fastpath"

#: ``decide(store, called, caller, now) -> RoutePlan`` of the chosen engine.
decide = IMPLEMENTATIONS[IMPLEMENTATION]
