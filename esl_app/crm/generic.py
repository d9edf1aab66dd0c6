"""A generic HTTP/JSON source: any service that answers "who is responsible for this number?".

Configured with a URL template and JSON pointers (RFC 6901) into the answer::

    type: http
    url: "https://crm.example.com/api/owner?phone={phone}"     # {phone}: E.164 digits,
                                                                # {phone_plus}: +E.164, {national}: 9161234567
    headers: {Authorization: {secret: example_crm_token}}       # values: text or {secret: NAME}
    user_id: /data/manager/id          # required: whose the contact is
    email: /data/manager/email         # optional, to map by e-mail
    name: /data/manager/name           # optional, for reasons
    extension: /data/manager/ext       # optional: the service names the extension itself

``404`` (or a pointer that leads nowhere, or ``null``) means "no such contact";
``401``/``403``, ``429`` (``Retry-After``), ``5xx``, timeouts and answers that
are not JSON raise the shared CRM errors.
"""
from __future__ import annotations

from urllib.parse import quote, urlsplit

from .base import CrmAnswer, CrmSource, national_number
from .errors import CrmBadResponse
from .http import Deadline, HttpClient, raise_for_status
from .secrets import Secret

_MISSING = object()


def parse_pointer(pointer: str) -> tuple[str, ...]:
    """RFC 6901: ``/a/b~1c/0`` → ``("a", "b/c", "0")``; ``""`` is the whole document."""
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        raise ValueError(f"JSON pointer {pointer!r} must start with '/'")
    return tuple(part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/"))


def resolve_pointer(document, parts: tuple[str, ...]):
    """The value ``parts`` points at, or ``_MISSING``."""
    node = document
    for part in parts:
        if isinstance(node, dict):
            node = node.get(part, _MISSING)
        elif isinstance(node, list) and part.isdigit() and (part == "0" or not part.startswith("0")):
            index = int(part)
            node = node[index] if index < len(node) else _MISSING
        else:
            return _MISSING
        if node is _MISSING:
            return _MISSING
    return node


class HttpJsonSource(CrmSource):
    kind = "http"

    def __init__(self, url: str, *, user_id: str, email: str = "", name_pointer: str = "",
                 extension: str = "", method: str = "GET", headers: dict[str, str | Secret] | None = None,
                 not_found: tuple[int, ...] = (404,), **kw):
        super().__init__(**kw)
        parts = urlsplit(url.replace("{", "%7B").replace("}", "%7D"))
        self.http = HttpClient(self.name, f"{parts.scheme}://{parts.netloc}")
        self.template = url[len(f"{parts.scheme}://{parts.netloc}"):] or "/"
        self.method = method.upper()
        self.headers = dict(headers or {})
        self.pointers = {"user_id": parse_pointer(user_id), "email": parse_pointer(email) if email else None,
                         "name": parse_pointer(name_pointer) if name_pointer else None,
                         "extension": parse_pointer(extension) if extension else None}
        self.not_found = tuple(not_found)
        self.label = f"{self.method} {urlsplit(self.template).path}"

    def _find(self, phone: str, deadline: Deadline) -> CrmAnswer | None:
        path = self.template.format(phone=phone, phone_plus=quote("+" + phone), national=national_number(phone))
        headers = {k: v.reveal() if isinstance(v, Secret) else v for k, v in self.headers.items()}
        resp = self.http.request(self.method, path, deadline=deadline, label=self.label, headers=headers)
        if resp.status in self.not_found:
            return None
        raise_for_status(resp)
        if resp.status != 200:
            raise CrmBadResponse(self.name, f"{self.label}: unexpected HTTP {resp.status}", status=resp.status)
        document = resp.json()
        values = {}
        for key, pointer in self.pointers.items():
            value = resolve_pointer(document, pointer) if pointer is not None else _MISSING
            if value is _MISSING or value is None:
                values[key] = ""
            elif isinstance(value, (str, int)) and not isinstance(value, bool):
                values[key] = str(value)
            else:
                raise CrmBadResponse(self.name, f"{self.label}: the value at the {key} pointer is a "
                                     f"{type(value).__name__}, not a string or number")
        if not values["user_id"] and not values["extension"]:
            return None
        return CrmAnswer(values["user_id"], values["email"], values["name"], self.name,
                         extension=values["extension"])

    def close(self) -> None:
        self.http.close()
