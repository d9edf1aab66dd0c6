"""amoCRM (Kommo) REST API v4: the contact with a phone number → its responsible user.

Documented requests (amoCRM "Контакты" / Kommo "Contacts list", "Users"):

* ``GET /api/v4/contacts?query=<number>&limit=<n>&page=<p>`` with
  ``Authorization: Bearer <token>`` (a long-lived token or an OAuth access
  token).  ``200`` with ``application/hal+json``::

      {"_page": 1,
       "_links": {"self": {"href": "..."}, "next": {"href": "...page=2..."}},
       "_embedded": {"contacts": [
           {"id": 3, "name": "...", "responsible_user_id": 504141,
            "custom_fields_values": [{"field_code": "PHONE",
                                      "values": [{"value": "+7 916 123-45-67", "enum_code": "WORK"}]}]}]}}

  and ``204 No Content`` (empty body) when nothing matches.  ``query`` is a
  full-text search, so each contact's phones are checked against the caller.
* ``GET /api/v4/users/<id>`` → ``{"id": 504141, "name": "...", "email": "..."}``.

Errors come as ``application/problem+json`` (``title``, ``status``, ``detail``):
``401`` bad or expired token, ``403`` account blocked, ``429`` more than 7
requests a second, ``5xx``.
"""
from __future__ import annotations

from urllib.parse import urlencode

from .base import CrmAnswer, CrmSource, TtlCache, national_number
from .errors import CrmBadResponse
from .http import Deadline, HttpClient, raise_for_status
from .secrets import Secret


class AmoCrm(CrmSource):
    kind = "amocrm"

    def __init__(self, base_url: str, token: Secret, *, max_pages: int = 3, page_limit: int = 50,
                 users_ttl: float = 3600.0, **kw):
        super().__init__(**kw)
        self.http = HttpClient(self.name, base_url)
        self._token = token
        self.max_pages = max_pages
        self.page_limit = page_limit
        self.users = TtlCache(users_ttl)

    def _get(self, path: str, deadline: Deadline, label: str):
        resp = self.http.request("GET", path, deadline=deadline, label=label,
                                 headers={"Authorization": "Bearer " + self._token.reveal()})
        raise_for_status(resp)
        return resp

    def _find(self, phone: str, deadline: Deadline) -> CrmAnswer | None:
        query = national_number(phone)
        for page in range(1, self.max_pages + 1):
            params = urlencode({"query": query, "limit": self.page_limit, "page": page})
            resp = self._get(f"/api/v4/contacts?{params}", deadline, "GET /api/v4/contacts")
            if resp.status == 204:
                return None
            if resp.status != 200:
                raise CrmBadResponse(self.name, f"GET /api/v4/contacts: unexpected HTTP {resp.status}",
                                     status=resp.status)
            data = resp.json()
            contacts = _contacts(self.name, data)
            for contact in contacts:
                if any(self.phones.same(value, phone) for value in _phones(contact)):
                    user_id = contact.get("responsible_user_id")
                    if not isinstance(user_id, int) or isinstance(user_id, bool) or user_id <= 0:
                        return None                   # a contact nobody is responsible for
                    name, email = self._user(user_id, deadline)
                    return CrmAnswer(str(user_id), email, name, self.name, contact_id=str(contact.get("id", "")))
            links = data.get("_links")
            if not (isinstance(links, dict) and isinstance(links.get("next"), dict)):
                return None
        return None

    def _user(self, user_id: int, deadline: Deadline) -> tuple[str, str]:
        cached = self.users.get(user_id)
        if cached is not None:
            return cached
        resp = self._get(f"/api/v4/users/{user_id}", deadline, "GET /api/v4/users/{id}")
        if resp.status == 404:
            return "", ""                         # a deleted user: no e-mail to map, the id may still be mapped
        data = resp.json()
        if resp.status != 200 or not isinstance(data, dict):
            raise CrmBadResponse(self.name, f"GET /api/v4/users/{{id}}: unexpected answer (HTTP {resp.status})")
        user = (str(data.get("name") or ""), str(data.get("email") or ""))
        self.users.put(user_id, user)
        return user

    def close(self) -> None:
        self.http.close()


def _contacts(source: str, data) -> list:
    embedded = data.get("_embedded") if isinstance(data, dict) else None
    contacts = embedded.get("contacts") if isinstance(embedded, dict) else None
    if not isinstance(contacts, list) or not all(isinstance(c, dict) for c in contacts):
        raise CrmBadResponse(source, "GET /api/v4/contacts: no _embedded.contacts list in the answer")
    return contacts


def _phones(contact: dict):
    for field in contact.get("custom_fields_values") or ():
        if isinstance(field, dict) and field.get("field_code") == "PHONE":
            for value in field.get("values") or ():
                if isinstance(value, dict) and value.get("value"):
                    yield value["value"]
