"""`switchboard serve` as a real process against the fake FreeSWITCH.

The service is started exactly as an operator would (the CLI, a service YAML,
the password from the environment); the test talks to it only over sockets:
the fake switch's inbound ESL (presence), an outbound call into the service,
a mod_xml_curl-style directory request and ``GET /health``.  SIGTERM must stop
it cleanly.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from fastpath.store import Store
from fastpath.validate import load_config
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


@pytest.fixture
def service(tmp_path, fake):
    store_path = str(tmp_path / "store")
    with Store(store_path) as store:
        store.load_config(load_config([str(ROOT / "examples" / "acme.yaml")]))
    ports = {"outbound": free_port(), "directory": free_port()}
    config = tmp_path / "service.yaml"
    config.write_text(f"service:\n  outbound: 127.0.0.1:{ports['outbound']}\n"
                      f"  directory: 127.0.0.1:{ports['directory']}\n"
                      f"  esl: 127.0.0.1:{fake.address[1]}\n  gateway: carrier\n  max_calls: 50\n")
    env = {**os.environ, "SWITCHBOARD_ESL_PASSWORD": PASSWORD}
    proc = subprocess.Popen([sys.executable, "-m", "esl_app.cli", "--store", store_path, "serve",
                             "--service", str(config)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        health = wait_for(lambda: proc.poll() is None and get_health(ports["directory"]), 20, "/health")
        yield proc, ports, health
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


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
