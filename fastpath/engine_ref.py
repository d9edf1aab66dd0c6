"""The pure-Python reference engine: ``decide(store, called, caller, now) -> RoutePlan``.

This is the readable definition of how Switchboard routes a call; the Cython
engine (``_engine.pyx``) must give the very same plans, which the shared test
suite and the property tests check.  Clarity wins over speed here: records are
decoded into dataclasses and local time comes from ``zoneinfo``.

What ``called`` may be:

* a company number (E.164, with or without ``+``): its around-the-clock or
  business-hours route;
* an extension: an internal call (employee with diverts, or department);
* ``ivr:<company>/<menu>`` — the menu itself, or ``ivr:<company>/<menu>/<choice>``
  where choice is a digit, ``timeout`` or ``invalid`` — what the executor asks
  after the caller pressed a key;
* anything else: an outbound call when the caller is an employee and it is a
  valid phone number, otherwise ``UNALLOCATED_NUMBER``.

Divert rules: ``always`` is followed at once; ``busy`` and ``unreachable`` at once
when the live state says so, and again as fallbacks when the switch reports it;
``no_answer`` after its timer.  Following a divert to an extension is one hop;
a chain stops after :data:`MAX_HOPS` hops or when it comes back to an extension
already on the path (the divert is then ignored and the reason says so).
"""
from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo

from . import records as rec
from .errors import PhoneNumberError
from .model import Destination
from .phone import to_e164
from .icm_lookup import NO_MANAGER, lookup_in as icm_lookup_in, reason as icm_reason
from .referral_route import WORDS, alternate, in_force
from .route_plan import Announce, Continue, Fax, Hangup, Ivr, Ring, RoutePlan, Target, Voicemail

MAX_HOPS = 5
WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_EPOCH = dt.date(1970, 1, 1)


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def dest_text(dest: Destination) -> str:
    """How a destination reads in a reason."""
    kind, ref = dest.kind, dest.ref
    if kind in ("employee", "department"):
        return f"ext {ref}"
    if kind == "external":
        return f"+{ref}"
    if kind == "ivr":
        return f"IVR {ref}"
    if kind == "hangup":
        return f"hang up ({ref})"
    return f"{kind} {ref}"


def decide(store, called: str, caller: str, now: float) -> RoutePlan:
    """Route one call.  Pure: reads one store snapshot, writes nothing."""
    called = called.strip()
    caller = caller.strip()
    if called.startswith("+"):
        called = called[1:]
    if caller.startswith("+"):
        caller = caller[1:]
    at = int(now)
    with store.read() as txn:
        ctx = _Decision(store, txn, caller, at)
        ctx.store = store
        steps = ctx.route(called)
    return RoutePlan(called, caller, at, ctx.company, steps)


class _Decision:
    """State of one decision: the snapshot, the caller and the company reached."""

    def __init__(self, store, txn, caller: str, at: int):
        self.db = store.db
        self.txn = txn
        self.caller = caller
        self.at = at
        self.company = ""
        self.depth = 0          # > 0 while building a fallback: rings there get continuations

    # -- lookups -------------------------------------------------------------

    def _get(self, table: str, key: str):
        return self.txn.get(key.encode(), db=self.db[table])

    def _live(self, slot: int) -> rec.LiveRec | None:
        raw = self.txn.get(rec.live_key(slot), db=self.db["live"])
        return rec.decode_live(raw, slot) if raw is not None else None

    def _company_ring_timeout(self) -> int:
        return rec.decode_company(self._get("company", self.company)).ring_timeout

    # -- entry points --------------------------------------------------------

    def route(self, called: str) -> tuple:
        if called.startswith("ivr:"):
            return self._ivr_address(called)
        if called.startswith("then:"):
            return self._then(called)
        if called.startswith("normal:"):
            return self._normal(called)
        raw = self._get("number", called)
        if raw is not None:
            return self._number(rec.decode_number(called, raw))
        raw = self._get("ext", called)
        if raw is not None:
            return self._internal(called, raw)
        return self._outbound_or_unknown(called)

    def _number(self, n: rec.NumberRec, icm: bool = True) -> tuple:
        self.company = n.company
        if n.mode == rec.MODE_ALWAYS:
            return self._open(n, f"number +{n.number} routes around the clock", icm)
        sched = n.schedule
        local = dt.datetime.fromtimestamp(self.at, _zone(sched.tz.name))
        day = WEEKDAY_NAMES[local.weekday()]
        if (local.date() - _EPOCH).days in sched.holidays:
            why = (f"{day} {local.date().isoformat()} is a holiday in schedule '{sched.key}', "
                   f"non-working hours route")
            return self._destination(n.closed, why, ())
        minute = local.hour * 60 + local.minute
        when = f"{day} {local.hour:02d}:{local.minute:02d} in {sched.tz.name}"
        for start, end in sched.hours[local.weekday()]:
            if start <= minute < end:
                return self._open(n, f"{when}: working hours of schedule '{sched.key}'", icm)
        why = f"{when}: outside working hours of schedule '{sched.key}', non-working hours route"
        return self._destination(n.closed, why, ())

    # -- ICM: a returning caller reaches their manager ---------------------------

    def _open(self, n: rec.NumberRec, why: str, icm: bool) -> tuple:
        """The working-hours route; with an ICM step, the caller's manager first."""
        if icm and n.icm is not None:
            return self._icm(n, why)
        return self._destination(n.open, why, ())

    def _normal(self, address: str) -> tuple:
        """``normal:<number>``: the number's route without its ICM step (ICM could not connect)."""
        number = address[7:]
        raw = self._get("number", number) if number.isdigit() else None
        if raw is None:
            return (Hangup("UNALLOCATED_NUMBER", f"{address}: no such company number"),)
        return self._number(rec.decode_number(number, raw), icm=False)

    def _icm(self, n: rec.NumberRec, why: str) -> tuple:
        icm = n.icm
        found = icm_lookup_in(self.txn, self.store, n.company, self.caller, self.at, icm.max_age_days * 86400,
                              icm.sources)
        if found is None:
            if icm.default is not None:
                return self._destination(icm.default, f"{why}; {NO_MANAGER}, default", ())
            return self._destination(n.open, f"{why}; {NO_MANAGER}, normal route", ())
        ext, source, when = found
        zone = rec.decode_company(self._get("company", n.company)).timezone
        why = f"{why}; {icm_reason(ext, source, when, zone)}"
        if ext in icm.exceptions:
            return self._destination(n.open, f"{why}, an ICM exception: normal route", ())
        e = rec.decode_employee(ext, self._get("ext", ext))
        path = (ext,)
        why = f"{why} → ext {ext} ({e.name})"
        steps, notes, live = self._status_first(e, why, path)
        if steps is not None:
            return steps
        if e.always is not None and self._blocked(e.always, path) is None:
            return self._destination(e.always, f"{why}{notes} diverts all calls", path)
        if live is not None and live.registered_known and not live.registered:
            return self._icm_failed(n, f"{why}{notes} is not registered")
        if live is not None and live.active_calls > 0:
            return self._icm_failed(n, f"{why}{notes} is on a call")
        targets = (Target("extension", ext, e.name, 0, icm.timeout),)
        if icm.ring == "manager_and_mobile" and e.mobile:
            targets += (Target("external", e.mobile, f"{e.name} (mobile)", 0, icm.timeout),)
        self.depth += 1
        failed = self._icm_failed(n, f"ICM: ext {ext} did not take the call")
        self.depth -= 1
        return (Ring(targets, "simultaneous", icm.timeout, why + notes, failed, failed, failed),)

    def _icm_failed(self, n: rec.NumberRec, prefix: str) -> tuple:
        """The manager cannot take the call: the ICM queue if any, then always the normal route."""
        back = (Continue(f"normal:{n.number}", f"{prefix}: back to the normal route of +{n.number}"),)
        if n.icm.on_failure is None:
            return back
        queue = n.icm.on_failure.ref
        d = rec.decode_department(queue, self._get("ext", queue))
        return self._department(d, f"{prefix} → ICM queue", (), after=back)

    def _internal(self, called: str, raw) -> tuple:
        target = rec.decode_extension(called, raw)
        self.company = target.company
        caller_raw = self._get("ext", self.caller) if self.caller else None
        if caller_raw is not None:
            source = rec.decode_extension(self.caller, caller_raw)
            if source.company != target.company:
                return (Hangup("CALL_REJECTED",
                               f"ext {self.caller} ({source.company}) may not dial ext {called} of "
                               f"company {target.company}; call its public number"),)
            if self.caller == called and isinstance(target, rec.EmployeeRec):
                return (Voicemail(called, f"ext {called} called itself: own voicemail"),)
            why = f"internal call from ext {self.caller}"
        else:
            why = f"direct call to ext {called}"
        if isinstance(target, rec.DepartmentRec):
            return self._department(target, why, ())
        return self._employee(target, why, ())

    def _outbound_or_unknown(self, called: str) -> tuple:
        caller_raw = self._get("ext", self.caller) if self.caller else None
        if caller_raw is None or caller_raw[0] != rec.REC_EMPLOYEE:
            return (Hangup("UNALLOCATED_NUMBER", f"{called} is neither a company number nor an extension"),)
        employee = rec.decode_employee(self.caller, caller_raw)
        self.company = employee.company
        company = rec.decode_company(self._get("company", employee.company))
        try:
            number = to_e164(called, company.country)
        except PhoneNumberError as exc:
            return (Hangup("UNALLOCATED_NUMBER", f"ext {self.caller} dialled {called}: {exc}"),)
        timeout = company.ring_timeout
        return (Ring((Target("external", number, "", 0, timeout),), "simultaneous", timeout,
                     f"outbound call from ext {self.caller} to +{number}",
                     caller_id=company.outbound_caller_id or None),)

    def _ivr_address(self, address: str) -> tuple:
        parts = address[4:].split("/")
        if len(parts) not in (2, 3):
            return (Hangup("UNALLOCATED_NUMBER", f"{address} is not an IVR address"),)
        raw = self._get("ivr", f"{parts[0]}/{parts[1]}")
        if raw is None:
            return (Hangup("UNALLOCATED_NUMBER", f"no IVR menu {parts[0]}/{parts[1]}"),)
        menu = rec.decode_ivr(raw)
        self.company = menu.company
        if len(parts) == 2:
            return self._ivr(menu, None)
        choice = parts[2]
        if choice == "timeout":
            return self._destination(menu.on_timeout, f"IVR {menu.key}: no choice made", ())
        for digit, dest in menu.options:
            if digit == choice:
                return self._destination(dest, f"IVR {menu.key}: caller pressed {digit}", ())
        return self._destination(menu.on_invalid, f"IVR {menu.key}: invalid choice", ())

    # -- destinations --------------------------------------------------------

    def _destination(self, dest, why: str, path: tuple) -> tuple:
        """The steps for ``dest``; ``why`` is how the call got here."""
        kind, ref = dest.kind, dest.ref
        if kind == "employee":
            raw = self._get("ext", ref)
            steps = self._employee(rec.decode_employee(ref, raw), why, path)
        elif kind == "department":
            raw = self._get("ext", ref)
            steps = self._department(rec.decode_department(ref, raw), why, path)
        elif kind == "ivr":
            steps = self._ivr(rec.decode_ivr(self._get("ivr", f"{self.company}/{ref}")), why)
        elif kind == "voicemail":
            steps = (Voicemail(ref, f"{why} → voicemail {ref}"),)
        elif kind == "external":
            timeout = self._company_ring_timeout()
            steps = (Ring((Target("external", ref, "", 0, timeout),), "simultaneous", timeout,
                          f"{why} → +{ref}"),)
        elif kind == "fax":
            steps = (Fax(ref, f"{why} → fax for ext {ref}"),)
        else:
            steps = (Hangup(ref, f"{why} → hang up"),)
        if dest.greeting:
            return (Announce(dest.greeting, f"greeting before {dest_text(dest)}"),) + steps
        return steps

    def _ivr(self, menu: rec.IvrRec, why: str | None) -> tuple:
        """The menu step; ``why`` is None when the caller asked for the menu itself."""
        self.company = menu.company
        key = f"{menu.company}/{menu.key}"
        options = tuple((digit, f"{dest.kind}:{dest.ref}") for digit, dest in menu.options)
        return (Ivr(key, menu.greeting, menu.timeout, menu.retries, options,
                    f"{menu.on_timeout.kind}:{menu.on_timeout.ref}",
                    f"{menu.on_invalid.kind}:{menu.on_invalid.ref}",
                    f"IVR {menu.key}" if why is None else f"{why} → IVR {menu.key}"),)

    def _blocked(self, dest, path: tuple) -> str | None:
        """Why following a divert to ``dest`` must not happen, or None."""
        if dest.kind not in ("employee", "department"):
            return None
        if dest.ref in path:
            return "divert loop " + " → ".join(path + (dest.ref,)) + " ignored"
        if len(path) > MAX_HOPS:
            return f"divert chain longer than {MAX_HOPS} hops stopped at ext {path[-1]}"
        return None

    # Each fallback takes ``prefix``: what happened, e.g. "ext 2001 is busy".
    # The destination then appends where the call goes ("→ voicemail 2001").

    def _busy_steps(self, e: rec.EmployeeRec, prefix: str, path: tuple) -> tuple:
        if e.busy is None:
            return (Hangup("USER_BUSY", f"{prefix}, no busy divert"),)
        blocked = self._blocked(e.busy, path)
        if blocked:
            return (Hangup("USER_BUSY", f"{prefix}; {blocked}"),)
        return self._destination(e.busy, f"{prefix}, busy divert", path)

    def _no_answer_steps(self, e: rec.EmployeeRec, prefix: str, path: tuple) -> tuple:
        if e.no_answer is None:
            return (Hangup("NO_ANSWER", f"{prefix}, no no-answer divert"),)
        blocked = self._blocked(e.no_answer, path)
        if blocked:
            return (Hangup("NO_ANSWER", f"{prefix}; {blocked}"),)
        return self._destination(e.no_answer, f"{prefix}, no-answer divert", path)

    def _after_desk(self, e: rec.EmployeeRec, path: tuple) -> tuple:
        """When the desk phone rang out: the mobile if configured, else the no-answer divert."""
        timeout = _desk_timeout(e)
        if e.mobile_after:
            return self._mobile_steps(e, f"ext {e.extension} no answer after {timeout} s → mobile +{e.mobile}",
                                      path)
        return self._no_answer_steps(e, f"ext {e.extension} no answer after {timeout} s", path)

    def _mobile_steps(self, e: rec.EmployeeRec, reason: str, path: tuple) -> tuple:
        """Ring the mobile; if that fails too, the no-answer divert."""
        timeout = e.no_answer_after if e.no_answer is not None else e.ring_timeout
        target = Target("external", e.mobile, f"{e.name} (mobile)", 0, timeout)
        if self.depth:
            rest = self._continue(e.extension, "mobile", path, f"mobile of ext {e.extension} did not answer")
        else:
            self.depth += 1
            rest = self._no_answer_steps(e, f"mobile of ext {e.extension} did not answer", path)
            self.depth -= 1
        return (Ring((target,), "simultaneous", timeout, reason, rest, rest, rest),)

    def _unreachable_steps(self, e: rec.EmployeeRec, prefix: str, path: tuple) -> tuple:
        blocked = None
        if e.unreachable is not None:
            blocked = self._blocked(e.unreachable, path)
            if blocked is None:
                return self._destination(e.unreachable, f"{prefix}, unreachable divert", path)
        if e.mobile_after:
            note = f"; {blocked}" if blocked else ""
            return self._mobile_steps(e, f"{prefix}{note} → mobile +{e.mobile}", path)
        note = f"; {blocked}" if blocked else ", no unreachable divert"
        return (Hangup("USER_NOT_REGISTERED", f"{prefix}{note}"),)

    def _continue(self, ext: str, condition: str, path: tuple, prefix: str) -> tuple:
        return (Continue(f"then:{ext}/{condition}/{','.join(path)}", f"{prefix}: next step decided then"),)

    # -- referral status --------------------------------------------------------

    def _referral(self, extension: str, company: str):
        return in_force(self.txn, self.db["referral"], self.db["company"], extension, company, self.at)

    def _status_steps(self, e: rec.EmployeeRec, status, action: rec.ActionRec, why: str, path: tuple) -> tuple:
        """Tell the caller why, then the status's action (divert, alternate number or voicemail)."""
        why = f"{why} is {status.text}"
        note = ""
        if action.action in ("divert", "alternate"):
            if action.action == "divert":
                dest, label = action.to, "status divert"
            else:
                dest, label = alternate(self.txn, self.db["ext"], self.db["company"], status, e.company)
            blocked = self._blocked(dest, path) if dest is not None else label
            if blocked is None:
                return (status.say,) + self._destination(dest, f"{why}, {label}", path)
            note = f"; {blocked}"
        return (status.say, Voicemail(e.extension, f"{why}{note} → voicemail {e.extension}"))

    def _status_first(self, e: rec.EmployeeRec, why: str, path: tuple):
        """``(steps, notes, live)``: the steps when the employee's status decides the call (None
        otherwise), the note a ring carries when the status says "ring anyway", and the presence."""
        live = self._live(e.slot)
        if live is not None and live.referral:
            status = self._referral(e.extension, e.company)
            if status is not None:
                action = e.referral_action(status.interval.status)
                if action.action != "ring":
                    return self._status_steps(e, status, action, why, path), "", live
                return None, f"; {status.text}: ringing anyway", live
        return None, "", live

    def _member_unavailable(self, member: str, live: rec.LiveRec | None) -> str | None:
        """Why a department member with a status is skipped (None: ring them)."""
        if live is None or not live.referral:
            return None
        e = rec.decode_employee(member, self._get("ext", member))
        status = self._referral(member, e.company)
        if status is None or e.referral_action(status.interval.status).action == "ring":
            return None
        return WORDS.get(status.shown, f"status {status.shown}")

    def _employee(self, e: rec.EmployeeRec, why: str, path: tuple) -> tuple:
        ext = e.extension
        path = path + (ext,)
        why = f"{why} → ext {ext} ({e.name})"
        steps, notes, live = self._status_first(e, why, path)
        if steps is not None:
            return steps
        if e.always is not None:
            blocked = self._blocked(e.always, path)
            if blocked is None:
                return self._destination(e.always, f"{why}{notes} diverts all calls", path)
            notes += f"; {blocked}"
        if live is not None and live.registered_known and not live.registered:
            return self._unreachable_steps(e, f"{why} is not registered{notes}", path)
        if live is not None and live.active_calls > 0:
            if e.busy is not None and self._blocked(e.busy, path) is None:
                return self._destination(e.busy, f"{why} is on a call{notes}, busy divert", path)
            notes += "; on a call, no busy divert: ringing anyway (call waiting)"
        timeout = _desk_timeout(e)
        if self.depth:
            on_busy = self._continue(ext, "busy", path, f"ext {ext} is busy")
            on_no_answer = self._continue(ext, "no_answer", path, f"ext {ext} no answer after {timeout} s")
            on_unreachable = self._continue(ext, "unreachable", path, f"ext {ext} is not reachable")
        else:
            self.depth += 1
            on_busy = self._busy_steps(e, f"ext {ext} is busy", path)
            on_no_answer = self._after_desk(e, path)
            on_unreachable = self._unreachable_steps(e, f"ext {ext} is not reachable", path)
            self.depth -= 1
        return (Ring((Target("extension", ext, e.name, 0, timeout),), "simultaneous", timeout, why + notes,
                     on_busy, on_no_answer, on_unreachable),)

    def _nobody(self, d: rec.DepartmentRec, reason: str, path: tuple) -> tuple:
        """Nobody in the department took the call: its no-answer destination."""
        if d.no_answer is None:
            return (Hangup("NO_ANSWER", f"{reason}, no destination configured"),)
        blocked = self._blocked(d.no_answer, path)
        if blocked:
            return (Hangup("NO_ANSWER", f"{reason}; {blocked}"),)
        return self._destination(d.no_answer, reason, path)

    def _department(self, d: rec.DepartmentRec, why: str, path: tuple, after: tuple | None = None) -> tuple:
        """Ring the group; ``after`` (ICM's way back to the normal route) replaces its own no-answer route."""
        ext = d.extension
        path = path + (ext,)
        why = f"{why} → dept {ext} ({d.name}), {d.strategy}"
        available, skipped = [], []
        for member, name, slot in d.members:
            live = self._live(slot)
            if live is not None and live.registered_known and not live.registered:
                skipped.append(f"{member} not registered")
            elif live is not None and live.active_calls > 0:
                skipped.append(f"{member} on a call")
            elif (word := self._member_unavailable(member, live)) is not None:
                skipped.append(f"{member} {word}")
            else:
                available.append((member, name))
        if skipped:
            why += "; skipped " + ", ".join(skipped)
        if not available:
            if after is not None:
                return after
            return self._nobody(d, f"{why}: nobody available", path)
        targets = []
        if d.strategy == "simultaneous":
            targets = [Target("extension", m, n, 0, d.timeout) for m, n in available]
            total = d.timeout
        elif d.strategy == "sequential":
            elapsed = 0
            for m, n in available:
                if elapsed >= d.timeout:
                    break
                leg = min(d.step_seconds, d.timeout - elapsed)
                targets.append(Target("extension", m, n, elapsed, leg))
                elapsed += leg
            total = elapsed
        else:
            for i, (m, n) in enumerate(available):
                delay = i * d.step_seconds
                if delay >= d.timeout:
                    break
                targets.append(Target("extension", m, n, delay, d.timeout - delay))
            total = d.timeout
        reason = f"dept {ext} ({d.name}): nobody answered"
        if after is not None:
            rest = after
        elif self.depth:
            rest = self._continue(ext, "nobody", path, reason)
        else:
            self.depth += 1
            rest = self._nobody(d, reason, path)
            self.depth -= 1
        return (Ring(tuple(targets), d.strategy, total, why, rest, rest, rest),)

    # -- continuations ---------------------------------------------------------

    def _then(self, address: str) -> tuple:
        """Resume a fallback: ``then:<ext>/<condition>/<path>`` (see route_plan)."""
        parts = address[5:].split("/")
        path = tuple(parts[2].split(",")) if len(parts) == 3 else ()
        if len(parts) != 3 or not all(x.isdigit() for x in path) or path[-1] != parts[0]:
            return (Hangup("UNALLOCATED_NUMBER", f"{address} is not a fallback address"),)
        ext, condition = parts[0], parts[1]
        raw = self._get("ext", ext)
        if raw is None:
            return (Hangup("UNALLOCATED_NUMBER", f"{address}: ext {ext} no longer exists"),)
        target = rec.decode_extension(ext, raw)
        self.company = target.company
        if isinstance(target, rec.DepartmentRec):
            if condition == "nobody":
                return self._nobody(target, f"dept {ext} ({target.name}): nobody answered", path)
        elif condition == "busy":
            return self._busy_steps(target, f"ext {ext} is busy", path)
        elif condition == "no_answer":
            return self._after_desk(target, path)
        elif condition == "unreachable":
            return self._unreachable_steps(target, f"ext {ext} is not reachable", path)
        elif condition == "mobile":
            return self._no_answer_steps(target, f"mobile of ext {ext} did not answer", path)
        return (Hangup("UNALLOCATED_NUMBER", f"{address}: no fallback '{condition}' for ext {ext}"),)


def _desk_timeout(e: rec.EmployeeRec) -> int:
    """How long the desk phone rings before its no-answer handling starts."""
    if e.mobile_after:
        return e.mobile_after
    return e.no_answer_after if e.no_answer is not None else e.ring_timeout
