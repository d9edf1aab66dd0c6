"""The directory endpoint, spoken to over a real socket the way mod_xml_curl does.

The server is the production one — ``serve_directory``, a gevent ``WSGIServer`` —
started as ``python -m esl_app.directory --listen 127.0.0.1:0`` in a subprocess.
Why a subprocess rather than a thread: gevent's hub belongs to one thread and
the rest of the suite (fake FreeSWITCH, executor tests) is plain threads and
sockets; a separate process tests the real server without monkey-patching the
test process or sharing an LMDB handle with it (LMDB wants one environment
handle per process).  The store is written by the test process and read by the
server, like ``switchboard load`` and ``switchboard serve`` do.

Requests copy mod_xml_curl's: a form-encoded POST with ``hostname``, ``section``,
``tag_name``, ``key_name``, ``key_value`` (mod_xml_curl.c ``xml_url_fetch``), then
the lookup's own fields — for a REGISTER the ``action=sip_auth`` / ``sip_*`` set of
sofia_reg.c ``sofia_reg_parse_auth``, and ``key``/``user``/``domain``/``ip`` from
switch_xml.c ``switch_xml_locate_user`` — with ``User-Agent: freeswitch-xml/1.0``.
"""
from __future__ import annotations

import base64
import hashlib
import http.client
import os
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

from esl_app import directory, fs_conf
from fastpath.store import Store
from tests.conftest import config_from_yaml

ROOT = Path(__file__).resolve().parent.parent
ACME = (ROOT / "examples" / "acme.yaml").read_text()
BETA = """
  - id: beta
    name: Beta GmbH
    country: DE
    timezone: Europe/Berlin
    sip_domain: beta.example
    employees:
      - extension: 3001
        name: Lena Schmidt
        sip_password: "lena-schmidt-2026"
      - extension: 3002
        name: Max Weber
    departments:
      - extension: 700
        name: Vertrieb
        members: [3001, 3002]
    numbers:
      - number: +49 30 5550 9000
        route: department:700
"""
CREDENTIALS = "freeswitch:dir-s3cret"
START_TIMEOUT = 15


def a1(user: str, domain: str, password: str) -> str:
    return hashlib.md5(f"{user}:{domain}:{password}".encode()).hexdigest()


class DirectoryServer:
    """``python -m esl_app.directory`` on an ephemeral loopback port."""

    def __init__(self, store_path: str, env_extra: dict[str, str] | None = None):
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.pop(fs_conf.DIRECTORY_CREDENTIALS_ENV, None)
        env.update(env_extra or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "esl_app.directory", "--store", store_path, "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(START_TIMEOUT)
        if not line or not line[0].startswith("listening on "):
            self.stop()
            raise RuntimeError(f"directory server did not start: {line!r} {self.stderr()!r}")
        self.port = int(line[0].strip().rsplit(":", 1)[1])

    def stderr(self) -> str:
        try:
            return self.proc.communicate(timeout=5)[1]
        except (subprocess.TimeoutExpired, ValueError):
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def post(self, fields, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """POST the way mod_xml_curl does (form-encoded; spaces as %20, as switch_url_encode writes)."""
        body = fields if isinstance(fields, (bytes, str)) else urlencode(fields, quote_via=quote)
        body = body.encode() if isinstance(body, str) else body
        return self.request("POST", "/directory", body, {
            "Content-Type": "application/x-www-form-urlencoded", "User-Agent": "freeswitch-xml/1.0",
            "Accept": "*/*", **(headers or {})})


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("directory") / "store")
    with Store(path) as store:
        store.load_config(config_from_yaml(ACME + BETA))
    return path


@pytest.fixture(scope="module")
def server(store_path):
    running = DirectoryServer(store_path)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def guarded(store_path):
    running = DirectoryServer(store_path, {fs_conf.DIRECTORY_CREDENTIALS_ENV: CREDENTIALS})
    yield running
    running.stop()


def request_fields(**lookup) -> list[tuple[str, str]]:
    """The fields mod_xml_curl posts: its own five, the event's headers, then the lookup's."""
    domain = lookup.pop("domain", "sip.acme.example")
    fields = [
        ("hostname", "pbx1"), ("section", "directory"), ("tag_name", "domain"), ("key_name", "name"),
        ("key_value", domain),
        ("Event-Name", "REQUEST_PARAMS"), ("Core-UUID", "294bb918-2032-11e3-83fb-c178e46d96f7"),
        ("FreeSWITCH-Hostname", "pbx1"), ("FreeSWITCH-Switchname", "pbx1"), ("FreeSWITCH-IPv4", "192.0.2.2"),
        ("FreeSWITCH-IPv6", "::1"), ("Event-Date-Local", "2026-11-22 02:36:34"),
        ("Event-Date-GMT", "Sun, 22 Nov 2026 02:36:34 GMT"), ("Event-Date-Timestamp", "1795314994447028"),
        ("Event-Calling-File", "sofia_reg.c"), ("Event-Calling-Function", "sofia_reg_parse_auth"),
        ("Event-Calling-Line-Number", "2923"), ("Event-Sequence", "1452"),
    ]
    fields += list(lookup.pop("extra", []))
    fields += [("key", lookup.pop("key", "id"))]
    if "user" in lookup:
        fields.append(("user", lookup.pop("user")))
    fields += [("domain", domain), ("ip", "192.0.2.7")]
    assert not lookup, lookup
    return fields


def sip_auth(user: str, domain: str = "sip.acme.example") -> list[tuple[str, str]]:
    """A REGISTER's digest check (sofia_reg.c sofia_reg_parse_auth)."""
    return request_fields(user=user, domain=domain, extra=[
        ("action", "sip_auth"), ("sip_profile", "internal"), ("sip_user_agent", "baresip v1.0.0 (x86_64/linux)"),
        ("sip_auth_username", user), ("sip_auth_realm", domain),
        ("sip_auth_nonce", "0ee3e4a2-6a49-4b5e-8d59-8b3c6d0e2a11"), ("sip_auth_uri", f"sip:{domain}"),
        ("sip_contact_user", f"{user}-0x55d5"), ("sip_contact_host", "192.0.2.7"),
        ("sip_to_user", user), ("sip_to_host", domain), ("sip_via_protocol", "udp"),
        ("sip_from_user", user), ("sip_from_host", domain), ("sip_call_id", "bd7f1f0e4c5a3e21"),
        ("sip_request_host", domain), ("sip_auth_qop", "auth"), ("sip_auth_cnonce", "a4c9e0f2"),
        ("sip_auth_nc", "00000001"), ("sip_auth_response", "0" * 32), ("sip_auth_method", "REGISTER"),
        ("client_port", "5070")])


def user_call(user: str, domain: str = "sip.acme.example") -> list[tuple[str, str]]:
    """``bridge user/<ext>@<domain>`` (mod_dptools user_outgoing_channel)."""
    return request_fields(user=user, domain=domain, extra=[("as_channel", "true"), ("action", "user_call")])


def voicemail_lookup(user: str, domain: str = "sip.acme.example") -> list[tuple[str, str]]:
    return request_fields(user=user, domain=domain, extra=[
        ("action", "voicemail-lookup"), ("destination_number", user), ("caller_id_number", "442079460999")])


def xml_answer(response) -> ET.Element:
    status, headers, body = response
    assert status == 200, body
    assert headers["content-type"].startswith("text/xml")
    root = ET.fromstring(body)
    assert root.tag == "document" and root.get("type") == "freeswitch/xml"
    return root


def is_not_found(root: ET.Element) -> bool:
    section = root.find("section")
    return (section is not None and section.get("name") == "result"
            and [r.get("status") for r in section.iter("result")] == ["not found"])


def the_user(root: ET.Element, domain: str = "sip.acme.example") -> ET.Element:
    assert not is_not_found(root)
    assert root.find("section").get("name") == "directory"
    domains = root.find("section").findall("domain")
    assert [d.get("name") for d in domains] == [domain]
    users = list(domains[0].iter("user"))
    assert len(users) == 1
    return users[0]


def params(user: ET.Element) -> dict[str, str]:
    return {p.get("name"): p.get("value") for p in user.find("params").iter("param")}


def variables(user: ET.Element) -> dict[str, str]:
    block = user.find("variables")
    return {v.get("name"): v.get("value") for v in block.iter("variable")} if block is not None else {}


# --- found ---------------------------------------------------------------------------------

def test_sip_auth_answers_the_users_a1_hash_and_settings(server):
    """Should answer a REGISTER lookup with the A1 hash, never a password, plus the
    context, caller ID, mailbox and voicemail switch FreeSWITCH reads."""
    root = xml_answer(server.post(sip_auth("2001")))
    user = the_user(root)
    assert user.get("id") == "2001" and user.get("mailbox") == "2001"
    got = params(user)
    assert got["a1-hash"] == a1("2001", "sip.acme.example", "correct horse battery staple")
    assert not {"password", "vm-password"} & set(got)
    assert got["vm-enabled"] == "true" and got["allow-empty-password"] == "false"
    assert "sip-forbid-register" not in got
    assert variables(user) == {
        "user_context": fs_conf.PHONE_CONTEXT, fs_conf.COMPANY_VARIABLE: "acme",
        "effective_caller_id_name": "Olivia Bennett", "effective_caller_id_number": "2001",
        "outbound_caller_id_name": "Acme Widgets Ltd", "outbound_caller_id_number": "+442079460000"}
    dial = [p.get("value") for p in root.iter("param") if p.get("name") == "dial-string"]
    assert dial == [fs_conf.DIAL_STRING]


def test_given_a1_hash_is_passed_through(server):
    user = the_user(xml_answer(server.post(sip_auth("2007"))))
    assert params(user)["a1-hash"] == "e4f8b37b9dbb815fbbfb87874615ef26"


def test_user_call_and_voicemail_lookups_find_the_user(server):
    for fields in (user_call("2004"), voicemail_lookup("2004")):
        user = the_user(xml_answer(server.post(fields)))
        assert variables(user)["effective_caller_id_name"] == "Jack Patel"


def test_domain_is_matched_without_case_and_echoed(server):
    """Should find the user however the phone spelled the domain, and answer with the
    spelling FreeSWITCH searches the document for."""
    root = xml_answer(server.post(sip_auth("2002", domain="SIP.Acme.Example")))
    assert the_user(root, domain="SIP.Acme.Example").get("id") == "2002"


def test_department_is_a_mailbox_without_login(server):
    """Should answer ``voicemail:600`` lookups but never let anyone log in as 600."""
    user = the_user(xml_answer(server.post(voicemail_lookup("600"))))
    got = params(user)
    assert got["sip-forbid-register"] == "true" and got["vm-enabled"] == "true"
    assert "a1-hash" not in got and "password" not in got
    assert variables(user)["effective_caller_id_name"] == "Sales"


def test_employee_without_credentials_cannot_log_in(server):
    user = the_user(xml_answer(server.post(sip_auth("3002", domain="beta.example"))), domain="beta.example")
    got = params(user)
    assert got["sip-forbid-register"] == "true" and got["allow-empty-password"] == "false"
    assert "a1-hash" not in got


def test_domain_only_lookup_answers_the_domain(server):
    fields = [f for f in request_fields() if f[0] not in ("user",)]
    root = xml_answer(server.post(fields))
    domain = root.find("section").find("domain")
    assert domain.get("name") == "sip.acme.example"
    assert not list(domain.iter("user"))
    assert [p.get("value") for p in domain.iter("param")] == [fs_conf.DIAL_STRING]


def test_get_with_a_query_string_works_too(server):
    query = urlencode(sip_auth("2003"))
    root = xml_answer(server.request("GET", f"/directory?{query}"))
    assert the_user(root).get("id") == "2003"


# --- not found ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fields", [
    sip_auth("2999"),                                   # no such extension
    sip_auth("3001"),                                   # beta's extension asked in acme's domain
    sip_auth("2001", domain="beta.example"),            # acme's extension asked in beta's domain
    sip_auth("2001", domain="nosuch.example"),          # unknown domain
    sip_auth("nobody"),                                 # not an extension at all
    sip_auth("2001'; DROP"),
    request_fields(user="2001", key="number-alias"),
    request_fields(user="2001", domain=""),
    request_fields(extra=[("purpose", "gateways")]),    # sofia's gateway scan of the directory
    [("section", "dialplan"), ("tag_name", "context"), ("key_name", "name"), ("key_value", "switchboard"),
     ("Caller-Destination-Number", "2001")],
    [("section", "configuration"), ("tag_name", "configuration"), ("key_name", "name"),
     ("key_value", "sofia.conf")],
    [("section", "directory")],
], ids=["unknown-user", "other-company-user", "user-in-other-domain", "unknown-domain", "not-digits",
        "injection", "other-key", "no-domain", "purpose-gateways", "dialplan", "configuration", "bare"])
def test_anything_else_is_not_found(server, fields):
    """Should answer FreeSWITCH's "not found" document (status 200), so FreeSWITCH
    falls back to its static XML, for every lookup that is not one of our users."""
    assert is_not_found(xml_answer(server.post(fields)))


# --- bad requests ---------------------------------------------------------------------------------

def assert_clean_error(response, status: int) -> str:
    got, headers, body = response
    assert got == status, body
    text = body.decode()
    assert headers["content-type"].startswith("text/plain")
    assert "Traceback" not in text and "File \"" not in text and len(text) < 300
    return text


def test_missing_section_is_a_bad_request(server):
    text = assert_clean_error(server.post([("tag_name", "domain"), ("key_value", "sip.acme.example")]), 400)
    assert "section" in text


def test_undecodable_values_are_a_bad_request(server):
    assert_clean_error(server.post("section=directory&key_value=sip.acme.example&user=%ff%fe"), 400)
    assert_clean_error(server.post(b"section=directory&user=\xff"), 400)


def test_wrong_content_type_is_refused(server):
    response = server.request("POST", "/directory", b'{"section": "directory"}',
                              {"Content-Type": "application/json"})
    assert_clean_error(response, 415)


def test_oversized_body_is_refused(server):
    body = b"section=directory&pad=" + b"x" * directory.MAX_BODY
    assert_clean_error(server.post(body), 413)


def test_other_paths_and_methods(server):
    assert_clean_error(server.request("GET", "/"), 404)
    assert_clean_error(server.request("POST", "/directory/../etc", b"section=directory",
                                      {"Content-Type": "application/x-www-form-urlencoded"}), 404)
    got = server.request("DELETE", "/directory")
    assert_clean_error(got, 405)
    assert got[1]["allow"] == "GET, POST"


def test_server_survives_bad_requests(server):
    for _ in range(3):
        server.post("section=directory&user=%ff")
    assert the_user(xml_answer(server.post(sip_auth("2001")))).get("id") == "2001"


# --- the store changing underneath -----------------------------------------------------------------

def test_reload_of_the_store_is_seen_by_the_running_server(server, store_path):
    """Should answer from the latest store generation: a new password loaded by
    `switchboard load` is served without restarting the directory."""
    before = params(the_user(xml_answer(server.post(sip_auth("2005")))))["a1-hash"]
    changed = (ACME + BETA).replace('sip_password: "isla-murphy-2026"', 'sip_password: "isla-new-pass-2027"')
    with Store(store_path) as store:
        store.load_config(config_from_yaml(changed))
    try:
        after = params(the_user(xml_answer(server.post(sip_auth("2005")))))["a1-hash"]
        assert before == a1("2005", "sip.acme.example", "isla-murphy-2026")
        assert after == a1("2005", "sip.acme.example", "isla-new-pass-2027")
    finally:
        with Store(store_path) as store:
            store.load_config(config_from_yaml(ACME + BETA))


# --- the guard -------------------------------------------------------------------------------------

def basic(credentials: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


def test_credentials_are_required_when_configured(guarded):
    """Should refuse lookups without mod_xml_curl's gateway-credentials (HTTP basic)."""
    got = guarded.post(sip_auth("2001"))
    assert_clean_error(got, 401)
    assert got[1]["www-authenticate"].startswith("Basic")
    assert_clean_error(guarded.post(sip_auth("2001"), basic("freeswitch:wrong")), 401)
    user = the_user(xml_answer(guarded.post(sip_auth("2001"), basic(CREDENTIALS))))
    assert user.get("id") == "2001"


def call_app(app, environ_extra: dict[str, str], body: bytes = b"section=directory") -> tuple[str, bytes]:
    """One request straight into the WSGI app (no socket)."""
    import io

    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/directory", "CONTENT_TYPE": directory._FORM,
               "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body), "REMOTE_ADDR": "127.0.0.1"}
    environ.update(environ_extra)
    seen = {}
    chunks = app(environ, lambda status, headers: seen.__setitem__("status", status))
    return seen["status"], b"".join(chunks)


def test_peers_outside_loopback_are_refused_without_credentials(store_path):
    """Should answer only loopback peers when no credentials are set (checked on the
    WSGI app itself: a test cannot connect from a non-loopback address)."""
    with Store(store_path, readonly=True) as store:
        app = directory.make_app(store)
        for address, status in (("192.0.2.10", "403"), ("::ffff:192.0.2.10", "403"), ("", "403"),
                                ("127.0.0.1", "200"), ("::1", "200"), ("::ffff:127.0.0.1", "200")):
            got, body = call_app(app, {"REMOTE_ADDR": address})
            assert got.startswith(status), (address, got, body)
        secured = directory.make_app(store, credentials=CREDENTIALS)
        got, _ = call_app(secured, {"REMOTE_ADDR": "192.0.2.10",
                                    "HTTP_AUTHORIZATION": basic(CREDENTIALS)["Authorization"]})
        assert got.startswith("200")


def test_internal_errors_do_not_leak_a_traceback(store_path, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("secret internals /srv/switchboard")

    monkeypatch.setattr(directory, "lookup", broken)
    with Store(store_path, readonly=True) as store:
        got, body = call_app(directory.make_app(store), {})
    assert got.startswith("500") and b"secret" not in body and b"Traceback" not in body
