"""Exceptions shared by the reference and compiled implementations.

Kept in plain Python (like httptools and msgpack do) so both engines raise the
very same classes and callers never care which one ran.
"""
from __future__ import annotations

from dataclasses import dataclass


class SwitchboardError(Exception):
    """Base of every error a person is expected to read and act on."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a config file: where it is and what to do about it."""

    path: str          # YAML path, e.g. "companies[0].departments[2].members[1]"
    message: str
    line: int | None = None
    source: str | None = None   # file name

    def __str__(self) -> str:
        where = self.source or "<config>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        return f"{where}: {self.path}: {self.message}"


class ConfigError(SwitchboardError):
    """The config is invalid.  Carries *every* problem found, not just the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} in the config:"
        super().__init__("\n".join([head] + [f"  {p}" for p in self.problems]))


class PhoneNumberError(SwitchboardError, ValueError):
    """A phone number that cannot be turned into E.164."""


class StoreError(SwitchboardError):
    """The LMDB store cannot be used (missing, wrong schema version, corrupt record)."""


class SchemaMismatch(StoreError):
    """The store was written by a different schema version than this code reads."""
