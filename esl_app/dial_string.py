"""Turn a :class:`~fastpath.route_plan.Ring` step into a FreeSWITCH ``bridge`` dial string.

Pure functions, no I/O except :func:`company_sip_domain`, which reads the
store (a company record once per config generation, then the generation only).

What comes out::

    {ignore_early_media=true,call_timeout=25,origination_caller_id_number=+442079460123,
     origination_caller_id_name=Alice Smith}[leg_timeout=10]user/2001@acme.example|...

* extension legs are ``user/<ext>@<sip domain>``, external legs
  ``sofia/gateway/<gateway>/+<e164>``;
* ``simultaneous``: legs joined with ``,`` (all ring at once);
* ``sequential``: legs joined with ``|`` (FreeSWITCH tries each group in
  turn), each with ``[leg_timeout=N]``;
* ``cumulative``: legs joined with ``,``, each with
  ``[leg_delay_start=D,leg_timeout=T]``.  FreeSWITCH measures ``leg_timeout``
  from the start of the originate, not from the leg's delayed start
  (``check_per_channel_timeouts()`` in switch_ivr_originate.c compares it with
  ``now - start`` for every leg), so a target that rings "from D s for N s"
  gets ``leg_timeout=D+N``.  For ``|`` groups the clock restarts with each
  group (``start = 0`` at the top of the per-group loop), so sequential legs
  get their own ring time.

The global ``{...}`` block carries only call-wide settings.  Never
``origination_uuid``: with several legs FreeSWITCH logs "Duplicate UUID!" and
rings only the first one (shared/FREESWITCH-NOTES.md, "Dialling and
outcomes").  This module never emits ``origination_uuid`` at all, even per
leg: a ``user/`` leg can fan out to several registrations of the same phone,
which would share it.

Why strict whitelisting instead of escaping
-------------------------------------------
A caller-ID name travels through five parsers, each with its own rules:

1. mod_event_socket reads the ``execute-app-arg`` header line (CR, LF and NUL
   end it — refused by :func:`esl_app.esl_protocol.encode_sendmsg`);
2. ``switch_channel_expand_variables()`` runs on every application argument:
   ``${var}`` is substituted and ``${api(args)}`` *runs an API command*;
   backslash is its escape character;
3. the originate parser splits on ``|``, ``,`` and ``:_:``, looks for
   ``{}``/``[]``/``<>`` blocks, treats ``'`` as a quote and ``\\,`` as an
   escaped comma, and switches the separator when a block starts with ``^^``
   (switch_ivr_originate.c marks commas inside quotes/``^^`` blocks before
   splitting);
4. ``switch_event_create_brackets()`` splits the variables on the separator
   and strips quotes;
5. mod_sofia puts the name in a quoted SIP display name (``"`` and ``\\``
   matter there).

An escape that is right for one layer is data for the next (``\\,`` survives
layer 3 but a ``\\`` is eaten by layer 2), and FreeSWITCH's own escaping
support differs between ``{}`` and ``[]``.  So nothing is escaped: caller-ID
numbers must match ``^\\+?[0-9*#]{1,32}$`` (else the caller is anonymous) and
names keep only letters, digits, spaces and ``. - _ ( )`` — none of which any
of the five layers gives a meaning.  Everything else becomes a space.  The
same goes for everything else we put in: extensions and E.164 numbers are
digits, the SIP domain is a DNS name, the gateway a plain identifier, and the
finished string is checked once more before it is returned.
"""
from __future__ import annotations

import re
import unicodedata
import weakref

from fastpath import records as rec
from fastpath.route_plan import Ring, Target

__all__ = [
    "DialStringError",
    "ANONYMOUS_NUMBER",
    "ANONYMOUS_NAME",
    "MAX_NAME_LENGTH",
    "clean_caller_number",
    "clean_caller_name",
    "extension_leg",
    "external_leg",
    "build_dial_string",
    "company_sip_domain",
]

ANONYMOUS_NUMBER = "anonymous"
ANONYMOUS_NAME = "Anonymous"
#: SIP phones show about 20 characters; 40 keeps whole names and bounds the header.
MAX_NAME_LENGTH = 40

STRATEGIES = ("simultaneous", "sequential", "cumulative")

_CALLER_NUMBER = re.compile(r"\+?[0-9*#]{1,32}")
_EXTENSION = re.compile(r"[0-9]{1,16}")
_E164 = re.compile(r"[1-9][0-9]{1,14}")
_DOMAIN_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_GATEWAY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: Punctuation a name may keep: meaningless to every parser listed above.
_NAME_PUNCTUATION = frozenset(" .-_()")
#: What may appear anywhere in a finished dial string (names add letters).
_FORBIDDEN_IN_RESULT = frozenset("\r\n\x00$'\"\\^`;<>%")
#: The same as a character class, for the usual all-ASCII dial string.
_FORBIDDEN_ASCII = re.compile("[" + re.escape("".join(sorted(_FORBIDDEN_IN_RESULT))) + "]")
#: A day is far more than any ring step; a bigger value is a bug upstream.
_MAX_SECONDS = 86_400


class DialStringError(ValueError):
    """A ring step cannot be dialled: a value would not be read the way we mean it."""


# --- caller-controlled values -------------------------------------------------

def clean_caller_number(raw: str | None) -> str:
    """The caller-ID number if it is ``^\\+?[0-9*#]{1,32}$`` after trimming
    surrounding whitespace, else ``""`` (anonymous)."""
    if not isinstance(raw, str):
        return ""
    value = raw.strip()
    return value if _CALLER_NUMBER.fullmatch(value) else ""


def clean_caller_name(raw: str | None) -> str:
    """A display name reduced to letters, digits, spaces and ``. - _ ( )``.

    Unicode is normalised to NFC first, so "José" keeps its accent as one
    letter.  An ASCII apostrophe (a quote character for FreeSWITCH) becomes
    the typographic ``’``, so "O'Brien" still reads right; every other
    character becomes a space, runs of spaces collapse, and the result is cut
    to :data:`MAX_NAME_LENGTH`.  Control characters, quotes, separators and
    ``$`` never survive.
    """
    if not isinstance(raw, str):
        return ""
    text = unicodedata.normalize("NFC", raw).replace("'", "\u2019")
    kept = "".join(c if (c.isalnum() or c in _NAME_PUNCTUATION or c == "\u2019") else " "
                   for c in text)
    return " ".join(kept.split())[:MAX_NAME_LENGTH].strip()


# --- legs ----------------------------------------------------------------------

def _check_domain(domain: str | None) -> str:
    host = domain.lower() if isinstance(domain, str) else ""
    if not host or len(host) > 253 or not all(_DOMAIN_LABEL.fullmatch(p) for p in host.split(".")):
        raise DialStringError(f"SIP domain {domain!r} is not a DNS name")
    return host


def _check_seconds(what: str, value) -> int:
    if type(value) is not int or not 0 <= value <= _MAX_SECONDS:
        raise DialStringError(f"{what} must be whole seconds from 0 to {_MAX_SECONDS}, not {value!r}")
    return value


def extension_leg(extension: str, sip_domain: str) -> str:
    """``user/<ext>@<domain>``: FreeSWITCH looks the user up in its directory and
    rings every registration of it."""
    if not isinstance(extension, str) or not _EXTENSION.fullmatch(extension):
        raise DialStringError(f"extension {extension!r} is not 1 to 16 digits")
    return f"user/{extension}@{_check_domain(sip_domain)}"


def external_leg(e164: str, gateway: str) -> str:
    """``sofia/gateway/<gateway>/+<e164>`` for a number in E.164 without ``+``."""
    if not isinstance(gateway, str) or not _GATEWAY.fullmatch(gateway):
        raise DialStringError(f"gateway name {gateway!r} is not a plain identifier")
    digits = e164[1:] if isinstance(e164, str) and e164.startswith("+") else e164
    if not isinstance(digits, str) or not _E164.fullmatch(digits):
        raise DialStringError(f"{e164!r} is not an E.164 number")
    return f"sofia/gateway/{gateway}/+{digits}"


def _leg(target: Target, sip_domain: str | None, gateway: str) -> str:
    if target.kind == "extension":
        if sip_domain is None:
            raise DialStringError(f"no SIP domain known to ring ext {target.number}")
        return extension_leg(target.number, sip_domain)
    if target.kind == "external":
        return external_leg(target.number, gateway)
    raise DialStringError(f"unknown target kind {target.kind!r}")


def _leg_vars(strategy: str, target: Target, step_timeout: int) -> str:
    delay = _check_seconds("leg delay", target.delay)
    timeout = _check_seconds("leg timeout", target.timeout)
    if strategy == "sequential":
        return f"[leg_timeout={timeout}]" if timeout else ""
    if strategy == "cumulative":
        # leg_timeout counts from the originate start: the leg's end time.
        return f"[leg_delay_start={delay},leg_timeout={delay + timeout}]" if timeout else \
            f"[leg_delay_start={delay}]"
    # simultaneous: call_timeout covers every leg unless one is told otherwise
    if timeout and timeout != step_timeout:
        return f"[leg_timeout={timeout}]"
    return ""


# --- the dial string ---------------------------------------------------------------

def build_dial_string(ring: Ring, *, sip_domain: str | None, gateway: str,
                      caller_number: str | None = "", caller_name: str | None = "") -> str:
    """The ``bridge`` argument for ``ring``.

    ``caller_number`` / ``caller_name`` are the caller's identity as the
    channel reported it; they are cleaned here whatever the caller did before
    (:func:`clean_caller_number`, :func:`clean_caller_name`).  An outbound
    call (``ring.caller_id``) shows the company's number instead.  Raises
    :class:`DialStringError` if the step names something that cannot be
    dialled safely.
    """
    if ring.strategy not in STRATEGIES:
        raise DialStringError(f"unknown ring strategy {ring.strategy!r}")
    if not ring.targets:
        raise DialStringError("a ring step without targets")
    step_timeout = _check_seconds("ring timeout", ring.timeout)

    number = clean_caller_number(caller_number)
    if ring.caller_id:
        company_number = ring.caller_id[1:] if ring.caller_id.startswith("+") else ring.caller_id
        if not _E164.fullmatch(company_number):
            raise DialStringError(f"outbound caller ID {ring.caller_id!r} is not an E.164 number")
        number = f"+{company_number}"
    name = clean_caller_name(caller_name)
    global_vars = ["ignore_early_media=true"]
    if step_timeout:
        global_vars.append(f"call_timeout={step_timeout}")
    global_vars.append(f"origination_caller_id_number={number or ANONYMOUS_NUMBER}")
    global_vars.append(f"origination_caller_id_name={name or (ANONYMOUS_NAME if not number else number)}")

    legs = [_leg_vars(ring.strategy, t, step_timeout) + _leg(t, sip_domain, gateway) for t in ring.targets]
    joiner = "|" if ring.strategy == "sequential" else ","
    dial = "{" + ",".join(global_vars) + "}" + joiner.join(legs)
    _check_result(dial)
    return dial


def _check_result(dial: str) -> None:
    """Belt and braces: whatever went in, nothing with a meaning to a later
    parser may come out."""
    if dial.isascii() and dial.isprintable():
        # Printable ASCII holds no control (C*) or separator (Z*) character but
        # the space: only the forbidden punctuation can be wrong (one C pass).
        bad = sorted(set(_FORBIDDEN_ASCII.findall(dial)))
    else:
        bad = sorted({c for c in dial if c in _FORBIDDEN_IN_RESULT or unicodedata.category(c)[0] in "CZ"
                      and c != " "})
    if bad:
        raise DialStringError(f"dial string would contain {bad!r}: {dial[:120]!r}")
    if dial.count("{") != 1 or dial.count("}") != 1 or dial.count("[") != dial.count("]"):
        raise DialStringError(f"unbalanced variable blocks in {dial[:120]!r}")


# --- the store -----------------------------------------------------------------------

#: Per open store: (config generation, {company id: SIP domain or None}).
_DOMAINS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def company_sip_domain(store, company_id: str) -> str | None:
    """The SIP domain of ``company_id`` from the store, or None if unknown.

    Cached per store and config generation: every config load bumps the
    generation, so the next call sees it, and a call costs one 8-byte read
    instead of decoding the company record.  (The generation is read before
    the record: a load in between leaves an entry under a generation the
    store never reports again.)
    """
    if not company_id:
        return None
    generation = store.generation()
    cached = _DOMAINS.get(store)
    if cached is None or cached[0] != generation:
        cached = _DOMAINS[store] = (generation, {})
    domains = cached[1]
    if company_id not in domains:
        domains[company_id] = _read_sip_domain(store, company_id)
    return domains[company_id]


def _read_sip_domain(store, company_id: str) -> str | None:
    with store.read() as txn:
        raw = txn.get(company_id.encode(), db=store.db["company"])
        if raw is None:
            return None
        return rec.decode_company(raw).sip_domain
