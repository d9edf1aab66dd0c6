"""How a calendar event becomes a referral status: the keyword rules.

Pure functions, no I/O.  The rules, exactly:

1. **Cancelled events never count** (iCalendar ``STATUS:CANCELLED``, EWS
   ``IsCancelled``, Graph ``isCancelled``).
2. **A tag in square brackets anywhere in the title** names the status:
   ``"Board meeting [m]"``, ``"[VA] Spain"``.  Case does not matter, spaces
   inside the brackets are ignored, and the first tag that is a known keyword
   wins (``"[draft] [m] plan"`` -> meeting; ``[draft]`` is not a keyword and
   stays ordinary text).
3. Otherwise **the first word of the title**, case-insensitively, with the
   punctuation ``: - , . ; !`` trimmed from its end: ``"m Board meeting"``,
   ``"M: Board meeting"``, ``"Lunch with Bob"``, ``"va"`` and ``"Sick"`` all
   name a status.  Only whole words count: ``"Marketing sync"`` does not
   start with ``m``, and ``"M&A review"`` is not ``m``.
4. An event with a keyword counts **whatever its free/busy state**: Outlook
   and Google create all-day events as "free", and a "va" event is still a
   vacation.
5. An event **without a keyword** counts only when it blocks time (busy,
   tentative, out of office, working elsewhere; not "free" /
   ``TRANSP:TRANSPARENT``).  Out-of-office events take ``out_of_office``
   (default ``away``); the others take ``without_keyword`` (default
   ``meeting``).  Either may be ``None`` ("ignore"): such events are then
   not a status at all.
6. **Private events** (iCalendar ``CLASS:PRIVATE`` or ``CONFIDENTIAL``,
   EWS/Graph sensitivity private or confidential) still take their status
   from the keyword, but their title is never stored: reason ``""`` and
   visibility ``nobody``, so everyone else only learns "busy".  Other events
   get the employee's ``visibility`` (default ``everyone``) and their title
   as the reason text, as written.

A keyword map is the company's defaults (:data:`DEFAULT_KEYWORDS` unless the
calendar config replaces them) overlaid with the employee's own entries; a
personal entry may map a company keyword to another status.  Keywords are
one word of letters, digits, ``_`` or ``-``; statuses are the built-in ones
(:data:`BUILTIN_STATUSES`) or ones the company defines.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

#: Statuses every company has.  ``available`` is what nobody needs to set.
BUILTIN_STATUSES = ("available", "meeting", "lunch", "vacation", "sick", "away")

#: The company keyword map when the calendar config gives none.
DEFAULT_KEYWORDS: Mapping[str, str] = MappingProxyType({
    "m": "meeting", "meeting": "meeting",
    "va": "vacation", "vacation": "vacation", "holiday": "vacation",
    "lunch": "lunch",
    "sick": "sick", "ill": "sick",
    "away": "away", "out": "away",
})

#: Free/busy states a source reports for an event.
FREE_BUSY = ("free", "tentative", "busy", "oof", "elsewhere")

VISIBILITIES = ("everyone", "receptionists", "nobody")

KEYWORD_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
STATUS_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,31}")

_TAG = re.compile(r"\[\s*([^\[\]]{1,32}?)\s*\]")
_TRAILING = ":-,.;!"


@dataclass(frozen=True)
class KeywordRules:
    """One employee's rules (company defaults already merged with their own).

    ``keywords`` maps lower-case keywords to statuses.  ``without_keyword``
    and ``out_of_office`` are statuses, or ``None`` to ignore such events.
    ``visibility`` is who may see the title of non-private events.
    """

    keywords: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_KEYWORDS))
    without_keyword: str | None = "meeting"
    out_of_office: str | None = "away"
    visibility: str = "everyone"

    def __post_init__(self) -> None:
        for keyword in self.keywords:
            if keyword != keyword.lower() or not KEYWORD_PATTERN.fullmatch(keyword):
                raise ValueError(f"keyword {keyword!r} must be one lower-case word of letters, digits, _ or -")
        if self.visibility not in ("everyone", "receptionists"):
            raise ValueError(f"visibility must be everyone or receptionists, not {self.visibility!r}")
        object.__setattr__(self, "keywords", MappingProxyType(dict(self.keywords)))


def merge_keywords(company: Mapping[str, str], personal: Mapping[str, str] | None) -> dict[str, str]:
    """The company's keyword map overlaid with the employee's own entries."""
    merged = {k.lower(): v for k, v in company.items()}
    merged.update({k.lower(): v for k, v in (personal or {}).items()})
    return merged


@dataclass(frozen=True, slots=True)
class Match:
    """What the title says: ``status`` (``None``: no keyword) and how it was found."""

    status: str | None
    keyword: str | None = None
    how: str = "none"          # "tag", "first-word" or "none"


def find_keyword(title: str, keywords: Mapping[str, str]) -> Match:
    """The keyword in ``title`` by rules 2 and 3 above (bracket tag first, then first word)."""
    text = title or ""
    for tag in _TAG.finditer(text):
        word = "".join(tag.group(1).split()).lower()
        if word in keywords:
            return Match(keywords[word], word, "tag")
    words = text.split(None, 1)
    if words:
        word = words[0].rstrip(_TRAILING).lower()
        if word in keywords:
            return Match(keywords[word], word, "first-word")
    return Match(None)


@dataclass(frozen=True, slots=True)
class Classified:
    """How one event counts: ``status`` (``None``: it does not), ``reason`` and ``visibility``."""

    status: str | None
    reason: str = ""
    visibility: str = "everyone"


def classify(title: str, rules: KeywordRules, *, private: bool = False, free_busy: str = "busy",
             cancelled: bool = False) -> Classified:
    """Apply rules 1-6 to one event."""
    if free_busy not in FREE_BUSY:
        raise ValueError(f"free_busy must be one of {', '.join(FREE_BUSY)}, not {free_busy!r}")
    if cancelled:
        return Classified(None)
    status = find_keyword(title, rules.keywords).status
    if status is None:
        if free_busy == "free":
            return Classified(None)
        status = rules.out_of_office if free_busy == "oof" else rules.without_keyword
        if status is None:
            return Classified(None)
    if private:
        return Classified(status, "", "nobody")
    return Classified(status, clean_title(title), rules.visibility)


#: Longest reason text kept from a title (it is shown to receptionists, not stored as a document).
MAX_REASON = 200


def clean_title(title: str | None) -> str:
    """A title as one line of text: whitespace runs (newlines, tabs) become one space,
    other control characters go, and it is cut to :data:`MAX_REASON` characters."""
    text = " ".join((title or "").split())
    text = "".join(c for c in text if c.isprintable())
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 1] + "…"
