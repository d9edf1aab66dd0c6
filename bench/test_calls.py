"""Call load (issue 3): call setups per second, concurrency and memory per call of `switchboard serve`.

Three processes:

* ``python -m esl_app.cli serve`` — the service exactly as an operator runs it
  (generated service YAML with ``workers: 2``, the 10,000-employee store of
  ``bench/conftest.py``, the ESL password from the environment; its presence
  listener points at a port where no switch answers, so the live state stays
  the store's busy afternoon).  Its call log goes to a file.  With workers,
  the service is the parent and its outbound worker processes: memory and CPU
  are summed over all of them.
* ``python -m tests.load_switch`` — the load generator: FreeSWITCH's outbound
  ``socket ... async full`` calls, frame for frame as ``tests/fake_freeswitch``
  plays them (``tests/test_load_switch.py`` checks that), on one asyncio loop.
  Calls arrive open-loop at ``rate`` per second (a linear ramp, then
  ``duration`` seconds sustained); every bridge is answered after
  ``answer_delay`` and held ``hold`` seconds, so about ``concurrency`` calls
  are up at once.
* pytest: builds the call set, starts both, samples the server's VmRSS /
  RssAnon / CPU time (parent and workers) and ``GET /health``'s
  ``active_calls`` (summed over the workers) every 0.5 s, and checks every call.

The call set is ``company_gen.call_mix`` (calls to company numbers from
outside, internal calls from authenticated phones, outbound calls in national
format) kept to the calls whose plan reaches a bridge and does so the same at
every probe time (day, lunch, night, weekend, holiday, summer evening, now) —
so the service can run on its real clock and the expected answer does not
depend on when the benchmark runs.  Some of these calls play a greeting and an
IVR menu first (the caller presses nothing; the service decides again for the
menu's timeout and rings that).

Figures (``benchmark.extra_info``):

* ``call_setups_per_s`` — calls whose plan reached the bridge, per second of
  the sustained window;
* ``concurrent_calls`` — the service's ``active_calls`` (median over the steady
  part of the window);
* ``lost_calls`` — calls refused, reset, timed out, that never got a plan,
  or did not end normally (hangup, then our ``exit``), warm-up included;
* ``misrouted_calls`` — calls with a plan whose first ``bridge`` dial string
  (or none) is not the one ``fastpath.engine.decide`` + ``esl_app.dial_string``
  give for that call;
* ``kib_per_call`` — (VmRSS at steady state − VmRSS idle after the warm-up)
  / concurrent calls, median over the steady samples; VmRSS is the sum over
  the service's processes (pages a fork shares count once per process, and
  the same in both samples).

Run length: ``--benchmark-only`` runs the full profile (1,000 calls/s, 2,000
concurrent, 60 s sustained, 2 workers; ``SWITCHBOARD_LOAD_SECONDS``,
``_RATE``, ``_CONCURRENCY`` and ``_WORKERS`` override it).  ``--benchmark-disable`` (CI) runs a few seconds
at a lower rate: same checks, zero lost and misrouted asserted in both.
"""
from __future__ import annotations

import collections
import datetime as dt
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from zoneinfo import ZoneInfo

from esl_app import dial_string
from fastpath import engine

from .company_gen import EMPLOYEE_BASE, call_mix

ROOT = Path(__file__).resolve().parents[1]
GATEWAY = "carrier"
PASSWORD = "bench-esl-secret"
LONDON = ZoneInfo("Europe/London")

FULL = {"rate": 1000.0, "concurrency": 2000, "ramp": 10.0, "duration": 60.0, "answer_delay": 0.2,
        "mix": 5000, "warmup_rate": 500.0, "workers": 2}
CI = {"rate": 200.0, "concurrency": 200, "ramp": 1.0, "duration": 3.0, "answer_delay": 0.1,
      "mix": 700, "warmup_rate": 300.0, "workers": 2}


# --- the calls -------------------------------------------------------------------------------

def _probe_times(now: float, run_seconds: float) -> list[float]:
    fixed = [(2026, 11, 23, 10, 0), (2026, 11, 23, 13, 0), (2026, 11, 28, 10, 0), (2026, 11, 29, 3, 0),
             (2026, 12, 25, 10, 0), (2027, 6, 2, 19, 0)]
    return [dt.datetime(*t, tzinfo=LONDON).timestamp() for t in fixed] + [now, now + run_seconds]


def expected_dial(store, called: str, caller: str, caller_number: str, caller_name: str, now: float,
                  decide=engine.decide) -> str | None:
    """The first dial string of the call as the executor plays it when nobody
    presses a key: announcements play, an IVR times out and is decided again,
    ``continue`` steps are decided again; voicemail, fax and hangup end it."""
    plan = decide(store, called, caller, now)
    company = plan.company
    for _ in range(10):
        following = None
        for step in plan.steps:
            if step.action == "ring":
                return dial_string.build_dial_string(
                    step, sip_domain=dial_string.company_sip_domain(store, company), gateway=GATEWAY,
                    caller_number=caller_number, caller_name=caller_name)
            if step.action == "ivr":
                following = f"ivr:{step.menu}/timeout"
            elif step.action == "continue":
                following = step.address
            elif step.action != "announce":
                return None
            if following:
                break
        if following is None:
            return None
        plan = decide(store, following, caller, now)
        company = plan.company or company
    return None


def call_set(store, mix: int, now: float, run_seconds: float) -> tuple[list[dict], list[str], collections.Counter]:
    """Load-switch call specs, their expected dial strings, and what kinds made it in."""
    probes = _probe_times(now, run_seconds)
    specs, dials, kinds = [], [], collections.Counter()
    for called, caller, _ in call_mix(mix):
        if called.startswith("ivr:"):
            kinds["skipped: IVR address (not dialable)"] += 1
            continue
        if " " in called:  # an outbound call dialled in national format from a phone
            kind, called = "outbound", called.replace(" ", "")
        elif called.startswith("+"):
            kind = "company number"
        else:
            kind = "internal"
        if kind == "company number":
            number, name, routed_as = caller, "", called[1:]
            spec = {"destination": called, "caller_number": number, "context": "switchboard_carrier",
                    "vars": {"switchboard_called": routed_as, "switchboard_called_company": "big"}}
        else:
            number, name, routed_as = caller, f"Employee {int(caller) - EMPLOYEE_BASE}", called
            spec = {"destination": called, "caller_number": number, "caller_name": name, "username": caller,
                    "context": "switchboard", "channel_name": f"sofia/internal/{caller}@big.switchboard.local",
                    "vars": {"sip_authorized": "true", "user_name": caller, "domain_name": "big.switchboard.local",
                             "switchboard_company": "big"}}
            if kind == "internal":
                spec["vars"].update(switchboard_called=called, switchboard_called_company="big")
        answers = {expected_dial(store, routed_as, caller, number, name, at) for at in probes}
        if len(answers) != 1:
            kinds[f"skipped: {kind}, depends on the time"] += 1
            continue
        (dial,) = answers
        if dial is None:
            kinds[f"skipped: {kind}, no bridge"] += 1
            continue
        path = "IVR then ring" if engine.decide(store, routed_as, caller, now).steps[0].action == "announce" \
            else "ring"
        kinds[f"{kind}: {path}"] += 1
        specs.append(spec)
        dials.append(dial)
    return specs, dials, kinds


# --- the processes -----------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _health(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
            return json.loads(reply.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
        return None


def _proc_status(pid: int) -> dict[str, int]:
    """VmRSS and RssAnon in KiB, CPU time (user + system) in clock ticks."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile"):
                out[name] = int(value.split()[0])
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    out["cpu_ticks"] = int(fields[11]) + int(fields[12])
    return out


def _processes_status(pids: list[int]) -> dict[str, int]:
    """:func:`_proc_status` summed over ``pids`` (the service and its workers)."""
    total = collections.Counter()
    for pid in pids:
        total.update(_proc_status(pid))
    return dict(total)


class Service:
    """``switchboard serve`` in its own process."""

    def __init__(self, store_path: str, workdir: Path, workers: int = 1):
        self.outbound, self.directory, esl = _free_port(), _free_port(), _free_port()
        config = workdir / "service.yaml"
        config.write_text(f"service:\n  outbound: 127.0.0.1:{self.outbound}\n"
                          f"  directory: 127.0.0.1:{self.directory}\n  esl: 127.0.0.1:{esl}\n"
                          f"  gateway: {GATEWAY}\n  max_calls: 4000\n  workers: {workers}\n")
        self.log_path = workdir / "serve.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "esl_app.cli", "--store", store_path, "serve", "--service", str(config)],
            cwd=ROOT, env={**os.environ, "SWITCHBOARD_ESL_PASSWORD": PASSWORD},
            stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not (health := _health(self.directory) or {}).get("healthy"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"switchboard serve did not come up:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.1)   # another process: nothing to wait on but time
        #: the service's processes: serve itself and its outbound workers
        self.pids = [self.proc.pid] + [w["pid"] for w in health["outbound"].get("workers", [])]
        assert len(self.pids) == (workers if workers > 1 else 0) + 1, health["outbound"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def outcomes(self) -> collections.Counter:
        counts = collections.Counter()
        with open(self.log_path) as f:
            for line in f:
                match = re.search(r" switchboard\.calls: call .* outcome=(\S+)", line)
                if match:
                    counts[match.group(1)] += 1
        return counts


def run_generator(spec: dict, workdir: Path, name: str, on_start=None) -> dict:
    """``python -m tests.load_switch`` in its own process; its results."""
    spec_path, out_path = workdir / f"{name}-spec.json", workdir / f"{name}-results.json"
    spec_path.write_text(json.dumps(spec))
    limit = spec.get("ramp", 0) + spec["duration"] + spec["drain_timeout"] + 60
    proc = subprocess.Popen([sys.executable, "-m", "tests.load_switch", str(spec_path), str(out_path)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = []
    timer = threading.Timer(limit, proc.kill)   # bounded whatever happens
    timer.start()
    try:
        for line in proc.stdout:
            output.append(line)
            if line.startswith("started ") and on_start is not None:
                on_start(float(line.split()[1]), proc.pid)
        proc.wait()
    finally:
        timer.cancel()
    if proc.returncode != 0 or not out_path.exists():
        raise RuntimeError(f"load generator failed ({proc.returncode}):\n{''.join(output)[-3000:]}")
    results = json.loads(out_path.read_text())
    results["output"] = "".join(output)
    return results


def _machine_busy_ticks() -> int:
    """CPU time (clock ticks) the whole machine spent busy: every process, interrupts included."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return sum(values) - values[3] - values[4]   # minus idle and iowait


class Sampler(threading.Thread):
    """Every 0.5 s: the service's memory, CPU time and active calls; the
    generator's CPU time and the machine's (this machine may be shared)."""

    def __init__(self, service: Service):
        super().__init__(daemon=True)
        self.service = service
        self.generator_pid: int | None = None
        self.samples: list[dict] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            t = time.monotonic()
            sample = {"t": t, **_processes_status(self.service.pids), "machine_ticks": _machine_busy_ticks()}
            try:
                sample["generator_ticks"] = _proc_status(self.generator_pid)["cpu_ticks"] if self.generator_pid else 0
            except OSError:
                sample["generator_ticks"] = 0
            health = _health(self.service.directory)
            sample["active"] = (health or {}).get("outbound", {}).get("active_calls")
            self.samples.append(sample)
            self._done.wait(max(0.0, 0.5 - (time.monotonic() - t)))

    def stop(self) -> None:
        self._done.set()
        self.join(5)


# --- the benchmark -------------------------------------------------------------------------------

def _profile(disabled: bool) -> dict:
    profile = dict(CI if disabled else FULL)
    if not disabled and os.environ.get("SWITCHBOARD_LOAD_SECONDS"):
        profile["duration"] = float(os.environ["SWITCHBOARD_LOAD_SECONDS"])
    for key, name in (("rate", "SWITCHBOARD_LOAD_RATE"), ("concurrency", "SWITCHBOARD_LOAD_CONCURRENCY")):
        if not disabled and os.environ.get(name):
            profile[key] = float(os.environ[name])
    if not disabled and os.environ.get("SWITCHBOARD_LOAD_WORKERS"):
        profile["workers"] = int(os.environ["SWITCHBOARD_LOAD_WORKERS"])
    profile["hold"] = max(0.0, profile["concurrency"] / profile["rate"] - profile["answer_delay"])
    return profile


def _check(results: dict, expected: list[str]) -> dict:
    """Lost and misrouted calls of one generator run, why, and a few examples."""
    lost, misrouted, examples, reasons = 0, 0, [], collections.Counter()
    for index, placed, plan, bridge, end, dial, executed, error, *_ in results["records"]:
        if error or not plan:
            lost += 1
            why = error or "no plan"
            reasons[re.sub(r"\d+", "N", why)[:80]] += 1
            if sum(e.startswith("lost") for e in examples) < 5:
                examples.append(f"lost: call {index}: {why}")
        if plan and dial != expected[index]:
            misrouted += 1
            if sum(e.startswith("misrouted") for e in examples) < 5:
                examples.append(f"misrouted: call {index}: {dial!r} instead of {expected[index]!r}")
    missing = results["placed"] - len(results["records"])   # refused by the generator's cap, or never recorded
    if missing:
        reasons["refused: too many calls open (the service is not keeping up)"] += missing
    return {"lost": lost + missing, "misrouted": misrouted, "examples": examples, "reasons": reasons}


def test_call_load(benchmark, big_store, tmp_path):
    profile = _profile(benchmark.disabled)
    run_seconds = profile["ramp"] + profile["duration"] + 120
    started = time.perf_counter()
    specs, dials, kinds = call_set(big_store, profile["mix"], time.time(), run_seconds)
    set_seconds = time.perf_counter() - started
    assert len(specs) > 100, kinds

    service = Service(big_store.path, tmp_path, profile["workers"])
    try:
        # Warm-up: every call of the set once, few at a time, so the store pages
        # they read are mapped before "idle" is measured (the heap stays small).
        warm = run_generator({"port": service.outbound, "calls": specs, "rate": profile["warmup_rate"],
                              "ramp": 0, "duration": len(specs) / profile["warmup_rate"],
                              "answer_delay": 0.01, "hold": 0.0, "call_timeout": 20.0, "drain_timeout": 20.0,
                              "max_open": 5000}, tmp_path, "warmup")
        warm_check = _check(warm, dials)
        time.sleep(0.5)
        idle = min((_processes_status(service.pids) for _ in range(3)), key=lambda s: s["VmRSS"])

        load = {"port": service.outbound, "calls": specs, "rate": profile["rate"], "ramp": profile["ramp"],
                "duration": profile["duration"], "answer_delay": profile["answer_delay"],
                "hold": profile["hold"], "call_timeout": profile["answer_delay"] + profile["hold"] + 30.0,
                "drain_timeout": profile["answer_delay"] + profile["hold"] + 30.0,
                "max_open": int(profile["concurrency"] * 3 + 1000)}
        sampler = Sampler(service)
        runs = []

        def started(at: float, pid: int) -> None:
            sampler.generator_pid = pid

        def run():
            sampler.start()
            try:
                runs.append(run_generator(load, tmp_path, "load", started))
            finally:
                sampler.stop()

        benchmark.group = "calls"
        benchmark.pedantic(run, rounds=1, iterations=1)
        results = runs[0]
    finally:
        service.stop()
    outcomes = service.outcomes()

    start = results["start"]
    w0, w1 = start + profile["ramp"], start + profile["ramp"] + profile["duration"]
    in_window = [r for r in results["records"] if r[3] and w0 <= r[3] < w1]
    setups_per_s = len(in_window) / profile["duration"]
    latencies = sorted((r[3] - r[1]) * 1000 for r in in_window)
    steady_from = min(w0 + profile["answer_delay"] + profile["hold"], (w0 + w1) / 2)
    steady = [s for s in sampler.samples if steady_from <= s["t"] <= w1 and s["active"]]
    window = [s for s in sampler.samples if w0 <= s["t"] <= w1]
    concurrent = statistics.median(s["active"] for s in steady) if steady else 0
    kib_per_call = statistics.median((s["VmRSS"] - idle["VmRSS"]) / s["active"] for s in steady) if steady else None
    anon_per_call = statistics.median((s["RssAnon"] - idle["RssAnon"]) / s["active"] for s in steady) \
        if steady else None

    def cores(key: str) -> float | None:
        """CPUs' worth of time spent over the window."""
        if len(window) < 2 or not window[0].get(key):
            return None
        return round((window[-1][key] - window[0][key]) / os.sysconf("SC_CLK_TCK")
                     / (window[-1]["t"] - window[0]["t"]), 3)

    cpu, generator_cpu, machine_cpu = cores("cpu_ticks"), cores("generator_ticks"), cores("machine_ticks")
    others_cpu = (round(max(0.0, machine_cpu - cpu - (generator_cpu or 0)), 3)   # samples are not simultaneous
                  if machine_cpu is not None and cpu else None)
    check = _check(results, dials)
    lost = check["lost"] + warm_check["lost"]
    misrouted = check["misrouted"] + warm_check["misrouted"]

    def pct(q):
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1) if latencies else None

    benchmark.extra_info.update(
        call_setups_per_s=round(setups_per_s, 1),
        concurrent_calls=int(concurrent),
        lost_calls=lost,
        misrouted_calls=misrouted,
        kib_per_call=round(kib_per_call, 1) if kib_per_call is not None else None,
        anon_kib_per_call=round(anon_per_call, 1) if anon_per_call is not None else None,
        service_workers=profile["workers"], offered_calls_per_s=profile["rate"], sustained_seconds=profile["duration"], ramp_seconds=profile["ramp"],
        answer_delay_s=profile["answer_delay"], hold_s=round(profile["hold"], 3),
        peak_concurrent_calls=max((s["active"] or 0) for s in sampler.samples) if sampler.samples else 0,
        setup_ms_p50=pct(0.5), setup_ms_p99=pct(0.99), setup_ms_max=round(latencies[-1], 1) if latencies else None,
        server_cpus_in_window=cpu, generator_cpus_in_window=generator_cpu,
        machine_busy_cpus_in_window=machine_cpu, other_cpus_in_window=others_cpu, machine_cpus=os.cpu_count(),
        server_us_per_setup=round(cpu / setups_per_s * 1e6) if cpu and setups_per_s else None,
        idle_rss_kib=idle["VmRSS"],
        steady_rss_kib=int(statistics.median(s["VmRSS"] for s in steady)) if steady else None,
        calls_placed=results["placed"] + warm["placed"], warmup_calls=warm["placed"],
        distinct_calls=len(specs), call_kinds=dict(kinds), server_outcomes=dict(outcomes),
        call_set_seconds=round(set_seconds, 2), examples=check["examples"] + warm_check["examples"],
        lost_reasons=dict(check["reasons"] + warm_check["reasons"]),
    )
    print("\n" + json.dumps(benchmark.extra_info, indent=1, default=str))
    assert lost == 0, check["examples"] + warm_check["examples"]
    assert misrouted == 0, check["examples"] + warm_check["examples"]
    assert outcomes.get("answered", 0) == results["placed"] + warm["placed"], outcomes
    assert in_window, "no call reached the bridge in the sustained window"
