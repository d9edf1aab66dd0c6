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
live        extension                                live-state listener
referral    b"<extension>/<source>"                  status / calendar workers
history     caller E.164 digits                      listener (call history)
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
STATE_DBS = ("live", "referral", "history")
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

    Open it in each process (after any fork).  ``readonly=True`` is for pure
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
                                 max_spare_txns=0, max_readers=1024)
        except lmdb.Error as exc:
            raise StoreError(f"cannot open the store at {path}: {exc}") from exc
        self.readonly = readonly
        self.db = {}
        names = ("meta",) + CONFIG_DBS + STATE_DBS
        if readonly:
            with self.env.begin() as txn:
                for name in names:
                    try:
                        self.db[name] = self.env.open_db(name.encode(), txn=txn, create=False)
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
        with self.env.begin() as txn:
            raw = txn.get(extension.encode(), db=self.db["live"])
        return rec.decode_live(raw) if raw is not None else None

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
        entries = dict(_encode_config(config))
        written = 0
        self._writable()
        with self.env.begin(write=True) as txn:
            for name in CONFIG_DBS:
                txn.drop(self.db[name], delete=False)
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

    def set_registered(self, extension: str, registered: bool, *, now_ms: int | None = None) -> None:
        """Record a registration change seen on the switch."""
        self._update_live(extension, now_ms, registered=registered)

    def call_started(self, extension: str, *, now_ms: int | None = None) -> None:
        self._update_live(extension, now_ms, delta=1)

    def call_ended(self, extension: str, *, now_ms: int | None = None) -> None:
        self._update_live(extension, now_ms, delta=-1)

    def replace_live(self, registered: set[str], active_calls: dict[str, int], *,
                     now_ms: int | None = None) -> None:
        """Resync after (re)connecting to the switch: the full picture replaces the old one.

        Extensions not in ``registered`` become known-unregistered, so no stale
        state survives a FreeSWITCH restart.
        """
        self._writable()
        now_ms = _now_ms(now_ms)
        with self.env.begin(write=True) as txn:
            live = self.db["live"]
            known = set(registered) | set(active_calls)
            for key, value in txn.cursor(db=self.db["ext"]):
                if value[0] == rec.REC_EMPLOYEE:
                    known.add(key.decode())
            txn.drop(live, delete=False)
            for ext in sorted(known):
                state = rec.LiveRec(True, ext in registered, max(0, active_calls.get(ext, 0)), now_ms)
                txn.put(ext.encode(), rec.encode_live(state), db=live)

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

    def forget_caller(self, caller: str) -> bool:
        self._writable()
        with self.env.begin(write=True) as txn:
            return txn.delete(caller.encode(), db=self.db["history"])

    def _update_live(self, extension: str, now_ms: int | None, *, registered: bool | None = None,
                     delta: int = 0) -> None:
        self._writable()
        key = extension.encode()
        with self.env.begin(write=True) as txn:
            raw = txn.get(key, db=self.db["live"])
            state = rec.decode_live(raw) if raw is not None else rec.LiveRec(False, False, 0, 0)
            known, reg = state.registered_known, state.registered
            if registered is not None:
                known, reg = True, registered
            calls = max(0, state.active_calls + delta)
            txn.put(key, rec.encode_live(rec.LiveRec(known, reg, calls, _now_ms(now_ms))), db=self.db["live"])

    def _writable(self) -> None:
        if self.readonly:
            raise StoreError(f"the store at {self.path} was opened read-only")

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _now_ms(now_ms: int | None) -> int:
    return int(time.time() * 1000) if now_ms is None else int(now_ms)


# --- model -> records --------------------------------------------------------

def _encode_config(config: Config):
    """Yield ``((table, key), value)`` for every config record."""
    for company in config.companies:
        yield ("company", company.id.encode()), rec.encode_company(rec.CompanyRec(
            company.id, company.name, company.country, company.timezone, company.sip_domain,
            company.no_answer_seconds, company.ring_timeout, company.outbound_caller_id or "",
            company.city_code or ""))
        names = {e.extension: e.name for e in company.employees}
        for e in company.employees:
            d = e.diverts
            yield ("ext", e.extension.encode()), rec.encode_employee(rec.EmployeeRec(
                e.extension, company.id, e.name, e.role, e.email or "", e.mobile or "", e.a1_hash or "",
                e.mobile_after or 0, d.no_answer_after, company.ring_timeout,
                d.always, d.busy, d.no_answer, d.unreachable))
        for dep in company.departments:
            yield ("ext", dep.extension.encode()), rec.encode_department(rec.DepartmentRec(
                dep.extension, company.id, dep.name, dep.strategy, dep.step_seconds, dep.timeout,
                dep.no_answer, tuple((m, names[m]) for m in dep.members)))
        for menu in company.ivr_menus:
            yield ("ivr", f"{company.id}/{menu.key}".encode()), rec.encode_ivr(rec.IvrRec(
                company.id, menu.key, menu.greeting, menu.timeout, menu.retries,
                menu.on_timeout, menu.on_invalid, menu.options))
        schedules = {}
        for s in company.schedules:
            schedules[s.key] = rec.ScheduleRec(
                s.key, s.hours, tuple(day.toordinal() - _EPOCH_DAY for day in s.holidays),
                compile_zone(company.timezone))
        for n in company.numbers:
            mode = rec.MODE_SCHEDULE if n.mode == "schedule" else rec.MODE_ALWAYS
            yield ("number", n.number.encode()), rec.encode_number(rec.NumberRec(
                n.number, company.id, mode, n.open, n.closed,
                schedules[n.schedule] if mode == rec.MODE_SCHEDULE else None))
