"""Phone numbers to E.164 digits, using libphonenumber's metadata (``phonenumbers``).

Numbering plans change every year; Google's metadata is maintained, hand-written
prefix rules are not.  The only rules of our own are about how a number may be
*written*: bare digits (no spaces, no leading 0) are international when that
reading is valid, a leading ``00`` is the international prefix, and anything
else is read in the company's country.  So for RU "8 495 123-45-67" is Moscow,
while "84951234567" is a valid +84 (Viet Nam) number and stays one.
"""
from __future__ import annotations

import re

import phonenumbers
from phonenumbers import NumberParseException, ValidationResult

from .errors import PhoneNumberError

#: Digits, spaces and the usual separators; letters (vanity numbers, "ext 12")
#: are refused rather than guessed at.
_WRITTEN = re.compile(r"\+?[0-9\s().\-/]+")
_E164_DIGITS = re.compile(r"[1-9][0-9]{1,14}")

_WHY_UNPARSABLE = {
    NumberParseException.INVALID_COUNTRY_CODE: "its country code is unknown",
    NumberParseException.NOT_A_NUMBER: "it does not look like a phone number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "it is too short",
    NumberParseException.TOO_SHORT_NSN: "it is too short",
    NumberParseException.TOO_LONG: "it is too long",
}
_WHY_INVALID = {
    ValidationResult.INVALID_COUNTRY_CODE: "its country code is unknown",
    ValidationResult.TOO_SHORT: "it is too short",
    ValidationResult.TOO_LONG: "it is too long",
    ValidationResult.INVALID_LENGTH: "it has the wrong number of digits",
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "it lacks an area code",
}


def is_known_region(code: str) -> bool:
    """Whether ``code`` is an ISO 3166-1 alpha-2 region libphonenumber has a plan for."""
    return code in phonenumbers.SUPPORTED_REGIONS


def is_e164_digits(s: object) -> bool:
    """Cheap syntax check for what :func:`to_e164` returns (no metadata lookup)."""
    return isinstance(s, str) and _E164_DIGITS.fullmatch(s) is not None


def to_e164(text: str, region: str | None = None) -> str:
    """Return the E.164 form of ``text`` without ``+``, e.g. ``"442079460123"``.

    ``region`` (ISO alpha-2) is the country national numbers such as
    ``"020 7946 0123"`` are read in.  Raises :class:`PhoneNumberError` unless
    libphonenumber considers the result a valid, assigned-range number.
    """
    if region is not None and not is_known_region(region):
        raise PhoneNumberError(f"cannot read {text!r}: unknown country {region!r}")
    written = text.strip() if isinstance(text, str) else ""
    if not any(c.isdigit() for c in written):
        raise PhoneNumberError(f"{text!r} is not a phone number: it has no digits")
    if not _WRITTEN.fullmatch(written):
        raise PhoneNumberError(
            f"{written!r} is not a phone number: only digits, a leading '+', "
            "spaces and ( ) - . / are allowed")
    compact = re.sub(r"[\s().\-/]", "", written)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if written.isdigit() and not written.startswith("0"):
        try:
            return _valid(written, "+" + compact, None)
        except PhoneNumberError:
            if region is None:
                raise
        # Not valid internationally: the national reading gets the last word.
    if not compact.startswith("+") and region is None:
        raise PhoneNumberError(
            f"{written!r} is written in national format but no country is known "
            "to read it in; write it internationally, e.g. '+44 20 7946 0123'")
    return _valid(written, compact, region)


def _valid(written: str, compact: str, region: str | None) -> str:
    """Parse ``compact`` (``+`` international or national in ``region``) or say why not."""
    try:
        number = phonenumbers.parse(compact, region)
    except NumberParseException as exc:
        why = _WHY_UNPARSABLE.get(exc.error_type, "it does not look like a phone number")
        raise PhoneNumberError(f"{written!r} is not a valid phone number: {why}") from None
    if not phonenumbers.is_valid_number(number):
        why = _WHY_INVALID.get(phonenumbers.is_possible_number_with_reason(number),
                               "no such numbers are assigned in its numbering plan")
        where = phonenumbers.region_code_for_country_code(number.country_code)
        country = f" for {where}" if is_known_region(where) else ""
        raise PhoneNumberError(f"{written!r} is not a valid phone number{country}: {why}")
    digits = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]
    if len(digits) > 15:    # libphonenumber accepts some longer German numbers; E.164 (and SIP trunks) do not
        raise PhoneNumberError(f"{written!r} is not a valid phone number: it has {len(digits)} digits "
                               f"with its country code, more than E.164's 15")
    return digits
