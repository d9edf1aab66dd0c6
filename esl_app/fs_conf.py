"""Render Switchboard's FreeSWITCH 1.10 config set (``freeswitch_conf/``) for a store and a service config.

``render_conf(store, service, out_dir)`` writes a drop-in set of files under
``out_dir`` laid out like FreeSWITCH's conf dir (``/etc/freeswitch`` on the
Debian packages); ``freeswitch_conf/README.md`` says where each goes and what
to edit.  The templates in ``freeswitch_conf/`` are well-formed XML with
``@@name@@`` placeholders in attribute values and ``<switchboard-generate
what="..."/>`` elements where generated elements go.  Rendering parses the
template, substitutes into the *parsed* tree and serialises it again, so every
value is XML-escaped by construction and the output is checked to parse.

Everything is rendered in memory first; only then are files written, each to a
temporary file beside its target and renamed over it once every temporary file
has been written.  A render that fails (a bad value, an unwritable directory)
therefore leaves the files of the previous render as they were.

FreeSWITCH facts relied on (with where they come from):

* ``socket host:port async full`` fails at once when nothing listens and the
  dialplan carries on with the next action (shared/FREESWITCH-NOTES.md "Config";
  mod_event_socket.c ``socket_function`` returns on connect failure).  After an
  async session ends without ``resume`` the application returns too, so the
  next action also runs when Switchboard lets go of a live call.
* ``park_timeout=<s>:<cause>`` is read once when the park starts and is an
  absolute deadline checked in the park loop, also after applications that
  Switchboard runs inside it (switch_ivr.c ``switch_ivr_park``): it is a ceiling
  on the whole controlled call, not an idle timer, hence a generous default.
* mod_xml_curl: binding params ``gateway-url`` (with ``bindings="directory"``),
  ``timeout`` (whole seconds), ``gateway-credentials`` + ``auth-scheme``;
  without a binding URL it does not load (mod_xml_curl.c ``do_config``).
* A directory answer of ``<result status="not found"/>`` — or no answer — makes
  FreeSWITCH fall back to the static XML (switch_xml.c ``switch_xml_locate``),
  which is why ``directory/switchboard_fallback.xml`` exists.
* ``user/<ext>@<domain>`` needs a ``dial-string`` param on the user or domain
  (mod_dptools.c ``user_outgoing_channel``: "No dial-string available").
* Preprocessor ``include`` is textual and ``$${name}`` is expanded anywhere in a
  file, even in comments; included files carry no ``<?xml?>`` declaration.
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
import secrets
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import phonenumbers

from fastpath import records as rec
from fastpath.emergency import emergency_pattern
from fastpath.errors import ConfigError, Problem, SwitchboardError

from .dial_string import clean_caller_name
from .service_config import Listen, ServiceConfig

__all__ = [
    "PHONE_CONTEXT", "CARRIER_CONTEXT", "FALLBACK_CONTEXT",
    "COMPANY_VARIABLE", "CALLED_COMPANY_VARIABLE", "CALLED_VARIABLE", "DONE_VARIABLE",
    "DIRECTORY_PATH", "DIAL_STRING", "DEFAULT_MAX_CALL_SECONDS", "DIRECTORY_CREDENTIALS_ENV",
    "StoreSnapshot", "read_store", "render_files", "render_conf", "write_files", "output_paths",
    "directory_url", "add_cli", "cmd_fsconf",
    "not_found_document", "directory_document", "domain_element", "employee_user", "department_user",
    "mailbox_only_user", "to_xml",
]

log = logging.getLogger(__name__)

#: Context of every directory user (registered phones).
PHONE_CONTEXT = "switchboard"
#: Context of calls from the carrier gateway and the external profile.
CARRIER_CONTEXT = "switchboard_carrier"
#: Where calls Switchboard did not take go (per company: destination = company id).
FALLBACK_CONTEXT = "switchboard_fallback"
#: Set by the directory on a phone's calls: the company the user belongs to.
COMPANY_VARIABLE = "switchboard_company"
#: Set by the dialplan: the company owning the dialled number or extension.
CALLED_COMPANY_VARIABLE = "switchboard_called_company"
#: Set by the dialplan: the extension, or the number as E.164 digits without "+".
CALLED_VARIABLE = "switchboard_called"
#: Set by Switchboard when it is done with a call: the static fallback never runs then.
DONE_VARIABLE = "switchboard_done"
#: Path of the directory endpoint (esl_app.directory) that mod_xml_curl posts to.
DIRECTORY_PATH = "/directory"
#: Vanilla's dial-string (directory/default.xml), without verto: how ``user/`` finds the phones.
DIAL_STRING = ("{sip_invite_domain=${dialed_domain},presence_id=${dialed_user}@${dialed_domain}}"
               "${sofia_contact(*/${dialed_user}@${dialed_domain})}")
#: Ceiling on a call's life (park_timeout / sched_hangup); 0 disables it.
DEFAULT_MAX_CALL_SECONDS = 4 * 3600
SAFETY_CAUSE = "ALLOTTED_TIMEOUT"
#: ``user:password`` that mod_xml_curl sends (HTTP basic) and the directory requires.
DIRECTORY_CREDENTIALS_ENV = "SWITCHBOARD_DIRECTORY_CREDENTIALS"

#: Template (relative to the template dir) -> output (relative to out_dir); "{gateway}" is filled in.
TEMPLATES = {
    "autoload_configs/event_socket.conf.xml": "autoload_configs/event_socket.conf.xml",
    "autoload_configs/xml_curl.conf.xml": "autoload_configs/xml_curl.conf.xml",
    "autoload_configs/modules.conf.xml": "autoload_configs/modules.conf.xml",
    "dialplan/switchboard.xml": "dialplan/switchboard.xml",
    "directory/switchboard_fallback.xml": "directory/switchboard_fallback.xml",
    "sip_profiles/external/carrier.xml": "sip_profiles/external/{gateway}.xml",
    "switchboard_vars.xml": "switchboard_vars.xml",
    "switchboard_carrier.xml": "switchboard_carrier.xml",
    "lang/en/ivr/switchboard-en.xml": "lang/en/ivr/switchboard-en.xml",
}
#: Written only when absent: the operator edits them (carrier credentials).
OPERATOR_OWNED = frozenset({"switchboard_carrier.xml"})
#: Alternatives per generated regex: PCRE with its default link size caps a compiled pattern at 64 KiB.
MAX_ALTERNATIVES = 200

_PLACEHOLDER = re.compile(r"@@([a-z_]+)@@")
_GENERATE = "switchboard-generate"
_GATEWAY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")      # as esl_app.dial_string accepts
_XML_INVALID = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_DIGITS = re.compile(r"[0-9]+")
_FILE_MODE = 0o640


# --- the store, read once ------------------------------------------------------

@dataclass
class CompanyConf:
    """One company as the config set needs it."""

    company: rec.CompanyRec
    numbers: list[str] = field(default_factory=list)                         # E.164 digits
    employees: dict[str, rec.EmployeeRec] = field(default_factory=dict)
    departments: dict[str, rec.DepartmentRec] = field(default_factory=dict)


@dataclass
class StoreSnapshot:
    companies: dict[str, CompanyConf]
    generation: int = 0


def read_store(store) -> StoreSnapshot:
    """Companies, their numbers and extensions, from one read transaction."""
    companies: dict[str, CompanyConf] = {}
    with store.read() as txn:
        raw = txn.get(b"generation", db=store.db["meta"])
        generation = int.from_bytes(bytes(raw), "little") if raw is not None else 0
        for _key, value in txn.cursor(db=store.db["company"]):
            company = rec.decode_company(value)
            companies[company.id] = CompanyConf(company)
        for key, value in txn.cursor(db=store.db["ext"]):
            ext = bytes(key).decode()
            record = rec.decode_extension(ext, value)
            conf = companies.get(record.company)
            if conf is None:
                log.warning("extension %s belongs to unknown company %r: skipped", ext, record.company)
            elif isinstance(record, rec.DepartmentRec):
                conf.departments[ext] = record
            else:
                conf.employees[ext] = record
        for key, value in txn.cursor(db=store.db["number"]):
            number = bytes(key).decode()
            owner = rec.Reader(value, rec.REC_NUMBER).str()     # the company id is the first field
            conf = companies.get(owner)
            if conf is None:
                log.warning("number %s belongs to unknown company %r: skipped", number, owner)
            else:
                conf.numbers.append(number)
    for conf in companies.values():
        conf.numbers.sort()
    return StoreSnapshot(companies, generation)


# --- small helpers --------------------------------------------------------------

def xml_text(value) -> str:
    """``value`` as text XML 1.0 can carry (characters it forbids are dropped)."""
    return _XML_INVALID.sub("", str(value))


def display_name(value: str | None, fallback: str) -> str:
    """A caller-ID name safe in every FreeSWITCH parser (see esl_app.dial_string)."""
    return clean_caller_name(value) or fallback


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _connect_host(host: str) -> str:
    """Where FreeSWITCH connects to reach a server listening on ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def directory_url(listen: Listen) -> str:
    """The gateway-url mod_xml_curl posts to, for the directory server on ``listen``."""
    host = _connect_host(listen.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{listen.port}{DIRECTORY_PATH}"


def _socket_address(listen: Listen) -> str:
    """``host:port`` for the ``socket`` application (it splits at the last ':')."""
    return f"{_connect_host(listen.host)}:{listen.port}"


def _chunks(items: list[str], size: int | None = None):
    size = size or MAX_ALTERNATIVES
    for start in range(0, len(items), size):
        yield start // size, items[start:start + size]


def _alternation(items: list[str]) -> str:
    return "|".join(re.escape(item) for item in items)


def _param(name: str, value: str) -> ET.Element:
    return ET.Element("param", {"name": name, "value": xml_text(value)})


def _extension(name: str, conditions: list[tuple[str, str]], actions: list[tuple[str, str]]) -> ET.Element:
    """``<extension>`` whose conditions must all match; the actions go in the last one."""
    ext = ET.Element("extension", {"name": xml_text(name)})
    condition = None
    for field_name, expression in conditions:
        condition = ET.SubElement(ext, "condition", {"field": field_name, "expression": expression})
    for application, data in actions:
        ET.SubElement(condition, "action", {"application": application, "data": xml_text(data)})
    return ext


# --- directory XML (shared with esl_app.directory) ---------------------------

def not_found_document() -> ET.Element:
    """FreeSWITCH's "not found" answer: it then falls back to its static XML."""
    doc = ET.Element("document", {"type": "freeswitch/xml"})
    section = ET.SubElement(doc, "section", {"name": "result"})
    ET.SubElement(section, "result", {"status": "not found"})
    return doc


def directory_document(domains: list[ET.Element]) -> ET.Element:
    doc = ET.Element("document", {"type": "freeswitch/xml"})
    section = ET.SubElement(doc, "section", {"name": "directory"})
    section.extend(domains)
    return doc


def domain_element(name: str, users: list[ET.Element], variables: dict[str, str] | None = None) -> ET.Element:
    """``<domain>`` with the dial-string ``user/`` needs and the users in one group."""
    domain = ET.Element("domain", {"name": xml_text(name)})
    params = ET.SubElement(domain, "params")
    ET.SubElement(params, "param", {"name": "dial-string", "value": DIAL_STRING})
    if variables:
        block = ET.SubElement(domain, "variables")
        for key, value in variables.items():
            ET.SubElement(block, "variable", {"name": key, "value": xml_text(value)})
    groups = ET.SubElement(domain, "groups")
    group = ET.SubElement(groups, "group", {"name": "switchboard"})
    ET.SubElement(group, "users").extend(users)
    return domain


def _user(extension: str, params: list[tuple[str, str]], variables: list[tuple[str, str]]) -> ET.Element:
    user = ET.Element("user", {"id": extension, "mailbox": extension})
    block = ET.SubElement(user, "params")
    for key, value in params:
        ET.SubElement(block, "param", {"name": key, "value": xml_text(value)})
    if variables:
        block = ET.SubElement(user, "variables")
        for key, value in variables:
            ET.SubElement(block, "variable", {"name": key, "value": xml_text(value)})
    return user


def _caller_variables(company: rec.CompanyRec, name: str, extension: str) -> list[tuple[str, str]]:
    out = [("user_context", PHONE_CONTEXT),
           (COMPANY_VARIABLE, company.id),
           ("effective_caller_id_name", display_name(name, extension)),
           ("effective_caller_id_number", extension)]
    if company.outbound_caller_id and _DIGITS.fullmatch(company.outbound_caller_id):
        out.append(("outbound_caller_id_name", display_name(company.name, company.id)))
        out.append(("outbound_caller_id_number", "+" + company.outbound_caller_id))
    return out


_NO_LOGIN = [("sip-forbid-register", "true"), ("allow-empty-password", "false")]


def employee_user(employee: rec.EmployeeRec, company: rec.CompanyRec) -> ET.Element:
    """A phone user: the A1 hash (never a password), caller ID, context, mailbox.

    Without a hash the user can neither register nor authenticate a call
    (``sip-forbid-register`` is checked for every digest auth in sofia_reg.c)."""
    params = [("a1-hash", employee.a1_hash)] if employee.a1_hash else list(_NO_LOGIN)
    if employee.a1_hash:
        params.append(("allow-empty-password", "false"))
    params.append(("vm-enabled", "true"))
    return _user(employee.extension, params,
                 _caller_variables(company, employee.name, employee.extension))


def department_user(department: rec.DepartmentRec, company: rec.CompanyRec) -> ET.Element:
    """A department as a mailbox only (``voicemail:600`` needs the user 600): no login."""
    return _user(department.extension, _NO_LOGIN + [("vm-enabled", "true")],
                 _caller_variables(company, department.name, department.extension))


def mailbox_only_user(extension: str) -> ET.Element:
    """For the static fallback directory: dialable and a mailbox, never a login."""
    return _user(extension, _NO_LOGIN + [("vm-enabled", "true")], [])


def to_xml(element: ET.Element) -> str:
    """Indented, without declaration; empty elements written ``<x a="b"/>`` as vanilla's
    files are (ElementTree writes `` />``; a ``>`` in text or attributes is always
    escaped, so the only `` />`` it writes close elements)."""
    ET.indent(element, space="  ")
    return ET.tostring(element, encoding="unicode").replace(" />", "/>") + "\n"


# --- numbers as they may be dialled ----------------------------------------------

def _national_forms(e164: str) -> list[tuple[str, str, str]]:
    """``(country code, national prefix, national significant number)`` readings of
    a number dialled in its own country: ``020 7946 0000`` for 442079460000."""
    try:
        parsed = phonenumbers.parse("+" + e164)
    except phonenumbers.NumberParseException:
        return []
    region = phonenumbers.region_code_for_number(parsed)
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region) if region else None
    if metadata is None:
        return []
    nsn = phonenumbers.national_significant_number(parsed)
    cc = str(parsed.country_code)
    forms = [(cc, metadata.national_prefix or "", nsn)]
    if metadata.national_prefix and cc == "1":
        forms.append((cc, "", nsn))          # NANP: ten digits without the 1
    return forms


@dataclass
class _Routes:
    extensions: dict[str, list[str]]                              # company -> extensions
    numbers: dict[str, list[str]]                                 # company -> E.164
    national: dict[str, dict[tuple[str, str], list[str]]]         # company -> (cc, prefix) -> NSNs
    notes: list[str]


def _routes(snapshot: StoreSnapshot) -> _Routes:
    """What each company's matchers match; national forms that would be ambiguous
    (another number, an extension) are left out and reported."""
    extensions = {cid: sorted(list(c.employees) + list(c.departments), key=lambda e: (len(e), e))
                  for cid, c in snapshot.companies.items()}
    numbers = {cid: list(c.numbers) for cid, c in snapshot.companies.items()}
    taken = {n for ns in numbers.values() for n in ns} | {e for es in extensions.values() for e in es}
    readings: dict[str, set[tuple[str, str]]] = {}                # dialled digits -> {(company, e164)}
    forms: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
    for cid, ns in numbers.items():
        for number in ns:
            for cc, prefix, nsn in _national_forms(number):
                dialled = prefix + nsn
                if dialled == number:
                    continue                      # the E.164 matcher has it already
                readings.setdefault(dialled, set()).add((cid, number))
                forms.setdefault((cid, number), []).append((cc, prefix, nsn))
    notes = []
    national: dict[str, dict[tuple[str, str], list[str]]] = {}
    for (cid, number), items in sorted(forms.items()):
        for cc, prefix, nsn in items:
            dialled = prefix + nsn
            if dialled in taken or len(readings[dialled]) > 1:
                notes.append(f"{dialled} (national form of +{number}) is ambiguous: not matched")
                continue
            national.setdefault(cid, {}).setdefault((cc, prefix), []).append(nsn)
    for groups in national.values():
        for nsns in groups.values():
            nsns.sort()
    return _Routes(extensions, numbers, national, notes)


def _route_actions(company: str, called: str, outbound: str, max_call_seconds: int) -> list[tuple[str, str]]:
    actions = [("set", f"{CALLED_COMPANY_VARIABLE}={company}"),
               ("set", f"{CALLED_VARIABLE}={called}")]
    if max_call_seconds:
        actions += [("set", f"park_timeout={max_call_seconds}:{SAFETY_CAUSE}"),
                    ("sched_hangup", f"+{max_call_seconds} {SAFETY_CAUSE}")]
    actions += [("socket", f"{outbound} async full"),
                ("log", f"WARNING switchboard: Switchboard at {outbound} did not take the call to "
                        f"${{{CALLED_VARIABLE}}} (or let go of it): fallback of company {company}"),
                ("transfer", f"{company} XML {FALLBACK_CONTEXT}")]
    return actions


#: Phone feature codes (esl_app/feature_codes.py) and numbers phones dial out (E.164 or national).
FEATURE_CODE_PATTERN = r"^(\*3[0-3][0-9*]{0,16})$"
OUTBOUND_PATTERN = r"^(\+?[0-9]{7,20})$"      # never an extension (2-6 digits); short codes need a carrier route


def _phone_only_extensions(cid: str, outbound: str, max_call_seconds: int) -> list[ET.Element]:
    """Feature codes and outbound calls of company ``cid``'s phones: Switchboard decides (the
    engine routes an employee's outbound call through the gateway); without Switchboard they
    fail at once -- the static fallback rings the operators, which is no answer to either."""
    out = []
    for name, pattern in (("feature-codes", FEATURE_CODE_PATTERN), ("outbound", OUTBOUND_PATTERN)):
        actions = [a for a in _route_actions(cid, "$1", outbound, max_call_seconds) if a[0] != "transfer"]
        actions.append(("hangup", "NORMAL_TEMPORARY_FAILURE"))
        out.append(_extension(f"{cid}-{name}", [(f"${{{COMPANY_VARIABLE}}}", f"^{re.escape(cid)}$"),
                                                ("destination_number", pattern)], actions))
    return out


def _emergency_extensions(snapshot: StoreSnapshot, gateway: str) -> list[ET.Element]:
    """Per company, its country's emergency numbers (``fastpath.emergency``, from libphonenumber)
    dialled by its phones go straight to the carrier gateway: first in the phones' context, so
    no extension or route shadows them, and never through Switchboard's socket, so they work
    while Switchboard is down.  The caller ID is the company's outbound number when it has one
    (the emergency services call that back), else the phone's own."""
    out = []
    for cid, conf in sorted(snapshot.companies.items()):
        pattern = emergency_pattern(conf.company.country)
        if pattern is None:
            log.warning("dialplan: libphonenumber knows no emergency numbers for %s (company %s): "
                        "its phones need an emergency route of the operator's own",
                        conf.company.country, cid)
            continue
        actions = [("log", f"ALERT switchboard: emergency call to $1 from ${{caller_id_number}} "
                           f"(company {cid}), straight to gateway {gateway}")]
        if conf.company.outbound_caller_id and _DIGITS.fullmatch(conf.company.outbound_caller_id):
            actions += [("set", "effective_caller_id_number=${outbound_caller_id_number}"),
                        ("set", "effective_caller_id_name=${outbound_caller_id_name}")]
        actions += [("set", "hangup_after_bridge=true"),
                    ("bridge", f"sofia/gateway/{gateway}/$1")]
        out.append(_extension(f"{cid}-emergency", [(f"${{{COMPANY_VARIABLE}}}", f"^{re.escape(cid)}$"),
                                                   ("destination_number", f"^({pattern})$")], actions))
    return out


def _route_extensions(routes: _Routes, outbound: str, max_call_seconds: int, *,
                      with_extensions: bool) -> list[ET.Element]:
    out = []
    for cid in sorted(routes.numbers):
        if with_extensions:
            for i, chunk in _chunks(routes.extensions[cid]):
                out.append(_extension(
                    f"{cid}-extensions-{i + 1}",
                    [(f"${{{COMPANY_VARIABLE}}}", f"^{re.escape(cid)}$"),
                     ("destination_number", f"^({_alternation(chunk)})$")],
                    _route_actions(cid, "$1", outbound, max_call_seconds)))
        for i, chunk in _chunks(routes.numbers[cid]):
            out.append(_extension(
                f"{cid}-numbers-{i + 1}",
                [("destination_number", f"^(?:\\+|00)?({_alternation(chunk)})$")],
                _route_actions(cid, "$1", outbound, max_call_seconds)))
        for (cc, prefix), nsns in sorted(routes.national.get(cid, {}).items()):
            for i, chunk in _chunks(nsns):
                out.append(_extension(
                    f"{cid}-national-{cc}{'-' + prefix if prefix else ''}-{i + 1}",
                    [("destination_number", f"^{re.escape(prefix)}({_alternation(chunk)})$")],
                    _route_actions(cid, f"{cc}$1", outbound, max_call_seconds)))
    if with_extensions:         # after every company's numbers: a phone dialling one reaches it as such
        for cid in sorted(routes.numbers):
            out.extend(_phone_only_extensions(cid, outbound, max_call_seconds))
    return out


# --- the static fallback ------------------------------------------------------------

@dataclass
class _Fallback:
    company: CompanyConf
    ring: list[str]
    voicemail: str
    ring_seconds: int


def _fallbacks(snapshot: StoreSnapshot, service: ServiceConfig, problems: list[Problem]) -> list[_Fallback]:
    out = []
    for cid, fallback in sorted(service.fallback.items()):
        where = f"service.fallback.{cid}"
        conf = snapshot.companies.get(cid)
        if conf is None:
            problems.append(Problem(where, f"no company {cid!r} in the store"))
            continue
        ring: list[str] = []
        for i, ext in enumerate(fallback.ring):
            if ext in conf.employees:
                ring.append(ext)
            elif ext in conf.departments:
                ring.extend(member for member, _name, _slot in conf.departments[ext].members)
            else:
                problems.append(Problem(f"{where}.ring[{i}]",
                                        f"{ext} is not an employee or department of company {cid}"))
        if fallback.voicemail not in conf.employees and fallback.voicemail not in conf.departments:
            problems.append(Problem(f"{where}.voicemail",
                                    f"{fallback.voicemail} is not an employee or department of company {cid}"))
        ring = list(dict.fromkeys(ring))
        for ext in ring:
            if not conf.employees[ext].a1_hash:
                log.warning("%s: %s has no SIP credentials, so no phone of theirs can ring", where, ext)
        out.append(_Fallback(conf, ring, fallback.voicemail, fallback.ring_seconds))
    return out


def _fallback_extension(fb: _Fallback) -> ET.Element:
    cid, domain = fb.company.company.id, fb.company.company.sip_domain
    legs = ",".join(f"[leg_timeout={fb.ring_seconds}]user/{ext}@{domain}" for ext in fb.ring)
    actions = [("log", f"WARNING switchboard: static fallback of company {cid}: ringing "
                       f"{', '.join(fb.ring) or 'nobody'} for {fb.ring_seconds} s, then voicemail box {fb.voicemail}")]
    if legs:
        actions += [("set", "continue_on_fail=true"),
                    ("set", "hangup_after_bridge=true"),
                    ("set", f"call_timeout={fb.ring_seconds}"),
                    ("bridge", legs)]
    actions += [("answer", ""),
                ("voicemail", f"default {domain} {fb.voicemail}"),
                ("hangup", "NORMAL_CLEARING")]
    return _extension(f"fallback-{cid}", [("destination_number", f"^{re.escape(cid)}$")], actions)


def _fallback_domains(fallbacks: list[_Fallback]) -> list[ET.Element]:
    users: dict[str, dict[str, None]] = {}
    for fb in fallbacks:
        boxes = users.setdefault(fb.company.company.sip_domain, {})
        for ext in fb.ring + [fb.voicemail]:
            boxes[ext] = None
    return [domain_element(domain, [mailbox_only_user(ext) for ext in exts])
            for domain, exts in sorted(users.items())]


# --- rendering ------------------------------------------------------------------------

def default_template_dir() -> Path:
    """``$SWITCHBOARD_FSCONF_TEMPLATES``, else ``freeswitch_conf/`` beside the package."""
    explicit = os.environ.get("SWITCHBOARD_FSCONF_TEMPLATES")
    return Path(explicit) if explicit else Path(__file__).resolve().parent.parent / "freeswitch_conf"


def output_paths(gateway: str) -> dict[str, str]:
    """Template -> output path relative to the conf dir."""
    return {template: out.format(gateway=gateway) for template, out in TEMPLATES.items()}


def _check_service(service: ServiceConfig, directory_credentials: str | None,
                   max_call_seconds: int) -> list[Problem]:
    problems = []
    if not _is_loopback(service.esl.host):
        problems.append(Problem("service.esl", f"{service.esl} is not a loopback address: this config set "
                                              "keeps the Event Socket on loopback (127.0.0.1 or ::1)"))
    password = service.esl_password
    if not password or password in ("ClueCon", "1234"):
        problems.append(Problem("service.esl_password", "set a password of your own (not FreeSWITCH's "
                                                        "default); SWITCHBOARD_ESL_PASSWORD works too"))
    for key, value in (("service.esl_password", password), ("service.gateway", service.gateway),
                       (DIRECTORY_CREDENTIALS_ENV, directory_credentials or "")):
        if "$$" in value or "${" in value or any(c in value for c in "\r\n\"'<>&"):
            problems.append(Problem(key, "must not contain '$$', '${', quotes, '<', '>', '&' or line breaks "
                                         "(FreeSWITCH's preprocessor and XML would read them)"))
    if not _GATEWAY.fullmatch(service.gateway or ""):
        problems.append(Problem("service.gateway", f"{service.gateway!r} is not a plain name (letters, digits, "
                                                   "'_', '.', '-'): it names a file and sofia/gateway/NAME"))
    if directory_credentials is not None and ":" not in directory_credentials[1:]:
        problems.append(Problem(DIRECTORY_CREDENTIALS_ENV, "expected USER:PASSWORD"))
    if not isinstance(max_call_seconds, int) or not 0 <= max_call_seconds <= 7 * 86400:
        problems.append(Problem("max_call_seconds", "expected whole seconds from 0 (no ceiling) to 604800"))
    return problems


def _parse_template(path: Path) -> ET.Element:
    parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))
    try:
        return ET.parse(path, parser).getroot()
    except FileNotFoundError:
        raise SwitchboardError(f"template {path} is missing: set SWITCHBOARD_FSCONF_TEMPLATES to the "
                               f"freeswitch_conf/ directory of Switchboard's source") from None
    except ET.ParseError as exc:
        raise SwitchboardError(f"template {path} is not well-formed XML: {exc}") from None


def _fill(root: ET.Element, values: dict[str, str], generated: dict[str, list[ET.Element]],
          name: str) -> ET.Element:
    def sub(text: str | None) -> str | None:
        if text is None or "@@" not in text:
            return text
        def one(match):
            if match.group(1) not in values:
                raise SwitchboardError(f"template {name}: unknown placeholder {match.group(0)}")
            return xml_text(values[match.group(1)])
        return _PLACEHOLDER.sub(one, text)

    for element in root.iter():
        element.text, element.tail = sub(element.text), sub(element.tail)
        for key, value in element.attrib.items():
            element.attrib[key] = sub(value)
    for parent in list(root.iter()):
        for index, child in reversed(list(enumerate(parent))):
            if child.tag == _GENERATE:
                what = child.get("what", "")
                if what not in generated:
                    raise SwitchboardError(f"template {name}: nothing generates {what!r}")
                parent[index:index + 1] = [_copy(e) for e in generated[what]]
    return root


def _copy(element: ET.Element) -> ET.Element:
    return ET.fromstring(ET.tostring(element))


def render_files(snapshot: StoreSnapshot, service: ServiceConfig, *,
                 max_call_seconds: int = DEFAULT_MAX_CALL_SECONDS,
                 directory_credentials: str | None = None,
                 default_password: str | None = None,
                 template_dir: Path | str | None = None) -> dict[str, str]:
    """Every file of the config set as text, by path relative to the conf dir.

    Pure: reads the templates, writes nothing.  Raises :class:`ConfigError`
    listing every problem (service settings, fallbacks that name unknown
    extensions) before anything is produced."""
    problems = _check_service(service, directory_credentials, max_call_seconds)
    fallbacks = _fallbacks(snapshot, service, problems)
    if problems:
        raise ConfigError(problems)
    routes = _routes(snapshot)
    for note in routes.notes:
        log.warning("dialplan: %s", note)
    outbound = _socket_address(service.outbound)
    credentials = []
    if directory_credentials:
        credentials = [_param("gateway-credentials", directory_credentials), _param("auth-scheme", "basic")]
    generated = {
        "phone-routes": (_emergency_extensions(snapshot, service.gateway)
                         + _route_extensions(routes, outbound, max_call_seconds, with_extensions=True)),
        "carrier-routes": _route_extensions(routes, outbound, max_call_seconds, with_extensions=False),
        "fallbacks": [_fallback_extension(fb) for fb in fallbacks],
        "fallback-directory": _fallback_domains(fallbacks),
        "xml-curl-credentials": credentials,
    }
    values = {
        "esl_host": "127.0.0.1" if service.esl.host == "localhost" else service.esl.host,
        "esl_port": str(service.esl.port),
        "esl_password": service.esl_password,
        "directory_url": directory_url(service.directory),
        "gateway": service.gateway,
        "carrier_context": CARRIER_CONTEXT,
        "default_password": default_password or secrets.token_urlsafe(18),
    }
    base = Path(template_dir) if template_dir is not None else default_template_dir()
    out = {}
    for template, target in output_paths(service.gateway).items():
        root = _fill(_parse_template(base / template), values, generated, template)
        text = to_xml(root)
        if "@@" in text or f"<{_GENERATE}" in text:
            raise SwitchboardError(f"template {template}: a placeholder was left unfilled")
        try:
            ET.fromstring(text)
        except ET.ParseError as exc:      # cannot happen short of a bug: never write it
            raise SwitchboardError(f"rendered {target} is not well-formed XML: {exc}") from None
        out[target] = text
    return out


def render_conf(store, service: ServiceConfig, out_dir, *,
                max_call_seconds: int = DEFAULT_MAX_CALL_SECONDS,
                directory_credentials: str | None = None,
                template_dir: Path | str | None = None) -> list[Path]:
    """Render the config set for ``store`` and ``service`` into ``out_dir``.

    Returns every file of the set (operator-owned ones that already existed are
    kept, not rewritten).  All-or-nothing as far as the file system allows: all
    files are staged as temporary files first, then renamed into place; if
    staging fails nothing is replaced."""
    files = render_files(read_store(store), service, max_call_seconds=max_call_seconds,
                         directory_credentials=directory_credentials, template_dir=template_dir)
    return write_files(Path(out_dir), files, keep_existing=OPERATOR_OWNED)


def write_files(out_dir: Path, files: dict[str, str], *, keep_existing=frozenset()) -> list[Path]:
    """Stage every file beside its target, then rename them all into place."""
    staged: list[tuple[Path, Path]] = []
    try:
        for rel, text in files.items():
            target = out_dir / rel
            if rel in keep_existing and target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            staged.append((_stage(target, text.encode("utf-8")), target))
    except OSError as exc:
        _discard(tmp for tmp, _ in staged)
        raise SwitchboardError(f"cannot write the FreeSWITCH config to {out_dir}: "
                               f"{exc.strerror or exc} ({exc.filename or out_dir}); nothing was changed") from exc
    except BaseException:
        _discard(tmp for tmp, _ in staged)
        raise
    replaced = 0
    try:
        for tmp, target in staged:
            os.replace(tmp, target)
            replaced += 1
    except OSError as exc:
        raise SwitchboardError(f"cannot put {target} in place: {exc.strerror or exc}; "
                               f"{replaced} of {len(staged)} files were replaced") from exc
    finally:
        _discard(tmp for tmp, _ in staged[replaced:])
    for directory in {target.parent for _, target in staged}:
        _fsync_dir(directory)
    return [out_dir / rel for rel in files]


def _stage(target: Path, data: bytes) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            try:
                old = target.stat()
            except FileNotFoundError:
                os.chmod(tmp, _FILE_MODE)
            else:                              # keep what the operator set up
                os.chmod(tmp, old.st_mode & 0o7777)
                try:
                    os.chown(tmp, old.st_uid, old.st_gid)
                except PermissionError:
                    pass
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _discard(paths) -> None:
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- command line ---------------------------------------------------------------------

def add_cli(subparsers) -> argparse.ArgumentParser:
    """Add ``switchboard fsconf [--out DIR] [--service FILE]`` (it uses the global ``--store``)."""
    p = subparsers.add_parser(
        "fsconf", help="write the FreeSWITCH config set (dialplan, directory binding, event socket, gateway)",
        description="Render freeswitch_conf/ for the loaded store and the service config into DIR; "
                    "see freeswitch_conf/README.md for where the files go.")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="target directory (default: service.fs_conf_dir, /etc/freeswitch)")
    p.add_argument("--service", default=None, metavar="FILE",
                   help="service config YAML (default: built-in defaults; the Event Socket password "
                        "from SWITCHBOARD_ESL_PASSWORD)")
    p.add_argument("--max-call-seconds", type=int, default=DEFAULT_MAX_CALL_SECONDS,
                   help=f"ceiling on a call's life, 0 for none (default {DEFAULT_MAX_CALL_SECONDS})")
    p.set_defaults(func=cmd_fsconf)
    return p


def cmd_fsconf(args) -> int:
    """Render into ``args.out``; print every file of the set, one per line."""
    import sys

    from fastpath.store import Store

    from .service_config import load_service_config

    service = load_service_config(args.service)
    with Store(args.store, readonly=True) as store:
        paths = render_conf(store, service, args.out or service.fs_conf_dir,
                            max_call_seconds=args.max_call_seconds,
                            directory_credentials=os.environ.get(DIRECTORY_CREDENTIALS_ENV) or None)
    for path in paths:
        print(path)
    print("now: fs_cli -x reloadxml (restart FreeSWITCH after the first install: modules, the Event Socket "
          "and the xml_curl binding are read at module load)", file=sys.stderr)
    return 0
