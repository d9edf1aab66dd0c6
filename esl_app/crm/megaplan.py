"""Megaplan API v3: the contractor (client) with a phone number → its responsible employee.

Documented shapes (dev.megaplan.ru/apiv3, and the official megaplan/megaplansdk):

* every answer is ``{"meta": {"status": 200, "errors": [], "pagination":
  {"count": n, "limit": n, "hasMoreNext": bool}}, "data": ...}``;
* list parameters travel as one JSON object in the query string:
  ``GET /api/v3/contractor?{"q": "...", "limit": 50, "fields": [...], "pageAfter": {...}}``
  (URL-encoded); the next page is asked for with ``pageAfter`` = the last
  item's ``{"contentType", "id"}``.  ``q`` is the quick search; each
  contractor's ``contactInfo`` (``{"contentType": "ContactInfo", "type":
  "phone", "value": "..."}``) is checked against the caller, so a loose
  search is harmless;
* a contractor's ``responsibles`` are references ``{"contentType": "Employee",
  "id": "1000001"}``; the employee comes from the answer's ``included`` list
  when the account returns one, else ``GET /api/v3/employee/<id>`` (``name``,
  ``firstName``, ``lastName``, ``contactInfo`` with ``type: "email"``);
* authentication: ``Authorization: Bearer <token>``; a token is either
  configured or obtained with ``POST /api/v3/auth/access_token``
  ``{"username", "password", "grant_type": "password"}`` →
  ``{"access_token", "expires_in", "refresh_token", "token_type": "bearer"}``
  and renewed once when the API answers 401.

Errors: ``401``/``403`` (access), ``422`` (a request the API refuses), ``429``, ``5xx``.
"""
from __future__ import annotations

import json
import threading
import time
from urllib.parse import quote

from .base import CrmAnswer, CrmSource, TtlCache, national_number
from .errors import CrmAuthError, CrmBadResponse, CrmError
from .http import Deadline, HttpClient, raise_for_status
from .secrets import Secret


class Megaplan(CrmSource):
    kind = "megaplan"

    def __init__(self, base_url: str, *, token: Secret | None = None, username: Secret | None = None,
                 password: Secret | None = None, max_pages: int = 3, page_limit: int = 50,
                 users_ttl: float = 3600.0, **kw):
        super().__init__(**kw)
        if token is None and (username is None or password is None):
            raise ValueError("megaplan: give a token, or a username and a password")
        self.http = HttpClient(self.name, base_url)
        self._token = token
        self._login_with = (username, password) if token is None else None
        self._session: tuple[str, float] | None = None        # (access token, expires at)
        self._lock = threading.Lock()
        self.max_pages = max_pages
        self.page_limit = page_limit
        self.users = TtlCache(users_ttl)

    # -- authentication -------------------------------------------------------------

    def _bearer(self, deadline: Deadline, renew: bool = False) -> str:
        if self._token is not None:
            return self._token.reveal()
        with self._lock:
            if self._session is not None and not renew and self._session[1] > time.monotonic():
                return self._session[0]
        username, password = self._login_with
        body = json.dumps({"username": username.reveal(), "password": password.reveal(),
                           "grant_type": "password"}).encode()
        resp = self.http.request("POST", "/api/v3/auth/access_token", deadline=deadline,
                                 label="POST /api/v3/auth/access_token",
                                 headers={"Content-Type": "application/json"}, body=body)
        if resp.status in (400, 401, 403):
            raise CrmAuthError(self.name, f"POST /api/v3/auth/access_token: HTTP {resp.status}: "
                               "username or password refused", status=resp.status)
        raise_for_status(resp)
        data = resp.json()
        if isinstance(data, dict) and isinstance(data.get("data"), dict):
            data = data["data"]
        token = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise CrmBadResponse(self.name, "POST /api/v3/auth/access_token: no access_token in the answer")
        expires_in = data.get("expires_in")
        ttl = float(expires_in) * 0.9 if isinstance(expires_in, (int, float)) and expires_in > 0 else 3600.0
        with self._lock:
            self._session = (token, time.monotonic() + ttl)
        return token

    def _get(self, path: str, deadline: Deadline, label: str) -> dict:
        for attempt in (0, 1):
            headers = {"Authorization": "Bearer " + self._bearer(deadline, renew=attempt == 1)}
            resp = self.http.request("GET", path, deadline=deadline, label=label, headers=headers)
            if resp.status == 401 and self._login_with is not None and attempt == 0:
                continue                          # the session token expired: log in again, once
            break
        raise_for_status(resp)
        data = resp.json()
        meta = data.get("meta") if isinstance(data, dict) else None
        if not isinstance(meta, dict):
            raise CrmBadResponse(self.name, f"{label}: no meta block in the answer (HTTP {resp.status})")
        status = meta.get("status", resp.status)
        if status in (401, 403):
            raise CrmAuthError(self.name, f"{label}: access refused ({status})", status=status)
        if status != 200 or resp.status != 200:
            raise CrmError(self.name, f"{label}: status {status} {_errors(meta)}".rstrip(), status=status)
        return data

    # -- the lookup -----------------------------------------------------------------

    def _find(self, phone: str, deadline: Deadline) -> CrmAnswer | None:
        query = {"q": national_number(phone), "limit": self.page_limit,
                 "fields": ["contactInfo", "responsibles"], "onlyRequestedFields": True}
        for _ in range(self.max_pages):
            data = self._get("/api/v3/contractor?" + quote(json.dumps(query, separators=(",", ":"))),
                             deadline, "GET /api/v3/contractor")
            items = data.get("data")
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise CrmBadResponse(self.name, "GET /api/v3/contractor: data is not a list")
            for item in items:
                phones = [ci.get("value") for ci in item.get("contactInfo") or ()
                          if isinstance(ci, dict) and ci.get("type") == "phone"]
                if not any(self.phones.same(p, phone) for p in phones if p):
                    continue
                responsible = next((r for r in item.get("responsibles") or ()
                                    if isinstance(r, dict) and r.get("id")), None)
                if responsible is None:
                    return None
                user_id = str(responsible["id"])
                name, email = self._employee(user_id, data.get("included"), deadline)
                return CrmAnswer(user_id, email, name, self.name, contact_id=str(item.get("id", "")))
            pagination = data["meta"].get("pagination")
            if not (isinstance(pagination, dict) and pagination.get("hasMoreNext")) or not items:
                return None
            last = items[-1]
            query["pageAfter"] = {"contentType": last.get("contentType"), "id": last.get("id")}
        return None

    def _employee(self, user_id: str, included, deadline: Deadline) -> tuple[str, str]:
        cached = self.users.get(user_id)
        if cached is not None:
            return cached
        employee = None
        for entity in included or ():
            if isinstance(entity, dict) and entity.get("contentType") == "Employee" and str(entity.get("id")) == user_id:
                employee = entity
                break
        if employee is None:
            data = self._get(f"/api/v3/employee/{quote(user_id)}", deadline, "GET /api/v3/employee/{id}")
            employee = data.get("data")
            if not isinstance(employee, dict):
                raise CrmBadResponse(self.name, "GET /api/v3/employee/{id}: data is not an employee")
        name = str(employee.get("name") or " ".join(
            str(employee.get(k) or "") for k in ("firstName", "lastName")).strip())
        email = str(employee.get("email") or next(
            (ci.get("value") for ci in employee.get("contactInfo") or ()
             if isinstance(ci, dict) and ci.get("type") == "email" and ci.get("value")), ""))
        user = (name, email)
        self.users.put(user_id, user)
        return user

    def close(self) -> None:
        self.http.close()


def _errors(meta: dict) -> str:
    errors = meta.get("errors")
    if isinstance(errors, list) and errors:
        first = errors[0]
        if isinstance(first, dict):
            return str(first.get("message") or first.get("field") or "")[:200]
        return str(first)[:200]
    return ""
