"""The ``switchboard`` command line.

``load`` validates a config into the store, ``explain`` asks the engine what
it would do with a call and why (no switch needed), ``fsconf`` writes the
FreeSWITCH config set, ``serve`` runs the service FreeSWITCH talks to,
``sync`` keeps calendar-based referral statuses current, ``status`` shows them,
``reception`` shows a whole company's for a receptionist.
Exit codes: 0 fine, 1 a problem with the store or the request, 2 an invalid
config or bad arguments.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from zoneinfo import ZoneInfo

from fastpath import engine
from fastpath.errors import ConfigError, SwitchboardError
from fastpath.route_plan import render_text, to_data
from fastpath.store import Store, default_store_path
from fastpath.validate import load_config

from .fs_conf import DIRECTORY_CREDENTIALS_ENV
from .fs_conf import add_cli as add_fsconf_cli


def _parse_at(text: str | None, zone_name: str | None) -> float:
    """``--at``: ISO 8601; without an offset it is the company's local time."""
    if text is None:
        return dt.datetime.now(dt.timezone.utc).timestamp()
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise SwitchboardError(f"--at {text!r} is not an ISO 8601 time (e.g. 2026-11-23T10:00 or "
                               f"2026-11-23T10:00+01:00)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(zone_name) if zone_name else dt.timezone.utc)
    return moment.timestamp()


_SEPARATORS = str.maketrans("", "", " -().")


def _as_dialled(text: str) -> str:
    """What a phone would send: "+44 20 7946 0000" -> "+442079460000"; addresses stay as they are."""
    bare = text.strip().translate(_SEPARATORS)
    return bare if bare.lstrip("+").isdigit() else text.strip()


def cmd_load(args) -> int:
    config = load_config(args.config)
    with Store(args.store, reload=True) as store:
        report = store.load_config(config)
    print(f"loaded {', '.join(args.config)} into {args.store}: generation {report.generation}, "
          f"{report.companies} companies, {report.numbers} numbers, {report.extensions} extensions, "
          f"{report.ivr_menus} IVR menus ({report.bytes_written} bytes in {report.seconds:.3f} s)")
    return 0


def cmd_explain(args) -> int:
    decide = engine.IMPLEMENTATIONS.get(args.engine) if args.engine else engine.decide
    if decide is None:
        raise SwitchboardError(f"engine {args.engine!r} is not available here; built: "
                               f"{', '.join(sorted(engine.IMPLEMENTATIONS))}")
    called, caller = _as_dialled(args.to), _as_dialled(args.caller or "")
    with Store(args.store, readonly=True) as store:
        now = _parse_at(args.at, store.timezone_of(called))
        plan = decide(store, called, caller, now)
    if args.json:
        print(json.dumps(to_data(plan), ensure_ascii=False, indent=2))
    else:
        print(render_text(plan))
    return 0


def cmd_info(args) -> int:
    with Store(args.store, readonly=True) as store:
        info = {"store": args.store, "engine": engine.IMPLEMENTATION, **store.meta(), **store.stats()}
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    return 0


def cmd_serve(args) -> int:
    import logging
    import os

    from .service import run
    from .service_config import load_service_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_service_config(args.service)
    return run(args.store, config, directory_credentials=os.environ.get(DIRECTORY_CREDENTIALS_ENV) or None)


def cmd_sync(args) -> int:
    import logging

    from .calendar.service import run_sync

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with Store(args.store, create=False) as store:
        return run_sync(store, args.calendars, once=args.once)


def cmd_status(args) -> int:
    from .calendar.service import render_status, status_report

    with Store(args.store, readonly=True) as store:
        now = _parse_at(args.at, store.timezone_of(args.extension))
        report = status_report(store, args.extension, now)
        zone = store.timezone_of(args.extension)
    print(json.dumps(report, indent=2, default=str) if args.json else render_status(report, zone))
    return 0


def _time_arg(text: str | None, zone: str, flag: str, after: int | None = None) -> int | None:
    """--from/--until: ISO 8601, or HH:MM in the company's zone: today's, or with ``after`` (the
    status's start, for --until) the first HH:MM after it -- tomorrow's if it has passed, as the
    phone code *30SHHMM reads it."""
    if text is None:
        return None
    if len(text) in (4, 5) and ":" in text:
        hours, _, minutes = text.partition(":")
        if hours.isdigit() and minutes.isdigit() and int(hours) < 24 and int(minutes) < 60:
            if after is not None:
                from .status_setting import end_at_time_of_day

                return end_at_time_of_day(int(hours), int(minutes), zone, after)
            today = dt.datetime.now(ZoneInfo(zone)).replace(hour=int(hours), minute=int(minutes), second=0,
                                                            microsecond=0)
            return int(today.timestamp())
    try:
        return int(_parse_at(text, zone))
    except SwitchboardError:
        raise SwitchboardError(f"{flag} {text!r}: give HH:MM or an ISO 8601 time") from None


def cmd_set_status(args) -> int:
    from .status_setting import set_status

    with Store(args.store, create=False) as store:
        zone = store.timezone_of(args.extension) or "UTC"
        start = _time_arg(args.start, zone, "--from") or int(dt.datetime.now(dt.timezone.utc).timestamp())
        end = _time_arg(args.until, zone, "--until", after=start)
        written = set_status(store, args.by or args.extension, args.extension, args.status, start=start, end=end,
                             reason=args.reason, alternate=args.alternate, visibility=args.visibility,
                             every=args.every, duration=args.duration * 60 if args.duration else None)
    first = dt.datetime.fromtimestamp(written[0].start, ZoneInfo(zone))
    last = dt.datetime.fromtimestamp(written[-1].end, ZoneInfo(zone))
    print(f"ext {args.extension}: {args.status} from {first:%Y-%m-%d %H:%M} until {last:%Y-%m-%d %H:%M}"
          + (f" ({len(written)} occurrences)" if args.every else "") + f", set by ext {args.by or args.extension}")
    return 0


def cmd_clear_status(args) -> int:
    from .status_setting import clear_status

    with Store(args.store, create=False) as store:
        cleared = clear_status(store, args.by or args.extension, args.extension)
    print(f"ext {args.extension}: cleared {', '.join(cleared)} status" if cleared
          else f"ext {args.extension}: no manual status to clear")
    return 0


def add_status_setting_cli(sub) -> None:
    p = sub.add_parser("set-status", help="set an employee's referral status by hand (overrides the calendar)")
    p.add_argument("extension")
    p.add_argument("status", help="meeting, lunch, vacation, sick, away, available or a company-defined one")
    p.add_argument("--by", default=None, metavar="EXT",
                   help="who sets it: the employee (default), an admin or someone they authorised")
    p.add_argument("--from", dest="start", default=None, metavar="TIME", help="HH:MM today or ISO (default now)")
    p.add_argument("--until", default=None, metavar="TIME", help="HH:MM (the next one after --from: tomorrow's if past) or ISO (default: until cleared)")
    p.add_argument("--reason", default="", help="what callers allowed to see it are told")
    p.add_argument("--alternate", default="", help="an extension or number to reach instead")
    p.add_argument("--visibility", default="everyone", choices=("everyone", "receptionists", "nobody"))
    p.add_argument("--every", default=None, metavar="RRULE",
                   help="recurring, e.g. FREQ=WEEKLY;BYDAY=MO (from --from, a year of occurrences)")
    p.add_argument("--duration", type=int, default=None, metavar="MINUTES", help="length of each occurrence")
    p.set_defaults(func=cmd_set_status)
    p = sub.add_parser("clear-status", help="clear an employee's manual status (the calendar applies again)")
    p.add_argument("extension")
    p.add_argument("--by", default=None, metavar="EXT", help="who clears it (default: the employee)")
    p.set_defaults(func=cmd_clear_status)


def cmd_reception(args) -> int:
    from .reception import reception_report, render_reception

    with Store(args.store, readonly=True) as store:
        report = reception_report(store, args.company, lambda zone: _parse_at(args.at, zone), args.viewer)
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else render_reception(report))
    return 0


def _icm_company(store, wanted: str | None):
    """``--company``, else the store's only company; the company record."""
    companies = {c.id: c for c in store.companies()}
    if wanted is not None:
        if wanted not in companies:
            raise SwitchboardError(f"--company {wanted!r}: no such company in the store at {store.path} "
                                   f"(it has: {', '.join(sorted(companies)) or 'none; load a config first'})")
        return companies[wanted]
    if len(companies) != 1:
        raise SwitchboardError(f"the store at {store.path} holds {len(companies)} companies "
                               f"({', '.join(sorted(companies)) or 'none; load a config first'}): "
                               f"say which with --company ID")
    return next(iter(companies.values()))


def _icm_phone(store, company, number: str) -> str:
    """NUMBER as ICM files it for ``company``: E.164 digits by the company's dialling rules."""
    from fastpath.icm_lookup import caller_key

    phone = caller_key(store, company.id, _as_dialled(number))
    if phone is None:
        city = f", city code {company.city_code}" if company.city_code else ""
        raise SwitchboardError(f"NUMBER {number!r} is not a phone number for company {company.id} "
                               f"({company.country}{city}): give digits with an optional '+', "
                               f"e.g. +74951234567, 84951234567 or a local number")
    return phone


def cmd_icm_lookup(args) -> int:
    from fastpath.icm_lookup import explain, reason

    if args.max_age < 0:
        raise SwitchboardError(f"--max-age {args.max_age}: days must be 0 (any age) or more")
    with Store(args.store, readonly=True) as store:
        company = _icm_company(store, args.company)
        _icm_phone(store, company, args.number)           # a clear error for what is no phone number
        now = _parse_at(args.at, company.timezone)
        found = explain(store, company.id, _as_dialled(args.number), now, args.max_age * 86_400)
    when = dt.datetime.fromtimestamp(now, ZoneInfo(company.timezone)).isoformat(timespec="minutes")
    print(f"ICM lookup for company {company.id} at {when}"
          + (f", history up to {args.max_age} days old" if args.max_age else ""))
    print(found)
    if found.answer:
        print(reason(*found.answer, company.timezone))
    return 0


def cmd_icm_forget(args) -> int:
    with Store(args.store, create=False) as store:
        company = _icm_company(store, args.company)
        phone = _icm_phone(store, company, args.number)
        erased = store.erase_caller(phone)
    zone = ZoneInfo(company.timezone)

    def moment(when: int) -> str:
        return dt.datetime.fromtimestamp(when, zone).isoformat(timespec="minutes")

    print(f"caller {args.number!r} -> +{phone} (read with the dialling rules of {company.id})")
    h = erased.history
    if h is not None:
        print(f"removed from the call history: last {'call from' if h.direction == 'in' else 'call to'} "
              f"them with ext {h.extension} at {moment(h.when)}")
    elif erased.history_removed:
        print("removed from the call history: an unreadable entry")
    else:
        print("call history: nothing kept")
    for cached_for, answer in sorted(erased.crm.items()):
        what = (f"{answer.source or 'every source'} answer fetched {moment(answer.fetched)}"
                + (f", ext {answer.extension}" if answer.extension else "")) if answer else "an unreadable answer"
        print(f"removed from the CRM cache of {cached_for}: {what}")
    if not erased.crm:
        print("CRM cache: nothing kept")
    return 0


def add_icm_cli(sub) -> None:
    p = sub.add_parser("icm", help="ICM: who a returning caller reaches, and privacy requests")
    icm = p.add_subparsers(dest="icm_command", required=True)
    q = icm.add_parser("lookup", help="which source answers for a caller, and why")
    q.add_argument("number", metavar="NUMBER", help="the caller number as the switch sends it (spaces allowed)")
    q.add_argument("--company", default=None, metavar="ID", help="whose callers (default: the only company)")
    q.add_argument("--at", default=None,
                   help="ISO 8601 time of the call; without an offset the company's local time (default: now)")
    q.add_argument("--max-age", type=int, default=0, metavar="DAYS",
                   help="ignore call history older than this (default 0: any age)")
    q.set_defaults(func=cmd_icm_lookup)
    q = icm.add_parser("forget", help="remove a caller from the call history and the CRM cache (privacy request)")
    q.add_argument("number", metavar="NUMBER", help="the caller's number, in any form the company's callers use")
    q.add_argument("--company", default=None, metavar="ID",
                   help="whose dialling rules read NUMBER (default: the only company)")
    q.set_defaults(func=cmd_icm_forget)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description=__doc__.split("\n")[0])
    parser.add_argument("--store", default=None,
                        help="LMDB store directory (default: $SWITCHBOARD_STORE, else "
                             "$XDG_STATE_HOME/switchboard/store)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("load", help="validate company config files and write them to the store")
    p.add_argument("config", nargs="+", help="YAML files; all companies in them form one config")
    p.set_defaults(func=cmd_load)

    p = sub.add_parser("explain", help="show the route plan for a call, and why")
    p.add_argument("--to", required=True, help="called number, extension or ivr:<company>/<menu>[/<choice>]")
    p.add_argument("--from", dest="caller", default="", help="caller number or extension")
    p.add_argument("--at", default=None,
                   help="ISO 8601 time of the call; without an offset it is the company's local time "
                        "(default: now)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--engine", choices=("fastpath", "reference"), default=None,
                   help="which implementation decides (default: the compiled one when built)")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("info", help="store location, schema, generation and table sizes")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("serve", help="run the call-routing service for FreeSWITCH (outbound ESL server, "
                                     "directory for mod_xml_curl, presence listener); stops on SIGTERM")
    p.add_argument("--service", default=None, metavar="FILE",
                   help="service config YAML (see examples/service.yaml); the Event Socket password may "
                        "come from SWITCHBOARD_ESL_PASSWORD instead")
    p.set_defaults(func=cmd_serve)

    add_fsconf_cli(sub)
    add_icm_cli(sub)
    add_status_setting_cli(sub)

    p = sub.add_parser("sync", help="sync employees' calendars (Exchange, Office 365, CalDAV) into referral "
                                    "statuses; runs until SIGTERM unless --once")
    p.add_argument("--calendars", required=True, metavar="FILE",
                   help="calendar config YAML (see examples/calendars.yaml); credentials come from the "
                        "environment or the secrets file it names")
    p.add_argument("--once", action="store_true", help="one pass over every calendar, then exit (1 on failures)")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("status", help="an employee's referral status now and upcoming, with its sources")
    p.add_argument("extension")
    p.add_argument("--at", default=None, help="ISO 8601 time (default now; without offset: company time)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("reception", help="every employee's status, until when, bookings of the coming hour and "
                                         "phone state, as a receptionist sees them")
    p.add_argument("--company", default=None, metavar="ID", help="one company (default: every company)")
    p.add_argument("--at", default=None, help="ISO 8601 time (default now; without offset: company time)")
    p.add_argument("--viewer", choices=("receptionist", "admin", "user"), default="receptionist",
                   help="the role of who is looking: details visible to receptionists only are hidden "
                        "from the others (default: receptionist)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_reception)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.store is None:
        args.store = default_store_path()
    try:
        return args.func(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except SwitchboardError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
