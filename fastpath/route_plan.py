"""Route plans: the engine's answer, as plain immutable data.

A plan is what the ESL app executes and what ``switchboard explain`` prints.
Steps run in order.  ``announce`` and ``say`` play and carry on; ``ring`` ends the call
when someone answers, otherwise it runs the sub-plan for how it failed
(``on_busy`` / ``on_no_answer`` / ``on_unreachable``) — or, where that is None,
the next step.  ``ivr``, ``voicemail``, ``fax`` and ``hangup`` end the plan.

An IVR's choices are *addresses* (``"department:600"``, ``"ivr:acme/sales"``):
the executor asks the engine for a fresh plan once the caller has chosen, so a
menu that leads back to itself is no problem and the plan stays small.

The same holds for fallbacks: a ring step's fallbacks are resolved one level
deep; a ring reached *inside* a fallback gets ``continue`` steps instead of
its own fallbacks, whose address (``then:<ext>/<condition>/<path>``) the
executor hands back to the engine if that ring fails too.  A plan therefore
has at most a dozen steps whatever the divert chains, and the deeper decision
is made with the live state of that moment.

Steps are named tuples: cheap to build from Cython, comparable with ``==``
(the property tests compare both engines' plans), and trivially JSON.
"""
from __future__ import annotations

import datetime as dt
import json
from typing import NamedTuple, Union


class Target(NamedTuple):
    """One phone to ring: an extension, or an E.164 number via the gateway."""

    kind: str            # "extension" | "external"
    number: str          # extension or E.164 digits without '+'
    name: str = ""       # who this is, for logs and the explanation
    delay: int = 0       # seconds after the ring step starts (cumulative groups)
    timeout: int = 0     # seconds this leg rings


class Announce(NamedTuple):
    sound: str
    reason: str
    action: str = "announce"


class Say(NamedTuple):
    """A FreeSWITCH phrase macro (say/phrase features: no recorded file per time).

    ``data`` is the macro's input, e.g. ``"2001:meeting:1795001400"`` for
    ``referral_status`` (extension, status, back-at POSIX seconds or 0);
    ``timezone`` is the zone the time is said in, ``language`` the phrase language.
    """

    phrase: str
    data: str
    language: str
    timezone: str
    reason: str
    action: str = "say"


class Ring(NamedTuple):
    targets: tuple[Target, ...]
    strategy: str        # "simultaneous" | "sequential" | "cumulative"
    timeout: int         # seconds for the whole step
    reason: str
    on_busy: "tuple[Step, ...] | None" = None
    on_no_answer: "tuple[Step, ...] | None" = None
    on_unreachable: "tuple[Step, ...] | None" = None
    caller_id: str | None = None   # E.164 shown to the far end on outbound calls
    action: str = "ring"


class Ivr(NamedTuple):
    menu: str            # "<company>/<key>"
    greeting: str
    timeout: int         # seconds to wait for a digit
    retries: int
    options: tuple[tuple[str, str], ...]   # (digit, address)
    on_timeout: str      # address
    on_invalid: str      # address
    reason: str
    action: str = "ivr"


class Voicemail(NamedTuple):
    box: str             # extension whose mailbox takes the message
    reason: str
    action: str = "voicemail"


class Fax(NamedTuple):
    extension: str       # employee who receives the fax
    reason: str
    action: str = "fax"


class Continue(NamedTuple):
    """Decide again for ``address`` when this point is reached."""

    address: str         # "then:<ext>/<condition>/<path>"
    reason: str
    action: str = "continue"


class Hangup(NamedTuple):
    cause: str           # Q.850 cause name as FreeSWITCH spells it
    reason: str
    action: str = "hangup"


Step = Union[Announce, Say, Ring, Ivr, Voicemail, Fax, Hangup, Continue]
OUTCOMES = ("on_busy", "on_no_answer", "on_unreachable")


class RoutePlan(NamedTuple):
    called: str
    caller: str
    at: int              # POSIX seconds the decision was made for
    company: str         # company id, "" when the number is unknown
    steps: tuple[Step, ...]


def address(kind: str, ref: str) -> str:
    """The address the engine accepts as ``called`` for an IVR choice."""
    return f"{kind}:{ref}"


# --- output -----------------------------------------------------------------

def to_data(value):
    """Plain dicts/lists (for JSON), keeping each step's ``action``."""
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {k: to_data(v) for k, v in value._asdict().items()}
    if isinstance(value, tuple):
        return [to_data(v) for v in value]
    return value


def to_json(plan: RoutePlan, **kwargs) -> str:
    return json.dumps(to_data(plan), ensure_ascii=False, **kwargs)


def _describe(step: Step) -> str:
    if step.action == "announce":
        return f"play {step.sound}"
    if step.action == "say":
        return f"say phrase {step.phrase} ({step.data}) in {step.language}, times in {step.timezone}"
    if step.action == "ring":
        legs = []
        for t in step.targets:
            who = f"ext {t.number}" if t.kind == "extension" else f"+{t.number}"
            if t.name:
                who += f" ({t.name})"
            timing = f"{t.timeout} s" if not t.delay else f"from {t.delay} s for {t.timeout} s"
            legs.append(f"{who} {timing}")
        cid = f", caller ID +{step.caller_id}" if step.caller_id else ""
        return f"ring {step.strategy} for {step.timeout} s{cid}: " + ", ".join(legs)
    if step.action == "ivr":
        options = " ".join(f"[{d}] {a}" for d, a in step.options)
        return (f"IVR {step.menu}: play {step.greeting}, wait {step.timeout} s for a digit, "
                f"{step.retries} tries; {options}; timeout → {step.on_timeout}; invalid → {step.on_invalid}")
    if step.action == "voicemail":
        return f"voicemail box {step.box}"
    if step.action == "fax":
        return f"receive fax for ext {step.extension}"
    if step.action == "continue":
        return f"decide again for {step.address}"
    return f"hang up with {step.cause}"


def _render_steps(steps, indent: str, lines: list[str]) -> None:
    for number, step in enumerate(steps, 1):
        lines.append(f"{indent}{number}. {_describe(step)}")
        lines.append(f"{indent}   why: {step.reason}")
        if step.action == "ring":
            # Outcomes that lead to the same sub-plan are shown once ("if busy / no answer:").
            groups: list[tuple[list[str], tuple]] = []
            for outcome in OUTCOMES:
                sub = getattr(step, outcome)
                if sub is None:
                    continue
                label = outcome[3:].replace("_", " ")
                for labels, seen in groups:
                    if seen == sub:
                        labels.append(label)
                        break
                else:
                    groups.append(([label], sub))
            for labels, sub in groups:
                lines.append(f"{indent}   if {' / '.join(labels)}:")
                _render_steps(sub, indent + "      ", lines)


def render_text(plan: RoutePlan) -> str:
    """The plan as a person reads it (``switchboard explain``)."""
    when = dt.datetime.fromtimestamp(plan.at, dt.timezone.utc).isoformat()
    lines = [f"call to {plan.called} from {plan.caller or 'unknown'} at {when}"
             + (f" (company {plan.company})" if plan.company else "")]
    _render_steps(plan.steps, "  ", lines)
    return "\n".join(lines)
