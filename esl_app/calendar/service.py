"""Entry points for the command line and the service: what ``switchboard sync``,
``switchboard serve`` and ``switchboard status EXT`` call.

* :func:`build_worker` -- config file + secrets -> a ready :class:`CalendarWorker`
  (every config and credentials problem reported at once, as ConfigError);
* :func:`run_sync` -- ``switchboard sync [--once]``: run the worker until
  SIGTERM/SIGINT (or one pass);
* :func:`status_report` / :func:`render_status` -- ``switchboard status EXT``:
  the statuses in force and upcoming, from the store, with each source's sync
  state from the worker's status file.
"""
from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
import time
from zoneinfo import ZoneInfo

from fastpath.referral_status import DEFAULT_PRECEDENCE, status_at, timeline, until

from .config import check_credentials, load_calendar_config, load_secrets
from .worker import CalendarWorker, default_status_path, read_status

log = logging.getLogger(__name__)


def build_worker(store, config_path: str, *, environ=None, status_path: str | None = None) -> CalendarWorker:
    """A worker for the calendars in ``config_path``; secrets from the environment and
    the secrets file.  Raises ConfigError with every problem."""
    config = load_calendar_config(config_path)
    secrets = load_secrets(config.credentials_file, environ)
    check_credentials(config, secrets)
    return CalendarWorker(store, config, secrets,
                          status_path=status_path or default_status_path(store.path))


def run_sync(store, config_path: str, *, once: bool = False, stop: threading.Event | None = None) -> int:
    """``switchboard sync``: one pass (``once``) or until SIGTERM/SIGINT (or ``stop`` is set).
    Returns the exit code: 0, or 1 if a one-off pass had failures."""
    worker = build_worker(store, config_path)
    if once:
        summary = worker.run_once()
        log.info("calendar sync: %(ok)d of %(calendars)d calendars synced (%(full)d full, %(incremental)d "
                 "incremental) in %(seconds).1f s", summary)
        return 0 if not summary["failed"] else 1
    stop = stop or threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    worker.start()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        worker.stop(timeout=10)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def status_report(store, extension: str, now: float | None = None, *, ahead: float = 7 * 86400,
                  precedence=DEFAULT_PRECEDENCE, status_path: str | None = None) -> dict:
    """The employee's statuses: ``current`` (the one in force, with ``until``: the end of
    back-to-back intervals of that status), ``upcoming`` (what will be in force during
    the next ``ahead`` seconds, in order) and ``sources`` (intervals held per source,
    with the worker's sync state of calendar sources)."""
    now = time.time() if now is None else now
    held = store.referrals(extension)
    current = status_at(held, now, precedence)
    sync = (read_status(status_path or default_status_path(store.path)) or {}).get("calendars", {})
    state = sync.get(extension)
    sources = {}
    for name, items in sorted(held.items()):
        entry = {"intervals": len(items), "future": sum(1 for iv in items if iv.end > now)}
        if state and state.get("source") == name:
            entry.update({k: state.get(k) for k in ("state", "last_success", "last_error", "last_error_at",
                                                       "next_attempt", "last_sync", "where")})
        sources[name] = entry
    if state and state.get("source") not in sources:
        sources[state["source"]] = {"intervals": 0, "future": 0, **{k: state.get(k) for k in (
            "state", "last_success", "last_error", "last_error_at", "next_attempt", "last_sync", "where")}}
    upcoming = [{"from": a, "to": b, "status": iv.status, "reason": iv.reason, "visibility": iv.visibility,
                 "source": iv.source} for a, b, iv in timeline(held, now, now + ahead, precedence)
                if a > now or iv is not current]
    return {
        "extension": extension, "at": now,
        "current": None if current is None else {
            "status": current.status, "reason": current.reason, "visibility": current.visibility,
            "alternate": current.alternate, "source": current.source, "since": current.start,
            "until": until(held, now, precedence)},
        "upcoming": upcoming, "sources": sources,
    }


def render_status(report: dict, zone: str | None = None) -> str:
    """``switchboard status EXT`` as text, times in ``zone`` (the company's)."""
    tz = ZoneInfo(zone) if zone else dt.timezone.utc

    def when(t):
        return dt.datetime.fromtimestamp(t, tz).strftime("%a %d %b %H:%M") if t else "-"

    lines = [f"ext {report['extension']} at {when(report['at'])} ({zone or 'UTC'})"]
    cur = report["current"]
    if cur is None:
        lines.append("  now: available")
    else:
        reason = f" '{cur['reason']}'" if cur["reason"] else ""
        lines.append(f"  now: {cur['status']}{reason} until {when(cur['until'])}  [{cur['source']}, "
                     f"visible to {cur['visibility']}]")
    for item in report["upcoming"][:20]:
        reason = f" '{item['reason']}'" if item["reason"] else ""
        lines.append(f"  {when(item['from'])} - {when(item['to'])}: {item['status']}{reason}  [{item['source']}]")
    for name, src in report["sources"].items():
        extra = ""
        if "state" in src:
            extra = f", sync {src['state']}, last success {when(src['last_success'])}"
            if src.get("state") == "failing":
                extra += f", next attempt {when(src['next_attempt'])}: {src['last_error']}"
        lines.append(f"  source {name}: {src['intervals']} intervals ({src['future']} to come){extra}")
    return "\n".join(lines)
