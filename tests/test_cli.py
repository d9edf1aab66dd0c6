"""The `switchboard` command line, run as a real process: load, explain, info and their errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = str(ROOT / "examples" / "acme.yaml")


def run(*args, store=None, env=None, check=True):
    environ = {**os.environ, **(env or {})}
    environ.pop("SWITCHBOARD_STORE", None) if store is None and "SWITCHBOARD_STORE" not in (env or {}) else None
    cmd = [sys.executable, "-m", "esl_app.cli"] + (["--store", store] if store else []) + list(args)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=environ, cwd=ROOT, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def store(tmp_path):
    path = str(tmp_path / "store")
    run("load", EXAMPLE, store=path)
    return path


def test_load_validates_and_writes_the_store(tmp_path):
    out = run("load", EXAMPLE, store=str(tmp_path / "s")).stdout
    assert "generation 1" in out and "1 companies" in out


def test_store_location_from_the_environment(tmp_path):
    path = str(tmp_path / "from-env")
    run("load", EXAMPLE, env={"SWITCHBOARD_STORE": path})
    assert "generation" in run("info", env={"SWITCHBOARD_STORE": path}).stdout


def test_explain_prints_the_plan_and_why(store):
    out = run("explain", "--to", "+44 20 7946 0000", "--from", "+447400999999",
              "--at", "2026-11-23T10:00", store=store).stdout
    assert out.startswith("call to 442079460000 from 447400999999 at 2026-11-23T10:00:00+00:00 (company acme)")
    assert "why: Monday 10:00 in Europe/London" in out


def test_explain_local_time_without_offset_is_the_company_zone(store):
    summer = run("explain", "--to", "+442079460000", "--at", "2027-06-14T09:30", store=store).stdout
    assert "Monday 09:30 in Europe/London" in summer
    utc = run("explain", "--to", "+442079460000", "--at", "2027-06-14T09:30+00:00", store=store).stdout
    assert "Monday 10:30 in Europe/London" in utc


def test_explain_json_is_the_same_plan_from_both_engines(store):
    plans = [json.loads(run("explain", "--to", "2003", "--from", "2001", "--at", "2026-11-23T10:00",
                            "--json", "--engine", engine, store=store).stdout)
             for engine in ("fastpath", "reference")]
    assert plans[0] == plans[1]
    assert plans[0]["steps"][0]["action"] in ("ring", "voicemail", "continue", "hangup")


def test_invalid_config_exits_2_with_every_problem_and_leaves_the_store_alone(store, tmp_path):
    before = run("info", store=store).stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(EXAMPLE).read_text().replace("timezone: Europe/London", "timezone: Mars/Olympus", 1)
                   .replace("members: [2001", "members: [2999", 1))
    proc = run("load", str(bad), store=store, check=False)
    assert proc.returncode == 2
    assert "bad.yaml:" in proc.stderr and "Mars/Olympus" in proc.stderr
    assert proc.stderr.count("\n  ") >= 1
    assert run("info", store=store).stdout == before


def test_missing_store_and_bad_time_are_clear_errors(tmp_path, store):
    proc = run("explain", "--to", "2001", store=str(tmp_path / "none"), check=False)
    assert proc.returncode == 1 and "run `switchboard load CONFIG` first" in proc.stderr
    proc = run("explain", "--to", "2001", "--at", "tomorrow", store=store, check=False)
    assert proc.returncode == 1 and "is not an ISO 8601 time" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_info_shows_engine_and_tables(store):
    out = run("info", store=store).stdout
    assert "engine" in out and "number" in out and "schema" in out
