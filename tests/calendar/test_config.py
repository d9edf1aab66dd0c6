"""The calendar config (esl_app/calendar/config.py): validation with every problem, secrets apart."""
from __future__ import annotations

import os
import textwrap

import pytest

from esl_app.calendar.config import (Secrets, check_credentials, load_calendar_config, load_secrets,
                                     parse_calendar_config)
from fastpath.errors import ConfigError

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "calendars.yaml")


def parse(text: str):
    return parse_calendar_config(textwrap.dedent(text), "cal.yaml")


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return [str(p) for p in caught.value.problems]


def test_the_example_is_valid():
    config = load_calendar_config(EXAMPLE)
    assert [e.extension for e in config.employees] == ["2001", "2002", "2004"]
    jack = config.employee("2004")
    assert jack.calendar == "https://cloud.acme.example/remote.php/dav/calendars/jack/personal/"
    assert jack.rules.keywords["dr"] == "away" and jack.rules.keywords["m"] == "meeting"
    assert jack.rules.without_keyword is None
    assert config.employee("2002").rules.visibility == "receptionists"
    assert config.precedence == ("sick", "vacation", "away", "training", "meeting", "lunch")
    assert "training" in config.statuses
    assert config.credentials_for(config.employee("2001")) == "exchange-svc"
    assert config.servers["m365"].url == "https://graph.microsoft.com/v1.0"


def test_defaults():
    config = parse("""
        servers: {dav: {kind: caldav, url: "https://dav.example/", credentials: c}}
        employees: [{extension: "2001", server: dav, calendar: cal/}]
    """)
    assert (config.interval, config.horizon_days, config.past_days, config.parallel) == (300, 60, 1, 4)
    rules = config.employees[0].rules
    assert rules.keywords["m"] == "meeting" and rules.without_keyword == "meeting"
    assert rules.out_of_office == "away" and rules.visibility == "everyone"


def test_every_problem_is_reported_with_line_and_path():
    found = problems("""
        calendars:
          interval: 5
          horizn_days: 10
          keywords: {m: meeting, x: party}
          statuses: [meeting, "Bad Name"]
          servers:
            ex: {kind: ews, url: "ftp://mail/"}
            g: {kind: graph, tenant: "t.example", client_id: nope, credentials: app}
            d: {kind: caldav, url: "https://user:pw@dav.example/"}
            w: {kind: webdav}
          employees:
            - {extension: "2001", server: ex, mailbox: not-an-address}
            - {extension: "2001", server: nowhere}
            - {extension: 20011234, server: d, calendar: x/}
            - {extension: "2003", server: g, mailbox: a@b.example, calendar: x/}
    """)
    text = "\n".join(found)
    for expected in [
        "cal.yaml:3: calendars.interval: expected a whole number from 10 to 86400",
        "cal.yaml:4: calendars.horizn_days: unknown key 'horizn_days'; did you mean 'horizon_days'?",
        "calendars.keywords.x: unknown status 'party'",
        "calendars.statuses[0]: status 'meeting' is built in",
        "calendars.statuses[1]: a status is a lower-case name",
        "calendars.servers.ex.url: expected an http(s) URL",
        "calendars.servers.ex: an ews server needs 'credentials'",
        "calendars.servers.g.client_id: expected the application (client) id, a GUID",
        "calendars.servers.d.url: secrets never go in this file",
        "calendars.servers.w.kind: expected one of caldav, ews, graph",
        "calendars.employees[0].mailbox: expected the mailbox's SMTP address",
        "calendars.employees[1].extension: extension 2001 already has a calendar (line 13)",
        "calendars.employees[1].server: unknown server 'nowhere'",
        "calendars.employees[2].extension: an extension is 2 to 6 digits",
        "calendars.employees[2]: no credentials",
        "calendars.employees[3].calendar: 'calendar' is for caldav servers",
    ]:
        assert expected in text, f"missing: {expected}\nin:\n{text}"
    assert all(p.startswith("cal.yaml:") for p in found)


def test_secrets_in_the_yaml_are_refused():
    found = problems("""
        servers:
          ex: {kind: ews, url: "https://mail.example/EWS/Exchange.asmx", credentials: svc, password: hunter2}
        employees: [{extension: "2001", server: ex, mailbox: a@example.com, client_secret: x}]
    """)
    assert any("servers.ex.password: secrets never go in this file" in p for p in found)
    assert any("employees[0].client_secret: secrets never go in this file" in p for p in found)
    assert not any("hunter2" in p for p in found)


def test_precedence_must_name_every_status():
    found = problems("""
        statuses: [training]
        precedence: [sick, vacation, meeting, meeting, holiday]
    """)
    text = "\n".join(found)
    assert "precedence[3]: status 'meeting' is listed twice" in text
    assert "precedence[4]: unknown status 'holiday'" in text
    assert "every status needs its place; add: lunch, away, training" in text


def test_keyword_options_per_employee():
    config = parse("""
        without_keyword: ignore
        servers: {dav: {kind: caldav, url: "https://dav.example/", credentials: c}}
        employees:
          - {extension: "2001", server: dav, calendar: a/, without_keyword: lunch, out_of_office: ignore}
          - {extension: "2002", server: dav, calendar: "https://other.example/b/", keywords: {M: away}}
    """)
    a, b = config.employees
    assert (a.rules.without_keyword, a.rules.out_of_office) == ("lunch", None)
    assert b.rules.without_keyword is None and b.rules.keywords["m"] == "away"
    assert b.calendar == "https://other.example/b/"


def test_bad_yaml_and_wrong_shape():
    with pytest.raises(ConfigError, match="invalid YAML"):
        parse("calendars: [unclosed")
    with pytest.raises(ConfigError, match="expected a mapping of calendar settings"):
        parse("- a list")


def test_credentials_from_environment_first_then_file(tmp_path):
    path = tmp_path / "secrets.yaml"
    path.write_text("exchange-svc: {username: svc, password: from-file}\nm365-app: {client_secret: s}\n")
    os.chmod(path, 0o600)
    secrets = load_secrets(str(path), {"SWITCHBOARD_CALENDAR_EXCHANGE_SVC_PASSWORD": "from-env"})
    assert secrets.get("exchange-svc") == {"username": "svc", "password": "from-env"}
    assert secrets.get(None) == {}
    assert "from-" not in repr(secrets)
    assert Secrets.env_name("nextcloud-jack", "password") == "SWITCHBOARD_CALENDAR_NEXTCLOUD_JACK_PASSWORD"


def test_secrets_file_must_be_private(tmp_path):
    path = tmp_path / "secrets.yaml"
    path.write_text("a: {password: x}\n")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_secrets(str(path), {})
    os.chmod(path, 0o600)
    path.write_text("a: {password: x, colour: blue}\n")
    with pytest.raises(ConfigError, match="unknown field"):
        load_secrets(str(path), {})


def test_missing_credentials_name_the_variables_not_the_values():
    config = load_calendar_config(EXAMPLE)
    with pytest.raises(ConfigError) as caught:
        check_credentials(config, Secrets({"SWITCHBOARD_CALENDAR_EXCHANGE_SVC_USERNAME": "svc",
                                           "SWITCHBOARD_CALENDAR_EXCHANGE_SVC_PASSWORD": "pw-value"}))
    text = str(caught.value)
    assert "SWITCHBOARD_CALENDAR_M365_APP_CLIENT_SECRET" in text
    assert "SWITCHBOARD_CALENDAR_NEXTCLOUD_JACK_USERNAME" in text
    assert "exchange-svc" not in text and "pw-value" not in text
    check_credentials(config, Secrets({
        "SWITCHBOARD_CALENDAR_EXCHANGE_SVC_USERNAME": "svc", "SWITCHBOARD_CALENDAR_EXCHANGE_SVC_PASSWORD": "p",
        "SWITCHBOARD_CALENDAR_M365_APP_CLIENT_SECRET": "s",
        "SWITCHBOARD_CALENDAR_NEXTCLOUD_JACK_TOKEN": "t"}))
