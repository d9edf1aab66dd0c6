"""The calendar config: which calendar each employee's status comes from.

A YAML file of its own (``examples/calendars.yaml``), apart from the company
config: it names servers and mailboxes, and is edited by whoever runs the
Exchange / Microsoft 365 / CalDAV side.  Reading never stops at the first
mistake: every problem is reported with file, line and YAML path
(:class:`fastpath.errors.ConfigError`), like ``fastpath/validate.py``.

**Secrets are never in this file.**  A server or employee names a
*credentials entry*; its fields come from, in this order:

1. environment variables ``SWITCHBOARD_CALENDAR_<ENTRY>_<FIELD>`` (entry name
   upper-cased, ``-`` and ``.`` as ``_``), e.g. ``SWITCHBOARD_CALENDAR_EXCHANGE_SVC_PASSWORD``;
2. the secrets file (``credentials_file:``, or ``$SWITCHBOARD_CALENDAR_SECRETS``):
   YAML ``{entry: {field: value}}``, readable by its owner only (mode 0600).

Fields: ``caldav`` needs ``username`` + ``password`` (or ``token``, sent as a
bearer token); ``ews`` needs ``username`` + ``password``; ``graph`` needs
``client_secret`` (the tenant and client id are not secret and sit in this
file).  A key named like a secret (``password``, ``client_secret``, ``token``…)
in this file is itself an error.
"""
from __future__ import annotations

import difflib
import os
import re
import stat
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastpath.errors import ConfigError, Problem
from fastpath.referral_status import DEFAULT_PRECEDENCE
from fastpath.yaml_source import DOCUMENT, YamlInt, load_yaml

from .keywords import (BUILTIN_STATUSES, DEFAULT_KEYWORDS, KEYWORD_PATTERN, STATUS_PATTERN,
                       KeywordRules, merge_keywords)

SOURCE_KINDS = ("caldav", "ews", "graph")
ENV_PREFIX = "SWITCHBOARD_CALENDAR_"
SECRETS_FILE_ENV = "SWITCHBOARD_CALENDAR_SECRETS"
SECRET_KEYS = ("password", "passwd", "secret", "client_secret", "token", "access_token", "api_key",
               "apikey", "refresh_token")
#: Fields each kind of server needs from its credentials entry (any one of the alternatives).
NEEDED_FIELDS = {
    "caldav": (("username", "password"), ("token",)),
    "ews": (("username", "password"),),
    "graph": (("client_secret",),),
}
SECRET_FIELDS = ("username", "password", "token", "client_secret")

_TOP_KEYS = ("interval", "past_days", "horizon_days", "timezone", "parallel", "backoff_initial",
             "backoff_max", "keywords", "statuses", "precedence", "without_keyword", "out_of_office",
             "visibility", "credentials_file", "servers", "employees")
_SERVER_KEYS = ("kind", "url", "credentials", "auth", "access", "tenant", "client_id", "authority",
                "sync", "verify_tls", "timeout")
_EMPLOYEE_KEYS = ("extension", "server", "calendar", "mailbox", "credentials", "keywords",
                  "without_keyword", "out_of_office", "visibility", "timezone")
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_EXTENSION = re.compile(r"[0-9]{2,6}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}")


@dataclass(frozen=True)
class ServerConfig:
    """One calendar server (or service) and how to reach it."""

    name: str
    kind: str                          # caldav | ews | graph
    url: str = ""                      # caldav: base URL; ews: the EWS endpoint; graph: API root
    credentials: str | None = None     # name of a credentials entry
    auth: str = "ntlm"                 # ews: ntlm | basic
    access: str = "impersonation"      # ews: impersonation | delegate
    tenant: str = ""                   # graph: directory (tenant) id or domain
    client_id: str = ""                # graph: application (client) id
    authority: str = "https://login.microsoftonline.com"   # graph: token issuer
    sync: str = "auto"                 # caldav: auto | sync-token | ctag
    verify_tls: bool | str = True      # True, False, or a CA bundle path
    timeout: float = 30.0              # seconds per HTTP request


@dataclass(frozen=True)
class EmployeeCalendar:
    """Where one employee's calendar is, and their keyword rules."""

    extension: str
    server: str
    calendar: str = ""                 # caldav: calendar URL (absolute, or relative to the server URL)
    mailbox: str = ""                  # ews / graph: the mailbox (SMTP address or Graph user id)
    credentials: str | None = None     # overrides the server's entry (personal CalDAV accounts)
    rules: KeywordRules = field(default_factory=KeywordRules)
    timezone: str | None = None        # for all-day and floating events; default: the config's, else the company's


@dataclass(frozen=True)
class CalendarConfig:
    servers: Mapping[str, ServerConfig] = field(default_factory=dict)
    employees: tuple[EmployeeCalendar, ...] = ()
    interval: int = 300                # seconds between two syncs of one calendar
    past_days: int = 1
    horizon_days: int = 60
    timezone: str | None = None
    parallel: int = 4                  # calendars synced at the same time
    backoff_initial: float = 30.0      # first delay after a failure (doubles, jittered)
    backoff_max: float = 1800.0        # ... up to this
    statuses: tuple[str, ...] = BUILTIN_STATUSES
    precedence: tuple[str, ...] = DEFAULT_PRECEDENCE
    credentials_file: str | None = None
    source: str = ""

    def employee(self, extension: str) -> EmployeeCalendar | None:
        return next((e for e in self.employees if e.extension == extension), None)

    def credentials_for(self, employee: EmployeeCalendar) -> str | None:
        return employee.credentials or self.servers[employee.server].credentials


# --------------------------------------------------------------------------------------------
# Secrets


class Secrets:
    """Credentials entries from the environment and the secrets file.  Never logs or
    shows a value; ``repr`` lists entry names only."""

    def __init__(self, environ: Mapping[str, str] | None = None, file_entries: Mapping | None = None):
        self._environ = dict(os.environ if environ is None else environ)
        self._file = {str(k): dict(v) for k, v in (file_entries or {}).items()}

    @staticmethod
    def env_name(entry: str, field_name: str) -> str:
        return ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", entry).upper() + "_" + field_name.upper()

    def get(self, entry: str | None) -> dict[str, str]:
        """The fields of ``entry`` (environment first, then the file); ``{}`` for ``None``."""
        if entry is None:
            return {}
        out = {k: str(v) for k, v in self._file.get(entry, {}).items() if v is not None}
        for name in SECRET_FIELDS:
            value = self._environ.get(self.env_name(entry, name))
            if value:
                out[name] = value
        return out

    def __repr__(self) -> str:
        return f"<Secrets entries in file: {sorted(self._file)}>"


def load_secrets(path: str | None, environ: Mapping[str, str] | None = None) -> Secrets:
    """:class:`Secrets` from the environment and ``path`` (or ``$SWITCHBOARD_CALENDAR_SECRETS``)."""
    environ = os.environ if environ is None else environ
    path = path or environ.get(SECRETS_FILE_ENV) or None
    if path is None:
        return Secrets(environ)
    problems: list[Problem] = []
    try:
        info = os.stat(path)
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError([Problem(DOCUMENT, f"cannot read the calendar secrets file: {exc.strerror}",
                                   None, path)]) from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        problems.append(Problem(DOCUMENT, f"the secrets file is readable by others (mode "
                                f"{stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}", None, path))
    data = load_yaml(text, path) if text.strip() else {}
    entries = {}
    if not isinstance(data, dict):
        problems.append(Problem(DOCUMENT, "expected a mapping of entry name -> {username, password, "
                                "token, client_secret}", 1, path))
    else:
        for name, fields in data.items():
            line = getattr(data, "key_lines", {}).get(name)
            if not isinstance(fields, dict):
                problems.append(Problem(str(name), "expected a mapping of field -> value", line, path))
                continue
            bad = [k for k in fields if k not in SECRET_FIELDS]
            if bad:
                problems.append(Problem(str(name), f"unknown field(s) {', '.join(map(str, bad))}; expected "
                                        f"{', '.join(SECRET_FIELDS)}", line, path))
            # values are never echoed in messages
            if any(not isinstance(v, (str, int)) or isinstance(v, bool) for v in fields.values()):
                problems.append(Problem(str(name), "every field must be text", line, path))
            entries[str(name)] = {k: str(v) for k, v in fields.items() if k in SECRET_FIELDS}
    if problems:
        raise ConfigError(problems)
    return Secrets(environ, entries)


# --------------------------------------------------------------------------------------------
# Reading the YAML, every problem at once


class _Reader:
    def __init__(self, source: str):
        self.source = source
        self.problems: list[Problem] = []

    def add(self, path: str, line: int | None, message: str) -> None:
        self.problems.append(Problem(path or DOCUMENT, message, line, self.source))

    def keys(self, data: dict, path: str, allowed: tuple[str, ...]) -> None:
        lines = getattr(data, "key_lines", {})
        for key in data:
            name = str(key)
            where = f"{path}.{name}" if path else name
            if name.lower() in SECRET_KEYS:
                self.add(where, lines.get(key), f"secrets never go in this file: remove '{name}' and set it "
                         f"in the environment (SWITCHBOARD_CALENDAR_<ENTRY>_{name.upper()}) or the secrets "
                         f"file, under a credentials entry this file names")
            elif key not in allowed:
                close = difflib.get_close_matches(name, allowed, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                self.add(where, lines.get(key), f"unknown key '{name}'; {hint}expected one of: "
                         f"{', '.join(allowed)}")
        for key, line in getattr(data, "duplicate_keys", ()):
            self.add(f"{path}.{key}" if path else str(key), line,
                     f"key '{key}' is given twice in the same mapping; YAML would keep only the last one")

    @staticmethod
    def line(data, key=None):
        if key is not None:
            return getattr(data, "key_lines", {}).get(key, getattr(data, "line", None))
        return getattr(data, "line", None)


def _text_of(value) -> str | None:
    if isinstance(value, YamlInt):
        return value.text
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _describe(value) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"{str(value).lower()} (YAML reads yes/no/on/off as true/false; quote text)"
    if isinstance(value, YamlInt) and value.text != str(int(value)):
        return f"{value.text} (which YAML reads as the number {int(value)}; quote it)"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def load_calendar_config(path: str) -> CalendarConfig:
    """Read and validate a calendar config file (a top-level ``calendars:`` mapping, or
    the mapping itself)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError([Problem(DOCUMENT, f"cannot read the calendar config: {exc.strerror}", None,
                                   path)]) from None
    return parse_calendar_config(text, path)


def parse_calendar_config(text: str, source: str = "<calendars>") -> CalendarConfig:
    data = load_yaml(text, source)
    r = _Reader(source)
    base = ""
    if isinstance(data, dict) and "calendars" in data and len(data) == 1:
        data, base = data["calendars"], "calendars"
    if not isinstance(data, dict):
        raise ConfigError([Problem(base or DOCUMENT, f"expected a mapping of calendar settings, got "
                                   f"{_describe(data)}", getattr(data, "line", 1), source)])
    r.keys(data, base, _TOP_KEYS)

    def at(key):
        return (f"{base}.{key}" if base else key), r.line(data, key)

    def number(key, low, high, default, kind=int):
        if data.get(key) is None:
            return default
        value = data[key]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
        if kind is int and isinstance(value, float):
            ok = False
        if not ok:
            r.add(*at(key), f"expected a {'whole ' if kind is int else ''}number from {low} to {high}, "
                  f"got {_describe(value)}")
            return default
        return kind(value)

    interval = number("interval", 10, 86400, 300)
    past_days = number("past_days", 0, 31, 1)
    horizon_days = number("horizon_days", 1, 400, 60)
    parallel = number("parallel", 1, 64, 4)
    backoff_initial = number("backoff_initial", 0.1, 3600, 30.0, float)
    backoff_max = number("backoff_max", 1, 86400, 1800.0, float)
    if backoff_max < backoff_initial:
        r.add(*at("backoff_max"), f"must be at least backoff_initial ({backoff_initial:g})")
    timezone = _zone(r, data.get("timezone"), *at("timezone"))

    # statuses: built-in plus the company's own
    statuses = list(BUILTIN_STATUSES)
    for item, path, line in _list(r, data, "statuses", base, "status names"):
        name = _text_of(item)
        if name is None or not STATUS_PATTERN.fullmatch(name):
            r.add(path, line, f"a status is a lower-case name of letters, digits and '_', got {_describe(item)}")
        elif name in statuses:
            r.add(path, line, f"status '{name}' is "
                  + ("built in" if name in BUILTIN_STATUSES else "listed twice"))
        else:
            statuses.append(name)
    known = tuple(statuses)

    precedence = DEFAULT_PRECEDENCE + tuple(s for s in known if s not in DEFAULT_PRECEDENCE and s != "available")
    if data.get("precedence") is not None:
        given = []
        for item, path, line in _list(r, data, "precedence", base, "statuses, most restrictive first"):
            name = _text_of(item)
            if name not in known:
                r.add(path, line, _unknown_status(name, item, known))
            elif name in given:
                r.add(path, line, f"status '{name}' is listed twice")
            else:
                given.append(name)
        missing = [s for s in known if s not in given and s != "available"]
        if missing and given:
            r.add(*at("precedence"), f"every status needs its place; add: {', '.join(missing)}")
        precedence = tuple(given) or precedence

    company_keywords = dict(DEFAULT_KEYWORDS)
    if data.get("keywords") is not None:
        company_keywords = _keywords(r, data["keywords"], *at("keywords"), known)
    defaults = dict(
        without_keyword=_status_or_ignore(r, data, "without_keyword", base, known, "meeting"),
        out_of_office=_status_or_ignore(r, data, "out_of_office", base, known, "away"),
        visibility=_choice(r, data, "visibility", base, ("everyone", "receptionists"), "everyone"),
    )
    credentials_file = None
    if data.get("credentials_file") is not None:
        credentials_file = _text_of(data["credentials_file"])
        if not credentials_file:
            r.add(*at("credentials_file"), f"expected a file path, got {_describe(data['credentials_file'])}")

    servers = _servers(r, data, base)
    employees = _employees(r, data, base, servers, company_keywords, defaults, known)
    if r.problems:
        raise ConfigError(r.problems)
    return CalendarConfig(servers=servers, employees=tuple(employees), interval=interval, past_days=past_days,
                          horizon_days=horizon_days, timezone=timezone, parallel=parallel,
                          backoff_initial=backoff_initial, backoff_max=backoff_max, statuses=known,
                          precedence=precedence, credentials_file=credentials_file, source=source)


def _list(r: _Reader, data: dict, key: str, base: str, what: str):
    value = data.get(key)
    path = f"{base}.{key}" if base else key
    if value is None:
        return []
    if not isinstance(value, list):
        r.add(path, r.line(data, key), f"expected a list of {what}, got {_describe(value)}")
        return []
    lines = getattr(value, "item_lines", None) or [r.line(data, key)] * len(value)
    return [(item, f"{path}[{i}]", lines[i]) for i, item in enumerate(value)]


def _unknown_status(name, value, known) -> str:
    close = difflib.get_close_matches(str(name), known, n=1) if name else []
    hint = f"did you mean '{close[0]}'? " if close else ""
    return (f"unknown status {_describe(value)}; {hint}expected one of {', '.join(known)} "
            f"(add company statuses under 'statuses')")


def _zone(r: _Reader, value, path, line) -> str | None:
    if value is None:
        return None
    name = _text_of(value)
    try:
        if not name:
            raise ZoneInfoNotFoundError
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        r.add(path, line, f"expected an IANA time zone like 'Europe/London', got {_describe(value)}")
        return None
    return name


def _keywords(r: _Reader, value, path, line, known) -> dict[str, str]:
    if not isinstance(value, dict):
        r.add(path, line, f"expected a mapping of keyword -> status, got {_describe(value)}")
        return {}
    r.keys(value, path, tuple(str(k) for k in value))      # duplicates and secret-looking keys
    out = {}
    for key, status in value.items():
        word = (_text_of(key) or "").lower()
        where, where_line = f"{path}.{key}", r.line(value, key)
        if not KEYWORD_PATTERN.fullmatch(word):
            r.add(where, where_line, f"a keyword is one word of letters, digits, '_' or '-' (up to 32), "
                  f"got {_describe(key)}")
            continue
        if word in out:
            r.add(where, where_line, f"keyword '{word}' is given twice (keywords ignore case)")
        if _text_of(status) not in known:
            r.add(where, where_line, _unknown_status(_text_of(status), status, known))
            continue
        out[word] = _text_of(status)
    return out


def _status_or_ignore(r: _Reader, data, key, base, known, default):
    if key not in data:
        return default
    value = data[key]
    path = f"{base}.{key}" if base else key
    if value is None or value == "ignore":
        return None
    if _text_of(value) not in known:
        r.add(path, r.line(data, key), _unknown_status(_text_of(value), value, known) + ", or 'ignore'")
        return default
    return _text_of(value)


def _choice(r: _Reader, data, key, base, choices, default):
    if data.get(key) is None:
        return default
    value = data[key]
    if value not in choices or not isinstance(value, str):
        r.add(f"{base}.{key}" if base else key, r.line(data, key),
              f"expected one of {', '.join(choices)}; got {_describe(value)}")
        return default
    return value


def _url(r: _Reader, value, path, line, *, required: bool) -> str:
    if value is None:
        if required:
            r.add(path, line, "required: the URL")
        return ""
    text = _text_of(value) or ""
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        r.add(path, line, f"expected an http(s) URL, got {_describe(value)}")
        return ""
    if parts.username or parts.password:
        r.add(path, line, "secrets never go in this file: remove the user name and password from the URL "
              "and name a credentials entry instead")
        return ""
    return text


def _servers(r: _Reader, data, base) -> dict[str, ServerConfig]:
    value = data.get("servers")
    path = f"{base}.servers" if base else "servers"
    out: dict[str, ServerConfig] = {}
    if value is None:
        return out
    if not isinstance(value, dict):
        r.add(path, r.line(data, "servers"), f"expected servers by name (a mapping), got {_describe(value)}")
        return out
    r.keys(value, path, tuple(str(k) for k in value))
    for name, spec in value.items():
        where, line = f"{path}.{name}", r.line(value, name)
        text = _text_of(name) or ""
        if not _NAME.fullmatch(text):
            r.add(where, line, f"a server name is lower-case letters, digits, '_', '.', '-', got {_describe(name)}")
            continue
        if not isinstance(spec, dict):
            r.add(where, line, f"expected a server (a mapping with 'kind'), got {_describe(spec)}")
            continue
        r.keys(spec, where, _SERVER_KEYS)

        def key_at(key):
            return f"{where}.{key}", r.line(spec, key)

        kind = spec.get("kind")
        if kind not in SOURCE_KINDS:
            r.add(*key_at("kind"), f"expected one of {', '.join(SOURCE_KINDS)}; got {_describe(kind)}")
            continue
        fields = {"name": text, "kind": kind}
        creds = spec.get("credentials")
        if creds is not None:
            if not _NAME.fullmatch(_text_of(creds) or ""):
                r.add(*key_at("credentials"), f"expected the name of a credentials entry, got {_describe(creds)}")
            else:
                fields["credentials"] = _text_of(creds)
        elif kind in ("ews", "graph"):
            r.add(where, line, f"an {kind} server needs 'credentials' (the name of a credentials entry)")
        if kind == "graph":
            fields["url"] = _url(r, spec.get("url", "https://graph.microsoft.com/v1.0"), *key_at("url"),
                                 required=True)
            fields["authority"] = _url(r, spec.get("authority", "https://login.microsoftonline.com"),
                                       *key_at("authority"), required=True)
            tenant = _text_of(spec.get("tenant")) or ""
            if not _TENANT.fullmatch(tenant):
                r.add(*key_at("tenant"), f"expected the directory (tenant) id or domain, got "
                      f"{_describe(spec.get('tenant'))}")
            client_id = _text_of(spec.get("client_id")) or ""
            if not _GUID.fullmatch(client_id):
                r.add(*key_at("client_id"), f"expected the application (client) id, a GUID, got "
                      f"{_describe(spec.get('client_id'))}")
            fields.update(tenant=tenant, client_id=client_id)
        else:
            fields["url"] = _url(r, spec.get("url"), *key_at("url"), required=True)
        for key in ("auth", "access", "tenant", "client_id", "authority"):
            if key in spec and kind != ("ews" if key in ("auth", "access") else "graph"):
                r.add(*key_at(key), f"'{key}' is for {'ews' if key in ('auth', 'access') else 'graph'} servers")
        if "sync" in spec and kind != "caldav":
            r.add(*key_at("sync"), "'sync' is for caldav servers")
        if kind == "ews":
            fields["auth"] = _choice(r, spec, "auth", where, ("ntlm", "basic"), "ntlm")
            fields["access"] = _choice(r, spec, "access", where, ("impersonation", "delegate"), "impersonation")
        if kind == "caldav":
            fields["sync"] = _choice(r, spec, "sync", where, ("auto", "sync-token", "ctag"), "auto")
        verify = spec.get("verify_tls", True)
        if isinstance(verify, bool):
            fields["verify_tls"] = verify
        elif isinstance(verify, str) and verify:
            fields["verify_tls"] = verify
        else:
            r.add(*key_at("verify_tls"), f"expected true, false or a CA bundle path, got {_describe(verify)}")
        timeout = spec.get("timeout", 30)
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 1 <= timeout <= 300:
            r.add(*key_at("timeout"), f"expected seconds from 1 to 300, got {_describe(timeout)}")
        else:
            fields["timeout"] = float(timeout)
        out[text] = ServerConfig(**fields)
    return out


def _employees(r: _Reader, data, base, servers, company_keywords, defaults, known) -> list[EmployeeCalendar]:
    out: list[EmployeeCalendar] = []
    seen: dict[str, int | None] = {}
    for item, where, line in _list(r, data, "employees", base, "employees"):
        if not isinstance(item, dict):
            r.add(where, line, f"expected an employee (a mapping with 'extension' and 'server'), got "
                  f"{_describe(item)}")
            continue
        r.keys(item, where, _EMPLOYEE_KEYS)
        line = r.line(item)

        def key_at(key):
            return f"{where}.{key}", r.line(item, key)

        ext = _text_of(item.get("extension")) or ""
        if not _EXTENSION.fullmatch(ext):
            r.add(*key_at("extension"), f"an extension is 2 to 6 digits, got {_describe(item.get('extension'))}")
        elif ext in seen:
            r.add(*key_at("extension"), f"extension {ext} already has a calendar (line {seen[ext]}); "
                  f"one calendar per employee")
        else:
            seen[ext] = r.line(item, "extension")
        server_name = _text_of(item.get("server")) or ""
        server = servers.get(server_name)
        if server is None:
            names = ", ".join(sorted(servers)) or "none defined under 'servers'"
            r.add(*key_at("server"), f"unknown server {_describe(item.get('server'))}; expected one of: {names}")
        fields = {"extension": ext, "server": server_name}
        if server is not None and server.kind == "caldav":
            if item.get("calendar") is None:
                r.add(where, line, "a caldav employee needs 'calendar': the calendar collection URL "
                      "(absolute, or a path below the server URL)")
            else:
                target = _text_of(item["calendar"]) or ""
                if not target:
                    r.add(*key_at("calendar"), f"expected a URL or path, got {_describe(item['calendar'])}")
                else:
                    joined = urllib.parse.urljoin(server.url.rstrip("/") + "/", target)
                    fields["calendar"] = _url(r, joined, *key_at("calendar"), required=True)
            if "mailbox" in item:
                r.add(*key_at("mailbox"), "'mailbox' is for ews and graph servers; caldav uses 'calendar'")
        elif server is not None:
            mailbox = _text_of(item.get("mailbox")) or ""
            if server.kind == "ews" and not _EMAIL.fullmatch(mailbox):
                r.add(*key_at("mailbox"), f"expected the mailbox's SMTP address, got {_describe(item.get('mailbox'))}")
            elif server.kind == "graph" and not (_EMAIL.fullmatch(mailbox) or _GUID.fullmatch(mailbox)):
                r.add(*key_at("mailbox"), f"expected the user's principal name (e-mail) or object id, "
                      f"got {_describe(item.get('mailbox'))}")
            fields["mailbox"] = mailbox
            if "calendar" in item:
                r.add(*key_at("calendar"), f"'calendar' is for caldav servers; {server.kind} uses 'mailbox'")
        if item.get("credentials") is not None:
            creds = _text_of(item["credentials"]) or ""
            if not _NAME.fullmatch(creds):
                r.add(*key_at("credentials"), f"expected the name of a credentials entry, got "
                      f"{_describe(item['credentials'])}")
            else:
                fields["credentials"] = creds
        elif server is not None and server.kind == "caldav" and server.credentials is None:
            r.add(where, line, f"no credentials: give 'credentials' here or on server '{server_name}'")
        personal = _keywords(r, item["keywords"], *key_at("keywords"), known) if item.get("keywords") is not None else {}
        try:
            rules = KeywordRules(
                keywords=merge_keywords(company_keywords, personal),
                without_keyword=_status_or_ignore(r, item, "without_keyword", where, known,
                                                  defaults["without_keyword"]),
                out_of_office=_status_or_ignore(r, item, "out_of_office", where, known, defaults["out_of_office"]),
                visibility=_choice(r, item, "visibility", where, ("everyone", "receptionists"),
                                   defaults["visibility"]),
            )
        except ValueError as exc:
            r.add(where, line, str(exc))
            continue
        fields["rules"] = rules
        fields["timezone"] = _zone(r, item.get("timezone"), *key_at("timezone"))
        out.append(EmployeeCalendar(**fields))
    return out


def check_credentials(config: CalendarConfig, secrets: Secrets) -> None:
    """Every credentials entry the config uses has the fields its server needs; otherwise
    a :class:`ConfigError` naming the environment variables to set (never any value)."""
    problems = []
    needs: dict[str, tuple[str, str]] = {}
    for emp in config.employees:
        entry = config.credentials_for(emp)
        if entry is not None:
            needs.setdefault(entry, (config.servers[emp.server].kind, f"employees[{emp.extension}]"))
    for entry, (kind, used_by) in sorted(needs.items()):
        fields = secrets.get(entry)
        if not any(all(fields.get(f) for f in option) for option in NEEDED_FIELDS[kind]):
            wanted = " + ".join(Secrets.env_name(entry, f) for f in NEEDED_FIELDS[kind][0])
            problems.append(Problem(f"credentials '{entry}'", f"the {kind} credentials entry '{entry}' (used by "
                                    f"{used_by}) is incomplete: set {wanted} or put "
                                    f"{' and '.join(NEEDED_FIELDS[kind][0])} under '{entry}' in the secrets file",
                                    None, config.source))
    if problems:
        raise ConfigError(problems)
