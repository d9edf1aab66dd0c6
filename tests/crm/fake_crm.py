"""Local HTTP servers answering like the CRMs' documented APIs, for the adapter tests.

:class:`FakeServer` is a real HTTP/1.1 server on ``127.0.0.1:0`` in a thread
(keep-alive, ``Content-Length``); a test scripts it with an API fake and can
make the next requests fail: ``401``, ``429`` with ``Retry-After``, ``5xx``,
a stall past the client's budget, a body that is not JSON.  Stalls wait on an
event that :meth:`FakeServer.close` sets, so no thread outlives a test.
"""
from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

STALL_SECONDS = 2.0


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict
    body: bytes

    @property
    def args(self) -> dict:
        return parse_qs(self.query)

    @property
    def form(self) -> dict:
        return parse_qs(self.body.decode())

    def json(self):
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict = field(default_factory=dict)


def json_reply(data, status: int = 200, content_type: str = "application/json", **headers) -> Reply:
    return Reply(status, json.dumps(data).encode(), {"Content-Type": content_type, **headers})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):          # keep test output quiet
        pass

    def setup(self):
        super().setup()
        with self.server.fake._lock:
            self.server.fake.connections += 1

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        req = Request(self.command, parts.path, parts.query, {k.lower(): v for k, v in self.headers.items()}, body)
        fake: FakeServer = self.server.fake
        reply = fake.dispatch(req)
        if reply is None:                    # a stall: the client has given up by now
            self.close_connection = True
            return
        if getattr(reply, "hang_up", False):  # answer as if keeping the connection, then drop it
            self.close_connection = True
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if reply.body:
            self.wfile.write(reply.body)

    do_GET = do_POST = _serve


class FakeServer:
    def __init__(self, api):
        self.api = api
        self.requests: list[Request] = []
        self.failures: list = []   # one per request: "401", "429", "500", "stall", "garbage", "hangup", None (ok)
        self.release = threading.Event()
        self.connections = 0
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.fake = self
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def fail(self, *kinds: str) -> None:
        with self._lock:
            self.failures.extend(kinds)

    def dispatch(self, req: Request) -> Reply | None:
        with self._lock:
            self.requests.append(req)
            failure = self.failures.pop(0) if self.failures else None
        if failure == "stall":
            self.release.wait(STALL_SECONDS)
            return None
        if failure == "hangup":
            reply = self.api(req)
            reply.hang_up = True
            return reply
        if failure == "garbage":
            return Reply(200, b'{"_embedded": {"contacts": [{"id": 1,', {"Content-Type": "application/json"})
        if failure == "429":
            return json_reply({"title": "Too Many Requests", "status": 429}, 429, **{"Retry-After": "7"})
        if failure in ("500", "502", "503"):
            return Reply(int(failure), b"<html>upstream error</html>", {"Content-Type": "text/html"})
        if failure == "401":
            return json_reply({"title": "Unauthorized", "status": 401, "detail": "token expired"}, 401)
        return self.api(req)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def fuzzy(query: str, phone: str) -> bool:
    """CRM searches are loose: the query's first digits anywhere in the phone."""
    return digits(query)[:-1] in digits(phone)


# --- amoCRM v4 ------------------------------------------------------------------------

class AmoApi:
    """``/api/v4/contacts?query=`` (HAL, 204 when empty, ``_links.next``) and ``/api/v4/users/<id>``."""

    def __init__(self, token: str, contacts: list[dict], users: dict[int, dict], page_size: int = 2):
        self.token, self.contacts, self.users, self.page_size = token, contacts, users, page_size

    def __call__(self, req: Request) -> Reply:
        if req.headers.get("authorization") != f"Bearer {self.token}":
            return json_reply({"title": "Unauthorized", "type": "https://httpstatus.es/401", "status": 401,
                               "detail": "Неверный логин или пароль"}, 401, "application/problem+json")
        if req.method == "GET" and req.path == "/api/v4/contacts":
            query = req.args["query"][0]
            page = int(req.args.get("page", ["1"])[0])
            limit = min(int(req.args.get("limit", ["50"])[0]), self.page_size)
            hits = [c for c in self.contacts if any(fuzzy(query, p) for p in c["phones"])]
            chunk = hits[(page - 1) * limit:page * limit]
            if not chunk:
                return Reply(204)
            base = f"/api/v4/contacts?query={query}&limit={limit}"
            links = {"self": {"href": f"http://amo.test{base}&page={page}"}}
            if page * limit < len(hits):
                links["next"] = {"href": f"http://amo.test{base}&page={page + 1}"}
            return json_reply({"_page": page, "_links": links, "_embedded": {"contacts": [
                {"id": c["id"], "name": c["name"], "responsible_user_id": c["responsible_user_id"],
                 "custom_fields_values": [{"field_id": 1, "field_name": "Телефон", "field_code": "PHONE",
                                           "field_type": "multitext",
                                           "values": [{"value": p, "enum_code": "WORK"} for p in c["phones"]]}]}
                for c in chunk]}}, content_type="application/hal+json")
        m = re.fullmatch(r"/api/v4/users/(\d+)", req.path)
        if req.method == "GET" and m:
            user = self.users.get(int(m.group(1)))
            if user is None:
                return json_reply({"title": "Not Found", "status": 404}, 404, "application/problem+json")
            return json_reply({"id": int(m.group(1)), "name": user["name"], "email": user["email"], "lang": "ru",
                               "rights": {}}, content_type="application/hal+json")
        return json_reply({"title": "Not Found", "status": 404}, 404)


# --- Bitrix24 REST --------------------------------------------------------------------

class BitrixApi:
    """``<webhook>/crm.duplicate.findbycomm.json``, ``crm.contact.list.json`` (pages of ``page_size``), ``user.get.json``."""

    def __init__(self, webhook_path: str, contacts: list[dict], users: dict[str, dict], page_size: int = 2):
        self.prefix, self.contacts, self.users, self.page_size = webhook_path, contacts, users, page_size
        self.limit_exceeded = 0
        self.expired = False
        self.loose = False                   # True: also return near duplicates (same first 9 digits)

    def __call__(self, req: Request) -> Reply:
        if not req.path.startswith(self.prefix):
            return json_reply({"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"}, 401)
        if self.expired:
            return json_reply({"error": "expired_token", "error_description": "The access token provided has expired."},
                              401)
        if self.limit_exceeded:
            self.limit_exceeded -= 1
            return json_reply({"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}, 503)
        method = req.path[len(self.prefix):].removesuffix(".json")
        form = req.form
        timing = {"start": 1700000000.1, "finish": 1700000000.2, "duration": 0.1}
        if method == "crm.duplicate.findbycomm":
            assert form["type"] == ["PHONE"] and form["entity_type"] == ["CONTACT"]
            width = 9 if self.loose else 10
            wanted = {digits(v)[-10:][:width] for v in form["values[]"]}
            ids = [int(c["ID"]) for c in self.contacts
                   if any(digits(p)[-10:][:width] in wanted for p in c["PHONE"])]
            return json_reply({"result": {"CONTACT": ids} if ids else [], "time": timing})
        if method == "crm.contact.list":
            ids = set(form.get("filter[ID][]", []))
            start = int(form.get("start", ["0"])[0])
            hits = [c for c in self.contacts if c["ID"] in ids]
            chunk = hits[start:start + self.page_size]
            body = {"result": [{"ID": c["ID"], "ASSIGNED_BY_ID": c["ASSIGNED_BY_ID"],
                                "PHONE": [{"ID": "1", "VALUE_TYPE": "WORK", "VALUE": p, "TYPE_ID": "PHONE"}
                                          for p in c["PHONE"]]} for c in chunk],
                    "total": len(hits), "time": timing}
            if start + self.page_size < len(hits):
                body["next"] = start + self.page_size
            return json_reply(body)
        if method == "user.get":
            user = self.users.get(form["ID"][0])
            return json_reply({"result": [user] if user else [], "total": 1 if user else 0, "time": timing})
        return json_reply({"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}, 404)


# --- Megaplan API v3 ------------------------------------------------------------------

class MegaplanApi:
    """``POST /api/v3/auth/access_token``, ``GET /api/v3/contractor?{json}`` (``pageAfter``), ``/api/v3/employee/<id>``."""

    def __init__(self, contractors: list[dict], employees: dict[str, dict], *, username="robot", password="pw",
                 page_size: int = 2, include_employees: bool = False):
        self.contractors, self.employees = contractors, employees
        self.username, self.password, self.page_size = username, password, page_size
        self.include_employees = include_employees
        self.valid_tokens = {"static-token"}
        self.logins = 0

    def meta(self, status=200, **pagination):
        return {"status": status, "errors": [], **({"pagination": pagination} if pagination else {})}

    def __call__(self, req: Request) -> Reply:
        if req.method == "POST" and req.path == "/api/v3/auth/access_token":
            body = req.json()
            if (body.get("username"), body.get("password"), body.get("grant_type")) != (
                    self.username, self.password, "password"):
                return json_reply({"error": "invalid_grant", "error_description": "Invalid username and password"},
                                  401)
            self.logins += 1
            token = f"session-{self.logins}"
            self.valid_tokens.add(token)
            return json_reply({"access_token": token, "expires_in": 604800, "token_type": "bearer",
                               "scope": None, "refresh_token": "r"})
        auth = req.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.valid_tokens:
            return json_reply({"meta": {"status": 401, "errors": [{"message": "Unauthorized"}]}, "data": None}, 401)
        if req.method == "GET" and req.path == "/api/v3/contractor":
            params = json.loads(unquote(req.query))
            hits = [c for c in self.contractors                  # quick search: any field
                    if any(fuzzy(params["q"], ci["value"]) for ci in c["contactInfo"])]
            after = params.get("pageAfter")
            if after:
                index = next(i for i, c in enumerate(hits) if c["id"] == after["id"])
                hits = hits[index + 1:]
            chunk = hits[:min(params.get("limit", 100), self.page_size)]
            body = {"meta": self.meta(count=len(hits), limit=self.page_size, hasMoreNext=len(hits) > len(chunk)),
                    "data": chunk}
            if self.include_employees:
                body["included"] = list(self.employees.values())
            return json_reply(body)
        m = re.fullmatch(r"/api/v3/employee/(\w+)", req.path)
        if req.method == "GET" and m:
            employee = self.employees.get(m.group(1))
            if employee is None:
                return json_reply({"meta": self.meta(404), "data": None}, 404)
            return json_reply({"meta": self.meta(), "data": employee})
        return json_reply({"meta": self.meta(404), "data": None}, 404)


# --- a generic HTTP/JSON service ------------------------------------------------------

class OwnerApi:
    """``GET /api/owner?phone=<E.164 digits>`` → ``{"data": {"owner": {...}}}`` or 404; needs ``X-Api-Key``."""

    def __init__(self, key: str, owners: dict[str, dict]):
        self.key, self.owners = key, owners

    def __call__(self, req: Request) -> Reply:
        if req.headers.get("x-api-key") != self.key:
            return json_reply({"error": "forbidden"}, 403)
        owner = self.owners.get(req.args.get("phone", [""])[0])
        if owner is None:
            return json_reply({"error": "no such contact"}, 404)
        return json_reply({"data": {"owner": owner, "a/b": {"~x": owner.get("id")}}})
