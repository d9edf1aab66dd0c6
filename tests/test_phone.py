"""Phone numbers become E.164 digits (no '+') through libphonenumber's metadata."""
import pytest
from hypothesis import given, strategies as st

from fastpath.errors import PhoneNumberError
from fastpath.phone import is_e164_digits, is_known_region, to_e164


@pytest.mark.parametrize("text, region, expected", [
    # United Kingdom (020 7946 0xxx is Ofcom's drama range for London)
    ("+44 20 7946 0123", None, "442079460123"),
    ("+44 20 7946 0123", "US", "442079460123"),
    ("442079460123", None, "442079460123"),
    ("020 7946 0123", "GB", "442079460123"),
    ("00 44 20 7946 0123", "GB", "442079460123"),
    ("0044 20 7946 0123", None, "442079460123"),
    ("07400 123456", "GB", "447400123456"),
    ("  +44 (0)20 7946-0123  ", None, "442079460123"),
    # United States
    ("+1 202 555 0123", None, "12025550123"),
    ("(202) 555-0123", "US", "12025550123"),
    ("1 202 555 0123", "US", "12025550123"),
    ("00 1 202 555 0123", "GB", "12025550123"),
    # Germany
    ("+49 30 901820", None, "4930901820"),
    ("030 12345678", "DE", "493012345678"),
    ("0151 23456789", "DE", "4915123456789"),
    # Russia, including Moscow 495 numbers written with the 8 trunk prefix
    ("+7 495 739-00-00", None, "74957390000"),
    ("8 (495) 123-45-67", "RU", "74951234567"),
    ("8 495 123 45 67", "RU", "74951234567"),
    ("74951234567", None, "74951234567"),
    ("8 916 123 45 67", "RU", "79161234567"),
    ("810 44 20 7946 0123", "RU", "442079460123"),
    # France
    ("01 23 45 67 89", "FR", "33123456789"),
    ("06.12.34.56.78", "FR", "33612345678"),
    ("+33 6 12 34 56 78", None, "33612345678"),
    ("0033 1 23 45 67 89", None, "33123456789"),
])
def test_valid_numbers_in_every_written_form_become_e164_digits(text, region, expected):
    """International, bare-digit, 00-prefixed and national forms all give E.164 digits."""
    assert to_e164(text, region) == expected


def test_bare_digits_are_international_when_that_reading_is_valid():
    """Bare digits without a leading 0 are read as a country code first.

    "84951234567" is a valid Viet Nam (+84) number, so it stays one even for a
    Russian company; "8 495 123 45 67" with spaces is the Moscow number.
    """
    assert to_e164("84951234567", "RU") == "84951234567"
    assert to_e164("8 495 123 45 67", "RU") == "74951234567"


def test_bare_digits_fall_back_to_the_national_reading():
    """Bare digits that are no valid international number are read in the region."""
    assert to_e164("2025550123", "US") == "12025550123"
    with pytest.raises(PhoneNumberError):
        to_e164("2025550123")


@pytest.mark.parametrize("text, region, why", [
    ("", "GB", "no digits"),
    ("abc", "GB", "no digits"),
    ("call +44 20 7946 0123", None, "only digits"),
    ("+44 20 7946 0123 ext 5", None, "only digits"),
    ("123", "GB", "too short"),
    ("+44 20 7946 01234", None, "too long"),
    ("+999 1234 5678", None, "country code is unknown"),
    ("+1 555 0100", None, "lacks an area code"),
    ("+44 7700 900123", None, "for GB"),
    ("020 7946 0123", None, "no country is known"),
    ("020 7946 0123", "XX", "unknown country 'XX'"),
])
def test_invalid_numbers_raise_a_message_naming_the_input_and_the_reason(text, region, why):
    """Anything libphonenumber does not call a valid number is refused, saying why."""
    with pytest.raises(PhoneNumberError) as caught:
        to_e164(text, region)
    assert why in str(caught.value)
    assert repr(text.strip()) in str(caught.value) or repr(text) in str(caught.value)


def test_the_ofcom_drama_mobile_range_is_not_valid():
    """07700 900xxx is reserved for fiction, and libphonenumber says it is not valid."""
    with pytest.raises(PhoneNumberError, match="not a valid phone number for GB"):
        to_e164("07700 900123", "GB")


def test_phone_number_error_is_a_value_error():
    """Callers that only know ValueError still catch bad numbers."""
    with pytest.raises(ValueError):
        to_e164("nonsense")


def test_is_e164_digits_checks_the_shape_of_to_e164_results():
    """1 to 15 digits, no '+', no leading zero, nothing but digits."""
    assert is_e164_digits("442079460123")
    assert not is_e164_digits("+442079460123")
    assert not is_e164_digits("02079460123")
    assert not is_e164_digits("4420794601231234")
    assert not is_e164_digits(442079460123)


def test_known_regions_are_libphonenumber_regions():
    """Upper-case ISO alpha-2 codes libphonenumber knows; 'UK' is not one."""
    assert all(is_known_region(code) for code in ("GB", "US", "DE", "RU", "FR"))
    assert not is_known_region("UK")
    assert not is_known_region("gb")


@given(st.one_of(st.text(max_size=40), st.from_regex(r"\A\+?[0-9 ()-]{1,18}\Z")),
       st.sampled_from([None, "GB", "US", "DE", "RU", "FR"]))
def test_any_text_gives_e164_digits_or_phone_number_error(text, region):
    """No input makes anything else escape, and every result is stable."""
    try:
        digits = to_e164(text, region)
    except PhoneNumberError:
        return
    assert is_e164_digits(digits)
    assert to_e164("+" + digits) == digits
    assert to_e164(digits) == digits


def test_numbers_longer_than_e164_allows_are_refused():
    """libphonenumber calls +49 30 000000000000 valid; with 16 digits it is not an E.164 number."""
    with pytest.raises(PhoneNumberError, match="more than E.164's 15"):
        to_e164("30000000000000", "DE")
