"""The FreeSWITCH config set: every file parses, and the files agree with each other,
with the service config and with the store.

FreeSWITCH itself cannot run here, so the checks are the ones a misconfiguration
would fail on a real box: the dialplan's ``socket`` address is where Switchboard
listens, the Event Socket is where Switchboard connects (with its password, on
loopback), mod_xml_curl posts to the directory server, the gateway Switchboard
dials exists, every context named anywhere exists, the static fallback rings
extensions that exist, no vanilla password survives, and a failed render leaves
the previous files as they were.  The dialplan's regular expressions are also
run (Python's ``re`` reads these simple patterns as PCRE does) to check which
extension a call would hit.
"""
from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from esl_app import directory, fs_conf
from esl_app.service_config import Listen, ServiceConfig, StaticFallback, load_service_config
from fastpath import records as rec
from fastpath.errors import ConfigError, SwitchboardError
from fastpath.store import Store
from tests.conftest import config_from_yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "freeswitch_conf"

EXTRA_COMPANIES = """
  - id: beta
    name: Beta & Söhne <GmbH>
    country: DE
    timezone: Europe/Berlin
    sip_domain: beta.example
    employees:
      - extension: 3001
        name: Lena "Lee" Schmidt
        sip_password: "lena-schmidt-2026"
      - extension: 3002
        name: Max ${system(id)} Weber
    departments:
      - extension: 700
        name: Vertrieb & Service
        members: [3001, 3002]
    numbers:
      - number: +49 30 5550 9000
        route: department:700

  - id: gamma
    name: Gamma Srl
    country: IT
    timezone: Europe/Rome
    employees:
      - extension: 4001
        name: Giulia Bianchi
        sip_password: "giulia-bianchi-26"
    numbers:
      - number: +39 02 0794 60000     # read at home as 02079460000, like Acme's 020 7946 0000
        route: employee:4001
"""

SERVICE = ServiceConfig(
    outbound=Listen("127.0.0.1", 18084),
    directory=Listen("127.0.0.1", 18085),
    esl=Listen("127.0.0.1", 18021),
    esl_password="test-esl-secret",
    gateway="trunk-1",
    fallback={"acme": StaticFallback(("2001", "601"), "2002", 25),
              "beta": StaticFallback(("700",), "700", 40)},
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    text = (ROOT / "examples" / "acme.yaml").read_text() + EXTRA_COMPANIES
    with Store(str(tmp_path_factory.mktemp("fsconf") / "store")) as opened:
        opened.load_config(config_from_yaml(text))
        yield opened


@pytest.fixture(scope="module")
def rendered(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("conf")
    paths = fs_conf.render_conf(store, SERVICE, out)
    return out, paths


def parse(path: Path) -> ET.Element:
    return ET.parse(path).getroot()


def dialplan(out: Path) -> ET.Element:
    return parse(out / "dialplan" / "switchboard.xml")


def contexts(out: Path) -> dict[str, ET.Element]:
    return {c.get("name"): c for c in dialplan(out).iter("context")}


def param(root: ET.Element, name: str) -> str | None:
    found = [p.get("value") for p in root.iter("param") if p.get("name") == name]
    assert len(found) <= 1, f"param {name} given {len(found)} times"
    return found[0] if found else None


# --- a tiny XML-dialplan hunt, to see where calls go ------------------------------

def hunt(context: ET.Element, destination: str, variables: dict[str, str] | None = None):
    """(extension name, [(application, data with $1 filled in)]) of the first extension
    whose conditions all match, as mod_dialplan_xml picks it."""
    variables = variables or {}
    for extension in context.iter("extension"):
        match = None
        for condition in extension.iter("condition"):
            field = condition.get("field")
            value = destination if field == "destination_number" else variables.get(field[2:-1], "")
            match = re.search(condition.get("expression"), value)
            if match is None:
                break
        else:
            actions = [(a.get("application"), re.sub(r"\$(\d)", lambda m: match.group(int(m.group(1))) or "",
                                                      a.get("data", "")))
                       for a in extension.iter("action")]
            return extension.get("name"), actions
    return None, []


def action_data(actions, application: str) -> list[str]:
    return [data for app, data in actions if app == application]


def called(actions) -> dict[str, str]:
    return dict(d.split("=", 1) for d in action_data(actions, "set"))


# --- every file -------------------------------------------------------------------------

def test_render_writes_the_whole_set_and_every_file_parses(rendered):
    """Should write one file per template (the gateway named after service.gateway),
    each well-formed XML without a declaration (they are textual includes) and
    without leftover placeholders or temporary files."""
    out, paths = rendered
    expected = {out / rel for rel in fs_conf.output_paths(SERVICE.gateway).values()}
    assert set(paths) == expected
    assert (out / "sip_profiles" / "external" / "trunk-1.xml") in expected
    on_disk = {p for p in out.rglob("*") if p.is_file()}
    assert on_disk == expected, "stray or temporary files left behind"
    for path in paths:
        text = path.read_text(encoding="utf-8")
        ET.fromstring(text)
        assert not text.lstrip().startswith("<?xml"), path
        assert "@@" not in text and "switchboard-generate" not in text, path


def test_every_shipped_template_parses():
    """Should ship every template as well-formed XML, so a typo fails here, not at render."""
    shipped = sorted(TEMPLATES.rglob("*.xml"))
    assert {p.relative_to(TEMPLATES).as_posix() for p in shipped} == set(fs_conf.TEMPLATES)
    for path in shipped:
        parse(path)


def test_no_vanilla_password_anywhere(rendered):
    """Should leave neither FreeSWITCH's default ESL password nor vanilla's
    default_password in any file produced or shipped."""
    out, paths = rendered
    for path in list(paths) + sorted(TEMPLATES.rglob("*.xml")):
        text = path.read_text(encoding="utf-8")
        assert "cluecon" not in text.lower(), path
        assert not re.search(r"(?<![0-9A-Za-z])1234(?![0-9A-Za-z])", text), path


def test_vanilla_sleep_trap_is_not_inherited(rendered):
    """Should route into contexts of our own, never vanilla's default/public, never
    sleep, and set default_password to a fresh random value on every render."""
    out, _ = rendered
    names = set(contexts(out))
    assert names == {fs_conf.PHONE_CONTEXT, fs_conf.CARRIER_CONTEXT, fs_conf.FALLBACK_CONTEXT}
    assert not names & {"default", "public", "features"}
    assert not [a for a in dialplan(out).iter("action") if a.get("application") == "sleep"]
    sets = [e.get("data") for e in parse(out / "switchboard_vars.xml").iter("X-PRE-PROCESS")
            if e.get("cmd") == "set"]
    passwords = [s.split("=", 1)[1] for s in sets if s.startswith("default_password=")]
    assert len(passwords) == 1 and passwords[0] != "1234" and len(passwords[0]) >= 20
    again = fs_conf.render_files(fs_conf.StoreSnapshot({}), replace(SERVICE, fallback={}))
    assert f"default_password={passwords[0]}" not in again["switchboard_vars.xml"]


# --- references between files ------------------------------------------------------------

def test_dialplan_hands_calls_to_the_outbound_socket_server(rendered):
    """Should connect every routed call to service.outbound in async full mode, and
    transfer to the fallback context right after (reached only if socket returns)."""
    out, _ = rendered
    sockets = [a.get("data") for a in dialplan(out).iter("action") if a.get("application") == "socket"]
    assert sockets and set(sockets) == {f"{SERVICE.outbound.host}:{SERVICE.outbound.port} async full"}
    for extension in dialplan(out).iter("extension"):
        apps = [a.get("application") for a in extension.iter("action")]
        if "socket" in apps and extension.get("name").endswith(("-feature-codes", "-outbound")):
            # no static fallback for these: without Switchboard they fail at once
            assert apps[apps.index("socket") + 1:] == ["log", "hangup"]
        elif "socket" in apps:
            after = apps[apps.index("socket") + 1:]
            assert after[-1] == "transfer" and "hangup" not in after
            assert apps.index("sched_hangup") < apps.index("socket")
            data = {a.get("application"): a.get("data") for a in extension.iter("action")}
            assert data["transfer"].endswith(f" XML {fs_conf.FALLBACK_CONTEXT}")


def test_every_call_has_a_safety_ceiling(rendered):
    """Should set park_timeout (with a cause) and sched_hangup before every socket,
    long enough not to cut calls Switchboard is still running."""
    out, _ = rendered
    for extension in dialplan(out).iter("extension"):
        actions = [(a.get("application"), a.get("data")) for a in extension.iter("action")]
        if action_data(actions, "socket"):
            park = [d for d in action_data(actions, "set") if d.startswith("park_timeout=")]
            assert park == [f"park_timeout={fs_conf.DEFAULT_MAX_CALL_SECONDS}:ALLOTTED_TIMEOUT"]
            assert action_data(actions, "sched_hangup") == [f"+{fs_conf.DEFAULT_MAX_CALL_SECONDS} ALLOTTED_TIMEOUT"]


def test_event_socket_is_loopback_with_the_service_password(rendered):
    out, _ = rendered
    conf = parse(out / "autoload_configs" / "event_socket.conf.xml")
    assert conf.get("name") == "event_socket.conf"
    assert param(conf, "listen-ip") == SERVICE.esl.host == "127.0.0.1"
    assert param(conf, "listen-port") == str(SERVICE.esl.port)
    assert param(conf, "password") == SERVICE.esl_password
    assert param(conf, "apply-inbound-acl") == "loopback.auto"


def test_xml_curl_binds_the_directory_section_to_the_directory_server(rendered):
    out, _ = rendered
    conf = parse(out / "autoload_configs" / "xml_curl.conf.xml")
    assert conf.get("name") == "xml_curl.conf"
    urls = [p for p in conf.iter("param") if p.get("name") == "gateway-url"]
    assert len(urls) == 1
    assert urls[0].get("value") == f"http://{SERVICE.directory}{fs_conf.DIRECTORY_PATH}"
    assert urls[0].get("bindings") == "directory"
    assert 1 <= int(param(conf, "timeout")) <= 5
    assert param(conf, "gateway-credentials") is None


def test_modules_needed_are_loaded(rendered):
    out, _ = rendered
    loaded = {m.get("module") for m in parse(out / "autoload_configs" / "modules.conf.xml").iter("load")}
    assert {"mod_event_socket", "mod_xml_curl", "mod_sofia", "mod_dptools", "mod_commands", "mod_voicemail",
            "mod_say_en", "mod_sndfile", "mod_tone_stream", "mod_dialplan_xml"} <= loaded
    assert "mod_spandsp" not in loaded        # shipped commented out, with its caveat


def test_gateway_used_by_the_executor_exists(rendered):
    """Should define a gateway named service.gateway (Switchboard dials
    sofia/gateway/<name>/...) whose inbound calls land in an existing context,
    with the credentials left to the operator's file."""
    out, _ = rendered
    path = out / "sip_profiles" / "external" / f"{SERVICE.gateway}.xml"
    gateways = list(parse(path).iter("gateway"))
    assert [g.get("name") for g in gateways] == [SERVICE.gateway]
    assert param(gateways[0], "context") in contexts(out)
    assert param(gateways[0], "context") == fs_conf.CARRIER_CONTEXT
    assert param(gateways[0], "extension") == "auto_to_user"


def test_preprocessor_variables_used_are_defined(rendered):
    """Should define every $${name} a rendered file uses, in switchboard_vars.xml or
    the operator's switchboard_carrier.xml (which switchboard_vars.xml includes)."""
    out, paths = rendered
    vars_root = parse(out / "switchboard_vars.xml")
    includes = [e.get("data") for e in vars_root.iter("X-PRE-PROCESS") if e.get("cmd") == "include"]
    assert includes == ["switchboard_carrier.xml"] and (out / includes[0]).is_file()
    defined = set()
    for name in ("switchboard_vars.xml", "switchboard_carrier.xml"):
        for element in parse(out / name).iter("X-PRE-PROCESS"):
            if element.get("cmd") == "set":
                defined.add(element.get("data").split("=", 1)[0])
    used = {m for path in paths for m in re.findall(r"\$\$\{([^}]+)\}", path.read_text())}
    assert used and used <= defined
    carrier = parse(out / "switchboard_carrier.xml")
    values = {e.get("data").split("=", 1)[0]: e.get("data").split("=", 1)[1]
              for e in carrier.iter("X-PRE-PROCESS")}
    assert all("CHANGE-ME" in values[k] for k in values if k != "switchboard_carrier_register")
    assert values["switchboard_carrier_register"] == "false"


def test_directory_users_land_in_a_context_that_exists(rendered, store):
    """Should give every directory user (phones) a user_context the dialplan has."""
    out, _ = rendered
    with store.read() as txn:
        company = rec.decode_company(txn.get(b"acme", db=store.db["company"]))
        employee = rec.decode_employee("2001", txn.get(b"2001", db=store.db["ext"]))
    user = fs_conf.employee_user(employee, company)
    context = {v.get("name"): v.get("value") for v in user.iter("variable")}["user_context"]
    assert context in contexts(out)
    answer = ET.fromstring(directory.lookup(store, {"section": "directory", "key_value": "sip.acme.example",
                                                    "user": "2001"}))
    assert {v.get("value") for v in answer.iter("variable") if v.get("name") == "user_context"} == {context}


def test_every_transfer_targets_an_existing_context(rendered):
    out, _ = rendered
    names = set(contexts(out))
    for action in dialplan(out).iter("action"):
        if action.get("application") == "transfer":
            _exten, dialplan_name, context = action.get("data").split()
            assert dialplan_name == "XML" and context in names


# --- the static fallback -------------------------------------------------------------------

def test_fallback_rings_extensions_that_exist_in_the_store(rendered, store):
    """Should ring, for each company with a fallback, only that company's employees
    (a department stands for its members) at its SIP domain, then voicemail."""
    out, _ = rendered
    fallback = contexts(out)[fs_conf.FALLBACK_CONTEXT]
    snapshot = fs_conf.read_store(store)
    for company_id, spec in SERVICE.fallback.items():
        conf = snapshot.companies[company_id]
        domain = conf.company.sip_domain
        name, actions = hunt(fallback, company_id)
        assert name == f"fallback-{company_id}"
        legs = action_data(actions, "bridge")[0].split(",")
        rung = []
        for leg in legs:
            m = re.fullmatch(rf"\[leg_timeout={spec.ring_seconds}\]user/(\d+)@{re.escape(domain)}", leg)
            assert m, leg
            rung.append(m.group(1))
        assert all(ext in conf.employees for ext in rung)
        assert action_data(actions, "voicemail") == [f"default {domain} {spec.voicemail}"]
        assert spec.voicemail in conf.employees or spec.voicemail in conf.departments
        assert f"call_timeout={spec.ring_seconds}" in action_data(actions, "set")
        assert "continue_on_fail=true" in action_data(actions, "set")
        apps = [a for a, _ in actions]
        assert apps.index("bridge") < apps.index("voicemail")
    assert action_data(hunt(fallback, "acme")[1], "bridge")[0].count("user/") == 4    # 2001 + Support's 3
    assert action_data(hunt(fallback, "beta")[1], "bridge")[0].count("user/") == 2    # 700's members


def test_fallback_skipped_when_switchboard_is_done_and_refused_without_config(rendered):
    out, _ = rendered
    fallback = contexts(out)[fs_conf.FALLBACK_CONTEXT]
    name, actions = hunt(fallback, "acme", {fs_conf.DONE_VARIABLE: "true"})
    assert name == "switchboard-done" and actions == [("hangup", "NORMAL_CLEARING")]
    name, actions = hunt(fallback, "gamma")
    assert name == "switchboard-no-fallback" and action_data(actions, "hangup") == ["NORMAL_TEMPORARY_FAILURE"]


def test_static_fallback_directory_has_mailboxes_but_no_logins(rendered):
    """Should list exactly the users the fallback dials or records into, with the
    dial-string user/ needs, and without any credential."""
    out, _ = rendered
    root = parse(out / "directory" / "switchboard_fallback.xml")
    domains = {d.get("name"): d for d in root.iter("domain")}
    assert set(domains) == {"sip.acme.example", "beta.example"}
    acme_users = {u.get("id") for u in domains["sip.acme.example"].iter("user")}
    assert acme_users == {"2001", "2007", "2008", "2005", "2002"}
    assert {u.get("id") for u in domains["beta.example"].iter("user")} == {"3001", "3002", "700"}
    for domain in domains.values():
        assert param(domain.find("params"), "dial-string") == fs_conf.DIAL_STRING
        for user in domain.iter("user"):
            params = {p.get("name"): p.get("value") for p in user.iter("param")}
            assert params["sip-forbid-register"] == "true" and params["vm-enabled"] == "true"
            assert not {"password", "a1-hash", "vm-password", "vm-a1-hash"} & set(params)
            assert user.get("mailbox") == user.get("id")


def test_bad_fallbacks_are_all_reported_and_nothing_is_written(store, tmp_path):
    service = replace(SERVICE, fallback={
        "acme": StaticFallback(("2001", "3001", "9999"), "700", 30),      # beta's, nobody's, beta's
        "nosuch": StaticFallback(("2001",), "2001", 30)})
    with pytest.raises(ConfigError) as caught:
        fs_conf.render_conf(store, service, tmp_path / "out")
    paths = [p.path for p in caught.value.problems]
    assert paths == ["service.fallback.acme.ring[1]", "service.fallback.acme.ring[2]",
                     "service.fallback.acme.voicemail", "service.fallback.nosuch"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change, where", [
    ({"esl": Listen("0.0.0.0", 8021)}, "service.esl"),
    ({"esl_password": "ClueCon"}, "service.esl_password"),
    ({"esl_password": "ab$${x}"}, "service.esl_password"),
    ({"gateway": "../../etc/x"}, "service.gateway"),
    ({"gateway": "a b"}, "service.gateway"),
])
def test_unsafe_service_settings_are_refused(store, tmp_path, change, where):
    with pytest.raises(ConfigError) as caught:
        fs_conf.render_conf(store, replace(SERVICE, **change), tmp_path / "out")
    assert where in [p.path for p in caught.value.problems]
    assert not (tmp_path / "out").exists()


# --- where calls go ---------------------------------------------------------------------------

@pytest.mark.parametrize("dialled, caller_company, company, canonical", [
    ("2001", "acme", "acme", "2001"),
    ("600", "acme", "acme", "600"),
    ("3001", "beta", "beta", "3001"),
    ("+442079460100", "beta", "acme", "442079460100"),        # any phone may call a company number
    ("00442079460100", "acme", "acme", "442079460100"),
    ("442079460200", "acme", "acme", "442079460200"),
    ("02079460300", "acme", "acme", "442079460300"),           # national form
    ("03055509000", "beta", "beta", "493055509000"),
    ("+3902079460000", "acme", "gamma", "3902079460000"),
])
def test_phone_calls_are_routed_with_the_canonical_called_number(rendered, dialled, caller_company,
                                                                  company, canonical):
    out, _ = rendered
    name, actions = hunt(contexts(out)[fs_conf.PHONE_CONTEXT], dialled,
                         {fs_conf.COMPANY_VARIABLE: caller_company})
    assert name.startswith(f"{company}-"), name
    assert called(actions)[fs_conf.CALLED_VARIABLE] == canonical
    assert called(actions)[fs_conf.CALLED_COMPANY_VARIABLE] == company
    assert action_data(actions, "socket")


@pytest.mark.parametrize("dialled, variables", [
    ("3001", {fs_conf.COMPANY_VARIABLE: "acme"}),        # another company's extension
    ("2001", {}),                                        # no directory user
    ("9999", {fs_conf.COMPANY_VARIABLE: "acme"}),
    ("123456", {fs_conf.COMPANY_VARIABLE: "acme"}),       # extension-length: never dialled out
    ("ivr:acme/main", {fs_conf.COMPANY_VARIABLE: "acme"}),
])
def test_phone_calls_elsewhere_are_refused(rendered, dialled, variables):
    out, _ = rendered
    name, actions = hunt(contexts(out)[fs_conf.PHONE_CONTEXT], dialled, variables)
    assert name == "switchboard-unrouted"
    assert action_data(actions, "hangup") == ["UNALLOCATED_NUMBER"]


def test_carrier_reaches_company_numbers_only(rendered):
    """Should route DIDs in every form to Switchboard and refuse extensions."""
    out, _ = rendered
    carrier = contexts(out)[fs_conf.CARRIER_CONTEXT]
    for dialled, canonical in (("+442079460000", "442079460000"), ("02079460100", "442079460100"),
                               ("493055509000", "493055509000"), ("+3902079460000", "3902079460000")):
        name, actions = hunt(carrier, dialled, {fs_conf.COMPANY_VARIABLE: "acme"})
        assert called(actions)[fs_conf.CALLED_VARIABLE] == canonical, dialled
    for dialled in ("2001", "600", "02079460000", "+447400123005"):
        assert hunt(carrier, dialled, {fs_conf.COMPANY_VARIABLE: "acme"})[0] == "switchboard-unrouted", dialled


def test_long_lists_are_split_so_pcre_can_compile_them(store, tmp_path, monkeypatch):
    """Should split alternations into several extensions (PCRE caps a pattern at 64 KiB)
    and still route every extension."""
    monkeypatch.setattr(fs_conf, "MAX_ALTERNATIVES", 3)
    files = fs_conf.render_files(fs_conf.read_store(store), SERVICE)
    phones = {c.get("name"): c for c in ET.fromstring(files["dialplan/switchboard.xml"]).iter("context")}
    phones = phones[fs_conf.PHONE_CONTEXT]
    names = [e.get("name") for e in phones.iter("extension")]
    assert {"acme-extensions-1", "acme-extensions-4", "acme-numbers-2"} <= set(names)
    for ext in ("600", "601", "602", "2001", "2004", "2008"):
        name, actions = hunt(phones, ext, {fs_conf.COMPANY_VARIABLE: "acme"})
        assert name.startswith("acme-extensions-") and called(actions)[fs_conf.CALLED_VARIABLE] == ext


# --- escaping ---------------------------------------------------------------------------------------

def test_values_are_xml_escaped_and_names_defused(store, tmp_path):
    """Should escape what XML needs and drop what FreeSWITCH would expand (``${...}``)."""
    hostile = 'a&b<c>"d\'e\x01'
    root = ET.fromstring('<include><x v="@@v@@">@@v@@</x><!-- @@v@@ --></include>')
    text = fs_conf.to_xml(fs_conf._fill(root, {"v": hostile}, {}, "test"))
    parsed = ET.fromstring(text).find("x")
    assert parsed.get("v") == parsed.text == hostile.replace("\x01", "")
    with pytest.raises(ConfigError):       # quotes and markup in the password: refused, not escaped
        fs_conf.render_conf(store, replace(SERVICE, esl_password="p<w>&x"), tmp_path / "bad")
    service = replace(SERVICE, esl_password="pä%ss;w0rd")
    out = tmp_path / "out"
    fs_conf.render_conf(store, service, out)
    assert param(parse(out / "autoload_configs" / "event_socket.conf.xml"), "password") == "pä%ss;w0rd"
    with store.read() as txn:
        beta = rec.decode_company(txn.get(b"beta", db=store.db["company"]))
        max_weber = rec.decode_employee("3002", txn.get(b"3002", db=store.db["ext"]))
    text = fs_conf.to_xml(fs_conf.employee_user(max_weber, beta))
    assert "${" not in text and "system" in text
    names = {v.get("name"): v.get("value") for v in ET.fromstring(text).iter("variable")}
    assert names["effective_caller_id_name"] == "Max system(id) Weber"
    department = fs_conf.department_user(rec.DepartmentRec("700", "beta", "Vertrieb & <Service>", "simultaneous",
                                                           0, 30, 60, None, ()), beta)
    names = {v.get("name"): v.get("value") for v in ET.fromstring(fs_conf.to_xml(department)).iter("variable")}
    assert names["effective_caller_id_name"] == "Vertrieb Service"


def test_directory_credentials_are_rendered_for_mod_xml_curl(store, tmp_path):
    out = tmp_path / "out"
    fs_conf.render_conf(store, SERVICE, out, directory_credentials="fs:s3cret")
    conf = parse(out / "autoload_configs" / "xml_curl.conf.xml")
    assert param(conf, "gateway-credentials") == "fs:s3cret" and param(conf, "auth-scheme") == "basic"
    with pytest.raises(ConfigError):
        fs_conf.render_conf(store, SERVICE, tmp_path / "bad", directory_credentials="no-colon")


# --- writing ------------------------------------------------------------------------------------------

def snapshot_files(out: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_failed_write_midway_leaves_the_previous_files_intact(store, tmp_path, monkeypatch):
    """Should stage every file before replacing any: a failure on the 4th file
    leaves all files of the previous render byte for byte, and no temporary files."""
    out = tmp_path / "out"
    fs_conf.render_conf(store, SERVICE, out)
    before = snapshot_files(out)
    real_stage, calls = fs_conf._stage, []

    def failing_stage(target, data):
        calls.append(target)
        if len(calls) == 4:
            raise OSError(28, "No space left on device", str(target))
        return real_stage(target, data)

    monkeypatch.setattr(fs_conf, "_stage", failing_stage)
    changed = replace(SERVICE, outbound=Listen("127.0.0.1", 19999), esl_password="another-secret")
    with pytest.raises(SwitchboardError, match="No space left on device"):
        fs_conf.render_conf(store, changed, out)
    assert len(calls) == 4
    assert snapshot_files(out) == before


def test_unwritable_target_fails_before_anything_is_replaced(store, tmp_path):
    """Should fail as a whole when a directory cannot be created (here a file is in
    the way), leaving the earlier files and no temporary files."""
    out = tmp_path / "out"
    fs_conf.render_conf(store, SERVICE, out)
    (out / "sip_profiles" / "external" / "trunk-1.xml").unlink()
    (out / "sip_profiles" / "external").rmdir()
    (out / "sip_profiles" / "external").write_text("in the way")
    before = snapshot_files(out)
    with pytest.raises(SwitchboardError, match="nothing was changed"):
        fs_conf.render_conf(store, replace(SERVICE, esl_password="another-secret"), out)
    assert snapshot_files(out) == before


def test_operator_owned_carrier_file_survives_a_render(store, tmp_path):
    out = tmp_path / "out"
    fs_conf.render_conf(store, SERVICE, out)
    carrier = out / "switchboard_carrier.xml"
    mine = carrier.read_text().replace("CHANGE-ME-password", "carrier-pw-from-the-operator")
    carrier.write_text(mine)
    carrier.chmod(0o600)
    paths = fs_conf.render_conf(store, SERVICE, out)
    assert carrier in paths and carrier.read_text() == mine
    assert carrier.stat().st_mode & 0o777 == 0o600


def test_rendered_files_are_not_world_readable_and_keep_their_mode(store, tmp_path):
    out = tmp_path / "out"
    fs_conf.render_conf(store, SERVICE, out)
    socket_conf = out / "autoload_configs" / "event_socket.conf.xml"
    assert socket_conf.stat().st_mode & 0o777 == 0o640
    socket_conf.chmod(0o600)
    fs_conf.render_conf(store, SERVICE, out)
    assert socket_conf.stat().st_mode & 0o777 == 0o600


def test_example_service_config_renders(store, tmp_path):
    """Should render examples/service.yaml as shipped (Acme's fallback included)."""
    service = load_service_config(str(ROOT / "examples" / "service.yaml"), {})
    out = tmp_path / "out"
    fs_conf.render_conf(store, service, out)
    assert (out / "sip_profiles" / "external" / "carrier.xml").is_file()
    name, actions = hunt(contexts(out)[fs_conf.FALLBACK_CONTEXT], "acme")
    assert action_data(actions, "bridge") == [
        "[leg_timeout=30]user/2001@sip.acme.example,[leg_timeout=30]user/2002@sip.acme.example"]


def test_cli_command_renders_from_the_store(tmp_path, monkeypatch, capsys):
    """Should expose `fsconf --out DIR` for the lead's argparse."""
    import argparse

    store_path = str(tmp_path / "cli-store")          # a store of its own: LMDB wants one handle per process
    with Store(store_path) as writer:
        writer.load_config(config_from_yaml((ROOT / "examples" / "acme.yaml").read_text()))

    parser = argparse.ArgumentParser()
    parser.add_argument("--store")
    fs_conf.add_cli(parser.add_subparsers(dest="command"))
    service_file = tmp_path / "service.yaml"
    service_file.write_text("service:\n  esl_password: cli-secret\n  gateway: gw1\n")
    args = parser.parse_args(["--store", store_path, "fsconf", "--out", str(tmp_path / "out"),
                              "--service", str(service_file)])
    monkeypatch.delenv("SWITCHBOARD_ESL_PASSWORD", raising=False)
    monkeypatch.delenv(fs_conf.DIRECTORY_CREDENTIALS_ENV, raising=False)
    assert args.func(args) == 0
    printed = capsys.readouterr().out.split()
    assert str(tmp_path / "out" / "sip_profiles" / "external" / "gw1.xml") in printed
    assert param(parse(tmp_path / "out" / "autoload_configs" / "event_socket.conf.xml"), "password") == "cli-secret"


def test_a1_hash_is_what_sofia_computes(store):
    """The directory's a1-hash is md5(user:realm:password) — sofia_reg.c compares digests with it."""
    with store.read() as txn:
        employee = rec.decode_employee("2001", txn.get(b"2001", db=store.db["ext"]))
    assert employee.a1_hash == hashlib.md5(b"2001:sip.acme.example:correct horse battery staple").hexdigest()


def _phrase_actions(macro, data: str) -> list[str]:
    """What FreeSWITCH's phrase engine plays for ``data``: inputs in order, break_on_match honoured."""
    import re as _re
    played = []
    for node in macro.findall("input"):
        found = _re.search(node.get("pattern"), data)
        if not found:
            continue
        for action in node.find("match"):
            value = action.get("data")
            for i, group in enumerate(found.groups(), 1):
                value = value.replace(f"${i}", group or "")
            played.append(f"{action.get('function')} {value}")
        if node.get("break_on_match") == "true":
            break
    return played


@pytest.mark.parametrize("status, prompt", [
    ("meeting", "is_in_a_meeting"), ("lunch", "is_at_lunch"), ("vacation", "is_on_vacation"),
    ("sick", "is_off_sick"), ("away", "is_away"), ("busy", "is_not_available"),
    ("training", "is_not_available"), ("available", "is_available")])
def test_the_referral_phrase_says_every_status_the_engines_produce(status, prompt):
    import xml.etree.ElementTree as ET
    from fastpath.model import REFERRAL_STATUSES
    from fastpath.referral_route import WORDS
    root = ET.parse(Path(fs_conf.default_template_dir()) / "lang/en/ivr/switchboard-en.xml").getroot()
    macro = root.find("macro[@name='referral_status']")
    assert set(REFERRAL_STATUSES) - {"available"} <= set(WORDS)
    timed = _phrase_actions(macro, f"2001:{status}:1795001400")
    assert timed[:3] == ["play-file ivr/ivr-extension_number.wav", "say 2001",
                         f"play-file switchboard/{prompt}.wav"]
    if status == "available":
        assert len(timed) == 3
    else:
        assert timed[3:] == ["play-file switchboard/until.wav", "say 1795001400"]
    assert len(_phrase_actions(macro, f"2001:{status}:0")) == 3          # open-ended: no "until"


@pytest.mark.parametrize("dialled, name", [
    ("*3011430", "acme-feature-codes"), ("*31", "acme-feature-codes"), ("*322001*3", "acme-feature-codes"),
    ("+12125550100", "acme-outbound"), ("07400100001", "acme-outbound"),
    ("02079460000", "acme-outbound"),      # ambiguous national form (Acme or Gamma): the engine reads it in GB
])
def test_phones_reach_switchboard_with_feature_codes_and_outbound_numbers(rendered, dialled, name):
    out, _ = rendered
    found, actions = hunt(contexts(out)[fs_conf.PHONE_CONTEXT], dialled, {fs_conf.COMPANY_VARIABLE: "acme"})
    assert found == name
    assert called(actions)[fs_conf.CALLED_VARIABLE] == dialled
    assert action_data(actions, "hangup") == ["NORMAL_TEMPORARY_FAILURE"] and action_data(actions, "socket")
    carrier, _ = hunt(contexts(out)[fs_conf.CARRIER_CONTEXT], dialled, {})
    assert carrier == "switchboard-unrouted"          # the carrier reaches company numbers only


# --- emergency numbers --------------------------------------------------------------------

@pytest.mark.parametrize("dialled, company", [
    ("999", "acme"), ("112", "acme"),            # GB
    ("110", "beta"), ("112", "beta"),            # DE
    ("113", "gamma"), ("118", "gamma"),          # IT
])
def test_emergency_numbers_go_straight_to_the_gateway_never_through_switchboard(rendered, dialled, company):
    out, _ = rendered
    name, actions = hunt(contexts(out)[fs_conf.PHONE_CONTEXT], dialled, {fs_conf.COMPANY_VARIABLE: company})
    assert name == f"{company}-emergency"
    assert action_data(actions, "bridge") == [f"sofia/gateway/{SERVICE.gateway}/{dialled}"]
    assert not action_data(actions, "socket") and not action_data(actions, "transfer")
    assert "hangup_after_bridge=true" in action_data(actions, "set")
    carrier, _ = hunt(contexts(out)[fs_conf.CARRIER_CONTEXT], dialled, {})
    assert carrier == "switchboard-unrouted"          # callers from outside never dial out through us


@pytest.mark.parametrize("dialled, company", [("911", "acme"), ("999", "beta"), ("110", "acme")])
def test_another_countrys_emergency_number_is_no_route(rendered, dialled, company):
    out, _ = rendered
    name, _ = hunt(contexts(out)[fs_conf.PHONE_CONTEXT], dialled, {fs_conf.COMPANY_VARIABLE: company})
    assert name == "switchboard-unrouted"


def test_emergency_routes_come_first_and_call_back_on_the_companys_number(rendered):
    out, _ = rendered
    names = [e.get("name") for e in contexts(out)[fs_conf.PHONE_CONTEXT].iter("extension")]
    assert names[:3] == ["acme-emergency", "beta-emergency", "gamma-emergency"]
    _, acme = hunt(contexts(out)[fs_conf.PHONE_CONTEXT], "999", {fs_conf.COMPANY_VARIABLE: "acme"})
    assert "effective_caller_id_number=${outbound_caller_id_number}" in action_data(acme, "set")
    _, beta = hunt(contexts(out)[fs_conf.PHONE_CONTEXT], "112", {fs_conf.COMPANY_VARIABLE: "beta"})
    assert not [s for s in action_data(beta, "set") if s.startswith("effective_caller_id")]   # no company number


def test_an_extension_may_not_be_an_emergency_number_of_its_country():
    from fastpath.emergency import is_emergency
    assert is_emergency("999", "GB") and is_emergency("112", "DE") and not is_emergency("911", "GB")
    assert not is_emergency("112", None)
    with pytest.raises(ConfigError, match=r"employees\[0\]\.extension: 999 is an emergency number in GB"):
        config_from_yaml("id: a\nname: A\ncountry: GB\ntimezone: Europe/London\n"
                         "employees:\n  - {extension: 999, name: X}\n")
    with pytest.raises(ConfigError, match=r"departments\[0\]\.extension: 110 is an emergency number in DE"):
        config_from_yaml("id: a\nname: A\ncountry: DE\ntimezone: Europe/Berlin\n"
                         "departments:\n  - {extension: 110, name: X}\n")
    config_from_yaml("id: a\nname: A\ncountry: GB\ntimezone: Europe/London\n"
                     "employees:\n  - {extension: 110, name: X}\n")                 # 110 is Germany's
