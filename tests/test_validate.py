"""YAML config -> validated Config, with every problem reported at once, with path and line."""
import copy
import datetime as dt
import hashlib
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from fastpath.errors import ConfigError, Problem
from fastpath.model import Company, Config, Destination
from fastpath.validate import load_config, validate
from fastpath.yaml_source import YamlInt, YamlMap, YamlSeq, load_yaml

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "acme.yaml"

COMPANY = """\
id: acme
name: Acme
country: GB
timezone: Europe/London
"""
STAFF = """\
employees:
  - {extension: 2001, name: Ann}
  - {extension: 2002, name: Bob}
departments:
  - {extension: 600, name: Sales, members: [2001, 2002]}
"""


def company(yaml_text: str = "", *, staff: bool = True) -> Company:
    """The single company of COMPANY (+ STAFF) + ``yaml_text``."""
    config = validate([(load_yaml(_doc(yaml_text, staff), "t.yaml"), "t.yaml")])
    return config.companies[0]


def problems(yaml_text: str = "", *, staff: bool = True) -> list[Problem]:
    """The problems of COMPANY (+ STAFF) + ``yaml_text``, which must be invalid."""
    with pytest.raises(ConfigError) as caught:
        validate([(load_yaml(_doc(yaml_text, staff), "t.yaml"), "t.yaml")])
    return caught.value.problems


def problem(yaml_text: str = "", *, staff: bool = True) -> Problem:
    """The one problem of an almost valid document."""
    found = problems(yaml_text, staff=staff)
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]


def _doc(yaml_text: str, staff: bool) -> str:
    return COMPANY + (STAFF if staff else "") + textwrap.dedent(yaml_text)


# --------------------------------------------------------------------------
# YAML with line numbers


def test_mappings_and_sequences_remember_their_lines():
    """Mappings know their own line and each key's; sequences each item's."""
    doc = load_yaml("a: 1\nb:\n  c: x\n  d:\n    - 1\n    - {e: 2}\n", "t.yaml")
    assert isinstance(doc, YamlMap) and doc.line == 1
    assert doc.key_lines == {"a": 1, "b": 2}
    assert doc["b"].line == 3 and doc["b"].key_lines == {"c": 3, "d": 4}
    seq = doc["b"]["d"]
    assert isinstance(seq, YamlSeq) and seq.line == 5 and seq.item_lines == [5, 6]
    assert seq[1].line == 6


def test_yaml_ints_keep_the_text_they_were_written_as():
    """YAML 1.1 reads 0123 as octal 83; the text keeps the person's '0123'."""
    doc = load_yaml("a: 0123\nb: 2001\nc: 9:30\n", "t.yaml")
    assert isinstance(doc["a"], YamlInt) and doc["a"] == 83 and doc["a"].text == "0123"
    assert doc["b"].text == "2001"
    assert doc["c"] == 570 and doc["c"].text == "9:30"


def test_duplicate_keys_are_recorded_but_merge_keys_are_not_duplicates():
    """A key written twice is recorded; overriding a '<<' merged key is normal YAML."""
    doc = load_yaml("base: &b {x: 1}\nm:\n  <<: *b\n  x: 2\n  y: 3\n  y: 4\n", "t.yaml")
    assert doc["m"] == {"x": 2, "y": 4}
    assert doc["m"].duplicate_keys == [("y", 6)]


def test_yaml_syntax_errors_become_one_problem_with_the_line():
    """Broken YAML is a ConfigError with one problem on the offending line."""
    with pytest.raises(ConfigError) as caught:
        load_yaml("id: acme\nname: [Acme\ncountry: GB\n", "bad.yaml")
    (found,) = caught.value.problems
    assert found.source == "bad.yaml" and found.line == 3
    assert "invalid YAML" in found.message


def test_an_unquoted_star_option_gets_a_hint():
    """`*: ivr:main` is an alias in YAML; the problem says to quote it."""
    with pytest.raises(ConfigError, match='quote IVR keys like "\\*"'):
        load_yaml("options:\n  *: ivr:main\n", "t.yaml")


@pytest.mark.parametrize("text", [
    "a: !!python/object/apply:os.system ['true']",
    "a: !!int abc",
    "a: !!bool maybe",
    "---\na: 1\n---\nb: 2\n",
    "a: \x07",
    "[" * 5000,
])
def test_unsafe_or_impossible_yaml_is_a_problem_not_an_exception(text):
    """Only ConfigError leaves load_yaml: no objects, no stray ValueError."""
    with pytest.raises(ConfigError):
        load_yaml(text, "t.yaml")


def test_impossible_dates_stay_text_for_the_validator():
    """2026-02-30 looks like a YAML date but is none; it is kept as text."""
    assert load_yaml("d: 2026-02-30\n", "t.yaml") == {"d": "2026-02-30"}


# --------------------------------------------------------------------------
# The example


def test_the_example_uses_every_feature_and_is_valid():
    """examples/acme.yaml is a complete, valid company."""
    config = load_config([str(EXAMPLE)])
    (acme,) = config.companies
    assert config.source == str(EXAMPLE)
    assert (acme.id, acme.country, acme.timezone) == ("acme", "GB", "Europe/London")
    assert len(acme.employees) == 8
    assert {e.role for e in acme.employees} == {"admin", "receptionist", "user"}
    assert sorted(d.strategy for d in acme.departments) == [
        "cumulative", "sequential", "simultaneous"]
    chain = {e.extension: e.diverts.always for e in acme.employees}
    assert chain["2003"] == Destination("employee", "2004")
    assert {n.mode for n in acme.numbers} == {"always", "schedule"}
    assert any(n.open.greeting for n in acme.numbers)
    assert [m.key for m in acme.ivr_menus] == ["main", "more"]
    office = acme.schedules[0]
    assert office.hours[0] == ((540, 750), (810, 1050))
    assert dt.date(2027, 12, 28) in office.holidays


def test_clear_sip_passwords_are_kept_nowhere_in_the_model():
    """The model holds md5('ext:domain:password'), never the password itself."""
    config = load_config([str(EXAMPLE)])
    assert "correct horse battery staple" not in repr(config)
    olivia = config.companies[0].employees[0]
    expected = hashlib.md5(b"2001:sip.acme.example:correct horse battery staple").hexdigest()
    assert olivia.a1_hash == expected


def test_model_values_are_plain_python_types():
    """No YAML subclasses leak into the model: ints are int, extensions are str."""
    acme = load_config([str(EXAMPLE)]).companies[0]
    dept = acme.departments[0]
    assert type(dept.timeout) is int and type(dept.extension) is str
    assert all(type(m) is str for m in dept.members)
    assert type(acme.employees[0].extension) is str
    assert type(acme.employees[3].mobile_after) is int


# --------------------------------------------------------------------------
# Documents and files


def test_a_single_company_document_uses_paths_from_the_root():
    """Without `companies:` the paths start at the document root."""
    found = problem("""\
        numbers:
          - {number: +44 20 7946 0000, route: employee:2099}
        """)
    assert found.path == "numbers[0].route"
    assert found.line == 11 and found.source == "t.yaml"


def test_a_companies_list_uses_companies_index_paths():
    """Under `companies:` each path starts with companies[i]."""
    text = ("companies:\n"
            "  - {id: a, name: A, country: GB, timezone: Europe/London}\n"
            "  - {id: b, name: B, country: GB, timezone: Mars/Olympus}\n")
    with pytest.raises(ConfigError) as caught:
        validate([(load_yaml(text, "c.yaml"), "c.yaml")])
    (found,) = caught.value.problems
    assert (found.path, found.line) == ("companies[1].timezone", 3)
    assert str(found).startswith("c.yaml:3: companies[1].timezone: unknown time zone")


def test_several_files_form_one_config(tmp_path):
    """Companies from all files end up in one Config, in file order."""
    (tmp_path / "a.yaml").write_text(COMPANY)
    (tmp_path / "b.yaml").write_text(COMPANY.replace("acme", "globex"))
    config = load_config([str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")])
    assert [c.id for c in config.companies] == ["acme", "globex"]
    assert isinstance(config, Config)


def test_extensions_are_unique_across_all_companies_and_files(tmp_path):
    """An extension used in another file is a problem that names where it was first used."""
    (tmp_path / "a.yaml").write_text(COMPANY + STAFF)
    (tmp_path / "b.yaml").write_text(COMPANY.replace("acme", "globex")
                                     + "employees:\n  - {extension: 600, name: Eve}\n")
    with pytest.raises(ConfigError) as caught:
        load_config([str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")])
    (found,) = caught.value.problems
    assert found.path == "employees[0].extension" and found.line == 6
    assert "extension 600 is already used by departments[0].extension (line 9)" in found.message
    assert "a.yaml" in found.message


def test_employee_and_department_extensions_share_one_namespace():
    """A department cannot reuse an employee's extension."""
    found = _department_problem("{extension: 2001, name: Dup, members: [2002]}")
    assert (found.path, found.line) == ("departments[1].extension", 10)
    assert found.message.startswith(
        "extension 2001 is already used by employees[0].extension (line 6)")


def test_numbers_and_company_ids_are_unique_across_companies():
    """The same DID or company id twice is a problem at the second one."""
    number = "numbers:\n  - {number: 020 7946 0000, route: hangup}\n"
    docs = [(load_yaml(COMPANY + number, "a.yaml"), "a.yaml"),
            (load_yaml(COMPANY + number.replace("020 7946 0000", "+442079460000"), "b.yaml"),
             "b.yaml")]
    with pytest.raises(ConfigError) as caught:
        validate(docs)
    messages = [(p.source, p.path, p.message) for p in caught.value.problems]
    assert messages[0][:2] == ("b.yaml", "id")
    assert "company id acme is already used" in messages[0][2]
    assert messages[1][:2] == ("b.yaml", "numbers[0].number")
    assert "number +442079460000 is already used" in messages[1][2]


@pytest.mark.parametrize("text, message", [
    ("", "got an empty file"),
    ("- a\n- b\n", "got a list"),
    ("companies: []\n", "at least one company"),
    ("companies:\n", "at least one company"),
    ("companies: acme\n", "expected a list of companies"),
    ("companies: [5]\n", "expected a company (a mapping), got the number 5"),
])
def test_documents_that_are_not_companies_are_problems(text, message):
    """A document is one company mapping or `companies:` with a list of them."""
    with pytest.raises(ConfigError) as caught:
        validate([(load_yaml(text, "t.yaml"), "t.yaml")])
    assert message in str(caught.value)


def test_no_documents_at_all_is_a_problem():
    """An empty config cannot route anything."""
    with pytest.raises(ConfigError, match="no config files given"):
        validate([])


def test_unreadable_files_are_problems_alongside_other_files_problems(tmp_path):
    """A missing file, a non-UTF-8 file, a YAML error and a bad value are reported together."""
    (tmp_path / "bad.yaml").write_text("id: [\n")
    (tmp_path / "latin1.yaml").write_bytes(b"id: acme\nname: Caf\xe9\n")
    (tmp_path / "tz.yaml").write_text(COMPANY.replace("Europe/London", "Europe/Londn"))
    paths = [str(tmp_path / name) for name in
             ("missing.yaml", "bad.yaml", "latin1.yaml", "tz.yaml")]
    with pytest.raises(ConfigError) as caught:
        load_config(paths)
    found = caught.value.problems
    assert [p.source for p in found] == paths
    assert "No such file" in found[0].message
    assert "invalid YAML" in found[1].message
    assert found[2].message == "the file is not UTF-8 text" and found[2].line == 2
    assert found[3].path == "timezone" and found[3].line == 4


def test_load_config_reads_plain_files(tmp_path):
    """load_config gives the same model as validate on the loaded text."""
    path = tmp_path / "acme.yaml"
    path.write_text(COMPANY + STAFF)
    assert load_config([str(path)]).companies == validate(
        [(load_yaml(COMPANY + STAFF, str(path)), str(path))]).companies


# --------------------------------------------------------------------------
# Company


def test_missing_company_keys_are_reported_together_at_the_mapping_line():
    """id, name, country and timezone are required; all missing ones are reported."""
    with pytest.raises(ConfigError) as caught:
        validate([(load_yaml("companies:\n  - sip_domain: x.example\n", "t.yaml"), "t.yaml")])
    found = caught.value.problems
    assert [p.message for p in found] == [
        f"required key '{key}' is missing" for key in ("id", "name", "country", "timezone")]
    assert {(p.path, p.line) for p in found} == {("companies[0]", 2)}


def test_company_defaults():
    """sip_domain defaults to <id>.switchboard.local; timers to 20 s and 60 s."""
    acme = company(staff=False)
    assert acme.sip_domain == "acme.switchboard.local"
    assert (acme.no_answer_seconds, acme.ring_timeout) == (20, 60)
    assert acme.city_code is None and acme.outbound_caller_id is None
    assert acme.employees == acme.departments == acme.numbers == ()


def test_company_settings_are_normalised():
    """country is upper-cased, numbers become E.164 digits, city codes stay as written."""
    acme = validate([(load_yaml(
        "id: acme\nname: Acme\ncountry: gb\ntimezone: Europe/London\n"
        "sip_domain: PBX.Acme.Example\ncity_code: 020\noutbound_caller_id: 020 7946 0000\n"
        "defaults: {no_answer_seconds: 15, ring_timeout: 45}\n", "t.yaml"), "t.yaml")]
    ).companies[0]
    assert acme.country == "GB"
    assert acme.sip_domain == "pbx.acme.example"
    assert acme.city_code == "020"
    assert acme.outbound_caller_id == "442079460000"
    assert (acme.no_answer_seconds, acme.ring_timeout) == (15, 45)


@pytest.mark.parametrize("key, value, message", [
    ("id", "Acme Ltd", "lowercase letters, digits"),
    ("name", "''", "expected text"),
    ("country", "XX", "two-letter ISO country code"),
    ("country", "UK", "two-letter ISO country code"),
    ("country", "NO", "unquoted NO (Norway) as false"),
    ("timezone", "Europe/Londn", "unknown time zone 'Europe/Londn'"),
    ("timezone", "42", "expected an IANA time zone"),
    ("sip_domain", "'acme example'", "expected a domain name"),
    ("city_code", "2a", "1 to 6 digits"),
    ("outbound_caller_id", "12", "not a valid phone number"),
    ("defaults", "{no_answer_seconds: 4}", "from 5 to 300"),
    ("defaults", "{ring_timeout: 601}", "from 5 to 600"),
    ("defaults", "{ring_timeout: '60'}", "remove the quotes"),
    ("defaults", "{ring_timout: 60}", "unknown key 'ring_timout'; did you mean 'ring_timeout'?"),
    ("defaults", "60", "expected defaults (a mapping), got the number 60"),
])
def test_bad_company_settings(key, value, message):
    """Each company setting is checked and the problem names the key."""
    text = "\n".join(line for line in COMPANY.splitlines() if not line.startswith(key + ":"))
    with pytest.raises(ConfigError) as caught:
        validate([(load_yaml(f"{text}\n{key}: {value}\n", "t.yaml"), "t.yaml")])
    (found,) = caught.value.problems
    assert message in found.message
    assert found.path.split(".")[0] == key and found.line == len(text.splitlines()) + 1


# --------------------------------------------------------------------------
# Employees


def test_employee_fields_and_defaults():
    """Int extensions become text as written; role defaults to user; diverts to none."""
    acme = company("""\
        employees:
          - extension: 0123
            name: Ann
            email: ann@acme.example
            mobile: 07400 123456
            mobile_after: 10
          - {extension: "2002", name: Bob, role: receptionist}
        """, staff=False)
    ann, bob = acme.employees
    assert (ann.extension, ann.role, ann.company) == ("0123", "user", "acme")
    assert (ann.email, ann.mobile, ann.mobile_after) == ("ann@acme.example", "447400123456", 10)
    assert ann.a1_hash is None
    assert (bob.extension, bob.role, bob.email, bob.mobile) == ("2002", "receptionist", None, None)
    assert bob.diverts.always is bob.diverts.busy is bob.diverts.no_answer is None
    assert bob.diverts.no_answer_after == 20


def test_sip_password_becomes_the_a1_hash():
    """md5 of 'extension:sip_domain:password'; digits-only passwords are read as written."""
    acme = company("""\
        sip_domain: pbx.acme.example
        employees:
          - {extension: 2001, name: Ann, sip_password: s3cret-pass}
          - {extension: 2002, name: Bob, sip_password: 01234567}
          - {extension: 2003, name: Cy, sip_a1_hash: 0123456789abcdef0123456789abcdef}
        """, staff=False)
    hashes = [hashlib.md5(a1.encode()).hexdigest() for a1 in (
        "2001:pbx.acme.example:s3cret-pass", "2002:pbx.acme.example:01234567")]
    assert [e.a1_hash for e in acme.employees] == hashes + ["0123456789abcdef0123456789abcdef"]


@pytest.mark.parametrize("fields, path, message", [
    ("{name: Ann}", "employees[0]", "required key 'extension' is missing"),
    ("{extension: 2001}", "employees[0]", "required key 'name' is missing"),
    ("{extension: 1, name: Ann}", "employees[0].extension", "2 to 6 digits, got the number 1"),
    ("{extension: 1234567, name: Ann}", "employees[0].extension", "2 to 6 digits"),
    ("{extension: 20a1, name: Ann}", "employees[0].extension", "2 to 6 digits, got '20a1'"),
    ("{extension: 2001, name: Ann, role: boss}", "employees[0].role",
     "expected one of admin, receptionist, user; got 'boss'"),
    ("{extension: 2001, name: Ann, email: ann}", "employees[0].email", "e-mail address"),
    ("{extension: 2001, name: Ann, email: a@b@c}", "employees[0].email", "e-mail address"),
    ("{extension: 2001, name: Ann, mobile: 07700 900123}", "employees[0].mobile",
     "not a valid phone number for GB"),
    ("{extension: 2001, name: Ann, sip_password: short}", "employees[0].sip_password",
     "at least 8 characters"),
    ("{extension: 2001, name: Ann, sip_a1_hash: 0123456789ABCDEF0123456789ABCDEF}",
     "employees[0].sip_a1_hash", "32 lowercase hex digits"),
    ("{extension: 2001, name: Ann, sip_password: long-enough,"
     " sip_a1_hash: 0123456789abcdef0123456789abcdef}",
     "employees[0].sip_a1_hash", "either sip_password or sip_a1_hash, not both"),
    ("{extension: 2001, name: Ann, mobile_after: 10}", "employees[0].mobile_after",
     "needs a mobile number"),
    ("{extension: 2001, name: Ann, mobile: 07400 123456, mobile_after: 4}",
     "employees[0].mobile_after", "from 5 to 300"),
    ("{extension: 2001, name: Ann, mobile: 07400 123456, mobile_after: ten}",
     "employees[0].mobile_after", "got 'ten'"),
    ("{extension: 2001, name: Ann, membres: []}", "employees[0].membres", "unknown key"),
    ("2001", "employees[0]", "expected an employee (a mapping), got the number 2001"),
])
def test_bad_employee_fields(fields, path, message):
    """Each employee field is checked; the problem names the field's path."""
    found = problem(f"employees:\n  - {fields}\n", staff=False)
    assert (found.path, found.line) == (path, 6)
    assert message in found.message


# --------------------------------------------------------------------------
# Diverts


def divert_company(spec: str):
    """Ann (2001) with ``diverts: {spec}``, Bob (2002) and Sales (600)."""
    return COMPANY + textwrap.dedent(f"""\
        employees:
          - {{extension: 2001, name: Ann, diverts: {spec}}}
          - {{extension: 2002, name: Bob}}
        departments:
          - {{extension: 600, name: Sales, members: [2002]}}
        """)


def read_diverts(spec: str):
    """Ann's diverts."""
    return validate([(load_yaml(divert_company(spec), "t.yaml"), "t.yaml")]
                    ).companies[0].employees[0].diverts


def divert_problems(spec: str) -> list[Problem]:
    """The problems of Ann's diverts."""
    with pytest.raises(ConfigError) as caught:
        validate([(load_yaml(divert_company(spec), "t.yaml"), "t.yaml")])
    return caught.value.problems


@pytest.mark.parametrize("value, expected", [
    ("off", None),
    ("'off'", None),
    ("false", None),
    ("no", None),
    ("null", None),
    ("voicemail", Destination("voicemail", "2001")),
    ("extension:2002", Destination("employee", "2002")),
    ("extension:600", Destination("department", "600")),
    ("'extension: 2002'", Destination("employee", "2002")),
    ("'external:+44 20 7946 0123'", Destination("external", "442079460123")),
    ("'external:020 7946 0123'", Destination("external", "442079460123")),
])
def test_divert_values(value, expected):
    """off (or YAML false/null), voicemail (own box), extension:NNNN, external:NUMBER."""
    assert read_diverts(f"{{busy: {value}}}").busy == expected


def test_no_answer_divert_timer():
    """no_answer may be {to:, after:}; without after the company default applies."""
    timed = read_diverts("{no_answer: {to: voicemail, after: 35}}")
    assert (timed.no_answer, timed.no_answer_after) == (Destination("voicemail", "2001"), 35)
    plain = read_diverts("{no_answer: extension:2002}")
    assert (plain.no_answer, plain.no_answer_after) == (Destination("employee", "2002"), 20)


def test_divert_loops_are_left_to_the_engine():
    """A always-> B always-> A is valid config: the engine detects loops at call time."""
    acme = company("""\
        employees:
          - {extension: 2001, name: Ann, diverts: {always: extension:2002}}
          - {extension: 2002, name: Bob, diverts: {always: extension:2001}}
        """, staff=False)
    assert acme.employees[1].diverts.always == Destination("employee", "2001")


@pytest.mark.parametrize("spec, path, message", [
    ("{always: extension:2001}", "always", "divert to itself"),
    ("{always: extension:2099}", "always",
     "unknown extension '2099' (no employee or department has it); "
     "employees and departments: 2001, 2002, 600"),
    ("{busy: ivr:main}", "busy", "expected off, voicemail, extension:NNNN or external:NUMBER"),
    ("{busy: yes}", "busy", "got true (YAML reads unquoted yes/no/on/off as true/false"),
    ("{busy: 'external:12'}", "busy", "not a valid phone number"),
    ("{sometimes: off}", "sometimes", "expected one of: always, busy, no_answer, unreachable"),
    ("{busy: {to: voicemail}}", "busy", "expected off, voicemail"),
    ("{no_answer: {to: voicemail, after: 301}}", "no_answer.after", "from 5 to 300"),
    ("{no_answer: {after: 30}}", "no_answer", "required key 'to' is missing"),
    ("{no_answer: {to: voicemail, later: 3}}", "no_answer.later", "unknown key 'later'"),
])
def test_bad_diverts(spec, path, message):
    """Every divert problem points at the condition that has it."""
    (found,) = divert_problems(spec)
    assert found.path == "employees[0].diverts." + path and found.line == 6
    assert message in found.message


def test_diverts_must_be_a_mapping():
    """`diverts: voicemail` is not a mapping of conditions."""
    (found,) = divert_problems("voicemail")
    assert (found.path, found.message) == (
        "employees[0].diverts", "expected diverts (a mapping), got 'voicemail'")


# --------------------------------------------------------------------------
# Departments


def test_department_fields_and_defaults():
    """Members keep their order; strategy, step and timeout have defaults."""
    acme = company("""\
        defaults: {ring_timeout: 40}
        employees:
          - {extension: 2001, name: Ann}
          - {extension: 2002, name: Bob}
        departments:
          - {extension: 600, name: Sales, members: [2002, 2001]}
          - extension: 601
            name: Support
            members: ["2001"]
            strategy: sequential
            step_seconds: 10
            timeout: 90
            no_answer: voicemail:601
        """, staff=False)
    sales, support = acme.departments
    assert (sales.members, sales.strategy, sales.step_seconds, sales.timeout) == (
        ("2002", "2001"), "simultaneous", 15, 40)
    assert sales.no_answer is None
    assert (support.strategy, support.step_seconds, support.timeout) == ("sequential", 10, 90)
    assert support.no_answer == Destination("voicemail", "601")


@pytest.mark.parametrize("department, path, message", [
    ("{extension: 601, name: S, members: [2099]}", "members[0]",
     "unknown extension '2099' (no employee has it); employees: 2001, 2002"),
    ("{extension: 601, name: S, members: [600]}", "members[0]",
     "600 is a department, not an employee"),
    ("{extension: 601, name: S, members: [2001, 2001]}", "members[1]",
     "2001 is already a member (departments[1].members[0])"),
    ("{extension: 601, name: S, members: []}", "members", "at least one member"),
    ("{extension: 601, name: S, members: 2001}", "members", "expected a list"),
    ("{extension: 601, name: S}", "", "required key 'members' is missing"),
    ("{extension: 601, name: S, members: [2001], stratgy: random}", "stratgy",
     "unknown key 'stratgy'; did you mean 'strategy'?"),
    ("{extension: 601, name: S, members: [2001], strategy: random}", "strategy",
     "expected one of simultaneous, sequential, cumulative"),
    ("{extension: 601, name: S, members: [2001], step_seconds: 0}", "step_seconds",
     "from 1 to 300"),
    ("{extension: 601, name: S, members: [2001], timeout: 4}", "timeout", "from 5 to 600"),
    ("{extension: 601, name: S, members: [2001], no_answer: employee:600}", "no_answer",
     "600 is a department, not an employee"),
])
def test_bad_departments(department, path, message):
    """Members must be existing employees of the company, once each."""
    found = _department_problem(department)
    assert found.path == "departments[1]" + ("." + path if path and path[0] != "[" else path)
    assert message in found.message


def test_a_misspelt_key_is_unknown_and_the_required_one_missing():
    """`membres:` is reported as unknown (with a suggestion) and `members` as missing."""
    unknown, missing = _department_problems("{extension: 601, name: S, membres: [2001]}")
    assert unknown.path == "departments[1].membres"
    assert unknown.message.startswith("unknown key 'membres'; did you mean 'members'?")
    assert (missing.path, missing.line) == ("departments[1]", 10)
    assert missing.message.startswith("required key 'members' is missing")


def _department_problems(department: str) -> list[Problem]:
    """Problems of STAFF plus a second department on line 10."""
    with pytest.raises(ConfigError) as caught:
        validate([(load_yaml(COMPANY + STAFF + f"  - {department}\n", "t.yaml"), "t.yaml")])
    return caught.value.problems


def _department_problem(department: str) -> Problem:
    (found,) = _department_problems(department)
    assert found.line == 10
    return found


def test_members_must_be_of_the_same_company():
    """An employee of another company cannot be a member."""
    other = ("id: globex\nname: Globex\ncountry: US\ntimezone: America/New_York\n"
             "employees: [{extension: 3001, name: Gus}]\n")
    docs = [(load_yaml(other, "g.yaml"), "g.yaml"),
            (load_yaml(COMPANY + STAFF.replace("[2001, 2002]", "[2001, 3001]"), "t.yaml"),
             "t.yaml")]
    with pytest.raises(ConfigError, match="unknown extension '3001' \\(no employee has it\\)"):
        validate(docs)


# --------------------------------------------------------------------------
# Destinations


def route(target: str) -> Destination:
    """Where `route: <target>` sends a number of a company with menus and staff."""
    acme = company(f"""\
        ivr:
          main: {{greeting: m.wav, options: {{1: hangup}}, on_timeout: hangup}}
        numbers:
          - number: 020 7946 0000
            route: {target}
        """)
    return acme.numbers[0].open


@pytest.mark.parametrize("target, expected", [
    ("employee:2001", Destination("employee", "2001")),
    ("department:600", Destination("department", "600")),
    ("extension:2002", Destination("employee", "2002")),
    ("extension:600", Destination("department", "600")),
    ("ivr:main", Destination("ivr", "main")),
    ("voicemail:2001", Destination("voicemail", "2001")),
    ("voicemail:600", Destination("voicemail", "600")),
    ("'external:+1 202 555 0123'", Destination("external", "12025550123")),
    ("'external:020 7946 0999'", Destination("external", "442079460999")),
    ("fax:2002", Destination("fax", "2002")),
    ("hangup", Destination("hangup", "NORMAL_CLEARING")),
    ("hangup:USER_BUSY", Destination("hangup", "USER_BUSY")),
    ("{to: ivr:main, greeting: welcome.wav}", Destination("ivr", "main", "welcome.wav")),
])
def test_destinations_resolve_to_model_kinds(target, expected):
    """KIND:REF resolves; extension: becomes employee or department."""
    assert route(target) == expected


@pytest.mark.parametrize("target, message", [
    ("employee:600", "600 is a department, not an employee"),
    ("department:2001", "2001 is an employee, not a department"),
    ("fax:600", "600 is a department, not an employee"),
    ("extension:2099", "unknown extension '2099' (no employee or department has it)"),
    ("voicemail:2099", "unknown extension '2099'"),
    ("employee:2099", "(no employee has it); employees: 2001, 2002"),
    ("ivr:mian", "unknown IVR menu 'mian'; menus: main"),
    ("hangup:BUSY", "unknown hangup cause 'BUSY'; expected one of NORMAL_CLEARING"),
    ("voicemail", "does not say which voicemail"),
    ("phone:2001", "unknown destination 'phone:2001'"),
    ("'external:+44 7700 900123'", "not a valid phone number for GB"),
    ("2001", "expected a destination like 'employee:2001'"),
    ("{greeting: hi.wav}", "required key 'to' is missing"),
    ("{to: ivr:main, greeting: ''}", "expected text"),
    ('{to: ivr:main, greeting: "a\\tb.wav"}', "control characters"),
    ("{to: ivr:main, music: x.wav}", "unknown key 'music'; expected one of: to, greeting"),
])
def test_bad_destinations_say_what_exists(target, message):
    """Dangling references, wrong kinds and bad syntax are problems naming what exists."""
    found = problems(f"""\
        ivr:
          main: {{greeting: m.wav, options: {{1: hangup}}, on_timeout: hangup}}
        numbers:
          - number: 020 7946 0000
            route: {target}
        """)
    assert len(found) == 1 and message in found[0].message, found
    assert found[0].path.startswith("numbers[0].route") and found[0].line == 14


# --------------------------------------------------------------------------
# Schedules


def schedule(body: str):
    """The schedule 'office' with ``body`` under it."""
    acme = company("schedules:\n  office:\n" + textwrap.indent(textwrap.dedent(body), "    "))
    return acme.schedules[0]


def test_opening_hours_become_sorted_minutes():
    """'HH:MM-HH:MM' in minutes, sorted per day; missing days are closed; end may be 24:00."""
    office = schedule("""\
        hours:
          mon: [13:30-17:30, 09:00-12:30]
          tue: 09:00-17:00
          wed: off
          thu: []
          sat: [' 22:00 - 24:00 ']
        """)
    assert office.key == "office"
    assert office.hours == (((540, 750), (810, 1050)), ((540, 1020),), (), (), (),
                            ((1320, 1440),), ())
    assert office.holidays == ()


def test_holidays_accept_dates_strings_and_ranges():
    """Dates (YAML or quoted) and inclusive ranges, expanded, sorted and de-duplicated."""
    office = schedule("""\
        hours: {mon: [09:00-17:00]}
        holidays:
          - 2026-12-31
          - "2026-12-24..2026-12-26"
          - 2026-12-25
          - '2026-01-01'
          - 2026-02-01..2026-02-01
        """)
    assert office.holidays == tuple(dt.date.fromisoformat(d) for d in (
        "2026-01-01", "2026-02-01", "2026-12-24", "2026-12-25", "2026-12-26", "2026-12-31"))


@pytest.mark.parametrize("body, path, message", [
    ("hours: {mon: [09:00-13:00, 12:00-17:00]}", "hours.mon[1]",
     "12:00-17:00 overlaps 09:00-13:00"),
    ("hours: {mon: [17:00-09:00]}", "hours.mon[0]", "does not end after it starts"),
    ("hours: {mon: [09:00-09:00]}", "hours.mon[0]", "does not end after it starts"),
    ("hours: {mon: [09:00-24:30]}", "hours.mon[0]", "not between 00:00 and 24:00"),
    ("hours: {mon: [9-17]}", "hours.mon[0]", "expected opening hours like '09:00-17:30'"),
    ("hours: {mon: 17:30}", "hours.mon",
     "got 17:30 (which YAML reads as the number 1050; quote it)"),
    ("hours: {mon: {from: 9}}", "hours.mon", "expected a list of opening hours"),
    ("hours: {monday: [09:00-17:00]}", "hours.monday",
     "unknown key 'monday'; did you mean 'mon'?"),
    ("holidays: [2026-12-25]", "", "required key 'hours' is missing"),
    ("hours: {}\nholidays: [2026-12-26..2026-12-24]", "holidays[0]", "ends before it starts"),
    ("hours: {}\nholidays: [2026-02-30]", "holidays[0]",
     "'2026-02-30' is not a day of the calendar"),
    ("hours: {}\nholidays: [christmas]", "holidays[0]",
     "expected a date like 2026-12-25, got 'christmas'"),
    ("hours: {}\nholidays: [2026-12-25 10:00:00]", "holidays[0]", "got the date and time"),
    ("hours: {}\nholidays: [2026-01-01..2027-06-01]", "holidays[0]", "longer than a year"),
    ("hours: {}\nholidays: 2026-12-25", "holidays", "expected a list of dates"),
])
def test_bad_schedules(body, path, message):
    """Times, overlaps and holidays are checked, each at its own line."""
    found = problem("schedules:\n  office:\n" + textwrap.indent(body, "    ") + "\n")
    assert found.path == "schedules.office" + ("." + path if path else "")
    assert message in found.message
    assert found.line == (13 if path.startswith("holidays") and "\n" in body else 12)


def test_schedule_names_are_identifiers():
    """Schedules are referred to by name, so names follow the id rules."""
    assert "lowercase letters" in problem("schedules:\n  Office Hours: {hours: {}}\n").message


# --------------------------------------------------------------------------
# Numbers


def test_number_modes():
    """mode defaults to schedule when a schedule is named, otherwise always."""
    acme = company("""\
        schedules:
          office: {hours: {mon: [09:00-17:00]}}
        numbers:
          - {number: +44 20 7946 0000, schedule: office, open: employee:2001,
             closed: voicemail:600}
          - {number: 020 7946 0001, route: department:600}
          - {number: 442079460002, mode: always, route: hangup}
        """)
    scheduled, always, explicit = acme.numbers
    assert (scheduled.number, scheduled.mode, scheduled.schedule) == (
        "442079460000", "schedule", "office")
    assert (scheduled.open, scheduled.closed) == (
        Destination("employee", "2001"), Destination("voicemail", "600"))
    assert (always.number, always.mode, always.open, always.closed, always.schedule) == (
        "442079460001", "always", Destination("department", "600"), None, None)
    assert (explicit.number, explicit.open) == (
        "442079460002", Destination("hangup", "NORMAL_CLEARING"))


@pytest.mark.parametrize("number, messages", [
    ("{route: hangup}", ["required key 'number' is missing"]),
    ("{number: 12, route: hangup}", ["'12' is not a valid phone number"]),
    ("{number: 020 7946 0000}", ["required key 'route' is missing with mode always"]),
    ("{number: 020 7946 0000, mode: schedule, route: hangup}", [
        "'route' is not used with mode schedule, which takes schedule, open, closed",
        "required key 'schedule' is missing with mode schedule",
        "required key 'open' is missing with mode schedule",
        "required key 'closed' is missing with mode schedule"]),
    ("{number: 020 7946 0000, mode: always, schedule: office, route: hangup}", [
        "'schedule' is not used with mode always, which takes route"]),
    ("{number: 020 7946 0000, schedule: offfice, open: hangup, closed: hangup}", [
        "unknown schedule 'offfice'; schedules: office"]),
    ("{number: 020 7946 0000, mode: sometimes, route: hangup}", [
        "expected one of always, schedule; got 'sometimes'"]),
])
def test_bad_numbers(number, messages):
    """Each mode needs its own keys and no others."""
    found = problems(f"""\
        schedules:
          office: {{hours: {{}}}}
        numbers:
          - {number}
        """)
    assert len(found) == len(messages), found
    assert all(expected in p.message for expected, p in zip(messages, found)), found


# --------------------------------------------------------------------------
# IVR menus


def test_ivr_menu_fields_and_defaults():
    """Digit keys become text in YAML order; on_invalid defaults to on_timeout."""
    acme = company("""\
        ivr:
          main:
            greeting: main.wav
            options:
              1: department:600
              "*": ivr:main
              0: extension:2001
              "#": ivr:sub
            on_timeout: employee:2001
          sub:
            greeting: sub.wav
            timeout: 10
            retries: 1
            options: {9: ivr:main}
            on_timeout: ivr:main
            on_invalid: hangup:CALL_REJECTED
        """)
    main, sub = acme.ivr_menus
    assert [digit for digit, _ in main.options] == ["1", "*", "0", "#"]
    assert main.options[2] == ("0", Destination("employee", "2001"))
    assert (main.timeout, main.retries, main.greeting) == (5, 3, "main.wav")
    assert main.on_invalid == main.on_timeout == Destination("employee", "2001")
    assert (sub.timeout, sub.retries, sub.company) == (10, 1, "acme")
    assert sub.on_invalid == Destination("hangup", "CALL_REJECTED")


@pytest.mark.parametrize("menu, path, message", [
    ("{options: {1: hangup}, on_timeout: hangup}", "", "required key 'greeting' is missing"),
    ("{greeting: m.wav, options: {1: hangup}}", "", "required key 'on_timeout' is missing"),
    ("{greeting: m.wav, on_timeout: hangup}", "", "required key 'options' is missing"),
    ("{greeting: m.wav, options: {}, on_timeout: hangup}", ".options", "at least one option"),
    ("{greeting: m.wav, options: {10: hangup}, on_timeout: hangup}", ".options.10",
     "a single key 0-9, '*' or '#'"),
    ("{greeting: m.wav, options: {a: hangup}, on_timeout: hangup}", ".options.a",
     "a single key 0-9"),
    ("{greeting: m.wav, options: {1: hangup, '1': hangup}, on_timeout: hangup}",
     ".options.1", "option 1 is given twice"),
    ("{greeting: m.wav, options: {1: ivr:other}, on_timeout: hangup}", ".options.1",
     "unknown IVR menu 'other'; menus: main"),
    ("{greeting: m.wav, options: {1: hangup}, on_timeout: hangup, timeout: 61}",
     ".timeout", "from 1 to 60"),
    ("{greeting: m.wav, options: {1: hangup}, on_timeout: hangup, retries: 0}",
     ".retries", "whole number of times from 1 to 10"),
    ("{greeting: m.wav, options: {1: hangup}, on_timeout: hangup, on_invalid: ivr}",
     ".on_invalid", "does not say which ivr"),
    ("[1, 2]", "", "expected an IVR menu (a mapping), got a list"),
])
def test_bad_ivr_menus(menu, path, message):
    """Menus need a greeting, at least one valid option and on_timeout."""
    found = problem(f"ivr:\n  main: {menu}\n")
    assert (found.path, found.line) == ("ivr.main" + path, 11)
    assert message in found.message


# --------------------------------------------------------------------------
# Everything at once


def test_every_problem_is_reported_at_once_with_its_line():
    """Problems from all sections come together, in document order, each with its line."""
    found = problems("""\
        defaults: {no_answer_seconds: 1}
        numbers:
          - {number: 020 7946 0000, route: employee:2099}
          - {number: 020 7946 0000, route: ivr:none}
        ivr:
          main: {greeting: m.wav, options: {1: hangup:LATER}, on_timeout: hangup}
        """)
    assert [(p.line, p.path) for p in found] == [
        (10, "defaults.no_answer_seconds"),
        (12, "numbers[0].route"),
        (13, "numbers[1].number"),
        (13, "numbers[1].route"),
        (15, "ivr.main.options.1"),
    ]
    assert str(found[0]) == ("t.yaml:10: defaults.no_answer_seconds: expected a whole "
                             "number of seconds from 5 to 300, got the number 1")


def test_duplicate_yaml_keys_are_problems():
    """YAML silently keeps the last of two equal keys; the validator says so."""
    found = problem("""\
        schedules:
          office:
            hours:
              mon: [09:00-12:00]
              mon: [13:00-17:00]
        """)
    assert (found.path, found.line) == ("schedules.office.hours.mon", 14)
    assert "given twice" in found.message


def test_plain_dicts_without_line_numbers_are_accepted():
    """validate() also takes yaml.safe_load output; problems then have no line."""
    doc = yaml.safe_load(COMPANY + STAFF + "numbers: [{number: 1, route: hangup}]\n")
    with pytest.raises(ConfigError) as caught:
        validate([(doc, "plain.yaml")])
    (found,) = caught.value.problems
    assert (found.path, found.line, found.source) == ("numbers[0].number", None, "plain.yaml")


def test_company_parts_keep_yaml_order():
    """Employees, departments, schedules, numbers and menus stay in the order written."""
    acme = load_config([str(EXAMPLE)]).companies[0]
    assert [e.extension for e in acme.employees] == [f"200{i}" for i in range(1, 9)]
    assert [d.extension for d in acme.departments] == ["600", "601", "602"]
    assert [n.number[-4:] for n in acme.numbers] == ["0000", "0100", "0200", "0300"]


# --------------------------------------------------------------------------
# Garbage in, ConfigError out

KEYS = ["companies", "id", "name", "country", "timezone", "employees", "departments",
        "extension", "members", "diverts", "always", "no_answer", "numbers", "number",
        "route", "schedule", "schedules", "hours", "mon", "holidays", "ivr", "options",
        "on_timeout", "greeting", "to", "after", "defaults"]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10 ** 12), st.floats(), st.dates(),
    st.text(max_size=12),
    st.sampled_from(["2001", "600", "GB", "Europe/London", "employee:2001", "ivr:main",
                     "extension:600", "voicemail", "off", "09:00-17:00", "hangup",
                     "+44 20 7946 0000", "2026-12-24..2026-12-26", "acme"]))
GARBAGE = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6),
                                  st.integers(0, 12)), inner, max_size=5)),
    max_leaves=25)


@settings(max_examples=300, deadline=None)
@given(GARBAGE)
def test_garbage_documents_raise_only_config_error(document):
    """Whatever the document, validate returns a Config or raises ConfigError."""
    try:
        assert isinstance(validate([(document, "fuzz.yaml")]), Config)
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, Problem) for p in exc.problems)


def _paths(value, path=()):
    """Every key path inside a plain YAML document."""
    yield path
    children = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, list) else ())
    for key, child in children:
        yield from _paths(child, path + (key,))


ACME = yaml.safe_load(EXAMPLE.read_text())
ACME_PATHS = list(_paths(ACME))[1:]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(ACME_PATHS), GARBAGE)
def test_damaging_the_example_anywhere_raises_only_config_error(path, value):
    """Replacing any part of a valid config with garbage never crashes the validator."""
    document = copy.deepcopy(ACME)
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    try:
        validate([(document, "acme.yaml")])
    except ConfigError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("abc:-[]{}#*&!|>'\"\n 0129.")), max_size=60))
def test_garbage_yaml_text_raises_only_config_error(text):
    """Random text either loads and validates, or raises ConfigError."""
    try:
        validate([(load_yaml(text, "fuzz.yaml"), "fuzz.yaml")])
    except ConfigError:
        pass


def test_a_number_may_not_spell_an_extension():
    """Iran's voicemail access number +98 9601 is six digits, like an extension 989601 could be:
    a dialled string must name one thing, whichever table the engines look at first."""
    staff = "employees:\n  - {extension: 989601, name: Ann}\n"
    number = "numbers:\n  - {number: '+989601', route: 'employee:989601'}\n"
    with pytest.raises(ConfigError) as caught:
        validate([(load_yaml(COMPANY + staff + number, "a.yaml"), "a.yaml")])
    (found,) = caught.value.problems
    assert found.path == "numbers[0].number" and found.line == 8
    assert "number +989601 has the same digits as extension 989601" in found.message


REFERRAL_COMPANY = COMPANY + """\
referral:
  statuses: [training]
  default_action: voicemail
  actions:
    meeting: {action: divert, to: "employee:2002"}
    vacation: {action: divert, to: mobile}
    away: ring
employees:
  - {extension: 2001, name: Ann, mobile: "+447400100001", referral: {meeting: alternate, training: ring},
     status_delegates: [2002]}
  - {extension: 2002, name: Bob}
"""


def test_status_actions_merge_company_defaults_with_the_employee_own():
    from fastpath.model import Destination, ReferralAction
    config = validate([(load_yaml(REFERRAL_COMPANY, "a.yaml"), "a.yaml")])
    company = config.companies[0]
    assert company.statuses[-1] == "training"
    ann, bob = company.employees
    assert dict(ann.referral) == {"meeting": ReferralAction("alternate"), "training": ReferralAction("ring"),
                                  "away": ReferralAction("ring"),
                                  "vacation": ReferralAction("divert", Destination("external", "447400100001"))}
    assert ann.status_delegates == ("2002",)
    # Bob has no mobile: a divert to it becomes his voicemail
    assert dict(bob.referral)["vacation"] == ReferralAction("voicemail")
    assert dict(bob.referral)["meeting"] == ReferralAction("divert", Destination("employee", "2002"))


@pytest.mark.parametrize("bad, path, message", [
    ("{meting: ring}", "employees[1].referral.meting", "unknown key 'meting'; did you mean 'meeting'?"),
    ("{available: ring}", "employees[1].referral.available", "available always rings"),
    ("{meeting: {action: divert}}", "employees[1].referral.meeting", "action divert needs 'to'"),
    ("{meeting: {action: divert, to: 'employee:2002'}}", "employees[1].referral.meeting", "divert to itself"),
    ("{meeting: {action: divert, to: 'ivr:main'}}", "employees[1].referral.meeting", "unknown IVR menu"),
    ("{lunch: {action: ring, to: 'employee:2001'}}", "employees[1].referral.lunch", "'to' goes with action divert"),
    ("{lunch: snooze}", "employees[1].referral.lunch", "expected voicemail, ring, alternate"),
])
def test_bad_status_actions_name_the_place(bad, path, message):
    text = REFERRAL_COMPANY.replace("- {extension: 2002, name: Bob}", f"- {{extension: 2002, name: Bob, referral: {bad}}}")
    with pytest.raises(ConfigError) as caught:
        validate([(load_yaml(text, "a.yaml"), "a.yaml")])
    (found,) = caught.value.problems
    assert found.path == path and message in found.message, found


def test_status_delegates_must_be_other_employees():
    text = REFERRAL_COMPANY.replace("status_delegates: [2002]", "status_delegates: [2001, 2009, 2002, 2002]")
    with pytest.raises(ConfigError) as caught:
        validate([(load_yaml(text, "a.yaml"), "a.yaml")])
    messages = [p.message for p in caught.value.problems]
    assert len(messages) == 3
    assert "2001 may always set its own status" in messages[0]
    assert "unknown extension '2009'" in messages[1]
    assert "2002 is listed twice" in messages[2]


def test_company_statuses_may_not_repeat_the_built_in_ones():
    text = REFERRAL_COMPANY.replace("statuses: [training]", "statuses: [training, lunch, Bad Name]")
    with pytest.raises(ConfigError) as caught:
        validate([(load_yaml(text, "a.yaml"), "a.yaml")])
    messages = [(p.path, p.message) for p in caught.value.problems]
    assert messages[0] == ("referral.statuses[1]", "status lunch is already defined (built in)")
    assert messages[1][0] == "referral.statuses[2]" and "lowercase letters" in messages[1][1]


ICM_COMPANY = COMPANY + STAFF + """\
numbers:
  - number: "+442079460000"
    route: "department:600"
    icm: {sources: [crm, history], max_age_days: 90, ring: manager_and_mobile, timeout: 25,
          on_failure: "department:600", default: "employee:2002", except: [2001]}
  - {number: "+442079460001", route: "department:600", icm: {}}
"""


def test_icm_step_on_a_number():
    from fastpath.model import Destination, IcmStep
    config = validate([(load_yaml(ICM_COMPANY, "a.yaml"), "a.yaml")])
    first, second = config.companies[0].numbers
    assert first.icm == IcmStep(("crm", "history"), 90, "manager_and_mobile", 25, Destination("department", "600"),
                                Destination("employee", "2002"), ("2001",))
    assert second.icm == IcmStep()


@pytest.mark.parametrize("bad, path, message", [
    ("{sources: [history, history]}", "numbers[1].icm.sources[1]", "source history is listed twice"),
    ("{sources: [phonebook]}", "numbers[1].icm.sources[0]", "expected one of history, crm"),
    ("{on_failure: 'employee:2001'}", "numbers[1].icm.on_failure", "on_failure is a department"),
    ("{except: [2009]}", "numbers[1].icm.except[0]", "unknown extension '2009'"),
    ("{ring: everyone}", "numbers[1].icm.ring", "expected one of manager, manager_and_mobile"),
    ("{timeout: 1}", "numbers[1].icm.timeout", "from 5 to 300"),
    ("{exceptions: [2001]}", "numbers[1].icm.exceptions", "unknown key 'exceptions'"),
])
def test_bad_icm_steps_name_the_place(bad, path, message):
    text = ICM_COMPANY.replace("icm: {}", f"icm: {bad}")
    with pytest.raises(ConfigError) as caught:
        validate([(load_yaml(text, "a.yaml"), "a.yaml")])
    (found,) = caught.value.problems
    assert found.path == path and message in found.message, found
