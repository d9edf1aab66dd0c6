"""Bitrix24 REST: the contact with a phone number → its responsible user (``ASSIGNED_BY_ID``).

Documented methods (dev.1c-bitrix.ru/rest_help/crm/...), called as
``POST <base>/<method>.json`` with form-encoded parameters, where ``<base>`` is
an inbound webhook (``https://portal.bitrix24.ru/rest/1/<code>/``, a secret:
the code in its path is the credential) or ``https://portal.bitrix24.ru/rest/``
with an OAuth token sent as ``auth=<token>``:

* ``crm.duplicate.findbycomm`` ``type=PHONE&values[]=...&entity_type=CONTACT``
  → ``{"result": {"CONTACT": [12, 34]}}``, and ``{"result": []}`` when nothing
  matches.  Bitrix24 normalises phones for this search, unlike list filters
  (exact match only);
* ``crm.contact.list`` ``filter[ID][]=12&select[]=ID&select[]=ASSIGNED_BY_ID&select[]=PHONE&start=0``
  → ``{"result": [{"ID": "12", "ASSIGNED_BY_ID": "1", "PHONE": [{"VALUE": "+7...", "VALUE_TYPE": "WORK"}]}],
  "next": 50, "total": 51}`` (pages of 50, ``start`` = the previous ``next``);
* ``user.get`` ``ID=1`` → ``{"result": [{"ID": "1", "NAME": "...", "LAST_NAME": "...", "EMAIL": "..."}]}``.

Errors: ``{"error": "<CODE>", "error_description": "..."}`` — ``expired_token``,
``invalid_token``, ``NO_AUTH_FOUND``, ``INVALID_CREDENTIALS`` (HTTP 401),
``insufficient_scope``/``ACCESS_DENIED`` (403), and ``QUERY_LIMIT_EXCEEDED``
(HTTP 503, or 429: more than 2 requests a second on average).
"""
from __future__ import annotations

from urllib.parse import urlencode

from .base import CrmAnswer, CrmSource, TtlCache, national_format_digits
from .errors import CrmAuthError, CrmBadResponse, CrmError, CrmRateLimited
from .http import Deadline, HttpClient, raise_for_status, retry_after_seconds
from .secrets import Secret

AUTH_ERRORS = {"expired_token", "invalid_token", "NO_AUTH_FOUND", "INVALID_CREDENTIALS",
               "insufficient_scope", "ACCESS_DENIED", "WRONG_AUTH_TYPE", "PORTAL_DELETED"}
RATE_ERRORS = {"QUERY_LIMIT_EXCEEDED", "OPERATION_TIME_LIMIT"}


class Bitrix24(CrmSource):
    kind = "bitrix24"

    def __init__(self, webhook: Secret | None = None, *, base_url: str | None = None,
                 access_token: Secret | None = None, max_pages: int = 3, users_ttl: float = 3600.0, **kw):
        super().__init__(**kw)
        if (webhook is None) == (base_url is None):
            raise ValueError("bitrix24: give either a webhook URL or a base URL with an access token")
        url = webhook.reveal() if webhook is not None else base_url
        self.http = HttpClient(self.name, url.rstrip("/") + "/")
        self._token = access_token
        self.max_pages = max_pages
        self.users = TtlCache(users_ttl)

    def call(self, method: str, params: list[tuple[str, str]], deadline: Deadline):
        """One REST method; returns the whole JSON answer (``result``, ``next``, ``total``...)."""
        if self._token is not None:
            params = params + [("auth", self._token.reveal())]
        resp = self.http.request("POST", f"/{method}.json", deadline=deadline, label=method,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"},
                                 body=urlencode(params).encode())
        data = None
        if resp.body[:1] in (b"{", b"["):
            data = resp.json()
        code = data.get("error") if isinstance(data, dict) else None
        if code in RATE_ERRORS:
            retry = retry_after_seconds(resp.headers.get("retry-after"))
            raise CrmRateLimited(self.name, f"{method}: {code}", retry_after=retry if retry is not None else 1.0,
                                 status=resp.status)
        if code in AUTH_ERRORS:
            raise CrmAuthError(self.name, f"{method}: {code} (check the webhook or token)", status=resp.status)
        raise_for_status(resp)
        if code:
            raise CrmError(self.name, f"{method}: {code}", status=resp.status)
        if resp.status != 200 or not isinstance(data, dict) or "result" not in data:
            raise CrmBadResponse(self.name, f"{method}: no result in the answer (HTTP {resp.status})",
                                 status=resp.status)
        return data

    def _find(self, phone: str, deadline: Deadline) -> CrmAnswer | None:
        values = list(dict.fromkeys(("+" + phone, phone, national_format_digits(phone))))
        found = self.call("crm.duplicate.findbycomm",
                          [("type", "PHONE")] + [("values[]", v) for v in values] + [("entity_type", "CONTACT")],
                          deadline)["result"]
        if isinstance(found, list) and not found:
            return None                           # what Bitrix24 answers when nothing matches
        ids = found.get("CONTACT", []) if isinstance(found, dict) else None
        if not isinstance(ids, list) or not all(str(i).isdigit() for i in ids):
            raise CrmBadResponse(self.name, "crm.duplicate.findbycomm: result is not {CONTACT: [ids]}")
        if not ids:
            return None
        start = 0
        for _ in range(self.max_pages):
            params = [("filter[ID][]", str(i)) for i in ids[:50]]
            params += [("select[]", "ID"), ("select[]", "ASSIGNED_BY_ID"), ("select[]", "PHONE"),
                       ("order[DATE_MODIFY]", "DESC"), ("start", str(start))]
            data = self.call("crm.contact.list", params, deadline)
            contacts = data["result"]
            if not isinstance(contacts, list) or not all(isinstance(c, dict) for c in contacts):
                raise CrmBadResponse(self.name, "crm.contact.list: result is not a list of contacts")
            for contact in contacts:
                phones = [p.get("VALUE") for p in contact.get("PHONE") or () if isinstance(p, dict)]
                if phones and not any(self.phones.same(p, phone) for p in phones if p):
                    continue
                assigned = str(contact.get("ASSIGNED_BY_ID") or "")
                if not assigned.isdigit() or assigned == "0":
                    continue
                name, email = self._user(assigned, deadline)
                return CrmAnswer(assigned, email, name, self.name, contact_id=str(contact.get("ID", "")))
            if "next" not in data:
                return None
            start = int(data["next"])
        return None

    def _user(self, user_id: str, deadline: Deadline) -> tuple[str, str]:
        cached = self.users.get(user_id)
        if cached is not None:
            return cached
        users = self.call("user.get", [("ID", user_id)], deadline)["result"]
        if not isinstance(users, list):
            raise CrmBadResponse(self.name, "user.get: result is not a list")
        if not users or not isinstance(users[0], dict):
            return "", ""
        u = users[0]
        name = " ".join(str(u.get(k) or "").strip() for k in ("NAME", "LAST_NAME")).strip()
        user = (name, str(u.get("EMAIL") or ""))
        self.users.put(user_id, user)
        return user

    def close(self) -> None:
        self.http.close()
