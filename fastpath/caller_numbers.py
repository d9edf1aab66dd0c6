"""Caller numbers as the switch sends them → E.164 digits, by per-company compiled rules.

A caller ID arrives as whatever the carrier sends: ``+74951234567``,
``74951234567``, ``84951234567``, ``4951234567``, ``1234567`` (a Moscow number
dialled locally), ``81044...`` or ``0044...``.  ICM looks callers up by their
E.164 digits, so each form must become the same key, on the call path, in well
under a microsecond.  ``phonenumbers`` (libphonenumber's metadata) is the
reference; at config time :func:`compile_rules` turns the metadata of the
company's country into one compact table (a few KB), and :func:`normalise_py`
here and ``_caller_numbers.normalise`` (Cython) both walk that table.
:func:`reference_normalise` states the same rules with ``phonenumbers`` calls;
the tests check that all three agree on a large generated sample.

The rules
=========

Input: optional surrounding whitespace, an optional leading ``+``, then 1 to
32 ASCII digits.  Anything else (``anonymous``, letters, separators) gives
``None``.  "Valid" below means libphonenumber's ``is_valid_number`` (the
number matches an assigned range of its country, all regions sharing the
country code included: a Canadian caller is a valid +1 number for a US
company); "possible" means ``is_possible_number_with_reason`` is
``IS_POSSIBLE`` (a known country code and a possible length there).

1. ``+`` then digits: international (rule I below).
2. The company country's international prefix (libphonenumber's
   ``international_prefix`` pattern: ``810`` in Russia, ``011`` in the US,
   ``00`` in most of Europe…) at the start, not followed by ``0``:
   international, the digits after the prefix.
3. ``00`` not followed by ``0``: international, the digits after ``00``
   (ITU's prefix, which Russian carriers send too, as ``phone.py`` reads it).
4. National: the digits read in the company's country exactly as
   ``phonenumbers.parse(digits, country)`` does (a leading country code of the
   company's country is dropped when that makes the number fit the plan; the
   trunk prefix ``8`` / ``0`` / ``1`` — libphonenumber's
   ``national_prefix_for_parsing``, with its transform rule — is dropped when
   what remains has a possible length).  Taken when the result is valid.
5. Local: the company's ``city_code`` followed by the digits, when that is a
   valid national number (``1234567`` with city code 495 → ``74951234567``).
   The city code is written without the trunk prefix (495 Moscow, 20 London,
   30 Berlin, 212 New York; Italian area codes keep their 0: 06 Rome).
6. International without ``+`` (carriers that send E.164 digits bare):
   rule I on the digits.
7. Otherwise ``None``.

Rule I, international digits: the country code is the first 1–3 digits that
are a known country code (libphonenumber's ``_extract_country_code``); the
national significant number is the rest, 2 to 17 digits, never trunk-stripped
(a number with its country code carries no trunk prefix).  For the company's
own country code it must be valid; for any other it must be possible (the
table holds every country's possible lengths, not every country's ranges, so
it stays small).

Readings are tried in this order and the first that holds wins, so a Russian
company reads ``84951234567`` as Moscow (rule 4), not as a +84 (Viet Nam)
number — the opposite of the config parser (``phone.py``), which reads bare
digits internationally first because people write config, carriers write
caller IDs.  In countries whose numbering plan accepts almost any digits
(Germany, Austria) bare E.164 digits of a foreign caller can be a valid
national number and are then read nationally; carriers there send ``+`` or
``00`` for international callers.

The table
=========

One record per company (``REC_DIAL_RULES``), little-endian, offsets from the
record start, read in place by both twins:

* header: ``u8 type, u8 version, u16 country code``, then ``u32`` offsets of
  the sections below;
* two length tables of 48 bytes (the company's region, and the main region of
  its country code, which ``parse`` switches to after dropping a leading
  country code — e.g. KZ → RU): byte *n* is libphonenumber's
  ``_test_number_length`` verdict for an *n*-digit number;
* the city code (``u8`` length + digits);
* prefix lists, kept in the order Python's ``re`` would try them, for the
  international prefix and for the two national-prefix rules: each entry is a
  sequence of digit classes (``u16`` bit masks), whether it is anchored at the
  end (``$``), whether the transform rule applies, and the replacement as
  literal digits and spans of the input.  ``re.match`` returns the first path
  in this order that fits, and so does the walker;
* one minimal acyclic DFA over digits (``u16`` transitions, ``u8`` flags per
  state) answering, for any digit string, "fits the general pattern of the
  company's region" (``V_HOME``), "... of the main region" (``V_MAIN``) and
  "valid for the country code" (``VALID``) — the union of libphonenumber's
  per-type patterns and possible lengths, with its region-selection rule for
  shared country codes, compiled by subset construction from the regexes;
* every country code with the lengths that are possible there (``u16 cc,
  u32 mask``, sorted).

Where it lives: :func:`compile_rules` runs once per company at config load;
``Store.load_config`` writes the bytes to the store's ``dial`` table (key:
company id) in the transaction that writes the company record, and the ICM
lookup (``fastpath/icm_lookup.py``) and the presence listener's call history
read them from there.
"""
from __future__ import annotations

import os
import struct
from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumber, ValidationResult
from phonenumbers import phonenumberutil as _pnu
from phonenumbers.phonemetadata import PhoneMetadata

try:                                     # Python 3.11+
    import re._constants as _sc
    import re._parser as _sp
except ImportError:                      # pragma: no cover - older Pythons
    import sre_constants as _sc
    import sre_parse as _sp

from .errors import PhoneNumberError

__all__ = [
    "REC_DIAL_RULES", "compile_rules", "normalise", "normalise_py", "reference_normalise",
    "describe", "IMPLEMENTATION", "IMPLEMENTATIONS", "MAX_DIGITS",
]

#: Record type of a compiled table (the store's record types 1–9 are taken).
REC_DIAL_RULES = 10
RULES_VERSION = 1
MAX_DIGITS = 32                 # longer inputs are not phone numbers
MAX_NSN = 17                    # libphonenumber's _MAX_LENGTH_FOR_NSN
MIN_NSN = 2                     # ... and _MIN_LENGTH_FOR_NSN
LEN_SLOTS = 48                  # length verdicts kept per region (0..47 digits)

# Length verdicts (libphonenumber's ValidationResult, as stored in the table).
L_POSSIBLE, L_LOCAL_ONLY, L_TOO_SHORT, L_TOO_LONG, L_INVALID = 0, 1, 2, 3, 4
_VERDICT = {
    ValidationResult.IS_POSSIBLE: L_POSSIBLE,
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: L_LOCAL_ONLY,
    ValidationResult.TOO_SHORT: L_TOO_SHORT,
    ValidationResult.TOO_LONG: L_TOO_LONG,
    ValidationResult.INVALID_LENGTH: L_INVALID,
}

#: The automaton answers for strings up to this long (inputs are at most 32 digits,
#: a transform rule adds a few; every metadata pattern is far shorter).
DFA_DEPTH = 64

# DFA state flags.
F_V_HOME = 1                    # matches the general pattern of the company's region
F_VALID = 2                     # a valid national number for the country code
F_V_MAIN = 4                    # matches the general pattern of the country code's main region
DEAD = 0xFFFF

# Prefix-entry flags.
P_ANCHORED = 1                  # the path ends with '$': the whole input must be consumed
P_TRANSFORM = 2                 # national_prefix_transform_rule applies on this path

_HEAD = struct.Struct("<BBH9I")  # type, version, cc, 9 section offsets
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_CC_ENTRY = struct.Struct("<HI")
_ALL_DIGITS = (1 << 10) - 1
_WHITESPACE = " \t\r\n"

# Where libphonenumber's per-type checks are (the order of _number_type_helper).
_TYPES = ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan",
          "voicemail", "fixed_line", "mobile")


class RulesCompileError(PhoneNumberError):
    """The metadata of a country uses a pattern the table cannot express."""


# --- regex → digit automata ----------------------------------------------------

def _class_mask(items) -> int:
    mask, negate = 0, False
    for op, av in items:
        if op is _sc.NEGATE:
            negate = True
        elif op is _sc.LITERAL:
            if 48 <= av <= 57:
                mask |= 1 << (av - 48)
        elif op is _sc.RANGE:
            lo, hi = av
            for c in range(max(lo, 48), min(hi, 57) + 1):
                mask |= 1 << (c - 48)
        elif op is _sc.CATEGORY and av is _sc.CATEGORY_DIGIT:
            mask |= _ALL_DIGITS
        else:
            raise RulesCompileError(f"unsupported character class item {op} in the metadata")
    return (_ALL_DIGITS & ~mask) if negate else mask


class _Nfa:
    """A Thompson NFA over the ten digits, built from ``re``'s parse tree."""

    def __init__(self, pattern: str):
        self.edges: list[list[tuple[int, int]]] = []
        self.eps: list[list[int]] = []
        first = self._new()
        self.accept = self._build(_sp.parse(pattern), first)
        self.start = self._closure((first,))
        self._steps: dict = {}

    def _new(self) -> int:
        self.edges.append([])
        self.eps.append([])
        return len(self.edges) - 1

    def _build(self, tree, s: int) -> int:
        for op, av in tree:
            if op is _sc.LITERAL or op is _sc.IN:
                mask = (1 << (av - 48) if 48 <= av <= 57 else 0) if op is _sc.LITERAL else _class_mask(av)
                t = self._new()
                if mask:
                    self.edges[s].append((mask, t))
                s = t
            elif op is _sc.SUBPATTERN:
                s = self._build(av[-1], s)
            elif op is _sc.BRANCH:
                end = self._new()
                for alt in av[1]:
                    a = self._new()
                    self.eps[s].append(a)
                    self.eps[self._build(alt, a)].append(end)
                s = end
            elif op is _sc.MAX_REPEAT or op is _sc.MIN_REPEAT:
                lo, hi, item = av
                if hi is _sc.MAXREPEAT:
                    raise RulesCompileError("unbounded repetition in a number pattern")
                for _ in range(lo):
                    s = self._build(item, s)
                ends = [s]
                for _ in range(hi - lo):
                    s = self._build(item, s)
                    ends.append(s)
                end = self._new()
                for e in ends:
                    self.eps[e].append(end)
                s = end
            else:
                raise RulesCompileError(f"unsupported regex construct {op} in a number pattern")
        return s

    def _closure(self, states) -> frozenset:
        seen = set(states)
        stack = list(states)
        while stack:
            for y in self.eps[stack.pop()]:
                if y not in seen:
                    seen.add(y)
                    stack.append(y)
        return frozenset(seen)

    def step(self, states: frozenset, digit: int):
        key = (states, digit)
        out = self._steps.get(key, False)
        if out is False:
            bit = 1 << digit
            nxt = [t for x in states for mask, t in self.edges[x] if mask & bit]
            out = self._closure(nxt) if nxt else None
            self._steps[key] = out
        return out


class _Component:
    """One pattern the DFA tracks: fully matched (optionally only at some lengths) or prefix-matched."""

    __slots__ = ("nfa", "lengths", "prefix")

    def __init__(self, pattern: str, lengths=None, prefix: bool = False):
        self.nfa = _Nfa(pattern)
        self.lengths = lengths
        self.prefix = prefix


def _desc_component(desc, components: list, with_lengths: bool = True) -> int | None:
    """libphonenumber's _is_number_matching_desc as a component; its index, or None if it never matches."""
    if desc is None or not desc.national_number_pattern:
        return None
    lengths = frozenset(desc.possible_length) if with_lengths and desc.possible_length else None
    components.append(_Component(desc.national_number_pattern, lengths))
    return len(components) - 1


def _build_dfa(home: str) -> tuple[list[int], list[list[int]]]:
    """The minimal DFA with F_V_HOME / F_V_MAIN / F_VALID flags; returns (flags, transitions), start = 0."""
    home_md = PhoneMetadata.metadata_for_region(home)
    cc = home_md.country_code
    main_md = _main_metadata(cc)
    components: list[_Component] = []
    v_home = _desc_component(home_md.general_desc, components, with_lengths=False)
    v_main = _desc_component(main_md.general_desc, components, with_lengths=False)
    regions = []
    for region in _pnu.COUNTRY_CODE_TO_REGION_CODE[cc]:
        md = PhoneMetadata.metadata_for_region(region)
        general = _desc_component(md.general_desc, components)
        types = []
        for name in _TYPES:
            if name == "mobile" and md.same_mobile_and_fixed_line_pattern:
                continue
            index = _desc_component(getattr(md, name), components)
            if index is not None:
                types.append(index)
        leading = None
        if md.leading_digits:
            components.append(_Component(md.leading_digits, prefix=True))
            leading = len(components) - 1
        regions.append((general, tuple(types), leading))
    single_region = len(regions) == 1
    full = [i for i, c in enumerate(components) if not c.prefix]

    def flags_of(depth: int, sets: tuple, sticky: int) -> int:
        def hit(i):
            if i is None:
                return False
            c = components[i]
            if c.prefix:
                return bool(sticky >> i & 1)
            s = sets[i]
            return s is not None and c.nfa.accept in s and (c.lengths is None or depth in c.lengths)
        out = (F_V_HOME if hit(v_home) else 0) | (F_V_MAIN if hit(v_main) else 0)
        for general, types, leading in regions:       # _region_code_for_number_from_list, then validity
            valid = hit(general) and any(hit(t) for t in types)
            if single_region:
                return out | (F_VALID if valid else 0)
            claimed = hit(leading) if leading is not None else valid
            if claimed:
                return out | (F_VALID if valid else 0)
        return out

    def sticky_of(sets: tuple, sticky: int) -> int:
        for i, c in enumerate(components):
            if c.prefix and sets[i] is not None and c.nfa.accept in sets[i]:
                sticky |= 1 << i
        return sticky

    start_sets = tuple(c.nfa.start for c in components)
    start = (0, start_sets, sticky_of(start_sets, 0))
    ids = {start: 0}
    order = [start]
    trans: list[list[int]] = []
    i = 0
    while i < len(order):
        depth, sets, sticky = order[i]
        row = []
        for digit in range(10):
            nsets = tuple(components[j].nfa.step(s, digit) if s is not None else None
                          for j, s in enumerate(sets))
            if depth + 1 > DFA_DEPTH or all(nsets[j] is None for j in full):
                row.append(-1)
                continue
            key = (depth + 1, nsets, sticky_of(nsets, sticky))
            k = ids.get(key)
            if k is None:
                k = ids[key] = len(order)
                order.append(key)
            row.append(k)
        trans.append(row)
        i += 1
    raw_flags = [flags_of(*state) for state in order]

    # Minimise: the automaton is acyclic, so equal (flags, successors) means equivalent
    # (iterative post-order); then number the states breadth-first from the start.
    signature: dict = {}
    new_id = [-1] * len(order)
    stack = [(0, False)]
    while stack:
        x, expanded = stack.pop()
        if new_id[x] >= 0:
            continue
        if not expanded:
            stack.append((x, True))
            stack.extend((y, False) for y in trans[x] if y >= 0 and new_id[y] < 0)
            continue
        key = (raw_flags[x], tuple(new_id[y] if y >= 0 else -1 for y in trans[x]))
        new_id[x] = signature.setdefault(key, len(signature))
    by_id = {n: key for key, n in signature.items()}
    root = new_id[0]
    order_new = [root]
    index = {root: 0}                 # breadth-first from the start state: start = 0, neighbours close
    i = 0
    while i < len(order_new):
        for k in by_id[order_new[i]][1]:
            if k >= 0 and k not in index:
                index[k] = len(order_new)
                order_new.append(k)
        i += 1
    flags = [by_id[n][0] for n in order_new]
    rows = [[index[k] if k >= 0 else DEAD for k in by_id[n][1]] for n in order_new]
    return flags, rows


# --- regex → prefix paths, in re's priority order -------------------------------

_PATH_LIMIT = 5000


def _paths_seq(items, i: int = 0):
    """Paths of ``items[i:]``: (digit masks, anchored, {group: (start, end)}), in ``re`` try order."""
    if i == len(items):
        yield (), False, {}
        return
    for head_masks, head_anchored, head_groups in _paths_item(items[i]):
        for tail_masks, tail_anchored, tail_groups in _paths_seq(items, i + 1):
            if head_anchored and tail_masks:
                continue                      # characters after '$' never match
            groups = dict(head_groups)
            off = len(head_masks)
            for g, (a, b) in tail_groups.items():
                groups[g] = (a + off, b + off)
            yield head_masks + tail_masks, head_anchored or tail_anchored, groups


def _paths_item(item):
    op, av = item
    if op is _sc.LITERAL:
        yield ((1 << (av - 48)) if 48 <= av <= 57 else 0,), False, {}
    elif op is _sc.IN:
        yield (_class_mask(av),), False, {}
    elif op is _sc.AT:
        if av is not _sc.AT_END:
            raise RulesCompileError(f"unsupported anchor {av} in a prefix pattern")
        yield (), True, {}
    elif op is _sc.SUBPATTERN:
        group = av[0]
        for masks, anchored, groups in _paths_seq(list(av[-1])):
            if group is not None:
                groups = dict(groups)
                groups[group] = (0, len(masks))
            yield masks, anchored, groups
    elif op is _sc.BRANCH:
        for alt in av[1]:
            yield from _paths_seq(list(alt))
    elif op is _sc.MAX_REPEAT:
        lo, hi, sub = av
        if hi is _sc.MAXREPEAT:
            raise RulesCompileError("unbounded repetition in a prefix pattern")

        def repeat(k):                        # greedy: one more first, then stop
            if k < hi:
                for x_masks, x_anchored, x_groups in _paths_seq(list(sub)):
                    for r_masks, r_anchored, r_groups in repeat(k + 1):
                        if x_anchored and r_masks:
                            continue
                        groups = dict(x_groups)
                        for g, (a, b) in r_groups.items():
                            groups[g] = (a + len(x_masks), b + len(x_masks))
                        yield x_masks + r_masks, x_anchored or r_anchored, groups
            if k >= lo:
                yield (), False, {}
        yield from repeat(0)
    else:
        raise RulesCompileError(f"unsupported regex construct {op} in a prefix pattern")


def _prefix_paths(pattern: str):
    tree = _sp.parse(pattern)
    out = []
    for path in _paths_seq(list(tree)):
        out.append(path)
        if len(out) > _PATH_LIMIT:
            raise RulesCompileError(f"prefix pattern {pattern!r} has more than {_PATH_LIMIT} paths")
    return out, tree.state.groups - 1


def _template_parts(template: str):
    """``re.sub`` template (``9\\1``) → [(literal digits | group number)]."""
    parts = []
    i = 0
    literal = ""
    while i < len(template):
        c = template[i]
        if c == "\\" and i + 1 < len(template) and template[i + 1].isdigit():
            if literal:
                parts.append(literal)
                literal = ""
            parts.append(int(template[i + 1]))
            i += 2
        elif c.isdigit():
            literal += c
            i += 1
        else:
            raise RulesCompileError(f"unsupported transform rule {template!r}")
    if literal:
        parts.append(literal)
    return parts


def _encode_prefix_list(pattern: str | None, transform: str | None) -> bytes:
    """A prefix list section: u16 count, then per path: u8 len, u8 flags, u16 masks…, replacement parts."""
    if not pattern:
        return _U16.pack(0)
    paths, n_groups = _prefix_paths(pattern)
    template = _template_parts(transform) if transform else None
    if template is not None and n_groups == 0:
        raise RulesCompileError(f"transform rule {transform!r} without a group in {pattern!r}")
    out = bytearray(_U16.pack(len(paths)))
    for masks, anchored, groups in paths:
        if len(masks) > 255:
            raise RulesCompileError(f"prefix path longer than 255 digits in {pattern!r}")
        flags = P_ANCHORED if anchored else 0
        parts = []
        if template is not None and n_groups in groups:      # groups()[num_groups - 1] is not None
            flags |= P_TRANSFORM
            for part in template:
                if isinstance(part, str):
                    parts.append((0, part))
                elif part in groups:
                    parts.append((1, groups[part]))
                # a group that did not take part is replaced by nothing (re.sub since 3.5)
        out += bytes((len(masks), flags))
        for m in masks:
            out += _U16.pack(m)
        out.append(len(parts))
        for kind, value in parts:
            if kind == 0:
                out += bytes((0, len(value))) + value.encode()
            else:
                out += bytes((1, value[0], value[1]))
    return bytes(out)


# --- the table ---------------------------------------------------------------------

def _main_metadata(cc: int):
    region = phonenumbers.region_code_for_country_code(cc)
    return PhoneMetadata.metadata_for_region_or_calling_code(cc, region)


def _length_verdicts(md) -> bytes:
    return bytes(_VERDICT[_pnu._test_number_length("0" * n, md)] for n in range(LEN_SLOTS))


def _cc_table() -> bytes:
    entries = []
    for cc in sorted(_pnu.COUNTRY_CODE_TO_REGION_CODE):
        md = _main_metadata(cc)
        if md is None:
            continue
        mask = 0
        for n in range(MIN_NSN, MAX_NSN + 1):
            if _pnu._test_number_length("0" * n, md) == ValidationResult.IS_POSSIBLE:
                mask |= 1 << n
        entries.append(_CC_ENTRY.pack(cc, mask))
    return _U16.pack(len(entries)) + b"".join(entries)


def _check_city_code(country: str, city_code: str | None) -> str:
    city = (city_code or "").strip()
    if city and (not city.isascii() or not city.isdigit() or len(city) > 8):
        raise PhoneNumberError(f"city code {city_code!r} for {country} must be 1 to 8 digits, e.g. 495")
    return city


@lru_cache(maxsize=64)
def compile_rules(country: str, city_code: str | None = None) -> bytes:
    """The table for a company in ``country`` (ISO alpha-2) with an optional ``city_code``.

    Deterministic for a given ``phonenumbers`` version; a few KB (about 10 KB
    for the NANP countries).  Raises :class:`PhoneNumberError` for an unknown
    country or a malformed city code.
    """
    if country not in phonenumbers.SUPPORTED_REGIONS:
        raise PhoneNumberError(f"no numbering plan for country {country!r}")
    city = _check_city_code(country, city_code)
    home = PhoneMetadata.metadata_for_region(country)
    cc = home.country_code
    main = _main_metadata(cc)
    flags, rows = _build_dfa(country)
    if len(flags) >= DEAD:
        raise RulesCompileError(f"the automaton for {country} has {len(flags)} states")
    dfa = bytearray(_U16.pack(len(flags)))
    dfa += bytes(flags)
    if len(dfa) % 2:
        dfa.append(0)
    for row in rows:
        for t in row:
            dfa += _U16.pack(t)
    sections = [
        _length_verdicts(home),
        _length_verdicts(main),
        bytes((len(city),)) + city.encode(),
        _encode_prefix_list(home.international_prefix, None),
        _encode_prefix_list(home.national_prefix_for_parsing, home.national_prefix_transform_rule),
        _encode_prefix_list(main.national_prefix_for_parsing, main.national_prefix_transform_rule),
        bytes(dfa),
        _cc_table(),
        _metadata_version().encode(),
    ]
    offsets = []
    pos = _HEAD.size
    body = bytearray()
    for section in sections:
        if pos % 2:                       # keep u16 arrays aligned
            body.append(0)
            pos += 1
        offsets.append(pos)
        body += section
        pos += len(section)
    return _HEAD.pack(REC_DIAL_RULES, RULES_VERSION, cc, *offsets) + bytes(body)


def _metadata_version() -> str:
    return f"phonenumbers {phonenumbers.__version__}"


def describe(rules: bytes) -> dict:
    """What a table holds (for ``switchboard info`` and debugging)."""
    h = _header(rules)
    city = _city(rules, h)
    n_states = _U16.unpack_from(rules, h[7])[0]
    return {
        "country_code": h[0],
        "city_code": city,
        "idd_paths": _U16.unpack_from(rules, h[4])[0],
        "national_prefix_paths": _U16.unpack_from(rules, h[5])[0],
        "dfa_states": n_states,
        "country_codes": _U16.unpack_from(rules, h[8])[0],
        "bytes": len(rules),
        "metadata": bytes(rules[h[9]:]).decode(),
    }


# --- the pure-Python walker (the twin of _caller_numbers.pyx) ------------------------

def _header(rules) -> tuple:
    if len(rules) < _HEAD.size:
        raise PhoneNumberError("dialling rules record is truncated; reload the config")
    t, version, cc, *offsets = _HEAD.unpack_from(rules, 0)
    if t != REC_DIAL_RULES or version != RULES_VERSION:
        raise PhoneNumberError(f"dialling rules record type {t} v{version}, expected {REC_DIAL_RULES} "
                               f"v{RULES_VERSION}; reload the config")
    if any(o > len(rules) for o in offsets):
        raise PhoneNumberError("dialling rules record is truncated; reload the config")
    return (cc, *offsets)


def _city(rules, h) -> str:
    n = rules[h[3]]
    return bytes(rules[h[3] + 1:h[3] + 1 + n]).decode()


class _Walker:
    """Reads one table in place; one instance per normalisation (no decoding up front)."""

    __slots__ = ("r", "cc", "len_home", "len_main", "city", "idd", "np_home", "np_main",
                 "dfa_flags", "dfa_trans", "n_states", "ccs", "n_ccs")

    def __init__(self, rules):
        r = self.r = rules
        h = _header(rules)
        self.cc = h[0]
        self.len_home = h[1]
        self.len_main = h[2]
        self.city = _city(rules, h)
        self.idd, self.np_home, self.np_main = h[4], h[5], h[6]
        self.n_states = _U16.unpack_from(r, h[7])[0]
        self.dfa_flags = h[7] + 2
        self.dfa_trans = self.dfa_flags + self.n_states + (self.n_states & 1)
        self.ccs = h[8] + 2
        self.n_ccs = _U16.unpack_from(r, h[8])[0]

    # DFA
    def flags(self, digits: str) -> int:
        r, state, trans = self.r, 0, self.dfa_trans
        for ch in digits:
            state = _U16.unpack_from(r, trans + (state * 10 + ord(ch) - 48) * 2)[0]
            if state == DEAD:
                return 0
        return r[self.dfa_flags + state]

    def valid(self, digits: str) -> bool:
        return bool(self.flags(digits) & F_VALID)

    def viable(self, digits: str, main: bool) -> bool:
        return bool(self.flags(digits) & (F_V_MAIN if main else F_V_HOME))

    def length_verdict(self, digits: str, main: bool) -> int:
        n = len(digits)
        if n >= LEN_SLOTS:
            return L_TOO_LONG
        return self.r[(self.len_main if main else self.len_home) + n]

    # prefix lists
    def match(self, section: int, digits: str):
        """First path of the list that fits the start of ``digits``: (offset of its parts, length, flags) or None."""
        r = self.r
        (count,) = _U16.unpack_from(r, section)
        pos = section + 2
        n = len(digits)
        for _ in range(count):
            length, flags = r[pos], r[pos + 1]
            masks = pos + 2
            parts = masks + 2 * length
            fits = length <= n and (not flags & P_ANCHORED or length == n)
            if fits:
                for i in range(length):
                    if not _U16.unpack_from(r, masks + 2 * i)[0] >> (ord(digits[i]) - 48) & 1:
                        fits = False
                        break
            if fits:
                return parts, length, flags
            pos = self._skip_parts(parts)
        return None

    def _skip_parts(self, pos: int) -> int:
        r = self.r
        count = r[pos]
        pos += 1
        for _ in range(count):
            pos += 3 if r[pos] == 1 else 2 + r[pos + 1]
        return pos

    def expand(self, parts: int, digits: str) -> str:
        r = self.r
        out = []
        count = r[parts]
        pos = parts + 1
        for _ in range(count):
            if r[pos] == 1:
                out.append(digits[r[pos + 1]:r[pos + 2]])
                pos += 3
            else:
                out.append(bytes(r[pos + 2:pos + 2 + r[pos + 1]]).decode())
                pos += 2 + r[pos + 1]
        return "".join(out)

    def strip_national_prefix(self, digits: str, main: bool) -> str:
        """libphonenumber's _maybe_strip_national_prefix_carrier_code, on the table."""
        if not digits:
            return digits
        hit = self.match(self.np_main if main else self.np_home, digits)
        if hit is None:
            return digits
        parts, length, flags = hit
        viable_original = self.viable(digits, main)
        if flags & P_TRANSFORM:
            result = self.expand(parts, digits) + digits[length:]
        else:
            result = digits[length:]
        if viable_original and not self.viable(result, main):
            return digits
        return result

    # country codes
    def possible_mask(self, cc: int) -> int:
        """Possible-length mask of country code ``cc``; -1 when it is no country code."""
        lo, hi = 0, self.n_ccs - 1
        r, base = self.r, self.ccs
        while lo <= hi:
            mid = (lo + hi) >> 1
            code, mask = _CC_ENTRY.unpack_from(r, base + mid * _CC_ENTRY.size)
            if code == cc:
                return mask
            if code < cc:
                lo = mid + 1
            else:
                hi = mid - 1
        return -1

    # the readings
    def international(self, digits: str) -> str | None:
        if not digits or digits[0] == "0":
            return None
        for i in range(1, min(3, len(digits)) + 1):
            cc = int(digits[:i])
            mask = self.possible_mask(cc)
            if mask >= 0:
                nsn = digits[i:]
                if not MIN_NSN <= len(nsn) <= MAX_NSN:
                    return None
                if cc == self.cc:
                    return digits if self.valid(nsn) else None
                return digits if mask >> len(nsn) & 1 else None
        return None

    def national(self, digits: str) -> str | None:
        """The national significant number ``phonenumbers.parse(digits, country)`` finds, or None."""
        if len(digits) < MIN_NSN:
            return None
        nsn = None
        main = False
        cc = str(self.cc)
        if digits.startswith(cc):
            potential = self.strip_national_prefix(digits[len(cc):], False)
            if ((not self.viable(digits, False) and self.viable(potential, False))
                    or self.length_verdict(digits, False) == L_TOO_LONG):
                nsn = potential
                main = True
        if nsn is None:
            nsn = digits
        if len(nsn) < MIN_NSN:
            return None
        potential = self.strip_national_prefix(nsn, main)
        if self.length_verdict(potential, main) not in (L_TOO_SHORT, L_LOCAL_ONLY, L_INVALID):
            nsn = potential
        if len(nsn) > MAX_NSN:
            return None
        return nsn


def _digits_of(raw) -> tuple[bool, str] | None:
    if not isinstance(raw, str):
        return None
    s = raw.strip(_WHITESPACE)
    plus = s.startswith("+")
    digits = s[1:] if plus else s
    if not 1 <= len(digits) <= MAX_DIGITS or not digits.isascii() or not digits.isdigit():
        return None
    return plus, digits


def normalise_py(rules, raw: str) -> str | None:
    """E.164 digits of caller number ``raw`` under the compiled ``rules``, or None (pure Python)."""
    parsed = _digits_of(raw)
    if parsed is None:
        return None
    plus, d = parsed
    w = _Walker(rules)
    if plus:
        return w.international(d)
    hit = w.match(w.idd, d)
    if hit is not None and (hit[1] == len(d) or d[hit[1]] != "0"):
        return w.international(d[hit[1]:])
    if d.startswith("00") and len(d) > 2 and d[2] != "0":
        return w.international(d[2:])
    nsn = w.national(d)
    if nsn is not None and w.valid(nsn):
        return f"{w.cc}{nsn}"
    city = w.city
    if city and len(city) + len(d) <= MAX_NSN and w.valid(city + d):
        return f"{w.cc}{city}{d}"
    return w.international(d)


# --- the reference: the same rules in phonenumbers calls ------------------------------

def _number(cc: int, nsn: str) -> PhoneNumber:
    n = PhoneNumber(country_code=cc, national_number=int(nsn))
    _pnu._set_italian_leading_zeros_for_phone_number(nsn, n)
    return n


def _e164(n: PhoneNumber) -> str:
    return f"{n.country_code}{_pnu.national_significant_number(n)}"


def _reference_international(digits: str, home_cc: int) -> str | None:
    if not digits:
        return None
    cc, nsn = _pnu._extract_country_code(digits)
    if cc == 0 or not MIN_NSN <= len(nsn) <= MAX_NSN:
        return None
    n = _number(cc, nsn)
    if cc == home_cc:
        ok = phonenumbers.is_valid_number(n)
    else:
        ok = phonenumbers.is_possible_number_with_reason(n) == ValidationResult.IS_POSSIBLE
    return _e164(n) if ok else None


def reference_normalise(raw: str, country: str, city_code: str | None = None) -> str | None:
    """The rules of this module's docstring, stated with ``phonenumbers`` (slow; the tests' oracle)."""
    parsed = _digits_of(raw)
    if parsed is None:
        return None
    plus, d = parsed
    md = PhoneMetadata.metadata_for_region(country)
    cc = md.country_code
    if plus:
        return _reference_international(d, cc)
    source, rest = _pnu._maybe_strip_i18n_prefix_and_normalize(d, md.international_prefix or "NonMatch")
    if source == phonenumbers.CountryCodeSource.FROM_NUMBER_WITH_IDD:
        return _reference_international(rest, cc)
    if d.startswith("00") and len(d) > 2 and d[2] != "0":
        return _reference_international(d[2:], cc)
    try:
        n = phonenumbers.parse(d, country)
    except NumberParseException:
        n = None
    if n is not None and phonenumbers.is_valid_number(n):
        return _e164(n)
    city = _check_city_code(country, city_code)
    if city and len(city) + len(d) <= MAX_NSN:
        n = _number(cc, city + d)
        if phonenumbers.is_valid_number(n):
            return _e164(n)
    return _reference_international(d, cc)


# --- choosing the implementation (as fastpath/engine.py does) ------------------------

IMPLEMENTATIONS = {"reference": normalise_py}
try:
    from . import _caller_numbers
except ImportError:
    if os.environ.get("SWITCHBOARD_FORCE_CYTHON") == "1":
        raise
else:
    IMPLEMENTATIONS["fastpath"] = _caller_numbers.normalise

if os.environ.get("SWITCHBOARD_PUREPYTHON") == "1" or "fastpath" not in IMPLEMENTATIONS:
    IMPLEMENTATION = "reference"
else:
    IMPLEMENTATION = "fastpath"

#: ``normalise(rules, raw) -> str | None`` of the chosen implementation.
normalise = IMPLEMENTATIONS[IMPLEMENTATION]
