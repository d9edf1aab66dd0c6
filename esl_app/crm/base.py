"""The one interface every CRM source implements, and what they share.

``source.find_responsible(phone_e164)`` asks the CRM "who is responsible for
the contact with this phone number?" and returns a :class:`CrmAnswer` (the
CRM user: id, e-mail, name) or ``None`` when the CRM knows no such contact or
nobody is responsible for it.  It gives up after ``timeout`` seconds (300 ms
by default, all requests of the lookup together) with :class:`CrmTimeout`,
and raises :class:`CrmAuthError`, :class:`CrmRateLimited`,
:class:`CrmUnavailable` or :class:`CrmBadResponse` — never anything else
for a CRM that misbehaves.

CRMs keep phone numbers as people typed them ("8 (916) 123-45-67"), and their
searches are fuzzy, so every adapter reads each phone of a found contact with
the company's dialling rules (:class:`PhoneReader`) and only accepts a contact
whose phone *is* the caller's number.
"""
from __future__ import annotations

import re
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import phonenumbers

from fastpath.caller_numbers import compile_rules, normalise

from .http import Deadline

DEFAULT_TIMEOUT = 0.3
_SEPARATORS = re.compile(r"[\s().\-/]")


@dataclass(frozen=True)
class CrmAnswer:
    """The CRM user responsible for a contact."""

    user_id: str
    user_email: str
    user_name: str
    source: str
    extension: str = ""                  # when the CRM itself names the extension (generic source)
    contact_id: str = ""


class PhoneReader:
    """Phone numbers as people write them in a CRM → E.164 digits, with the company's dialling rules."""

    def __init__(self, country: str, city_code: str | None = None):
        self.country = country
        self.rules = compile_rules(country, city_code)

    def e164(self, written) -> str | None:
        if not isinstance(written, str):
            written = str(written) if isinstance(written, int) else ""
        return normalise(self.rules, _SEPARATORS.sub("", written))

    def same(self, written, phone_e164: str) -> bool:
        return self.e164(written) == phone_e164


class InternationalReader:
    """For sources configured without a company country: only numbers written with their country code."""

    def e164(self, written) -> str | None:
        digits = _SEPARATORS.sub("", written if isinstance(written, str) else str(written))
        if digits.startswith("00"):
            digits = "+" + digits[2:]
        try:
            n = phonenumbers.parse(digits if digits.startswith("+") else "+" + digits)
        except phonenumbers.NumberParseException:
            return None
        return f"{n.country_code}{phonenumbers.national_significant_number(n)}" \
            if phonenumbers.is_possible_number(n) else None

    def same(self, written, phone_e164: str) -> bool:
        return self.e164(written) == phone_e164


def national_number(phone_e164: str) -> str:
    """The national significant number (``9161234567`` for ``79161234567``): what CRM searches match best."""
    try:
        n = phonenumbers.parse("+" + phone_e164)
    except phonenumbers.NumberParseException:
        return phone_e164
    return phonenumbers.national_significant_number(n)


def national_format_digits(phone_e164: str) -> str:
    """The number as dialled nationally, digits only (``89161234567``, ``02079460123``)."""
    try:
        n = phonenumbers.parse("+" + phone_e164)
    except phonenumbers.NumberParseException:
        return phone_e164
    return re.sub(r"\D", "", phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.NATIONAL))


class TtlCache:
    """A small thread-safe in-memory cache (CRM users change rarely; one request less per lookup)."""

    def __init__(self, ttl: float = 3600.0, max_entries: int = 10_000, clock=time.monotonic):
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._data: dict = {}
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            hit = self._data.get(key)
            if hit is None or hit[0] < self.clock():
                return None
            return hit[1]

    def put(self, key, value) -> None:
        with self._lock:
            if len(self._data) >= self.max_entries:
                self._data.clear()
            self._data[key] = (self.clock() + self.ttl, value)


class CrmSource(ABC):
    """A CRM that can say who is responsible for a phone number."""

    #: the kind of source ("amocrm", "bitrix24", "megaplan", "http")
    kind = "crm"

    def __init__(self, *, name: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 phones: PhoneReader | None = None):
        self.name = name or self.kind
        self.timeout = timeout
        self.phones = phones if phones is not None else InternationalReader()

    def find_responsible(self, phone_e164: str, *, deadline: Deadline | None = None) -> CrmAnswer | None:
        """The CRM user responsible for the contact with this phone, or None; within ``timeout``."""
        if not phone_e164.isdigit():
            raise ValueError(f"{self.name}: expected E.164 digits, got {phone_e164!r}")
        own = Deadline(self.timeout)
        if deadline is not None and deadline.end < own.end:
            own = deadline
        return self._find(phone_e164, own)

    @abstractmethod
    def _find(self, phone_e164: str, deadline: Deadline) -> CrmAnswer | None:
        ...

    def close(self) -> None:
        """Drop kept-alive connections."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} timeout={self.timeout * 1000:.0f} ms>"
