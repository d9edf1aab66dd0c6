"""Caller numbers from the switch become E.164 digits, by rules compiled from libphonenumber's metadata.

Every test runs on both implementations (the Cython walker and its pure-Python
twin), and the expectations are checked against ``phonenumbers`` itself
(:func:`reference_normalise`): on real formats of several countries and on a
large generated sample.
"""
from __future__ import annotations

import os
import random

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from phonenumbers import PhoneNumberType

from fastpath import caller_numbers as cn
from fastpath.errors import PhoneNumberError

IMPLS = ["fastpath", "reference"]
if os.environ.get("SWITCHBOARD_NO_CYTHON") == "1":
    IMPLS = ["reference"]


@pytest.fixture(params=IMPLS)
def normalise(request):
    if request.param not in cn.IMPLEMENTATIONS:
        pytest.fail("the compiled caller-number walker is not built: run `pip install -e .` "
                    "(or set SWITCHBOARD_NO_CYTHON=1 to test the pure twin alone)")
    return cn.IMPLEMENTATIONS[request.param]


def rules(country, city=None):
    return cn.compile_rules(country, city)


REAL_FORMATS = [
    # Russia, Moscow office (city code 495): every way carriers present a caller
    ("RU", "495", "+74951234567", "74951234567"),
    ("RU", "495", "74951234567", "74951234567"),          # E.164 digits without '+'
    ("RU", "495", "84951234567", "74951234567"),          # trunk prefix 8
    ("RU", "495", "4951234567", "74951234567"),           # national without the trunk prefix
    ("RU", "495", "1234567", "74951234567"),              # local, 7 digits: city code 495 added
    ("RU", "495", "84991234567", "74991234567"),          # the other Moscow code, 499
    ("RU", "499", "1234567", "74991234567"),              # an office whose city code is 499
    ("RU", "495", "4991234567", "74991234567"),
    ("RU", "495", "89161234567", "79161234567"),          # mobile
    ("RU", "495", "9161234567", "79161234567"),
    ("RU", "495", "88001234567", "78001234567"),          # freephone
    ("RU", "495", "810442079460123", "442079460123"),     # Russia's international prefix 810
    ("RU", "495", "00442079460123", "442079460123"),      # ... and 00
    ("RU", "495", "442079460123", "442079460123"),        # foreign E.164 digits without '+'
    ("RU", "812", "1234567", "78121234567"),              # St Petersburg: a city code starting with 8
    ("RU", None, "1234567", None),                        # local number, no city code configured
    # United Kingdom, London (20)
    ("GB", "20", "02079460123", "442079460123"),
    ("GB", "20", "2079460123", "442079460123"),
    ("GB", "20", "79460123", "442079460123"),             # local, 8 digits
    ("GB", "20", "07400123456", "447400123456"),
    ("GB", "20", "442079460123", "442079460123"),
    ("GB", "20", "00442079460123", "442079460123"),
    ("GB", "20", "0012025550123", "12025550123"),
    ("GB", "20", "+4402079460123", None),                 # no trunk prefix after a country code
    # Germany, Berlin (30)
    ("DE", "30", "03012345678", "493012345678"),
    ("DE", "30", "3012345678", "493012345678"),
    ("DE", "30", "12345678", "493012345678"),             # local
    ("DE", "30", "015123456789", "4915123456789"),
    ("DE", "30", "004930901820", "4930901820"),
    ("DE", "30", "+4930901820", "4930901820"),
    # United States, New York (212)
    ("US", "212", "2025550123", "12025550123"),
    ("US", "212", "12025550123", "12025550123"),          # trunk prefix 1
    ("US", "212", "5550123", "12125550123"),              # local, 7 digits
    ("US", "212", "6135550123", "16135550123"),           # Ottawa: +1 numbers of Canada are valid too
    ("US", "212", "011442079460123", "442079460123"),     # US international prefix 011
    ("US", "212", "+12125550123", "12125550123"),
    # France (no local dialling)
    ("FR", None, "0123456789", "33123456789"),
    ("FR", None, "0612345678", "33612345678"),
    ("FR", None, "33612345678", "33612345678"),
    ("FR", None, "0033612345678", "33612345678"),
    ("FR", None, "612345678", "33612345678"),
    # Italy: area codes keep their 0, there is no trunk prefix
    ("IT", None, "0612345678", "390612345678"),
    ("IT", None, "3123456789", "393123456789"),
    ("IT", None, "390612345678", "390612345678"),
    ("IT", None, "00390612345678", "390612345678"),
    ("IT", None, "+390612345678", "390612345678"),
]


@pytest.mark.parametrize("country, city, raw, expected", REAL_FORMATS)
def test_real_caller_id_formats_become_e164_digits(normalise, country, city, raw, expected):
    """National, local, international (+, 00, 810, 011) and bare E.164 forms: the documented readings."""
    assert normalise(rules(country, city), raw) == expected
    assert cn.reference_normalise(raw, country, city) == expected


def test_national_reading_comes_before_the_international_one(normalise):
    """For a Russian company 84951234567 is Moscow with the trunk prefix, not a +84 (Viet Nam) number."""
    assert normalise(rules("RU", "495"), "84951234567") == "74951234567"
    assert normalise(rules("GB", "20"), "84951234567") == "84951234567"


@pytest.mark.parametrize("raw", ["", "   ", "+", "anonymous", "Anonymous", "unknown", "+7 495 123-45-67",
                                 "8(495)1234567", "７４９５１２３４５６７", "1" * 33, "+" + "7" * 33, "12a34",
                                 "++74951234567", "-74951234567"])
def test_anything_but_digits_is_no_number(normalise, raw):
    """The switch sends digits with an optional '+'; anything else is not looked up."""
    assert normalise(rules("RU", "495"), raw) is None
    assert cn.reference_normalise(raw, "RU", "495") is None


def test_surrounding_whitespace_is_ignored_and_non_strings_are_no_number(normalise):
    assert normalise(rules("RU", "495"), " \t84951234567\r\n") == "74951234567"
    assert normalise(rules("RU", "495"), None) is None
    assert normalise(rules("RU", "495"), 74951234567) is None


def test_tables_are_read_from_any_buffer(normalise):
    """LMDB hands out bytes, or memoryviews of its map with ``buffers=True``."""
    table = rules("RU", "495")
    assert normalise(memoryview(table), "84951234567") == normalise(bytearray(table), "84951234567") == "74951234567"


def test_the_rules_a_config_load_stores_read_every_real_format(make_store, normalise):
    """Store.load_config compiles each company's rules into the store's dial table; read from
    there (an LMDB buffer, as the call path gets it), they give the documented readings."""
    offices = {("RU", "495"): "mos", ("RU", "812"): "spb", ("GB", "20"): "lon", ("US", "212"): "nyc"}
    companies = "".join(f"  - {{id: {cid}, name: {cid}, country: {country}, city_code: '{city}', timezone: UTC}}\n"
                        for (country, city), cid in offices.items())
    store = make_store("companies:\n" + companies)
    checked = 0
    with store.read() as txn:
        for country, city, raw, expected in REAL_FORMATS:
            if (country, city) in offices:
                stored = txn.get(offices[country, city].encode(), db=store.db["dial"])
                assert bytes(stored) == rules(country, city)
                assert normalise(stored, raw) == expected, (country, city, raw)
                checked += 1
    assert checked >= 20


def test_a_corrupt_table_is_refused_not_misread(normalise):
    """A damaged record raises PhoneNumberError; it never reads past its end."""
    table = rules("RU", "495")
    for bad in (b"", table[:20], bytes([9]) + table[1:], table[:len(table) // 2]):
        with pytest.raises(PhoneNumberError):
            normalise(bad, "84951234567")


def test_tables_are_small_and_describe_themselves():
    info = cn.describe(rules("RU", "495"))
    assert info["country_code"] == 7 and info["city_code"] == "495"
    assert info["bytes"] < 8_000 and info["dfa_states"] < 300
    assert cn.describe(rules("US", "212"))["bytes"] < 16_000
    assert info["metadata"] == f"phonenumbers {phonenumbers.__version__}"


def test_compiling_checks_the_country_and_the_city_code():
    with pytest.raises(PhoneNumberError, match="no numbering plan"):
        cn.compile_rules("XX")
    with pytest.raises(PhoneNumberError, match="city code"):
        cn.compile_rules("RU", "49x")
    assert cn.compile_rules.__wrapped__("RU", "495") == cn.compile_rules.__wrapped__("RU", "495")


@pytest.mark.skipif(os.environ.get("SWITCHBOARD_NO_CYTHON") == "1", reason="built without Cython")
def test_the_compiled_walker_is_loaded_and_chosen():
    from fastpath import _caller_numbers
    assert "cyfunction" in repr(_caller_numbers.normalise)
    if os.environ.get("SWITCHBOARD_PUREPYTHON") != "1":
        assert cn.normalise is _caller_numbers.normalise


# --- agreement with phonenumbers on a large generated sample ---------------------------

#: Company countries of the sample: the six above and countries whose rules are
#: unusual (transform rules: AR, BR, AG, SM, NF, JP; shared country codes: KZ, CA,
#: GG; carrier codes: CO, KR).
HOMES = [("RU", "495"), ("GB", "20"), ("DE", "30"), ("US", "212"), ("FR", None), ("IT", None),
         ("KZ", "727"), ("CA", "416"), ("AG", None), ("AR", "11"), ("BR", "11"), ("JP", "3"),
         ("GG", None), ("SM", None), ("NF", None), ("CO", "1"), ("KR", "2"), ("BY", "17")]
TYPES = (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE, PhoneNumberType.TOLL_FREE,
         PhoneNumberType.PREMIUM_RATE, PhoneNumberType.VOIP, PhoneNumberType.UAN)


def _examples():
    out = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in TYPES:
            n = phonenumbers.example_number_for_type(region, kind)
            if n is not None:
                out.append(n)
    return out


EXAMPLES = _examples()
_REFERENCE: dict = {}           # phonenumbers' answers, computed once for both implementations


def expected(raw: str, home: str, city: str | None) -> str | None:
    key = (raw, home, city)
    if key not in _REFERENCE:
        _REFERENCE[key] = cn.reference_normalise(raw, home, city)
    return _REFERENCE[key]


def _written_forms(n, home: str, city: str | None, rng: random.Random):
    """How the switch may present example number ``n`` to a company in ``home``."""
    e164 = phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164)
    nsn = phonenumbers.national_significant_number(n)
    national = "".join(c for c in phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.NATIONAL)
                       if c.isdigit())
    dialled = "".join(c for c in phonenumbers.format_out_of_country_calling_number(n, home)
                      if c.isdigit() or c == "+")
    forms = {e164, e164[1:], "00" + e164[1:], nsn, national, dialled, e164[1:-1], e164 + "0"}
    if city and nsn.startswith(city):
        forms.add(nsn[len(city):])
    digits = list(e164[1:])
    digits[rng.randrange(len(digits))] = str(rng.randrange(10))
    forms.add("".join(digits))
    return forms


def test_compiled_tables_agree_with_phonenumbers_on_example_numbers_of_every_region(normalise):
    """For each company country, every region's example numbers in every written form, plus damaged copies."""
    rng = random.Random(5)
    checked = 0
    for home, city in HOMES:
        table = rules(home, city)
        sample = set()
        for n in EXAMPLES:
            sample |= _written_forms(n, home, city, rng)
        for raw in sorted(sample):
            assert normalise(table, raw) == expected(raw, home, city), (home, city, raw)
            checked += 1
    assert checked > 50_000


@st.composite
def caller_ids(draw):
    home, city = draw(st.sampled_from(HOMES))
    kind = draw(st.integers(0, 3))
    if kind == 0:                                   # any digits, any length
        raw = draw(st.from_regex(r"\A\+?[0-9]{1,20}\Z"))
    elif kind == 1:                                 # the national prefix / IDD / city code, then anything
        md = phonenumbers.PhoneMetadata.metadata_for_region(home)
        head = draw(st.sampled_from([md.national_prefix or "", "00", city or "", "8", "810", "011", "0"]))
        raw = head + draw(st.from_regex(r"\A[0-9]{0,14}\Z"))
    else:                                           # an example number with its tail rewritten
        n = draw(st.sampled_from(EXAMPLES))
        e164 = phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164)[1:]
        cut = draw(st.integers(1, len(e164)))
        raw = draw(st.sampled_from(["", "+", "00"])) + e164[:cut] + draw(st.from_regex(r"\A[0-9]{0,4}\Z"))
    return home, city, raw


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(caller_ids())
def test_compiled_tables_agree_with_phonenumbers_on_generated_caller_ids(normalise, case):
    """Random digit strings, prefixes and rewritten example numbers: table walker == phonenumbers."""
    home, city, raw = case
    assert normalise(rules(home, city), raw) == cn.reference_normalise(raw, home, city)


def test_both_walkers_agree_on_every_country_with_its_own_examples():
    """Every region as the company country (of the +1 countries, five: their tables take 1 s each to
    compile), on its own numbers written nationally and with the country code."""
    if os.environ.get("SWITCHBOARD_NO_CYTHON") == "1":
        pytest.skip("deliberately built without Cython: nothing to compare")
    fast = cn.IMPLEMENTATIONS["fastpath"]        # a missing build fails here, loudly
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        if (phonenumbers.PhoneMetadata.metadata_for_region(region).country_code == 1
                and region not in ("US", "CA", "AG", "JM", "PR")):
            continue
        table = cn.compile_rules.__wrapped__(region, None)
        for kind in TYPES:
            n = phonenumbers.example_number_for_type(region, kind)
            if n is None:
                continue
            nsn = phonenumbers.national_significant_number(n)
            national = "".join(c for c in phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.NATIONAL)
                               if c.isdigit())
            for raw in (nsn, national, f"{n.country_code}{nsn}"):
                assert fast(table, raw) == cn.normalise_py(table, raw) == cn.reference_normalise(raw, region), \
                    (region, raw)
