"""The LMDB store: the single source of truth shared by routing and the workers.

Routing processes only read; the config loader, the live-state listener and the
calendar/ICM workers write.  LMDB's MVCC gives every reader a consistent
snapshot, so a config load (one write transaction) is seen whole or not at all.

Sub-databases:

==========  =======================================  ==================
name        key                                      written by
==========  =======================================  ==================
meta        b"schema", b"generation", b"source"…     config load
number      E.164 digits                             config load
ext         extension (employee or department)       config load
ivr         b"<company>/<menu>"                      config load
company     company id                               config load
dial        company id                               config load
live        u32 block number (see records.LIVE_BLOCK)   live-state listener
referral    b"<extension>/<source>"                  status / calendar workers
caller      caller E.164 digits                      listener (call history),
                                                     CRM refresher (ICM cache)
==========  =======================================  ==================

``dial`` holds each company's compiled dialling rules
(``fastpath.caller_numbers.compile_rules(country, city_code)``), which turn a
caller number as the switch sends it into the E.164 key of ``caller``.  They
are config: written by the same transaction as the company record and the
generation bump, so a reader's rules always match its config.

``caller`` holds one :class:`fastpath.records.CallerRec` per caller: who last
talked to them and each company's cached CRM answer, side by side, so ICM
finds both with one B-tree descent (two tables cost two descents into a map
far bigger than the CPU caches).

Schema 2 added ``dial``; schema 3 merged the tables ``history`` and ``crm``
into ``caller``.  A store of an older schema is refused (:class:`SchemaMismatch`)
until ``switchboard load`` rewrites it: the config is replaced as usual, the old
call history and CRM cache are merged into ``caller`` in the same transaction,
and presence and statuses are kept.
"""
from __future__ import annotations

import datetime as dt
import os
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import NamedTuple

import lmdb

from . import records as rec
from .caller_numbers import compile_rules
from .errors import PhoneNumberError, SchemaMismatch, StoreError
from .model import Config
from .tz_table import compile_zone

CONFIG_DBS = ("number", "ext", "ivr", "company", "dial")
STATE_DBS = ("live", "referral", "caller")
OLD_CALLER_DBS = ("history", "crm")     # schemas 1 and 2: merged into ``caller`` by a reload
DEFAULT_MAP_SIZE = 4 << 30          # 4 GiB of address space; the file grows as needed
_EPOCH_DAY = dt.date(1970, 1, 1).toordinal()
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_MAX_KEY = 511                      # LMDB's default key size limit, in bytes


def _key(text: str) -> bytes | None:
    """``text`` as an LMDB key, or None when no such key can exist (empty or over 511 bytes)."""
    key = text.encode()
    return key if 0 < len(key) <= _MAX_KEY else None
MAX_CALLER_DIGITS = 32              # a call-history key is at most this many digits


class Registered(NamedTuple):
    """A change for :meth:`Store.apply_live`: ``extension`` is (un)registered (as ``set_registered``)."""

    extension: str
    registered: bool
    now: int | None = None


class CallStarted(NamedTuple):
    """``extension`` is on one more call (as ``call_started``)."""

    extension: str
    now: int | None = None


class CallEnded(NamedTuple):
    """``extension`` is on one call fewer, never below none (as ``call_ended``)."""

    extension: str
    now: int | None = None


class CallRecorded(NamedTuple):
    """``extension`` talked to ``caller`` (E.164 digits) at ``when``, ``"in"`` or ``"out"`` (as ``record_call``)."""

    caller: str
    extension: str
    when: int
    direction: str = "in"


LiveChange = Registered | CallStarted | CallEnded | CallRecorded


def default_store_path() -> str:
    """``$SWITCHBOARD_STORE``, else ``$XDG_STATE_HOME/switchboard/store``, else ``~/.local/state/…``."""
    explicit = os.environ.get("SWITCHBOARD_STORE")
    if explicit:
        return explicit
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "switchboard", "store")


@dataclass(frozen=True)
class LoadReport:
    generation: int
    companies: int
    numbers: int
    extensions: int
    ivr_menus: int
    bytes_written: int
    seconds: float


class Store:
    """An open LMDB environment with Switchboard's sub-databases.

    Open it in each process, after any fork: py-lmdb then keeps one spare read
    transaction handle to renew (half the cost of a fresh one on every call),
    which must never cross a fork.  ``readonly=True`` is for pure
    routing processes.  Readers use :meth:`read` for a short snapshot.
    """

    def __init__(self, path: str, *, readonly: bool = False, map_size: int = DEFAULT_MAP_SIZE,
                 create: bool = True, reload: bool = False):
        """``reload=True`` is for ``switchboard load``: it may open a store of an older schema
        whose config it is about to rewrite (see :meth:`load_config`)."""
        self.path = path
        self.reload = reload
        self._old_schema = False
        if not readonly and create:
            os.makedirs(path, exist_ok=True)
        elif not os.path.isdir(path):
            raise StoreError(f"no store at {path}: run `switchboard load CONFIG` first "
                             f"(or pass --store / set SWITCHBOARD_STORE)")
        try:
            self.env = lmdb.open(path, map_size=map_size, max_dbs=16, readonly=readonly,
                                 create=create and not readonly, subdir=True,
                                 max_spare_txns=1, max_readers=1024)
        except lmdb.Error as exc:
            raise StoreError(f"cannot open the store at {path}: {exc}") from exc
        self.readonly = readonly
        self.db = {}
        try:
            if readonly:
                self._open_readonly()
            else:
                self._open_writable()
        except BaseException:
            self.env.close()
            raise

    def _open_readonly(self) -> None:
        # No explicit txn: py-lmdb commits its own, which makes the handles valid in later txns.
        self.db["meta"] = self._open_existing("meta")
        self._check_schema(self._schema_version())
        for name in CONFIG_DBS + STATE_DBS:
            self.db[name] = self._open_existing(name)

    def _open_existing(self, name: str):
        try:
            return self.env.open_db(name.encode(), create=False)
        except lmdb.NotFoundError:
            raise StoreError(f"the store at {self.path} has no '{name}' table; "
                             f"run `switchboard load CONFIG` to initialise it") from None

    def _open_writable(self) -> None:
        """Open (creating) every table; the schema is checked before anything is written."""
        with self.env.begin(write=True) as txn:
            meta = self.db["meta"] = self.env.open_db(b"meta", txn=txn)
            raw = txn.get(b"schema", db=meta)
            if raw is None:
                txn.put(b"schema", _U32.pack(rec.SCHEMA_VERSION), db=meta)
                version = rec.SCHEMA_VERSION
            else:
                (version,) = _U32.unpack(raw)
                if not (self.reload and version in RELOADABLE_SCHEMAS):
                    self._check_schema(version)     # raises on any version but ours
            for name in CONFIG_DBS + STATE_DBS:
                self.db[name] = self.env.open_db(name.encode(), txn=txn)
            self._old_schema = version != rec.SCHEMA_VERSION

    def _schema_version(self) -> int:
        with self.env.begin() as txn:
            raw = txn.get(b"schema", db=self.db["meta"])
        if raw is None:
            raise StoreError(f"the store at {self.path} has no schema version; it was not written by Switchboard")
        return _U32.unpack(raw)[0]

    def _check_schema(self, version: int) -> None:
        if version == rec.SCHEMA_VERSION:
            return
        if version in RELOADABLE_SCHEMAS:
            raise SchemaMismatch(
                f"the store at {self.path} has schema version {version}, this Switchboard reads version "
                f"{rec.SCHEMA_VERSION} (new: call history and the CRM cache in one table; since version 2, ICM "
                f"dialling rules and steps, status actions); "
                f"run `switchboard load CONFIG` once to rewrite the config in place (presence, referral "
                f"statuses, call history and the CRM cache are kept), then start the other processes again")
        raise SchemaMismatch(
            f"the store at {self.path} has schema version {version}, this Switchboard reads version "
            f"{rec.SCHEMA_VERSION}; move the old store away and run `switchboard load CONFIG` again")

    # -- reading -------------------------------------------------------------

    def read(self):
        """A read-only snapshot; use as a context manager and keep it short."""
        return self.env.begin(buffers=True)

    def generation(self) -> int:
        with self.env.begin() as txn:
            raw = txn.get(b"generation", db=self.db["meta"])
        return _U64.unpack(raw)[0] if raw else 0

    def meta(self) -> dict[str, str | int]:
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.db["meta"])
            out: dict[str, str | int] = {}
            for key, value in cur:
                name = key.decode()
                if name == "schema":
                    out[name] = _U32.unpack(value)[0]
                elif name == "generation":
                    out[name] = _U64.unpack(value)[0]
                else:
                    out[name] = value.decode()
            return out

    def timezone_of(self, called: str) -> str | None:
        """The time zone of the company that owns a number or extension, if any."""
        key = called.strip().lstrip("+").encode()
        with self.env.begin() as txn:
            raw = txn.get(key, db=self.db["number"])
            if raw is not None:
                company = rec.decode_number(called, raw).company
            else:
                raw = txn.get(key, db=self.db["ext"])
                if raw is None:
                    return None
                company = rec.decode_extension(called, raw).company
            return rec.decode_company(txn.get(company.encode(), db=self.db["company"])).timezone

    def live(self, extension: str) -> rec.LiveRec | None:
        """Presence of an employee; None if the extension is not an employee."""
        with self.env.begin() as txn:
            slot = self._slot(txn, extension)
            if slot is None:
                return None
            raw = txn.get(rec.live_key(slot), db=self.db["live"])
        return rec.decode_live(raw, slot) if raw is not None else rec.UNKNOWN_LIVE

    def _get(self, table: str, text: str) -> bytes | None:
        """One record of ``table`` in a snapshot of its own; None if absent or impossible."""
        key = _key(text)
        if key is None:
            return None
        with self.env.begin() as txn:
            return txn.get(key, db=self.db[table])

    def _slot(self, txn, extension: str) -> int | None:
        key = _key(extension)
        if key is None:
            return None
        raw = txn.get(key, db=self.db["ext"])
        if raw is None or raw[0] != rec.REC_EMPLOYEE:
            return None
        return rec.employee_slot(raw)

    def referrals(self, extension: str) -> dict[str, tuple[rec.ReferralInterval, ...]]:
        """Every source's intervals for ``extension``, keyed by source."""
        prefix = extension.encode() + b"/"
        out = {}
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.db["referral"])
            if cur.set_range(prefix):
                for key, value in cur:
                    if not key.startswith(prefix):
                        break
                    out[key[len(prefix):].decode()] = rec.decode_referrals(value)
        return out

    def referral_sources(self, extension: str | None = None) -> dict[str, list[str]]:
        """Extension -> the sources holding referral intervals for it (both sorted), for
        every extension or only ``extension``: to find stale entries (a removed employee,
        a calendar no longer configured) and clear them."""
        prefix = b"" if extension is None else extension.encode() + b"/"
        out: dict[str, list[str]] = {}
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.db["referral"])
            if cur.set_range(prefix):
                for key in cur.iternext(keys=True, values=False):
                    if not key.startswith(prefix):
                        break
                    ext, _, source = key.decode().partition("/")
                    out.setdefault(ext, []).append(source)
        return out

    def clear_referrals(self, extension: str, source: str) -> bool:
        """Remove what ``source`` says about ``extension``; False if it said nothing."""
        if not extension or "/" in extension or not source:
            raise StoreError(f"bad referral key: extension {extension!r}, source {source!r}")
        self._writable()
        with self.env.begin(write=True) as txn:
            removed = txn.delete(f"{extension}/{source}".encode(), db=self.db["referral"])
            self._flag_referrals(txn, extension)
            return removed

    def caller(self, phone: str) -> rec.CallerRec | None:
        """Everything kept about caller ``phone`` (E.164 digits): history and cached CRM answers."""
        raw = self._get("caller", phone)
        return rec.decode_caller(raw) if raw is not None else None

    def history(self, phone: str) -> rec.HistoryRec | None:
        """Who last talked to caller ``phone`` (E.164 digits), in any company."""
        entry = self.caller(phone)
        return entry.history if entry is not None else None

    def employee(self, extension: str) -> rec.EmployeeRec | None:
        """The employee record of ``extension``; None for a department or an unknown extension."""
        raw = self._get("ext", extension)
        if raw is None or raw[0] != rec.REC_EMPLOYEE:
            return None
        return rec.decode_employee(extension, raw)

    def companies(self) -> list[rec.CompanyRec]:
        """Every company of the loaded config, by id."""
        with self.env.begin() as txn:
            return [rec.decode_company(value) for _, value in txn.cursor(db=self.db["company"])]

    def dial_rules(self, company: str) -> bytes | None:
        """The compiled dialling rules of ``company`` (``fastpath.caller_numbers``), None if no such company."""
        return self._get("dial", company)

    def stats(self) -> dict[str, int]:
        """Entries per table and bytes used by the data file."""
        out = {}
        with self.env.begin() as txn:
            for name, db in self.db.items():
                out[name] = txn.stat(db)["entries"]
        info = self.env.info()
        out["bytes"] = (info["last_pgno"] + 1) * self.env.stat()["psize"]
        return out

    # -- writing: config -----------------------------------------------------

    def load_config(self, config: Config) -> LoadReport:
        """Replace the whole config in one write transaction (atomic for readers).

        Records are encoded *before* the transaction starts, so an encoding
        problem leaves the store exactly as it was.  The config tables include
        ``dial`` (each company's compiled dialling rules), so the rules always
        belong to the generation written here.  Live state, referral statuses,
        call history and the CRM cache are kept.
        """
        started = time.perf_counter()
        slots = assign_slots(config)
        entries = dict(_encode_config(config, slots))
        written = 0
        self._writable()
        with self.env.begin(write=True) as txn:
            live = self._read_all_live(txn)          # by extension, from the old slots
            holders = self._referral_holders(txn)
            for ext in slots:
                entry = live.get(ext) or rec.UNKNOWN_LIVE
                if entry.referral != (ext in holders):
                    live[ext] = replace(entry, referral=ext in holders)
            for name in CONFIG_DBS:
                txn.drop(self.db[name], delete=False)
            self._write_all_live(txn, slots, live)
            for (table, key), value in entries.items():
                txn.put(key, value, db=self.db[table])
                written += len(key) + len(value)
            meta = self.db["meta"]
            if self._old_schema:              # every config record was just rewritten: the store is current
                self._merge_old_caller_tables(txn)
                txn.put(b"schema", _U32.pack(rec.SCHEMA_VERSION), db=meta)
            generation = self._bump_generation(txn)
            txn.put(b"source", config.source.encode(), db=meta)
            txn.put(b"loaded_at", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").encode(), db=meta)
        counts = {t: sum(1 for (table, _) in entries if table == t) for t in CONFIG_DBS}
        return LoadReport(generation, counts["company"], counts["number"], counts["ext"], counts["ivr"],
                          written, time.perf_counter() - started)

    def _merge_old_caller_tables(self, txn) -> None:
        """Schemas 1 and 2 kept call history (key: digits) and CRM answers (key:
        ``b"<company>/<digits>"``) in two tables: write them as ``caller`` records and drop both,
        in the reload's transaction.  The old records are copied as they are (their layouts did
        not change); one that is not of its type is refused, so nothing is half-converted."""
        parts: dict[bytes, list] = {}
        old = {}
        for name in OLD_CALLER_DBS:
            try:
                old[name] = self.env.open_db(name.encode(), txn=txn, create=False)
            except lmdb.NotFoundError:
                continue
        if "history" in old:
            for key, value in txn.cursor(db=old["history"]):
                if not value or value[0] != rec.REC_HISTORY:
                    raise StoreError(f"call-history entry {bytes(key)!r} in the store at {self.path} is no "
                                     f"history record; the store is corrupt, nothing was changed")
                parts.setdefault(bytes(key), [b"", {}])[0] = bytes(value)
        if "crm" in old:
            for key, value in txn.cursor(db=old["crm"]):
                company, _, phone = bytes(key).partition(b"/")
                if not company or not phone or not value or value[0] != rec.REC_CRM:
                    raise StoreError(f"CRM cache entry {bytes(key)!r} in the store at {self.path} is no CRM "
                                     f"answer; the store is corrupt, nothing was changed")
                parts.setdefault(phone, [b"", {}])[1][company.decode()] = bytes(value)
        db = self.db["caller"]
        for phone in sorted(parts):
            history, answers = parts[phone]
            txn.put(phone, rec.caller_bytes(history, answers), db=db)
        for handle in old.values():
            txn.drop(handle, delete=True)

    def _bump_generation(self, txn) -> int:
        """Count a config change, in the transaction that makes it; returns the new generation."""
        meta = self.db["meta"]
        raw = txn.get(b"generation", db=meta)
        generation = (_U64.unpack(raw)[0] if raw else 0) + 1
        txn.put(b"generation", _U64.pack(generation), db=meta)
        return generation

    # -- writing: state (the workers' API) ----------------------------------

    def set_registered(self, extension: str, registered: bool, *, now: int | None = None) -> bool:
        """Record a registration change seen on the switch.

        Returns False (and stores nothing) when the extension is not an
        employee of the loaded config, e.g. a gateway registering.
        """
        return extension not in self.apply_live([Registered(extension, registered, now)])

    def call_started(self, extension: str, *, now: int | None = None) -> bool:
        return extension not in self.apply_live([CallStarted(extension, now)])

    def call_ended(self, extension: str, *, now: int | None = None) -> bool:
        return extension not in self.apply_live([CallEnded(extension, now)])

    def apply_live(self, changes: Iterable[LiveChange]) -> set[str]:
        """Apply presence changes and call-history entries in order, in ONE write transaction.

        ``changes`` are :class:`Registered`, :class:`CallStarted`,
        :class:`CallEnded` and :class:`CallRecorded`; each means exactly what
        :meth:`set_registered`, :meth:`call_started`, :meth:`call_ended` and
        :meth:`record_call` do (those are this with one change), and the store
        ends up as if they had been applied one by one -- with one durable
        commit instead of one per change.  Returns the extensions of presence
        changes that are no employee of the loaded config (nothing is stored
        for them).  Every change is checked before the transaction starts: a
        bad one raises :class:`StoreError` naming it and its position, and
        nothing at all is written.
        """
        changes = list(changes)
        steps = [self._live_step(change, i, len(changes)) for i, change in enumerate(changes)]
        unknown: set[str] = set()
        if not steps:
            return unknown
        self._writable()
        live_db, caller_db = self.db["live"], self.db["caller"]
        with self.env.begin(write=True) as txn:
            slots: dict[str, int | None] = {}
            blocks: dict[bytes, list] = {}
            for kind, ext, payload, now in steps:
                if kind is CallRecorded:                        # ext: the caller's key here
                    txn.put(ext, rec.caller_with_history(txn.get(ext, db=caller_db), payload), db=caller_db)
                    continue
                slot = slots[ext] if ext in slots else slots.setdefault(ext, self._slot(txn, ext))
                if slot is None:
                    unknown.add(ext)
                    continue
                key = rec.live_key(slot)
                block = blocks.get(key)
                if block is None:
                    raw = txn.get(key, db=live_db)
                    block = blocks[key] = rec.decode_live_block(raw) if raw is not None else [None] * rec.LIVE_BLOCK
                state = block[slot % rec.LIVE_BLOCK] or rec.UNKNOWN_LIVE
                known, registered, delta = state.registered_known, state.registered, 0
                if kind is Registered:
                    known, registered = True, payload
                else:
                    delta = payload
                # Clamped as the record's u16 would be, so a batch equals commits one by one.
                calls = min(max(0, state.active_calls + delta), 0xFFFF)
                block[slot % rec.LIVE_BLOCK] = rec.LiveRec(known, registered, calls, now, state.referral)
            for key, block in blocks.items():
                txn.put(key, rec.encode_live_block(block), db=live_db)
        return unknown

    @staticmethod
    def _live_step(change, index: int, count: int) -> tuple:
        """``(kind, key, payload, now)`` of one change, checked; raises StoreError naming it."""
        where = f" (change {index + 1} of {count})" if count > 1 else ""
        kind = type(change)
        if kind is CallRecorded:
            caller, extension, when, direction = change
            if not (isinstance(caller, str) and caller.isascii() and caller.isdigit()
                    and len(caller) <= MAX_CALLER_DIGITS) or direction not in ("in", "out") \
                    or not isinstance(extension, str):
                raise StoreError(f"bad call-history entry{where}: caller {caller!r} (E.164 digits expected), "
                                 f"extension {extension!r}, direction {direction!r} ('in' or 'out')")
            try:
                data = rec.encode_history(rec.HistoryRec(extension, int(when), direction))
            except (TypeError, ValueError, OverflowError, struct.error, StoreError) as exc:
                raise StoreError(f"bad call-history entry{where}: caller {caller!r}, time {when!r}: {exc}") from None
            return kind, caller.encode(), data, 0
        if kind in (Registered, CallStarted, CallEnded):
            if not isinstance(change.extension, str):
                raise StoreError(f"bad presence change{where}: extension {change.extension!r} is not a string")
            if kind is Registered:
                payload = bool(change.registered)
            else:
                payload = 1 if kind is CallStarted else -1
            return kind, change.extension, payload, _now(change.now) & 0xFFFFFFFF
        raise StoreError(f"bad presence change{where}: {change!r} is none of Registered, CallStarted, "
                         f"CallEnded, CallRecorded")

    def replace_live(self, registered: set[str], active_calls: dict[str, int], *,
                     now: int | None = None) -> None:
        """Resync after (re)connecting to the switch: the full picture replaces the old one.

        Employees not in ``registered`` become known-unregistered, so no stale
        state survives a FreeSWITCH restart.
        """
        self._writable()
        now = _now(now)
        with self.env.begin(write=True) as txn:
            slots = {}
            for key, value in txn.cursor(db=self.db["ext"]):
                if value[0] == rec.REC_EMPLOYEE:
                    ext = key.decode()
                    slots[ext] = rec.employee_slot(value)
            holders = self._referral_holders(txn)
            state = {ext: rec.LiveRec(True, ext in registered, max(0, active_calls.get(ext, 0)), now,
                                      ext in holders)
                     for ext in slots}
            self._write_all_live(txn, slots, state)

    def _read_all_live(self, txn) -> dict[str, rec.LiveRec]:
        """Every employee's presence, keyed by extension (used around a reload)."""
        blocks = {key: rec.decode_live_block(value) for key, value in txn.cursor(db=self.db["live"])}
        out = {}
        for key, value in txn.cursor(db=self.db["ext"]):
            if value[0] != rec.REC_EMPLOYEE:
                continue
            ext = key.decode()
            slot = rec.employee_slot(value)
            block = blocks.get(rec.live_key(slot))
            if block is not None:
                out[ext] = block[slot % rec.LIVE_BLOCK]
        return out

    def _write_all_live(self, txn, slots: dict[str, int], state: dict[str, rec.LiveRec]) -> None:
        db = self.db["live"]
        txn.drop(db, delete=False)
        blocks: dict[int, list] = {}
        for ext, slot in slots.items():
            entry = state.get(ext)
            if entry is not None:
                block = blocks.setdefault(slot // rec.LIVE_BLOCK, [None] * rec.LIVE_BLOCK)
                block[slot % rec.LIVE_BLOCK] = entry
        for number, entries in sorted(blocks.items()):
            txn.put(rec.live_key(number * rec.LIVE_BLOCK), rec.encode_live_block(entries), db=db)

    def put_referrals(self, extension: str, source: str, intervals) -> None:
        """Replace what ``source`` says about ``extension`` (an empty list clears it)."""
        if "/" in extension or not source:
            raise StoreError(f"bad referral key: extension {extension!r}, source {source!r}")
        for iv in intervals:
            if iv.end <= iv.start:
                raise StoreError(f"referral interval for {extension} from {source} ends before it starts")
        key = f"{extension}/{source}".encode()
        data = rec.encode_referrals(tuple(intervals))
        self._writable()
        with self.env.begin(write=True) as txn:
            if intervals:
                txn.put(key, data, db=self.db["referral"])
            else:
                txn.delete(key, db=self.db["referral"])
            self._flag_referrals(txn, extension)

    def _referral_holders(self, txn) -> set[str]:
        """Extensions with statuses stored (any source)."""
        cur = txn.cursor(db=self.db["referral"])
        return {bytes(key).decode().partition("/")[0] for key in cur.iternext(keys=True, values=False)}

    def _flag_referrals(self, txn, extension: str) -> None:
        """Keep the employee's LIVE_REFERRAL presence flag true to the referral table, in the
        same transaction: the engines read statuses only for flagged employees."""
        slot = self._slot(txn, extension)
        if slot is None:
            return              # not an employee (yet): load_config sets the flag if it becomes one
        prefix = extension.encode() + b"/"
        cur = txn.cursor(db=self.db["referral"])
        held = cur.set_range(prefix) and bytes(cur.key()).startswith(prefix)
        key = rec.live_key(slot)
        raw = txn.get(key, db=self.db["live"])
        block = rec.decode_live_block(raw) if raw is not None else [None] * rec.LIVE_BLOCK
        state = block[slot % rec.LIVE_BLOCK] or rec.UNKNOWN_LIVE
        if state.referral != held:
            block[slot % rec.LIVE_BLOCK] = replace(state, referral=held)
            txn.put(key, rec.encode_live_block(block), db=self.db["live"])

    def record_call(self, caller: str, extension: str, when: int, direction: str = "in") -> None:
        """Remember who last talked to ``caller`` (E.164 digits), for ICM."""
        self.apply_live([CallRecorded(caller, extension, when, direction)])

    def crm_answer(self, company: str, phone: str) -> rec.CrmAnswerRec | None:
        """The cached CRM answer about caller ``phone`` (E.164 digits) for ``company``, if any."""
        entry = self.caller(phone)
        return entry.crm.get(company) if entry is not None else None

    def put_crm_answer(self, company: str, phone: str, answer: rec.CrmAnswerRec | None) -> None:
        """Cache what the CRM sources said about ``phone`` for ``company``; None forgets it."""
        self.put_crm_answers([(company, phone, answer)])

    def put_crm_answers(self, entries: Iterable[tuple[str, str, rec.CrmAnswerRec | None]]) -> int:
        """:meth:`put_crm_answer` for each ``(company, phone, answer)``, in ONE write transaction;
        every entry is checked first, so a bad one writes nothing.  Returns how many."""
        entries = list(entries)
        for company, phone, answer in entries:
            if not (isinstance(company, str) and company and "/" not in company and isinstance(phone, str)
                    and phone.isascii() and phone.isdigit() and len(phone) <= MAX_CALLER_DIGITS):
                raise StoreError(f"bad CRM cache key: company {company!r}, caller {phone!r}")
            if answer is not None:
                rec.encode_crm_answer(answer)
        self._writable()
        db = self.db["caller"]
        with self.env.begin(write=True) as txn:
            for company, phone, answer in sorted(entries, key=lambda e: e[1]):
                key = phone.encode()
                try:
                    data = rec.caller_with_answer(txn.get(key, db=db), company, answer)
                except StoreError as exc:
                    raise StoreError(f"cannot cache the CRM answer about caller {phone}: their record in the "
                                     f"store is corrupt ({exc}); `switchboard icm forget {phone}` clears it") from None
                if data is None:
                    txn.delete(key, db=db)
                else:
                    txn.put(key, data, db=db)
        return len(entries)

    def erase_caller(self, phone: str) -> ErasedCaller:
        """A privacy request: remove everything kept about caller ``phone`` (E.164 digits), in one
        transaction -- their call-history entry (shared by all companies) and every company's
        cached CRM answer -- and return what was removed."""
        if not (phone.isascii() and phone.isdigit() and len(phone) <= MAX_CALLER_DIGITS):
            raise StoreError(f"bad caller to erase: {phone!r} (E.164 digits expected)")
        self._writable()
        with self.env.begin(write=True) as txn:
            raw = txn.get(phone.encode(), db=self.db["caller"])
            if raw is not None:
                txn.delete(phone.encode(), db=self.db["caller"])
        if raw is None:
            return ErasedCaller(phone, False, None, {})
        try:
            history, answers = rec.caller_parts(raw)
        except StoreError:
            return ErasedCaller(phone, True, None, {})
        return ErasedCaller(phone, bool(history), _decoded(rec.decode_history, history) if history else None,
                            {company: _decoded(rec.decode_crm_answer, a) for company, a in answers.items()})

    def forget_caller(self, phone: str) -> bool:
        """Drop caller ``phone``'s call-history entry (their cached CRM answers stay); False if none."""
        return self._drop_part(phone, history=True) > 0

    def forget_crm_answers(self, phone: str) -> int:
        """Drop every company's cached CRM answer about ``phone`` (their history stays); how many."""
        return self._drop_part(phone, history=False)

    def _drop_part(self, phone: str, *, history: bool) -> int:
        """One write transaction: drop the history part (``history``) or the CRM answers of the
        caller's record, deleting the record when nothing is left; how many entries went.  For
        the history a corrupt record is deleted whole (counted 1); for the answers it is a
        StoreError, as reading them would be (the history in it is not the cache's to drop)."""
        self._writable()
        key = _key(phone)
        if key is None:
            return 0
        db = self.db["caller"]
        with self.env.begin(write=True) as txn:
            raw = txn.get(key, db=db)
            if raw is None:
                return 0
            if not history:
                rec.decode_caller(raw)          # unreadable: a StoreError, nothing dropped
            try:
                entry, answers = rec.caller_parts(raw)
            except StoreError:
                return int(txn.delete(key, db=db))
            if history:
                dropped, entry = (1 if entry else 0), b""
            else:
                dropped, answers = len(answers), {}
            if not dropped:
                return 0
            if entry or answers:
                txn.put(key, rec.caller_bytes(entry, answers), db=db)
            else:
                txn.delete(key, db=db)
            return dropped

    def _writable(self) -> None:
        if self.readonly:
            raise StoreError(f"the store at {self.path} was opened read-only")

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class ErasedCaller:
    """What :meth:`Store.erase_caller` removed.  A record that could not be decoded was removed
    all the same and shows as None (``history_removed`` says whether there was a history entry)."""

    phone: str
    history_removed: bool
    history: rec.HistoryRec | None
    crm: dict[str, rec.CrmAnswerRec | None]       # company -> its cached answer


def _decoded(decode, raw):
    if raw is None:
        return None
    try:
        return decode(raw)
    except StoreError:
        return None


#: Older schemas whose stores ``switchboard load`` rewrites in place: presence and referral
#: statuses are read the same way, the config records are all replaced, and the call
#: history and CRM cache tables are merged into ``caller`` (:meth:`Store._merge_old_caller_tables`).
RELOADABLE_SCHEMAS = frozenset({1, 2})


def _now(now: int | None) -> int:
    return int(time.time()) if now is None else int(now)


def assign_slots(config: Config) -> dict[str, int]:
    """A presence slot per employee, department members first and side by side.

    Employees are numbered in the order of the departments they first appear
    in, so each ring group's presence sits in one or two LIVE_BLOCK blocks.
    """
    slots: dict[str, int] = {}
    for company in config.companies:
        for dep in company.departments:
            for member in dep.members:
                slots.setdefault(member, len(slots))
        for e in company.employees:
            slots.setdefault(e.extension, len(slots))
    return slots


# --- model -> records --------------------------------------------------------

def _encode_config(config: Config, slots: dict[str, int]):
    """Yield ``((table, key), value)`` for every config record."""
    for company in config.companies:
        yield ("company", company.id.encode()), rec.encode_company(rec.CompanyRec(
            company.id, company.name, company.country, company.timezone, company.sip_domain,
            company.no_answer_seconds, company.ring_timeout, company.outbound_caller_id or "",
            company.city_code or "", company.language, company.statuses))
        yield ("dial", company.id.encode()), compile_rules(company.country, company.city_code or None)
        names = {e.extension: e.name for e in company.employees}
        ext_records = {}
        for e in company.employees:
            d = e.diverts
            ext_records[e.extension] = rec.encode_employee(rec.EmployeeRec(
                e.extension, company.id, e.name, e.role, e.email or "", e.mobile or "", e.a1_hash or "",
                e.mobile_after or 0, d.no_answer_after, company.ring_timeout, slots[e.extension],
                d.always, d.busy, d.no_answer, d.unreachable,
                tuple((status, rec.ActionRec(a.action, a.to)) for status, a in e.referral),
                rec.ActionRec(e.referral_default.action, e.referral_default.to), e.status_delegates))
        for dep in company.departments:
            ext_records[dep.extension] = rec.encode_department(rec.DepartmentRec(
                dep.extension, company.id, dep.name, dep.strategy, dep.step_seconds, dep.timeout,
                company.ring_timeout, dep.no_answer, tuple((m, names[m], slots[m]) for m in dep.members)))
        for ext, data in ext_records.items():
            yield ("ext", ext.encode()), data
        for menu in company.ivr_menus:
            yield ("ivr", f"{company.id}/{menu.key}".encode()), rec.encode_ivr(rec.IvrRec(
                company.id, menu.key, menu.greeting, menu.timeout, menu.retries, company.ring_timeout,
                menu.on_timeout, menu.on_invalid, menu.options))
        schedules = {}
        for s in company.schedules:
            schedules[s.key] = rec.ScheduleRec(
                s.key, s.hours, tuple(day.toordinal() - _EPOCH_DAY for day in s.holidays),
                compile_zone(company.timezone))

        def embedded(dest) -> bytes:
            if dest is not None and dest.kind in ("employee", "department"):
                return ext_records[dest.ref]
            return b""

        for n in company.numbers:
            mode = rec.MODE_SCHEDULE if n.mode == "schedule" else rec.MODE_ALWAYS
            yield ("number", n.number.encode()), rec.encode_number(rec.NumberRec(
                n.number, company.id, mode, company.ring_timeout, n.open, embedded(n.open),
                n.closed, embedded(n.closed), schedules[n.schedule] if mode == rec.MODE_SCHEDULE else None,
                _icm_record(n.icm)))


def _icm_record(icm) -> rec.IcmRec | None:
    if icm is None:
        return None
    return rec.IcmRec(icm.sources, icm.max_age_days, icm.ring, icm.timeout, icm.on_failure, icm.default,
                      icm.exceptions)
