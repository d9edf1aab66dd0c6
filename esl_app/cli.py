"""The ``switchboard`` command line.

``load`` validates a config into the store, ``explain`` asks the engine what
it would do with a call and why (no switch needed), ``fsconf`` writes the
FreeSWITCH config set, ``serve`` runs the service FreeSWITCH talks to,
``sync`` keeps calendar-based referral statuses current, ``status`` shows them.
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
    with Store(args.store) as store:
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
