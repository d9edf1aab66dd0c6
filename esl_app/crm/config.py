"""CRM sources from plain config (a list per company, e.g. under ``crm:`` in the service YAML).

::

    crm:
      acme:                                   # company id
        - type: amocrm
          base_url: https://acme.amocrm.ru
          token: {secret: amocrm_acme_token}
          timeout_ms: 300                     # default 300
          users: {"504141": "2003", "anna@acme.example": "2004"}   # CRM user id or e-mail -> extension
        - type: bitrix24
          webhook: {secret: bitrix_acme_webhook}     # https://acme.bitrix24.ru/rest/1/<code>/
        - type: megaplan
          base_url: https://acme.megaplan.ru
          username: {secret: megaplan_acme_user}
          password: {secret: megaplan_acme_password}    # or token: {secret: ...}
        - type: http
          name: billing
          url: "https://billing.example/api/owner?phone={phone}"
          headers: {Authorization: {secret: billing_token}}
          user_id: /owner/id
          email: /owner/email

Credentials are only ever named (``{secret: NAME}``) and looked up in the
environment or the secrets file (:mod:`esl_app.crm.secrets`); a credential
written inline is refused.  Every problem in a company's list is reported at
once.
"""
from __future__ import annotations

from .amocrm import AmoCrm
from .base import DEFAULT_TIMEOUT, CrmSource, PhoneReader
from .bitrix24 import Bitrix24
from .errors import CrmConfigError
from .generic import HttpJsonSource, parse_pointer
from .megaplan import Megaplan
from .secrets import Secret, SecretStore

KINDS = ("amocrm", "bitrix24", "megaplan", "http")
_COMMON = {"type", "name", "timeout_ms", "users"}
_KEYS = {
    "amocrm": {"base_url", "token", "max_pages"},
    "bitrix24": {"webhook", "base_url", "access_token", "max_pages"},
    "megaplan": {"base_url", "token", "username", "password", "max_pages"},
    "http": {"url", "method", "headers", "user_id", "email", "name_pointer", "extension"},
}


class _Problems:
    def __init__(self, where: str):
        self.where = where
        self.items: list[str] = []

    def add(self, message: str) -> None:
        self.items.append(f"{self.where}: {message}")


def _secret(spec: dict, key: str, secrets: SecretStore, problems: _Problems, required: bool = True):
    value = spec.get(key)
    if value is None:
        if required:
            problems.add(f"'{key}' is required, as {{secret: NAME}}")
        return None
    if not (isinstance(value, dict) and set(value) == {"secret"} and isinstance(value["secret"], str)):
        problems.add(f"'{key}' must name a secret, {{secret: NAME}}; credentials are never written in config")
        return None
    try:
        return secrets.get(value["secret"])
    except CrmConfigError as exc:
        problems.items.extend(f"{problems.where}: {p}" for p in exc.problems)
        return None


def build_source(spec: dict, secrets: SecretStore, phones: PhoneReader | None, where: str = "crm") -> CrmSource:
    """One source from its config mapping; :class:`CrmConfigError` lists every problem."""
    problems = _Problems(where)
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind not in KINDS:
        raise CrmConfigError(where, [f"{where}: 'type' must be one of {', '.join(KINDS)}"])
    unknown = set(spec) - _COMMON - _KEYS[kind]
    if unknown:
        problems.add(f"unknown keys for a {kind} source: {', '.join(sorted(unknown))}")
    timeout_ms = spec.get("timeout_ms", int(DEFAULT_TIMEOUT * 1000))
    if not isinstance(timeout_ms, int) or not 50 <= timeout_ms <= 10_000:
        problems.add("'timeout_ms' must be a whole number from 50 to 10000")
        timeout_ms = DEFAULT_TIMEOUT * 1000
    common = {"name": str(spec.get("name") or kind), "timeout": timeout_ms / 1000, "phones": phones}
    source = None
    if kind == "amocrm":
        token = _secret(spec, "token", secrets, problems)
        base = _url(spec, "base_url", problems)
        if not problems.items:
            source = AmoCrm(base, token, max_pages=int(spec.get("max_pages", 3)), **common)
    elif kind == "bitrix24":
        if "webhook" in spec:
            webhook = _secret(spec, "webhook", secrets, problems)
            if webhook is not None and not webhook.reveal().startswith(("https://", "http://")):
                problems.add("the webhook secret must be the webhook URL, https://<portal>/rest/<user>/<code>/")
            if not problems.items:
                source = Bitrix24(webhook, max_pages=int(spec.get("max_pages", 3)), **common)
        else:
            base = _url(spec, "base_url", problems)
            token = _secret(spec, "access_token", secrets, problems)
            if not problems.items:
                source = Bitrix24(base_url=base, access_token=token, max_pages=int(spec.get("max_pages", 3)),
                                  **common)
    elif kind == "megaplan":
        base = _url(spec, "base_url", problems)
        if "token" in spec:
            creds = {"token": _secret(spec, "token", secrets, problems)}
        else:
            creds = {"username": _secret(spec, "username", secrets, problems),
                     "password": _secret(spec, "password", secrets, problems)}
        if not problems.items:
            source = Megaplan(base, max_pages=int(spec.get("max_pages", 3)), **creds, **common)
    else:
        url = _url(spec, "url", problems)
        if "{phone" not in (url or "") and "{national}" not in (url or ""):
            problems.add("'url' must contain {phone}, {phone_plus} or {national}")
        pointers = {}
        for key in ("user_id", "email", "name_pointer", "extension"):
            value = spec.get(key, "")
            try:
                parse_pointer(value) if value else None
                pointers[key] = value
            except (ValueError, AttributeError):
                problems.add(f"'{key}' must be a JSON pointer such as /data/manager/id")
        if not spec.get("user_id") and not spec.get("extension"):
            problems.add("give 'user_id' or 'extension' (a JSON pointer into the answer)")
        headers = {}
        for name, value in (spec.get("headers") or {}).items():
            if isinstance(value, dict):
                secret = _secret({name: value}, name, secrets, problems)
                if secret is not None:
                    headers[str(name)] = secret
            elif isinstance(value, str) and name.lower() not in ("authorization", "x-api-key", "cookie"):
                headers[str(name)] = value
            else:
                problems.add(f"header {name!r} must be text, or {{secret: NAME}} for credentials")
        if not problems.items:
            source = HttpJsonSource(url, method=str(spec.get("method", "GET")), headers=headers, **pointers, **common)
    if problems.items:
        raise CrmConfigError(where, problems.items)
    return source


def build_company_sources(specs, secrets: SecretStore, *, company: str, country: str,
                          city_code: str | None = None) -> tuple[list[CrmSource], dict[str, str]]:
    """Every source of one company, in order, and the merged user → extension mapping."""
    if not isinstance(specs, list):
        raise CrmConfigError(f"crm.{company}", [f"crm.{company}: expected a list of sources"])
    phones = PhoneReader(country, city_code)
    sources, mapping, problems = [], {}, []
    names = set()
    for i, spec in enumerate(specs):
        where = f"crm.{company}[{i}]"
        try:
            source = build_source(spec, secrets, phones, where)
        except CrmConfigError as exc:
            problems.extend(exc.problems)
            continue
        if source.name in names:
            problems.append(f"{where}: two sources are named {source.name!r}; give one a 'name'")
        names.add(source.name)
        sources.append(source)
        users = spec.get("users") or {}
        if not isinstance(users, dict):
            problems.append(f"{where}: 'users' maps CRM user ids or e-mails to extensions")
        else:
            mapping.update({str(k): str(v) for k, v in users.items()})
    if problems:
        raise CrmConfigError(f"crm.{company}", problems)
    return sources, mapping


def _url(spec: dict, key: str, problems: _Problems) -> str | None:
    value = spec.get(key)
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        problems.add(f"'{key}' must be an http(s) URL")
        return None
    return value
