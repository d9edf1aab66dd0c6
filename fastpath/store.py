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
live        u32 block number (see records.LIVE_BLOCK)   live-state listener
referral    b"<extension>/<source>"                  status / calendar workers
history     caller E.164 digits                      listener (call history)
crm         b"<company>/<caller E.164 digits>"       CRM refresher (ICM cache)
==========  =======================================  ==================
"""
from __future__ import annotations

import datetime as dt
import os
import struct
import time
from dataclasses import dataclass

import lmdb

from . import records as rec
from .errors import SchemaMismatch, StoreError
from .model import Config
from .tz_table import compile_zone

CONFIG_DBS = ("number", "ext", "ivr", "company")
STATE_DBS = ("live", "referral", "history", "crm")
DEFAULT_MAP_SIZE = 4 << 30          # 4 GiB of address space; the file grows as needed
_EPOCH_DAY = dt.date(1970, 1, 1).toordinal()
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


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
                 create: bool = True):
        self.path = path
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
        names = ("meta",) + CONFIG_DBS + STATE_DBS
        if readonly:
            # No explicit txn: py-lmdb commits its own, which makes the handles valid in later txns.
            for name in names:
                try:
                    self.db[name] = self.env.open_db(name.encode(), create=False)
                except lmdb.NotFoundError:
                    raise StoreError(f"the store at {path} has no '{name}' table; "
                                     f"run `switchboard load CONFIG` to initialise it") from None
        else:
            with self.env.begin(write=True) as txn:
                for name in names:
                    self.db[name] = self.env.open_db(name.encode(), txn=txn)
                meta = self.db["meta"]
                if txn.get(b"schema", db=meta) is None:
                    txn.put(b"schema", _U32.pack(rec.SCHEMA_VERSION), db=meta)
        self._check_schema()

    def _check_schema(self) -> None:
        with self.env.begin() as txn:
            raw = txn.get(b"schema", db=self.db["meta"])
        if raw is None:
            raise StoreError(f"the store at {self.path} has no schema version; it was not written by Switchboard")
        (version,) = _U32.unpack(raw)
        if version != rec.SCHEMA_VERSION:
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

    def _slot(self, txn, extension: str) -> int | None:
        raw = txn.get(extension.encode(), db=self.db["ext"])
        if raw is None or raw[0] != rec.REC_EMPLOYEE:
            return None
        return rec.decode_employee(extension, raw).slot

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

    def history(self, caller: str) -> rec.HistoryRec | None:
        with self.env.begin() as txn:
            raw = txn.get(caller.encode(), db=self.db["history"])
        return rec.decode_history(raw) if raw is not None else None

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
        problem leaves the store exactly as it was.  Live state, referral
        statuses and call history are kept.
        """
        started = time.perf_counter()
        slots = assign_slots(config)
        entries = dict(_encode_config(config, slots))
        written = 0
        self._writable()
        with self.env.begin(write=True) as txn:
            live = self._read_all_live(txn)          # by extension, from the old slots
            for name in CONFIG_DBS:
                txn.drop(self.db[name], delete=False)
            self._write_all_live(txn, slots, live)
            for (table, key), value in entries.items():
                txn.put(key, value, db=self.db[table])
                written += len(key) + len(value)
            meta = self.db["meta"]
            raw = txn.get(b"generation", db=meta)
            generation = (_U64.unpack(raw)[0] if raw else 0) + 1
            txn.put(b"generation", _U64.pack(generation), db=meta)
            txn.put(b"source", config.source.encode(), db=meta)
            txn.put(b"loaded_at", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").encode(), db=meta)
        counts = {t: sum(1 for (table, _) in entries if table == t) for t in CONFIG_DBS}
        return LoadReport(generation, counts["company"], counts["number"], counts["ext"], counts["ivr"],
                          written, time.perf_counter() - started)

    # -- writing: state (the workers' API) ----------------------------------

    def set_registered(self, extension: str, registered: bool, *, now: int | None = None) -> bool:
        """Record a registration change seen on the switch.

        Returns False (and stores nothing) when the extension is not an
        employee of the loaded config, e.g. a gateway registering.
        """
        return self._update_live(extension, now, registered=registered)

    def call_started(self, extension: str, *, now: int | None = None) -> bool:
        return self._update_live(extension, now, delta=1)

    def call_ended(self, extension: str, *, now: int | None = None) -> bool:
        return self._update_live(extension, now, delta=-1)

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
                    slots[ext] = rec.decode_employee(ext, value).slot
            state = {ext: rec.LiveRec(True, ext in registered, max(0, active_calls.get(ext, 0)), now)
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
            slot = rec.decode_employee(ext, value).slot
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

    def record_call(self, caller: str, extension: str, when: int, direction: str = "in") -> None:
        """Remember who last talked to ``caller`` (E.164 digits), for ICM."""
        if not caller.isdigit() or direction not in ("in", "out"):
            raise StoreError(f"bad call-history entry: caller {caller!r}, direction {direction!r}")
        data = rec.encode_history(rec.HistoryRec(extension, int(when), direction))
        self._writable()
        with self.env.begin(write=True) as txn:
            txn.put(caller.encode(), data, db=self.db["history"])

    def crm_answer(self, company: str, phone: str) -> rec.CrmAnswerRec | None:
        """The cached CRM answer about caller ``phone`` (E.164 digits) for ``company``, if any."""
        with self.env.begin() as txn:
            raw = txn.get(rec.crm_key(company, phone), db=self.db["crm"])
        return rec.decode_crm_answer(raw) if raw is not None else None

    def put_crm_answer(self, company: str, phone: str, answer: rec.CrmAnswerRec | None) -> None:
        """Cache what the CRM sources said about ``phone`` for ``company``; None forgets it."""
        if not company or "/" in company or not phone.isdigit():
            raise StoreError(f"bad CRM cache key: company {company!r}, caller {phone!r}")
        data = rec.encode_crm_answer(answer) if answer is not None else None
        self._writable()
        with self.env.begin(write=True) as txn:
            if data is None:
                txn.delete(rec.crm_key(company, phone), db=self.db["crm"])
            else:
                txn.put(rec.crm_key(company, phone), data, db=self.db["crm"])

    def forget_caller(self, caller: str) -> bool:
        self._writable()
        with self.env.begin(write=True) as txn:
            return txn.delete(caller.encode(), db=self.db["history"])

    def _update_live(self, extension: str, now: int | None, *, registered: bool | None = None,
                     delta: int = 0) -> bool:
        self._writable()
        with self.env.begin(write=True) as txn:
            slot = self._slot(txn, extension)
            if slot is None:
                return False
            key = rec.live_key(slot)
            raw = txn.get(key, db=self.db["live"])
            block = rec.decode_live_block(raw) if raw is not None else [None] * rec.LIVE_BLOCK
            state = block[slot % rec.LIVE_BLOCK] or rec.UNKNOWN_LIVE
            known, reg = state.registered_known, state.registered
            if registered is not None:
                known, reg = True, registered
            block[slot % rec.LIVE_BLOCK] = rec.LiveRec(known, reg, max(0, state.active_calls + delta), _now(now))
            txn.put(key, rec.encode_live_block(block), db=self.db["live"])
        return True

    def _writable(self) -> None:
        if self.readonly:
            raise StoreError(f"the store at {self.path} was opened read-only")

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
            company.city_code or ""))
        names = {e.extension: e.name for e in company.employees}
        ext_records = {}
        for e in company.employees:
            d = e.diverts
            ext_records[e.extension] = rec.encode_employee(rec.EmployeeRec(
                e.extension, company.id, e.name, e.role, e.email or "", e.mobile or "", e.a1_hash or "",
                e.mobile_after or 0, d.no_answer_after, company.ring_timeout, slots[e.extension],
                d.always, d.busy, d.no_answer, d.unreachable))
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
                n.closed, embedded(n.closed), schedules[n.schedule] if mode == rec.MODE_SCHEDULE else None))
