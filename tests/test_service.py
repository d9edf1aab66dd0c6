"""`switchboard serve` as a real process against the fake FreeSWITCH.

The service is started exactly as an operator would (the CLI, a service YAML,
the password from the environment); the test talks to it only over sockets:
the fake switch's inbound ESL (presence), an outbound call into the service,
a mod_xml_curl-style directory request and ``GET /health``.  SIGTERM must stop
it cleanly.
"""
from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from esl_app.calendar.worker import default_status_path, read_status
from esl_app.crm.base import CrmAnswer
from esl_app.crm.cache import CrmCache
from esl_app.service import Service, build_crm_refresher
from esl_app.service_config import load_service_config
from fastpath.errors import ConfigError
from fastpath.referral_status import status_at
from fastpath.store import Store
from fastpath.validate import load_config
from tests.calendar.events import Event, to_ics
from tests.calendar.radicale_server import RadicaleServer
from tests.crm.fake_crm import AmoApi, FakeServer
from tests.fake_freeswitch import Caller, FakeFreeSWITCH, Outcome, Scenario
from tests.test_live_listener import registrations_json

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "test-esl-secret"
DOMAIN = "sip.acme.example"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)          # polling a separate process: there is nothing to wait on
    raise TimeoutError(f"timed out waiting for {what}")


def get_health(port: int):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
            return json.loads(reply.read())
    except (urllib.error.URLError, ConnectionError):
        return None


@pytest.fixture
def fake():
    with FakeFreeSWITCH(password=PASSWORD) as switch:
        switch.script_api("show registrations as json", registrations_json(("2006", "cid-2006")))
        switch.script_api("show channels as json", '{"row_count":0}')
        yield switch


def make_store(tmp_path) -> str:
    """The store with the example company, made once per test folder."""
    store_path = str(tmp_path / "store")
    if not os.path.exists(store_path):
        with Store(store_path) as store:
            store.load_config(load_config([str(ROOT / "examples" / "acme.yaml")]))
    return store_path


def write_service_config(tmp_path, fake, extra: str = ""):
    ports = {"outbound": free_port(), "directory": free_port()}
    config = tmp_path / "service.yaml"
    config.write_text(f"service:\n  outbound: 127.0.0.1:{ports['outbound']}\n"
                      f"  directory: 127.0.0.1:{ports['directory']}\n"
                      f"  esl: 127.0.0.1:{fake.address[1]}\n  gateway: carrier\n  max_calls: 50\n{extra}")
    return ports, config


def start_serve(tmp_path, fake, extra: str = "", env: dict | None = None):
    """``switchboard serve`` as a process, with the example company loaded and ``extra`` service
    settings; returns (process, ports, first health report)."""
    store_path = make_store(tmp_path)
    ports, config = write_service_config(tmp_path, fake, extra)
    env = {**os.environ, "SWITCHBOARD_ESL_PASSWORD": PASSWORD, **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "esl_app.cli", "--store", store_path, "serve",
                             "--service", str(config)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        health = wait_for(lambda: proc.poll() is None and get_health(ports["directory"]), 20, "/health")
    except BaseException:
        stop_process(proc)
        raise
    return proc, ports, health


def stop_process(proc) -> str:
    """Its output; killed first if it still runs."""
    if proc.poll() is None:
        proc.kill()
    return proc.communicate(timeout=10)[0]


@pytest.fixture
def service(tmp_path, fake):
    proc, ports, health = start_serve(tmp_path, fake)
    try:
        yield proc, ports, health
    finally:
        stop_process(proc)


def test_serve_routes_calls_serves_the_directory_and_stops_on_sigterm(service, fake):
    proc, ports, health = service
    assert health["healthy"] is True and health["engine"] in ("fastpath", "reference")

    # Presence: the listener authenticated and subscribed on the fake's inbound socket.
    fake.wait_until(lambda: any(c.commands for c in fake.connections), 10, "the presence listener")
    assert wait_for(lambda: get_health(ports["directory"])["switch_connected"], 10, "switch_connected")
    assert PASSWORD not in json.dumps(get_health(ports["directory"]))

    # A call to the sales number rings the department's one registered phone (2006), which answers.
    call = fake.place_call("127.0.0.1", ports["outbound"], {},
                           Scenario(legs={f"user/2006@{DOMAIN}": Outcome.ANSWER}),
                           Caller(caller_id_number="+447400999999", destination_number="442079460100"))
    fake.wait_until(lambda: call.bridges and call.bridges[-1].answered, 10, "the bridge")
    assert call.bridges[-1].answered == f"user/2006@{DOMAIN}"

    # mod_xml_curl asks for a phone's credentials: the A1 hash, never a password.
    form = urllib.parse.urlencode({"section": "directory", "tag_name": "domain", "key_name": "name",
                                   "key_value": DOMAIN, "user": "2001", "domain": DOMAIN,
                                   "action": "sip_auth"}).encode()
    with urllib.request.urlopen(f"http://127.0.0.1:{ports['directory']}/directory", form, timeout=5) as reply:
        xml = reply.read().decode()
    assert 'name="a1-hash"' in xml and 'name="password"' not in xml

    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, output
    assert "shutting down" in output
    assert PASSWORD not in output
    assert output.count(" switchboard.calls: call ") == 1      # batched, and written by the time serve exits


def test_serve_without_a_store_or_with_a_bad_service_config_says_why(tmp_path):
    env = {**os.environ, "SWITCHBOARD_ESL_PASSWORD": PASSWORD}
    run = [sys.executable, "-m", "esl_app.cli", "--store", str(tmp_path / "none"), "serve"]
    proc = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "run `switchboard load CONFIG` first" in proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("service:\n  outbound: nowhere\n  esl_password: ClueCon\n")
    proc = subprocess.run(run + ["--service", str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "SWITCHBOARD_ESL_PASSWORD"})
    assert proc.returncode == 2
    assert "service.outbound" in proc.stderr and "ClueCon" in proc.stderr


# --- serve runs the calendar sync worker and the CRM refresher ---------------------------------

CAL_SECRET = "Secr3t-calendar-pw"
AMO_TOKEN = "amo-test-token-SECRET"
CALLER = "447400999999"
WORKER_ENV = {"SWITCHBOARD_CALENDAR_DAV_USERNAME": "anna", "SWITCHBOARD_CALENDAR_DAV_PASSWORD": CAL_SECRET,
              "SWITCHBOARD_SECRET_AMO_ACME": AMO_TOKEN}
WORKERS = "  calendars: calendars.yaml\n  crm: crm.yaml\n"       # relative to the service config
_calendars = itertools.count()


@pytest.fixture(scope="module")
def radicale(tmp_path_factory):
    with RadicaleServer(str(tmp_path_factory.mktemp("radicale")), {"anna": CAL_SECRET}) as server:
        yield server


@pytest.fixture
def amo():
    """A fake amoCRM that knows the caller: responsible user Jack Patel (ext 2004, by e-mail)."""
    server = FakeServer(AmoApi(AMO_TOKEN, [{"id": 7, "name": "Client", "responsible_user_id": 42,
                                            "phones": ["+44 7400 999999"]}],
                               {42: {"name": "Jack Patel", "email": "jack.patel@acme.example"}}))
    yield server
    server.close()


@pytest.fixture
def worker_configs(tmp_path, radicale, amo):
    """calendars.yaml (ext 2003's Radicale calendar, in a meeting now) and crm.yaml (amoCRM for acme)."""
    import caldav

    name = f"serve{next(_calendars)}"
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    event = Event(f"{name}-board", "m Board meeting", now - dt.timedelta(hours=1), now + dt.timedelta(hours=2))
    client = caldav.DAVClient(url=radicale.url, username="anna", password=CAL_SECRET, timeout=10)
    try:
        calendar = client.principal().make_calendar(name=name, cal_id=name)
        reply = client.put(f"{calendar.url}{event.uid}.ics", to_ics(event),
                           {"Content-Type": "text/calendar; charset=utf-8"})
        assert reply.status in (201, 204), reply.status
    finally:
        client.close()
    (tmp_path / "calendars.yaml").write_text(
        f"calendars:\n  interval: 600\n  servers:\n    dav: {{kind: caldav, url: \"{radicale.url}\", "
        f"credentials: dav}}\n  employees:\n    - {{extension: \"2003\", server: dav, calendar: anna/{name}/}}\n")
    (tmp_path / "crm.yaml").write_text(f"crm:\n  acme:\n    - type: amocrm\n      base_url: {amo.url}\n"
                                       f"      token: {{secret: amo_acme}}\ninterval: 1\n")
    return tmp_path


def in_meeting(store) -> bool:
    current = status_at(store.referrals("2003"), time.time())
    return current is not None and (current.status, current.reason, current.source) == (
        "meeting", "m Board meeting", "calendar:caldav")


def crm_extension(store) -> str | None:
    answer = store.crm_answer("acme", CALLER)
    return answer.extension if answer is not None else None


def reading(store_path: str, what):
    """``what(store)`` on the store another process writes."""
    with Store(store_path, readonly=True) as store:
        return what(store)


def test_serve_syncs_calendars_refreshes_crm_answers_reports_both_and_stops_them(tmp_path, fake, worker_configs):
    """The process syncs ext 2003's CalDAV calendar into the store, re-asks amoCRM about a cached
    answer that is due, shows both workers in /health and stops them on SIGTERM."""
    store_path = make_store(tmp_path)
    with Store(store_path) as store:                   # an answer past its half-life: due for refresh
        CrmCache(store).put("acme", CALLER, CrmAnswer("1", "old@acme.example", "Old owner", "amocrm"), None,
                            now=int(time.time()) - 50_000)
    proc, ports, _ = start_serve(tmp_path, fake, WORKERS, env=WORKER_ENV)
    try:
        wait_for(lambda: reading(store_path, in_meeting), 30, "ext 2003's meeting in the store")
        wait_for(lambda: reading(store_path, crm_extension) == "2004", 30, "the refreshed CRM answer")
        health = get_health(ports["directory"])
        assert health["healthy"] is True
        assert health["calendars"] == {"status": "ok", "config": str(tmp_path / "calendars.yaml"), "interval": 600,
                                       "calendars": 1, "synced": 1, "pending": 0, "failing": []}
        assert health["crm"]["status"] == "ok" and health["crm"]["found"] >= 1
        assert CAL_SECRET not in json.dumps(health) and AMO_TOKEN not in json.dumps(health)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        output = stop_process(proc)
    assert proc.returncode == 0, output
    assert output.index("shutting down") < output.index("CRM refresher stopped") \
        < output.index("calendar sync stopped")
    assert read_status(default_status_path(store_path))["running"] is False     # written when it stopped
    assert CAL_SECRET not in output and AMO_TOKEN not in output


def test_service_refreshes_a_queued_lookup_and_its_stop_ends_the_workers(tmp_path, fake, worker_configs,
                                                                         monkeypatch):
    """In process: a caller queued with service.crm.request() is asked about and cached; the
    calendar status is synced; stop() ends both threads and health says so."""
    for key, value in WORKER_ENV.items():
        monkeypatch.setenv(key, value)
    store_path = make_store(tmp_path)
    _, config_path = write_service_config(tmp_path, fake, WORKERS)
    config = load_service_config(str(config_path), environ={"SWITCHBOARD_ESL_PASSWORD": PASSWORD})
    assert (config.calendars, config.crm) == (str(tmp_path / "calendars.yaml"), str(tmp_path / "crm.yaml"))
    service = Service(store_path, config, drain_seconds=1)
    service.start()
    try:
        assert crm_extension(service.store) is None
        assert service.crm.request("acme", CALLER)
        wait_for(lambda: crm_extension(service.store) == "2004", 20, "the queued caller's CRM answer")
        service.calendars.wait_until(lambda: service.calendars.status()["calendars"]["2003"]["state"] == "ok", 30)
        assert in_meeting(service.store)
        health = service.health()
        assert health["healthy"] and health["calendars"]["synced"] == 1 and health["crm"]["status"] == "ok"
    finally:
        service.stop()
    assert service.calendars is None and service.crm is None and service.store is None
    alive = {t.name for t in threading.enumerate()}
    assert not alive & {"crm-refresher", "calendar-scheduler"}, alive
    after = service.health()
    assert after["healthy"] is False
    assert after["calendars"] == {"status": "stopped"} and after["crm"] == {"status": "stopped"}


def test_without_worker_configs_health_says_off(tmp_path, fake):
    _, config_path = write_service_config(tmp_path, fake)
    service = Service(make_store(tmp_path), load_service_config(str(config_path), environ={
        "SWITCHBOARD_ESL_PASSWORD": PASSWORD}), drain_seconds=1)
    service.start()
    try:
        health = service.health()
    finally:
        service.stop()
    assert health["healthy"] is True
    assert health["calendars"] == {"status": "off"} and health["crm"] == {"status": "off"}
    assert service.calendars is None and service.crm is None


def test_worker_config_paths_must_exist(tmp_path):
    path = tmp_path / "service.yaml"
    path.write_text("service:\n  calendars: nowhere.yaml\n  crm: ''\n")
    with pytest.raises(ConfigError) as caught:
        load_service_config(str(path), environ={"SWITCHBOARD_ESL_PASSWORD": PASSWORD})
    text = str(caught.value)
    assert f"{path}:2: service.calendars: no such file: {tmp_path / 'nowhere.yaml'}" in text
    assert f"{path}:3: service.crm: expected the path of a config file" in text


def test_a_bad_crm_config_names_every_problem(tmp_path):
    store_path = make_store(tmp_path)
    path = tmp_path / "crm.yaml"
    path.write_text("crm:\n  acme:\n    - type: amocrm\n      base_url: https://acme.amocrm.ru\n"
                    "      token: inline-token\n  nope:\n    - type: http\ninterval: 0\nextra: 1\n")
    with Store(store_path) as store, pytest.raises(ConfigError) as caught:
        build_crm_refresher(store, str(path), environ={})
    text = str(caught.value)
    assert "4 problems" in text
    assert f"{path}:9: extra: unknown key" in text
    assert f"{path}:8: interval: expected a whole number of seconds from 1 to 86400" in text
    assert f"{path}:2: crm.acme[0]: 'token' must name a secret" in text
    assert f"{path}:6: crm.nope: no company 'nope' in the store; companies: acme" in text
    assert "inline-token" not in text


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_with_a_calendar_config_lacking_credentials_exits_2_before_listening(tmp_path, fake, worker_configs,
                                                                                   workers):
    """The worker is built before anything listens (or forks): with the outbound port taken, a service
    that bound first would fail on the port (exit 1) instead of naming the credentials (exit 2)."""
    ports, config = write_service_config(tmp_path, fake, f"  calendars: calendars.yaml\n  workers: {workers}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_CALENDAR_")}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports["outbound"]))
        taken.listen()
        proc = subprocess.run([sys.executable, "-m", "esl_app.cli", "--store", make_store(tmp_path), "serve",
                               "--service", str(config)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                              env={**env, "SWITCHBOARD_ESL_PASSWORD": PASSWORD})
    assert proc.returncode == 2, proc.stderr
    assert f"{tmp_path / 'calendars.yaml'}: credentials 'dav'" in proc.stderr
    assert "SWITCHBOARD_CALENDAR_DAV_USERNAME + SWITCHBOARD_CALENDAR_DAV_PASSWORD" in proc.stderr


# --- workers: outbound servers in forked processes ---------------------------------------------

@pytest.mark.parametrize("value", ["0", "17", "two", "true", "1.5"])
def test_workers_must_be_a_whole_number_from_1_to_16(tmp_path, value):
    config = tmp_path / "service.yaml"
    config.write_text(f"service:\n  workers: {value}\n  esl_password: a-secret\n")
    with pytest.raises(ConfigError) as error:
        load_service_config(str(config), environ={})
    assert "service.workers" in str(error.value) and "from 1 to 16" in str(error.value)


def test_workers_default_to_one_and_are_read_from_the_file(tmp_path):
    config = tmp_path / "service.yaml"
    config.write_text("service:\n  esl_password: a-secret\n")
    assert load_service_config(str(config), environ={}).workers == 1
    config.write_text("service:\n  workers: 16\n  esl_password: a-secret\n")
    assert load_service_config(str(config), environ={}).workers == 16


def health_report(port: int) -> dict:
    """``GET /health`` whatever its status (503 when unhealthy)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return json.loads(error.read())


def process_gone(pid: int) -> bool:
    """No such process, or a zombie nobody reaped yet (it runs nothing any more)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def answered_call(fake, port: int):
    call = fake.place_call("127.0.0.1", port, {},
                           Scenario(legs={f"user/2006@{DOMAIN}": Outcome.ANSWER}, talk_seconds=0.01),
                           Caller(caller_id_number="+447400999999", destination_number="442079460100"))
    call.wait(20)
    assert call.bridges and call.bridges[-1].answered == f"user/2006@{DOMAIN}" and call.errors == []
    return call


def test_two_workers_share_the_calls_report_each_and_all_stop_on_sigterm(tmp_path, fake):
    proc, ports, health = start_serve(tmp_path, fake, "  workers: 2\n")
    try:
        health = wait_for(lambda: (lambda h: h if h and h["healthy"] else None)(get_health(ports["directory"])),
                          20, "a healthy service")
        workers = health["outbound"]["workers"]
        pids = [w["pid"] for w in workers]
        assert len(set(pids)) == 2 and proc.pid not in pids
        assert all(w["alive"] and w["responding"] for w in workers)
        assert health["outbound"]["max_calls"] == 100          # 50 per worker
        for _ in range(6):
            answered_call(fake, ports["outbound"])
        handled = wait_for(lambda: (lambda o: o if o["calls_handled"] == 6 else None)(
            get_health(ports["directory"])["outbound"]), 10, "6 calls in the workers' counters")
        assert handled["active_calls"] == 0 and handled["calls_failed"] == 0
        assert sum(w["calls_handled"] for w in handled["workers"]) == 6
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        output = stop_process(proc)
    assert proc.returncode == 0, output
    assert all(process_gone(pid) for pid in pids), "a worker outlived serve"
    # The call log is batched, and nothing of it is lost at shutdown: one whole line per call.
    lines = [line for line in output.splitlines() if " switchboard.calls: call " in line]
    assert len(lines) == 6 and all(" outcome=answered " in line for line in lines), output[-2000:]


def test_a_dead_worker_makes_serve_unhealthy_and_the_other_keeps_taking_calls(tmp_path, fake):
    proc, ports, health = start_serve(tmp_path, fake, "  workers: 2\n")
    try:
        health = wait_for(lambda: (lambda h: h if h and h["healthy"] else None)(get_health(ports["directory"])),
                          20, "a healthy service")
        dead, alive = (w["pid"] for w in health["outbound"]["workers"])
        os.kill(dead, signal.SIGKILL)
        report = wait_for(lambda: (lambda h: h if not h["healthy"] else None)(health_report(ports["directory"])),
                          20, "the dead worker to show")
        assert [(w["pid"], w["alive"], w["exit_code"]) for w in report["outbound"]["workers"]] == \
            [(dead, False, -signal.SIGKILL), (alive, True, None)]
        assert report["outbound"]["listening"] is False
        for _ in range(3):
            answered_call(fake, ports["outbound"])
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        output = stop_process(proc)
    assert proc.returncode == 0, output
    assert "outbound worker 0 (pid %d) exited with code -9" % dead in output
    assert process_gone(alive)


def test_workers_stop_by_themselves_when_serve_is_killed(tmp_path, fake):
    """No orphans: a worker whose parent is gone stops (its calls drained) and exits."""
    proc, ports, health = start_serve(tmp_path, fake, "  workers: 2\n")
    try:
        health = wait_for(lambda: (lambda h: h if h and h["healthy"] else None)(get_health(ports["directory"])),
                          20, "a healthy service")
        pids = [w["pid"] for w in health["outbound"]["workers"]]
        proc.kill()
        proc.wait(timeout=10)
        wait_for(lambda: all(process_gone(pid) for pid in pids), 20, "the orphaned workers to exit")
    finally:
        stop_process(proc)
        for pid in pids:
            if not process_gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_worker_crm_requests_reach_the_parents_refresher_through_a_pipe():
    from esl_app.service import OutboundWorkers, _CrmRequestPipe
    from esl_app.service_config import ServiceConfig

    class Refresher:
        def __init__(self):
            self.asked, self.done = [], threading.Event()

        def request(self, company, phone):
            self.asked.append((company, phone))
            if len(self.asked) == 200:
                self.done.set()
            return True

    workers = OutboundWorkers("unused", ServiceConfig(workers=2))
    workers._crm_read, write = os.pipe()
    refresher = Refresher()
    workers.forward_crm_requests(refresher)
    pipe = _CrmRequestPipe(write)
    assert all(pipe.request("acme", f"4474009{n:05d}") for n in range(200))
    assert refresher.done.wait(10)
    assert refresher.asked == [("acme", f"4474009{n:05d}") for n in range(200)]
    os.close(write)
    workers._crm_thread.join(5)
    assert not workers._crm_thread.is_alive()          # EOF: every writer is gone
    workers.stop()


def test_a_stuck_worker_is_reported_until_it_publishes_again(tmp_path, fake):
    """A worker alive but not publishing its heartbeat (here: stopped) makes serve unhealthy."""
    proc, ports, health = start_serve(tmp_path, fake, "  workers: 2\n")
    try:
        health = wait_for(lambda: (lambda h: h if h and h["healthy"] else None)(get_health(ports["directory"])),
                          20, "a healthy service")
        stuck = health["outbound"]["workers"][1]["pid"]
        os.kill(stuck, signal.SIGSTOP)
        try:
            report = wait_for(lambda: (lambda h: h if not h["healthy"] else None)(
                health_report(ports["directory"])), 20, "the stuck worker to show")
            worker = report["outbound"]["workers"][1]
            assert (worker["alive"], worker["responding"]) == (True, False) and worker["heartbeat_age_s"] >= 5
        finally:
            os.kill(stuck, signal.SIGCONT)
        wait_for(lambda: (get_health(ports["directory"]) or {}).get("healthy"), 20, "the worker to publish again")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        output = stop_process(proc)
    assert proc.returncode == 0, output
