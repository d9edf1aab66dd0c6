"""Emergency numbers of a country, from libphonenumber's short-number metadata.

Why here: a phone that dials 112 or 999 must reach the emergency services
whatever else is down, so the generated dialplan sends these numbers straight
to the carrier gateway (never through Switchboard's socket), and validation
refuses an extension that would shadow one.  The numbers come from
``phonenumbers`` (the metadata FreeSWITCH users already trust for E.164), not
from a table of ours: GB ``112|999``, US ``112|911``, DE ``11[02]``, RU
``112|(?:0|10)[1-3]``...
"""
from __future__ import annotations

import functools
import re

from phonenumbers import PhoneMetadata


@functools.lru_cache(maxsize=None)
def emergency_pattern(region: str) -> str | None:
    """The regular expression (PCRE and Python alike) of ``region``'s emergency numbers as
    dialled there, or None when libphonenumber knows none for it."""
    meta = PhoneMetadata.short_metadata_for_region(region.upper())
    desc = meta.emergency if meta is not None else None
    pattern = desc.national_number_pattern if desc is not None else None
    return pattern or None


def is_emergency(number: str, region: str | None) -> bool:
    """Whether ``number`` (digits as a phone dials them) is an emergency number in ``region``."""
    pattern = emergency_pattern(region) if region else None
    return bool(pattern and re.fullmatch(pattern, number))
