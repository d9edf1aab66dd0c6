"""Switchboard routing core: validated company model, LMDB store and the route engine.

The engine exists twice with one API: the Cython fast path (``fastpath._engine``)
and the pure-Python reference (``fastpath.engine_ref``).  ``fastpath.engine``
chooses between them.
"""
