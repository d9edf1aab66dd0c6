"""Deployment settings of ``switchboard serve``: where it listens, how it reaches FreeSWITCH.

Kept apart from the company YAML: companies are what the customer edits, this is
what the operator of the machine edits.  Defaults in code, then the YAML file,
then environment variables for secrets (wazo-calld style layering), so the ESL
password never has to sit in a file that is shared around.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from fastpath.errors import ConfigError, Problem
from fastpath.yaml_source import load_yaml

DEFAULT_ESL_PASSWORD = "ClueCon"     # FreeSWITCH's vanilla password: refused


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class StaticFallback:
    """What the dialplan does for a company while Switchboard is unreachable."""

    ring: tuple[str, ...]        # extensions of the operator group, rung at once
    voicemail: str               # then this mailbox
    ring_seconds: int = 30


@dataclass(frozen=True)
class ServiceConfig:
    outbound: Listen = Listen("127.0.0.1", 8084)        # FreeSWITCH's `socket` app connects here
    directory: Listen = Listen("127.0.0.1", 8085)       # mod_xml_curl fetches users here
    esl: Listen = Listen("127.0.0.1", 8021)             # FreeSWITCH's mod_event_socket
    esl_password: str = ""
    gateway: str = "carrier"                            # sofia gateway for external numbers
    max_calls: int = 4000                               # concurrent call connections (greenlet pool) per worker
    workers: int = 1                                    # outbound-server processes sharing the outbound port
    fallback: dict[str, StaticFallback] = field(default_factory=dict)   # by company id
    fs_conf_dir: str = "/etc/freeswitch"
    calendars: str | None = None                        # calendar config file: run the calendar sync worker
    crm: str | None = None                              # CRM config file: run the CRM refresher


_KEYS = ("outbound", "directory", "esl", "esl_password", "gateway", "max_calls", "workers", "fallback",
         "fs_conf_dir", "calendars", "crm")
MAX_WORKERS = 16


def _listen(value, path: str, problems: list[Problem], line, source) -> Listen | None:
    if not isinstance(value, str) or value.count(":") < 1:
        problems.append(Problem(path, f"expected HOST:PORT, got {value!r}", line, source))
        return None
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit() or not 0 < int(port) < 65536 or not host:
        problems.append(Problem(path, f"expected HOST:PORT with a port from 1 to 65535, got {value!r}",
                                line, source))
        return None
    return Listen(host, int(port))


def load_service_config(path: str | None, environ: dict[str, str] | None = None) -> ServiceConfig:
    """Defaults, then ``path`` (YAML, a top-level ``service:`` mapping or the mapping itself),
    then ``SWITCHBOARD_ESL_PASSWORD`` from the environment.  Every problem is reported at once."""
    environ = os.environ if environ is None else environ
    config = ServiceConfig()
    problems: list[Problem] = []
    if path is not None:
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise ConfigError([Problem("(document)", f"cannot read the service config: {exc.strerror}",
                                       None, path)]) from None
        data = load_yaml(text, path)
        if isinstance(data, dict) and "service" in data:
            data = data["service"]
        if not isinstance(data, dict):
            raise ConfigError([Problem("(document)", "expected a mapping of service settings", 1, path)])
        lines = getattr(data, "key_lines", {})
        changes = {}
        for key, value in data.items():
            line = lines.get(key)
            where = f"service.{key}"
            if key not in _KEYS:
                problems.append(Problem(where, f"unknown key; expected one of {', '.join(_KEYS)}", line, path))
            elif key in ("outbound", "directory", "esl"):
                listen = _listen(value, where, problems, line, path)
                if listen:
                    changes[key] = listen
            elif key in ("esl_password", "gateway", "fs_conf_dir"):
                if not isinstance(value, str) or not value or any(c in value for c in "\r\n\"'<>&"):
                    problems.append(Problem(where, "expected a non-empty string without quotes, "
                                                   "'<', '>', '&' or line breaks", line, path))
                else:
                    changes[key] = value
            elif key in ("calendars", "crm"):
                resolved = _config_file(value, where, problems, line, path)
                if resolved:
                    changes[key] = resolved
            elif key == "max_calls":
                if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 100_000:
                    problems.append(Problem(where, "expected a whole number from 1 to 100000", line, path))
                else:
                    changes[key] = int(value)
            elif key == "workers":
                if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_WORKERS:
                    problems.append(Problem(where, f"expected a whole number of outbound-server processes from 1 "
                                                   f"to {MAX_WORKERS}, got {value!r}", line, path))
                else:
                    changes[key] = int(value)
            else:
                changes[key] = _fallbacks(value, where, problems, line, path)
        config = replace(config, **changes)
    if environ.get("SWITCHBOARD_ESL_PASSWORD"):
        config = replace(config, esl_password=environ["SWITCHBOARD_ESL_PASSWORD"])
    if not config.esl_password:
        problems.append(Problem("service.esl_password", "no Event Socket password: set service.esl_password "
                                "or SWITCHBOARD_ESL_PASSWORD", None, path))
    elif config.esl_password == DEFAULT_ESL_PASSWORD:
        problems.append(Problem("service.esl_password", "FreeSWITCH's default password 'ClueCon' is refused; "
                                "choose your own", None, path))
    if problems:
        raise ConfigError(problems)
    return config


def _config_file(value, where: str, problems: list[Problem], line, source) -> str | None:
    """A path to another config file, relative to the service config's folder; it must exist."""
    if not isinstance(value, str) or not value.strip():
        problems.append(Problem(where, "expected the path of a config file", line, source))
        return None
    resolved = os.path.join(os.path.dirname(os.path.abspath(source)), os.path.expanduser(value))
    if not os.path.isfile(resolved):
        problems.append(Problem(where, f"no such file: {resolved}", line, source))
        return None
    return resolved


def _fallbacks(value, where: str, problems: list[Problem], line, source) -> dict[str, StaticFallback]:
    out = {}
    if not isinstance(value, dict):
        problems.append(Problem(where, "expected a mapping of company id → {ring: [...], voicemail: ...}",
                                line, source))
        return out
    for company, spec in value.items():
        here = f"{where}.{company}"
        ring = spec.get("ring") if isinstance(spec, dict) else None
        voicemail = spec.get("voicemail") if isinstance(spec, dict) else None
        ring = [str(x) for x in ring] if isinstance(ring, list) else None
        if not ring or not all(x.isdigit() for x in ring) or not str(voicemail or "").isdigit():
            problems.append(Problem(here, "expected {ring: [extensions], voicemail: extension}", line, source))
            continue
        seconds = spec.get("ring_seconds", 30)
        if not isinstance(seconds, int) or not 5 <= seconds <= 300:
            problems.append(Problem(f"{here}.ring_seconds", "expected a whole number of seconds from 5 to 300",
                                    line, source))
            continue
        out[str(company)] = StaticFallback(tuple(ring), str(voicemail), seconds)
    return out
