"""``switchboard icm lookup`` and ``switchboard icm forget``: run through ``main()``, and once as a process."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from esl_app.cli import main
from fastpath import records as rec
from fastpath.store import Store

from .conftest import config_from_yaml
from .test_icm_lookup import TWO_COMPANIES

MOSCOW = TWO_COMPANIES[:TWO_COMPANIES.index("  - id: lon")]           # the Moscow office alone
CALLER = "74951234567"
WHEN = 1_795_000_000                     # 2026-11-18 14:06 Moscow time
AT = "2026-11-23T10:00"
DAY = 86_400


def crm_answer(ext: str, fetched: int = WHEN) -> rec.CrmAnswerRec:
    return rec.CrmAnswerRec(rec.CRM_FOUND, ext, "amocrm", fetched, fetched + DAY, fetched + 400 * DAY,
                            "504141", "Boris", "boris@mos.example")


@pytest.fixture
def store_path(tmp_path):
    """A store with the Moscow office, one returning caller in the history and the CRM cache."""
    path = str(tmp_path / "store")
    with Store(path) as store:
        store.load_config(config_from_yaml(MOSCOW))
        store.record_call(CALLER, "2001", WHEN, "in")
        store.put_crm_answer("mos", CALLER, crm_answer("2002"))
    return path


def run(capsys, path: str, *args: str) -> tuple[int, str, str]:
    code = main(["--store", path, "icm", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_lookup_says_which_source_answered_and_why_for_any_written_form(store_path, capsys):
    for number in ("+7 495 123-45-67", "84951234567", "1234567"):
        code, out, err = run(capsys, store_path, "lookup", number, "--at", AT)
        assert (code, err) == (0, ""), number
        assert f"ICM lookup for company mos at {AT}+03:00" in out
        assert "-> +74951234567" in out
        assert "call history: last call from them with ext 2001 at 2026-11-18T14:06+03:00: used" in out
        assert "ICM: last talked to ext 2001 on 2026-11-18 via call history" in out


def test_lookup_passes_over_old_history_to_the_crm_cache(store_path, capsys):
    code, out, _ = run(capsys, store_path, "lookup", "84951234567", "--at", AT, "--max-age", "3")
    assert code == 0
    assert "history up to 3 days old" in out
    assert "older than 259200 s, passed over" in out
    assert "CRM cache: amocrm answered at 2026-11-18T14:06+03:00: ext 2002 (Boris), used" in out
    assert "ICM: ext 2002 is responsible for this caller in amoCRM (checked 2026-11-18)" in out


def test_lookup_of_an_unknown_caller_falls_back_to_the_normal_route(store_path, capsys):
    code, out, _ = run(capsys, store_path, "lookup", "7654321", "--at", AT)
    assert code == 0
    assert "call history: never called or was called" in out and "answer: none (normal route)" in out


@pytest.mark.parametrize("args, message", [
    (["lookup", "anonymous"], "NUMBER 'anonymous' is not a phone number for company mos (RU, city code 495)"),
    (["forget", "12"], "NUMBER '12' is not a phone number for company mos"),
    (["lookup", "1234567", "--company", "spb"], "--company 'spb': no such company in the store at "),
    (["forget", "1234567", "--company", "spb"], "(it has: mos)"),
    (["lookup", "1234567", "--at", "monday"], "--at 'monday' is not an ISO 8601 time"),
    (["lookup", "1234567", "--max-age", "-1"], "--max-age -1: days must be 0 (any age) or more"),
])
def test_bad_input_is_refused_with_a_clear_message_and_the_store_is_intact(store_path, capsys, args, message):
    code, out, err = run(capsys, store_path, *args)
    assert code == 1 and out == ""
    assert message in err
    with Store(store_path, readonly=True) as store:
        assert store.history(CALLER).extension == "2001"
        assert store.crm_answer("mos", CALLER).extension == "2002"


def test_without_a_number_argparse_refuses_with_exit_2(store_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--store", store_path, "icm", "forget"])
    assert exc.value.code == 2
    assert "NUMBER" in capsys.readouterr().err


def test_forget_removes_the_caller_from_the_history_and_the_crm_cache(store_path, capsys):
    with Store(store_path) as store:
        store.put_crm_answer("other", CALLER, crm_answer("9001"))
        store.record_call("74957654321", "2002", WHEN, "out")         # another caller: kept
    code, out, err = run(capsys, store_path, "forget", "8 (495) 123-45-67")
    assert (code, err) == (0, "")
    assert "caller '8 (495) 123-45-67' -> +74951234567 (read with the dialling rules of mos)" in out
    assert "removed from the call history: last call from them with ext 2001 at 2026-11-18T14:06+03:00" in out
    assert "removed from the CRM cache of mos: amocrm answer fetched 2026-11-18T14:06+03:00, ext 2002" in out
    assert "removed from the CRM cache of other:" in out
    with Store(store_path, readonly=True) as store:
        assert store.history(CALLER) is None
        assert store.crm_answer("mos", CALLER) is None and store.crm_answer("other", CALLER) is None
        assert store.history("74957654321").extension == "2002"
    code, out, _ = run(capsys, store_path, "lookup", "1234567", "--at", AT)
    assert code == 0 and "answer: none (normal route)" in out
    code, out, _ = run(capsys, store_path, "forget", "1234567")            # again: nothing left
    assert code == 0 and "call history: nothing kept" in out and "CRM cache: nothing kept" in out


def test_with_several_companies_the_company_must_be_named(store_path, capsys):
    with Store(store_path) as store:
        store.load_config(config_from_yaml(TWO_COMPANIES))
        store.record_call("442079460123", "3001", WHEN, "in")
    code, _, err = run(capsys, store_path, "lookup", "79460123")
    assert code == 1 and "holds 2 companies (lon, mos): say which with --company ID" in err
    code, out, _ = run(capsys, store_path, "lookup", "79460123", "--company", "lon", "--at", AT)
    assert code == 0 and "-> +442079460123" in out and "ext 3001" in out and "at 2026-11-23T10:00+00:00" in out
    code, out, _ = run(capsys, store_path, "forget", "020 7946 0123", "--company", "lon")
    assert code == 0 and "removed from the call history: last call from them with ext 3001" in out


def test_the_installed_command_runs_as_a_process(store_path):
    env = dict(os.environ, SWITCHBOARD_STORE=store_path)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-m", "esl_app.cli", "icm", "forget", "+74951234567"],
                          capture_output=True, text=True, env=env, cwd=repo, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "removed from the call history: last call from them with ext 2001" in done.stdout
    done = subprocess.run([sys.executable, "-m", "esl_app.cli", "icm", "lookup", "nonsense"],
                          capture_output=True, text=True, env=env, cwd=repo, timeout=60)
    assert done.returncode == 1 and "is not a phone number for company mos" in done.stderr
    with Store(store_path, readonly=True) as store:
        assert store.history(CALLER) is None
