"""ICM's hot path: who is the returning caller's manager?  Reads LMDB only.

``lookup(store, company, caller, now, max_age=0, order=("history", "crm"))``
returns ``(extension, source, when)`` or ``None``:

1. the caller number as the switch sent it becomes E.164 digits with the
   company's compiled dialling rules (:mod:`fastpath.caller_numbers`), read
   from the store's ``dial`` table (key: company id; written by
   ``Store.load_config`` with the rest of the config); a caller ID that is no phone
   number (``anonymous``) gives ``None``;
2. the sources are asked in ``order``:

   * ``"history"``: the caller's call-history entry (who last talked to
     them, inbound or outbound); skipped when older than ``max_age`` seconds
     (0 = any age).  ``source`` is ``"history"``, ``when`` the call's time;
   * ``"crm"``: the company's cached CRM answer about the caller (written by
     ``esl_app/crm``); used only when it names an extension and has not
     expired.  ``source`` is the CRM that answered (``"amocrm"``…), ``when``
     the time it was fetched;

   both live in the caller's one record (table ``caller``, key: the digits;
   :class:`fastpath.records.CallerRec`), read once;

   an answer counts only if its extension is still an employee *of this
   company* (history is kept per caller across companies, and the config may
   have changed since the answer was written).  A CRM answer records the
   config generation its extension was checked against; while that is still
   the store's generation, the check is not repeated.

Exceptions (extensions ICM never routes to, e.g. the director), ringing and the
fall-back to the normal route are the route step's business: this only says
who, from where, since when.

This module is the readable reference; ``fastpath/_icm_lookup.pyx`` is the
compiled twin, chosen like the engine (``SWITCHBOARD_PUREPYTHON=1`` /
``SWITCHBOARD_FORCE_CYTHON=1``).  Both read one snapshot (one read
transaction) per lookup.
"""
from __future__ import annotations

import datetime as dt
import os
import struct
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from . import records as rec
from .caller_numbers import normalise, normalise_py
from .errors import StoreError

#: The store's table of each company's compiled dialling rules (key: company id), one of
#: ``Store``'s config tables: ``Store.load_config`` writes it with the rest of the config.
RULES_TABLE = "dial"
SOURCES = ("history", "crm")
DEFAULT_ORDER = SOURCES


def company_rules(store, company: str) -> bytes:
    """The compiled dialling rules of ``company`` from the store; StoreError if it has none."""
    rules = store.dial_rules(company)
    if rules is None:
        raise StoreError(f"no dialling rules for company {company!r} in the store at {store.path}: "
                         f"no such company in the loaded config (reload the config if it was just added)")
    return rules


def caller_key(store, company: str, caller: str) -> str | None:
    """The E.164 digits ICM files ``caller`` under for ``company`` (the key of the ``caller``
    table), read with the company's rules exactly as :func:`lookup` reads it; None when the
    caller ID is no phone number."""
    return normalise(company_rules(store, company), caller)


def _is_employee_of(txn, store, extension: str, company: str) -> bool:
    if not extension or len(extension.encode()) > 511:     # no such key can exist (LMDB keys are 1..511 bytes)
        return False
    raw = txn.get(extension.encode(), db=store.db["ext"])
    if raw is None or raw[0] != rec.REC_EMPLOYEE:
        return False
    return rec.decode_employee(extension, raw).company == company


def lookup_ref(store, company: str, caller: str, now, max_age: int = 0,
               order: tuple = DEFAULT_ORDER) -> tuple[str, str, int] | None:
    """The reference: ``(extension, source, when)`` of the caller's manager, or None."""
    with store.env.begin() as txn:
        return lookup_in(txn, store, company, caller, int(now), max_age, order)


def lookup_in(txn, store, company: str, caller: str, now: int, max_age: int = 0,
              order: tuple = DEFAULT_ORDER) -> tuple[str, str, int] | None:
    """The lookup inside a read transaction the caller owns (the reference engine's, for the ICM step)."""
    raw = txn.get(b"generation", db=store.db["meta"])
    generation = struct.unpack("<Q", raw)[0] if raw else 0
    rules = txn.get(company.encode(), db=store.db[RULES_TABLE])
    if rules is None:
        raise StoreError(f"no dialling rules for company {company!r}; reload the config")
    phone = normalise_py(rules, caller)
    if phone is None:
        return None
    raw = txn.get(phone.encode(), db=store.db["caller"])
    if raw is None:
        return None
    known = rec.decode_caller(raw)
    for source in order:
        if source == "history":
            entry = known.history
            if entry is None or (max_age and now - entry.when > max_age):
                continue
            if _is_employee_of(txn, store, entry.extension, company):
                return entry.extension, "history", entry.when
        elif source == "crm":
            answer = known.crm.get(company)
            if answer is None or answer.status != rec.CRM_FOUND or now >= answer.expires:
                continue
            if ((answer.generation and answer.generation == generation)
                    or _is_employee_of(txn, store, answer.extension, company)):
                return answer.extension, answer.source, answer.fetched
        else:
            raise ValueError(f"unknown ICM source {source!r}; use {', '.join(SOURCES)}")
    return None


#: How both engines' reasons say that ICM found nobody (esl_app/icm_requests.py looks for it
#: to have the CRMs asked about the caller, off the call path).
NO_MANAGER = "ICM: no manager known for this caller"

SOURCE_NAMES = {"history": "call history", "amocrm": "amoCRM", "bitrix24": "Bitrix24", "megaplan": "Megaplan"}


def reason(extension: str, source: str, when: int, zone: str | None = None) -> str:
    """The plan's reason for an ICM answer, e.g. "ICM: last talked to ext 2003 on 2026-11-20 via call history"."""
    day = dt.datetime.fromtimestamp(when, ZoneInfo(zone) if zone else dt.timezone.utc).date().isoformat()
    if source == "history":
        return f"ICM: last talked to ext {extension} on {day} via call history"
    return f"ICM: ext {extension} is responsible for this caller in {SOURCE_NAMES.get(source, source)} " \
           f"(checked {day})"


@dataclass
class Explanation:
    """What ``switchboard icm lookup`` shows: the number as read, each source, the answer."""

    caller: str
    phone: str | None
    answer: tuple[str, str, int] | None
    steps: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        head = f"caller {self.caller!r} -> " + (f"+{self.phone}" if self.phone else "not a phone number")
        tail = f"answer: ext {self.answer[0]} from {self.answer[1]}" if self.answer else "answer: none (normal route)"
        return "\n".join([head] + [f"  {s}" for s in self.steps] + [tail])


def explain(store, company: str, caller: str, now, max_age: int = 0, order: tuple = DEFAULT_ORDER) -> Explanation:
    """:func:`lookup_ref`, saying at each source what it found and why it was used or passed over."""
    now = int(now)
    with store.env.begin() as txn:
        rules = txn.get(company.encode(), db=store.db[RULES_TABLE])
        if rules is None:
            raise StoreError(f"no dialling rules for company {company!r}; reload the config")
        raw = txn.get(b"generation", db=store.db["meta"])
        generation = struct.unpack("<Q", raw)[0] if raw else 0
        raw = txn.get(company.encode(), db=store.db["company"])
        zone = ZoneInfo(rec.decode_company(raw).timezone) if raw is not None else dt.timezone.utc

        def moment(when: int) -> str:
            return dt.datetime.fromtimestamp(when, zone).isoformat(timespec="minutes")

        phone = normalise_py(rules, caller)
        out = Explanation(caller, phone, None)
        if phone is None:
            out.steps.append("not looked up: caller IDs must be digits with an optional '+'")
            return out
        raw = txn.get(phone.encode(), db=store.db["caller"])
        known = rec.decode_caller(raw) if raw is not None else rec.CallerRec()
        for source in order:
            if source == "history":
                entry = known.history
                if entry is None:
                    out.steps.append("call history: never called or was called")
                    continue
                said = f"call history: last {'call from' if entry.direction == 'in' else 'call to'} them " \
                       f"with ext {entry.extension} at {moment(entry.when)}"
                if max_age and now - entry.when > max_age:
                    out.steps.append(f"{said}: older than {max_age} s, passed over")
                elif not _is_employee_of(txn, store, entry.extension, company):
                    out.steps.append(f"{said}: ext {entry.extension} is no employee of {company}, passed over")
                else:
                    out.steps.append(f"{said}: used")
                    out.answer = (entry.extension, "history", entry.when)
                    return out
            elif source == "crm":
                a = known.crm.get(company)
                if a is None:
                    out.steps.append("CRM cache: no answer cached (the refresher asks the CRMs)")
                    continue
                said = f"CRM cache: {a.source or 'every source'} answered at {moment(a.fetched)}"
                if a.status == rec.CRM_NOT_FOUND:
                    out.steps.append(f"{said}: no such contact")
                elif a.status == rec.CRM_UNMAPPED:
                    out.steps.append(f"{said}: user {a.user_name or a.user_id} has no extension")
                elif now >= a.expires:
                    out.steps.append(f"{said}: ext {a.extension}, expired at {moment(a.expires)}, passed over")
                elif not ((a.generation and a.generation == generation)
                          or _is_employee_of(txn, store, a.extension, company)):
                    out.steps.append(f"{said}: ext {a.extension} is no employee of {company}, passed over")
                else:
                    out.steps.append(f"{said}: ext {a.extension} ({a.user_name or a.user_id}), used")
                    out.answer = (a.extension, a.source, a.fetched)
                    return out
            else:
                raise ValueError(f"unknown ICM source {source!r}; use {', '.join(SOURCES)}")
    return out


IMPLEMENTATIONS = {"reference": lookup_ref}
try:
    from . import _icm_lookup
except ImportError:
    if os.environ.get("SWITCHBOARD_FORCE_CYTHON") == "1":
        raise
else:
    IMPLEMENTATIONS["fastpath"] = _icm_lookup.lookup

if os.environ.get("SWITCHBOARD_PUREPYTHON") == "1" or "fastpath" not in IMPLEMENTATIONS:
    IMPLEMENTATION = "reference"
else:
    IMPLEMENTATION = "fastpath"

#: ``lookup(store, company, caller, now, max_age=0, order=("history", "crm"))`` of the chosen implementation.
lookup = IMPLEMENTATIONS[IMPLEMENTATION]
