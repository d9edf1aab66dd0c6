"""Credentials for the CRM sources: from the environment or a secrets file, never logged.

A credential is asked for by name (``amocrm_acme_token``).  It is looked up as

1. the environment variable ``SWITCHBOARD_SECRET_<NAME>`` (upper case, every
   character other than A-Z and 0-9 replaced by ``_``), then
2. the secrets file (``$SWITCHBOARD_SECRETS_FILE`` or the path given): a JSON
   object ``{"name": "value"}`` or ``NAME=VALUE`` lines (``#`` comments).  The
   file must not be readable by group or others (``chmod 600``), like ssh keys.

Values are wrapped in :class:`Secret`, whose ``repr`` and ``str`` never show
the value; only the HTTP layer calls :meth:`Secret.reveal`.
"""
from __future__ import annotations

import json
import os
import re
import stat

from .errors import CrmConfigError

ENV_PREFIX = "SWITCHBOARD_SECRET_"
FILE_ENV = "SWITCHBOARD_SECRETS_FILE"


class Secret:
    """A credential.  ``str(secret)`` is ``***``; use :meth:`reveal` where it is sent."""

    __slots__ = ("_value", "name")

    def __init__(self, value: str, name: str = "secret"):
        self._value = value
        self.name = name

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.name!r}, ***)"

    __str__ = __repr__

    def __eq__(self, other) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self):
        raise TypeError("secrets are not pickled")


def env_name(name: str) -> str:
    return ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", name.upper())


class SecretStore:
    """Looks credentials up by name in the environment, then in the secrets file."""

    def __init__(self, path: str | None = None, environ=None):
        self.environ = os.environ if environ is None else environ
        self.path = path if path is not None else self.environ.get(FILE_ENV)
        self._file: dict[str, str] | None = None

    def get(self, name: str) -> Secret:
        value = self.environ.get(env_name(name))
        if value is None:
            value = self._from_file().get(name)
        if not value:
            where = f"${env_name(name)}" + (f" or {name!r} in {self.path}" if self.path else "")
            raise CrmConfigError("secrets", [f"credential {name!r} is not set: set {where}"])
        return Secret(value, name)

    def _from_file(self) -> dict[str, str]:
        if self._file is None:
            self._file = _read_secrets_file(self.path) if self.path else {}
        return self._file


def _read_secrets_file(path: str) -> dict[str, str]:
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise CrmConfigError("secrets", [f"cannot read the secrets file {path}: {exc.strerror}"]) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CrmConfigError("secrets", [f"the secrets file {path} is readable by others; chmod 600 it"])
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise CrmConfigError("secrets", [f"{path} is not valid JSON (line {exc.lineno})"]) from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise CrmConfigError("secrets", [f"{path} must be a JSON object of strings"])
        return data
    out = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise CrmConfigError("secrets", [f"{path}:{number}: expected NAME=VALUE"])
        out[name.strip()] = value.strip()
    return out
