"""Dial strings for ``bridge``: shape per strategy, and no way for caller data to break them.

The parser used to read the results back is the fake FreeSWITCH's
(``parse_dial_string``), which follows switch_ivr_originate.c: ``{}`` global
variables, ``|`` groups tried in turn, ``,`` legs rung together, ``[]`` per
leg.  Hypothesis then throws arbitrary text at the caller-ID fields.
"""
from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esl_app import dial_string as ds
from esl_app.esl_protocol import encode_sendmsg
from fastpath.route_plan import Ring, Target
from tests.fake_freeswitch import CommandReader, parse_dial_string

DOMAIN = "acme.example"
GW = "carrier"


def ring(targets, strategy="simultaneous", timeout=30, caller_id=None):
    return Ring(tuple(targets), strategy, timeout, "test", caller_id=caller_id)


def ext(number, delay=0, timeout=30, name=""):
    return Target("extension", number, name, delay, timeout)


def mobile(number, timeout=20):
    return Target("external", number, "", 0, timeout)


def build(step, number="+442079460123", name="Alice Smith", domain=DOMAIN, gateway=GW):
    return ds.build_dial_string(step, sip_domain=domain, gateway=gateway, caller_number=number, caller_name=name)


# --- legs --------------------------------------------------------------------------

def test_extension_leg_names_the_directory_user_at_the_company_domain():
    assert ds.extension_leg("2001", "acme.example") == "user/2001@acme.example"
    assert ds.extension_leg("0123", "SIP.Acme.Example") == "user/0123@sip.acme.example"


def test_external_leg_goes_through_the_gateway_in_e164_with_plus():
    assert ds.external_leg("447400100002", "carrier") == "sofia/gateway/carrier/+447400100002"
    assert ds.external_leg("+447400100002", "carrier-2.uk_1") == "sofia/gateway/carrier-2.uk_1/+447400100002"


@pytest.mark.parametrize("number", ["", "20a1", "2001,2002", "2001|x", "2001@evil", " 2001", "1" * 17, None, 2001])
def test_extension_leg_refuses_anything_but_digits(number):
    with pytest.raises(ds.DialStringError):
        ds.extension_leg(number, DOMAIN)


@pytest.mark.parametrize("domain", ["", "acme..example", "-acme.example", "acme.example,user/1@x", "a b.example",
                                    "acme.example}", None, "x" * 64 + ".example"])
def test_extension_leg_refuses_a_domain_that_is_not_a_dns_name(domain):
    with pytest.raises(ds.DialStringError):
        ds.extension_leg("2001", domain)


@pytest.mark.parametrize("number, gateway", [
    ("0447400100002", GW), ("44740010000212345", GW), ("4474001x0002", GW), ("", GW), ("+", GW),
    ("447400100002", ""), ("447400100002", "gw/../x"), ("447400100002", "gw,x"), ("447400100002", "gw|x"),
    ("447400100002", "-gw"),
])
def test_external_leg_refuses_bad_numbers_and_gateway_names(number, gateway):
    with pytest.raises(ds.DialStringError):
        ds.external_leg(number, gateway)


# --- strategies ------------------------------------------------------------------------

def test_simultaneous_rings_every_leg_at_once_with_one_call_timeout():
    dial = build(ring([ext("2001"), ext("2010"), ext("2005")], "simultaneous", 30))
    assert dial == ("{ignore_early_media=true,call_timeout=30,origination_caller_id_number=+442079460123,"
                    "origination_caller_id_name=Alice Smith}"
                    "user/2001@acme.example,user/2010@acme.example,user/2005@acme.example")
    global_vars, groups = parse_dial_string(dial)
    assert global_vars["call_timeout"] == "30"
    assert groups == [[(f"user/{n}@acme.example", {}) for n in ("2001", "2010", "2005")]]


def test_sequential_tries_legs_in_turn_each_with_its_own_leg_timeout():
    dial = build(ring([ext("2001", 0, 10), ext("2010", 10, 10), ext("2005", 20, 5)], "sequential", 25))
    assert dial.endswith("}[leg_timeout=10]user/2001@acme.example|[leg_timeout=10]user/2010@acme.example"
                         "|[leg_timeout=5]user/2005@acme.example")
    _, groups = parse_dial_string(dial)
    assert groups == [[("user/2001@acme.example", {"leg_timeout": "10"})],
                      [("user/2010@acme.example", {"leg_timeout": "10"})],
                      [("user/2005@acme.example", {"leg_timeout": "5"})]]


def test_cumulative_delays_each_leg_and_ends_it_at_the_step_end():
    """leg_timeout counts from the originate start in FreeSWITCH, so it is delay + ring time."""
    dial = build(ring([ext("2010", 0, 20), ext("2005", 8, 12), ext("2001", 16, 4)], "cumulative", 20))
    _, groups = parse_dial_string(dial)
    assert groups == [[("user/2010@acme.example", {"leg_delay_start": "0", "leg_timeout": "20"}),
                       ("user/2005@acme.example", {"leg_delay_start": "8", "leg_timeout": "20"}),
                       ("user/2001@acme.example", {"leg_delay_start": "16", "leg_timeout": "20"})]]
    assert "[leg_delay_start=8,leg_timeout=20]user/2005@acme.example" in dial


def test_simultaneous_leg_with_its_own_timeout_gets_a_leg_timeout():
    dial = build(ring([ext("2001", 0, 30), ext("2002", 0, 15)], "simultaneous", 30))
    _, groups = parse_dial_string(dial)
    assert groups == [[("user/2001@acme.example", {}), ("user/2002@acme.example", {"leg_timeout": "15"})]]


def test_mixed_extension_and_mobile_legs():
    dial = build(ring([ext("2001"), mobile("447400100002", 30)], "simultaneous", 30))
    assert dial.endswith("user/2001@acme.example,sofia/gateway/carrier/+447400100002")


def test_global_block_never_carries_origination_uuid():
    """FREESWITCH-NOTES: origination_uuid in {} with several legs rings only the first."""
    for strategy in ds.STRATEGIES:
        dial = build(ring([ext("2001"), ext("2002", 5, 10)], strategy, 30))
        assert "origination_uuid" not in dial
        global_vars, _ = parse_dial_string(dial)
        assert global_vars["ignore_early_media"] == "true"


def test_outbound_call_shows_the_company_number():
    dial = build(ring([mobile("442079460999", 45)], "simultaneous", 45, caller_id="442079460000"))
    global_vars, _ = parse_dial_string(dial)
    assert global_vars["origination_caller_id_number"] == "+442079460000"
    assert global_vars["origination_caller_id_name"] == "Alice Smith"


@pytest.mark.parametrize("caller_id", ["44207946000x", "0442079460000", "+", "4420794600001234"])
def test_bad_company_caller_id_is_refused(caller_id):
    with pytest.raises(ds.DialStringError):
        build(ring([mobile("442079460999")], caller_id=caller_id))


def test_anonymous_caller_is_shown_as_anonymous():
    global_vars, _ = parse_dial_string(build(ring([ext("2001")]), number="", name=""))
    assert global_vars["origination_caller_id_number"] == "anonymous"
    assert global_vars["origination_caller_id_name"] == "Anonymous"


def test_caller_without_a_name_shows_the_number_as_name():
    global_vars, _ = parse_dial_string(build(ring([ext("2001")]), number="+447700900123", name="\r\n"))
    assert global_vars["origination_caller_id_name"] == "+447700900123"


@pytest.mark.parametrize("step", [
    Ring((), "simultaneous", 30, "empty"),
    Ring((Target("extension", "2001", "", 0, 30),), "round_robin", 30, "unknown strategy"),
    Ring((Target("extension", "2001", "", 0, 30),), "simultaneous", -1, "negative"),
    Ring((Target("extension", "2001", "", 0, 30),), "simultaneous", True, "bool timeout"),
    Ring((Target("extension", "2001", "", -5, 30),), "cumulative", 30, "negative delay"),
    Ring((Target("extension", "2001", "", 0, 10 ** 9),), "sequential", 30, "huge"),
    Ring((Target("fax", "2001", "", 0, 30),), "simultaneous", 30, "unknown kind"),
])
def test_undialable_steps_are_refused(step):
    with pytest.raises(ds.DialStringError):
        build(step)


def test_extension_leg_without_a_domain_is_refused_but_external_is_fine():
    with pytest.raises(ds.DialStringError):
        build(ring([ext("2001")]), domain=None)
    assert build(ring([mobile("447400100002")]), domain=None).endswith("sofia/gateway/carrier/+447400100002")


# --- caller-controlled values ------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("+442079460123", "+442079460123"), ("2001", "2001"), ("*98#", "*98#"), ("  2001 \t", "2001"),
    ("", ""), (None, ""), ("anonymous", ""), ("+44 20 7946", ""), ("2001\r\n", "2001"),
    ("2001\n\napi originate", ""), ("2001,2002", ""), ("++44", ""), ("1" * 32, "1" * 32), ("1" * 33, ""),
    ("${system(id)}", ""), ("٢٠٠١", ""),   # Arabic-Indic digits are not [0-9]
])
def test_clean_caller_number(raw, expected):
    assert ds.clean_caller_number(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    ("Alice Smith", "Alice Smith"),
    ("José Müller", "José Müller"),
    ("Jose\u0301", "José"),                                   # NFC: one letter
    ("O'Brien", "O\u2019Brien"),
    ('Mallory"\r\n\r\napi originate sofia/gateway/gw/1 &park', "Mallory api originate sofia gateway gw 1"),  # cut at 40
    ("Eve,origination_uuid=x}user/9@evil|[a=b]", "Eve origination_uuid x user 9 evil a b"),
    ("${system(rm -rf /)}", "system(rm -rf )"),
    ("^^:a=b:c", "a b c"),
    ("back\\slash `tick` ;semi <sip:x> 100%", "back slash tick semi sip x 100"),
    ("\u202eevil\u200b", "evil"),                              # bidi override, zero-width space
    ("\t\x00\x1b[31m", "31m"),
    ("", ""), (None, ""),
    ("x" * 100, "x" * 40),
])
def test_clean_caller_name(raw, expected):
    assert ds.clean_caller_name(raw) == expected


def test_injection_attempts_do_not_change_the_dial_string_structure():
    hostile = ('Mallory",\r\n\r\napi originate sofia/gateway/gw/447700900123 &park\n\n'
               "}{origination_uuid=x}[leg_timeout=1]user/666@evil.example|${system(id)}^^:")
    dial = build(ring([ext("2001"), ext("2002")]), number="2001\r\n\r\napi x", name=hostile)
    global_vars, groups = parse_dial_string(dial)
    assert set(global_vars) == {"ignore_early_media", "call_timeout", "origination_caller_id_number",
                                "origination_caller_id_name"}
    assert global_vars["origination_caller_id_number"] == "anonymous"
    assert groups == [[("user/2001@acme.example", {}), ("user/2002@acme.example", {})]]
    # It also survives the ESL layer: one header line, read back whole by mod_event_socket's rules.
    wire = encode_sendmsg(None, "bridge", dial, event_lock=True, event_uuid="u-1")
    (command,) = CommandReader().feed(wire)
    assert command.header("execute-app-arg") == dial


def test_company_sip_domain_from_the_store(make_store):
    store = make_store("""
    id: acme
    name: Acme
    country: GB
    timezone: Europe/London
    sip_domain: SIP.Acme.Example
    employees: [{extension: 2001, name: Alice}]
    """)
    assert ds.company_sip_domain(store, "acme") == "sip.acme.example"
    assert ds.company_sip_domain(store, "nope") is None
    assert ds.company_sip_domain(store, "") is None


# --- properties ------------------------------------------------------------------------------

ALLOWED_NAME = re.compile(r"[\w .()\u2019-]*")
hostile_text = st.text(alphabet=st.one_of(
    st.sampled_from(list("\r\n\x00,|[]{}<>^'\"\\$:;=@%&#*+/` \t")), st.characters()), max_size=80)
extensions = st.from_regex(r"[0-9]{2,6}", fullmatch=True)
e164 = st.from_regex(r"[1-9][0-9]{7,14}", fullmatch=True)


@st.composite
def targets(draw):
    if draw(st.booleans()):
        return Target("extension", draw(extensions), "", draw(st.integers(0, 60)), draw(st.integers(1, 120)))
    return Target("external", draw(e164), "", draw(st.integers(0, 60)), draw(st.integers(1, 120)))


@settings(max_examples=300, deadline=None)
@given(name=hostile_text, number=hostile_text)
def test_clean_values_only_hold_harmless_characters(name, number):
    cleaned = ds.clean_caller_name(name)
    assert ALLOWED_NAME.fullmatch(cleaned)
    assert not any(unicodedata.category(c)[0] in "CZ" and c != " " for c in cleaned)
    assert len(cleaned) <= ds.MAX_NAME_LENGTH and cleaned == cleaned.strip()
    assert ds.clean_caller_name(cleaned) == cleaned           # idempotent
    assert re.fullmatch(r"(\+?[0-9*#]{1,32})?", ds.clean_caller_number(number))


@settings(max_examples=300, deadline=None)
@given(name=hostile_text, number=hostile_text, legs=st.lists(targets(), min_size=1, max_size=6),
       strategy=st.sampled_from(ds.STRATEGIES), timeout=st.integers(1, 600))
def test_any_caller_data_yields_exactly_the_planned_legs(name, number, legs, strategy, timeout):
    """Whatever the caller sends, FreeSWITCH's parser sees our four global
    variables and exactly our legs, grouped by the strategy."""
    dial = build(ring(legs, strategy, timeout), number=number, name=name)
    global_vars, groups = parse_dial_string(dial)
    assert set(global_vars) == {"ignore_early_media", "call_timeout", "origination_caller_id_number",
                                "origination_caller_id_name"}
    assert global_vars["origination_caller_id_name"] in (ds.clean_caller_name(name),
                                                         ds.clean_caller_number(number), "Anonymous")
    expected = [("user/%s@acme.example" % t.number) if t.kind == "extension"
                else "sofia/gateway/carrier/+%s" % t.number for t in legs]
    flat = [leg for group in groups for leg, _ in group]
    assert flat == expected
    assert len(groups) == (len(legs) if strategy == "sequential" else 1)
    assert not set(dial) & set("\r\n\x00$'\"\\^`;<>%")
    assert "origination_uuid" not in dial
    encode_sendmsg(None, "bridge", dial)   # never an EslInjectionError
