"""The call path's shortcuts in esl_app.dial_string give the answers of the long way."""
from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esl_app import dial_string
from esl_app.dial_string import DialStringError, company_sip_domain
from tests.conftest import config_from_yaml

COMPANY = """
id: acme
name: Acme
country: GB
timezone: Europe/London
sip_domain: {domain}
employees:
  - {{extension: "2001", name: Alice, sip_password: secret-2001}}
"""


def test_sip_domain_is_cached_per_config_generation(make_store):
    """Should read the company once per generation, and see a config load at once."""
    store = make_store(COMPANY.format(domain="acme.example"))
    reads = []
    read = dial_string._read_sip_domain

    def counting(store_, company):
        reads.append(company)
        return read(store_, company)

    dial_string._read_sip_domain = counting
    try:
        assert [company_sip_domain(store, "acme") for _ in range(3)] == ["acme.example"] * 3
        assert company_sip_domain(store, "nosuch") is None
        assert reads == ["acme", "nosuch"]
        store.load_config(config_from_yaml(COMPANY.format(domain="voice.acme.example")))
        assert company_sip_domain(store, "acme") == "voice.acme.example"
        assert reads == ["acme", "nosuch", "acme"]
    finally:
        dial_string._read_sip_domain = read
    assert company_sip_domain(store, "") is None


def _slow_bad(dial: str) -> list[str]:
    return sorted({c for c in dial if c in dial_string._FORBIDDEN_IN_RESULT
                   or unicodedata.category(c)[0] in "CZ" and c != " "})


@settings(max_examples=400, deadline=None)
@given(dial=st.text(alphabet=st.sampled_from(list("{}[]user/2001@a.b,|=_ $'\"\\^`;<>%\t\x7f\r\n\x00é\u2028\u00a0"))
                    | st.characters(), max_size=40))
def test_result_check_refuses_exactly_what_the_character_by_character_rule_refuses(dial):
    """The ASCII fast path must refuse the same characters as the Unicode rule."""
    dial = "{a=b}" + dial.replace("{", "").replace("}", "").replace("[", "").replace("]", "")
    bad = _slow_bad(dial)
    if bad:
        with pytest.raises(DialStringError, match="would contain") as info:
            dial_string._check_result(dial)
        assert repr(bad) in str(info.value)
    else:
        dial_string._check_result(dial)
