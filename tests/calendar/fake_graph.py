"""A local Entra ID token endpoint and Microsoft Graph ``calendarView/delta``, over TLS.

Modelled on Microsoft's documentation of the requests our Graph source makes:

* ``GET /{tenant}/v2.0/.well-known/openid-configuration`` -- the OpenID
  configuration msal reads before asking for a token;
* ``POST /{tenant}/oauth2/v2.0/token`` -- the client-credentials grant
  (``client_id``, ``client_secret``, ``scope=https://graph.microsoft.com/.default``):
  ``{"token_type": "Bearer", "expires_in": …, "access_token": …}``, or
  ``401 {"error": "invalid_client", "error_description": "AADSTS7000215: …"}``;
* ``GET /v1.0/users/{id}/calendarView/delta?startDateTime=…&endDateTime=…``
  and the ``@odata.nextLink`` / ``@odata.deltaLink`` it hands out
  (``$skiptoken`` / ``$deltatoken``): instances of the mailbox's events in the
  window, expanded server-side, with ``Prefer: odata.maxpagesize`` and
  ``outlook.timezone`` honoured (``Preference-Applied``); a delta round lists
  new and changed instances whole and deleted ones as
  ``{"id": …, "@removed": {"reason": "deleted"}}``.

Failures on demand: ``throttle(n, retry_after)`` (429 ``TooManyRequests`` with
``Retry-After``), ``revoke_tokens()`` (the next call gets 401
``InvalidAuthenticationToken``: the token expired early), ``expire_delta()``
(410 ``SyncStateNotFound``), a wrong client secret, ``forbid(mailbox)``
(403 ``ErrorAccessDenied``: no application permission for it).
"""
from __future__ import annotations

import datetime as dt
import http.server
import json
import secrets
import threading
import urllib.parse

from .events import UTC, Event, Mailbox, instances
from .tls import make_ca_and_server


def _graph_time(value) -> dict:
    if isinstance(value, dt.datetime):
        text = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000")
    else:                                    # all-day: midnight of the date, "floating" in the asked zone
        text = value.strftime("%Y-%m-%dT00:00:00.0000000")
    return {"dateTime": text, "timeZone": "UTC"}


class FakeGraph:
    def __init__(self, folder: str, *, tenant: str, client_id: str, client_secret: str, token_lifetime: int = 3599):
        self.tenant = tenant
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_lifetime = token_lifetime
        self.ca_path, self._context = make_ca_and_server(folder)
        self.mailboxes: dict[str, Mailbox] = {}
        self.lock = threading.Lock()
        self.tokens: set[str] = set()
        self.tokens_issued = 0
        self.requests: list[str] = []           # request paths (no query), for assertions
        self._throttle: list[tuple[int, int]] = []   # (status, retry-after)
        self._pages: dict[str, tuple] = {}
        self.forbidden: set[str] = set()
        self.server = None
        self.thread = None

    # -- test controls -------------------------------------------------------------------------

    def put(self, mailbox: str, event: Event) -> None:
        with self.lock:
            self.mailboxes.setdefault(mailbox.lower(), Mailbox()).events[event.uid] = event

    def delete(self, mailbox: str, uid: str) -> None:
        with self.lock:
            del self.mailboxes[mailbox.lower()].events[uid]

    def mailbox(self, mailbox: str) -> Mailbox:
        with self.lock:
            return self.mailboxes.setdefault(mailbox.lower(), Mailbox())

    def throttle(self, count: int, retry_after: int, status: int = 429) -> None:
        with self.lock:
            self._throttle.extend([(status, retry_after)] * count)

    def revoke_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    def expire_delta(self) -> None:
        with self.lock:
            for box in self.mailboxes.values():
                box.states.clear()
            self._pages.clear()

    def forbid(self, mailbox: str) -> None:
        with self.lock:
            self.forbidden.add(mailbox.lower())

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}"

    @property
    def api(self) -> str:
        return self.base + "/v1.0"

    def start(self) -> "FakeGraph":
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _reply(self, status: int, body: dict, headers: dict | None = None):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._reply(*fake.get(self.path, dict(self.headers)))

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                self._reply(*fake.post(self.path, {k: v[0] for k, v in form.items()}))

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = self._context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(5)
            self.server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- Entra ID ---------------------------------------------------------------------------------

    def post(self, path: str, form: dict) -> tuple:
        with self.lock:
            self.requests.append(path)
        if path != f"/{self.tenant}/oauth2/v2.0/token":
            return 404, {"error": "not_found"}
        if form.get("grant_type") != "client_credentials" or form.get("scope") != "https://graph.microsoft.com/.default":
            return 400, {"error": "invalid_request", "error_description": "AADSTS900144: bad request"}
        if form.get("client_id") != self.client_id:
            return 400, {"error": "unauthorized_client", "error_description":
                         f"AADSTS700016: Application with identifier '{form.get('client_id')}' was not found in "
                         f"the directory '{self.tenant}'."}
        if form.get("client_secret") != self.client_secret:
            return 401, {"error": "invalid_client", "error_description":
                         f"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the "
                         f"request is the client secret value, not the client secret ID, for a secret added to "
                         f"app '{self.client_id}'.\r\nTrace ID: 0\r\nCorrelation ID: 0\r\nTimestamp: now",
                         "error_codes": [7000215]}
        token = secrets.token_urlsafe(24)
        with self.lock:
            self.tokens.add(token)
            self.tokens_issued += 1
        return 200, {"token_type": "Bearer", "expires_in": self.token_lifetime,
                     "ext_expires_in": self.token_lifetime, "access_token": token}

    # -- Graph ------------------------------------------------------------------------------------

    def get(self, raw_path: str, headers: dict) -> tuple:
        parts = urllib.parse.urlsplit(raw_path)
        path, query = parts.path, dict(urllib.parse.parse_qsl(parts.query))
        with self.lock:
            self.requests.append(path)
        if path == f"/{self.tenant}/v2.0/.well-known/openid-configuration":
            root = f"{self.base}/{self.tenant}"
            return 200, {"token_endpoint": f"{root}/oauth2/v2.0/token",
                         "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
                         "issuer": f"{root}/v2.0", "jwks_uri": f"{root}/discovery/v2.0/keys",
                         "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"]}
        segments = path.split("/")
        if len(segments) != 6 or segments[1] != "v1.0" or segments[2] != "users" or segments[4:] != ["calendarView", "delta"]:
            return 400, {"error": {"code": "BadRequest", "message": f"Resource not found for the segment '{path}'."}}
        auth = headers.get("Authorization", "")
        with self.lock:
            valid = auth.startswith("Bearer ") and auth[7:] in self.tokens
            throttled = self._throttle.pop(0) if (valid and self._throttle) else None
        if not valid:
            return 401, {"error": {"code": "InvalidAuthenticationToken",
                                   "message": "Access token has expired or is not yet valid.",
                                   "innerError": {"date": "now"}}}, {"WWW-Authenticate": 'Bearer realm=""'}
        if throttled is not None:
            status, retry = throttled
            return status, {"error": {"code": "TooManyRequests" if status == 429 else "ServiceUnavailable",
                                      "message": "Application is over its MailboxConcurrency limit."}}, \
                {"Retry-After": str(retry)}
        user = urllib.parse.unquote(segments[3]).lower()
        with self.lock:
            if user in self.forbidden:
                return 403, {"error": {"code": "ErrorAccessDenied", "message": "Access is denied. Check credentials "
                                       "and try again."}}
            box = self.mailboxes.get(user)
            if box is None:
                return 404, {"error": {"code": "ErrorInvalidUser",
                                       "message": f"The requested user '{user}' is invalid."}}
            return self._delta(box, user, query, headers)

    def _delta(self, box: Mailbox, user: str, query: dict, headers: dict) -> tuple:
        prefer = headers.get("Prefer", "")
        size = 10
        for part in prefer.split(","):
            name, _, value = part.strip().partition("=")
            if name == "odata.maxpagesize" and value.isdigit():
                size = max(1, min(int(value), 1000))
        applied = {"Preference-Applied": f'odata.maxpagesize={size}, outlook.timezone="UTC"'}
        if "$skiptoken" in query:
            page = self._pages.pop(query["$skiptoken"], None)
            if page is None:
                return 410, {"error": {"code": "SyncStateNotFound", "message": "The sync state is not found."}}
            items, window, snapshot = page
        else:
            if "$deltatoken" in query:
                state = box.states.get(query["$deltatoken"])
                if state is None:
                    return 410, {"error": {"code": "SyncStateNotFound", "message": "The sync state is not found."}}
                window, before = state["window"], state["snapshot"]
            else:
                try:
                    start = dt.datetime.fromisoformat(query["startDateTime"].replace("Z", "+00:00"))
                    end = dt.datetime.fromisoformat(query["endDateTime"].replace("Z", "+00:00"))
                except (KeyError, ValueError):
                    return 400, {"error": {"code": "ErrorInvalidParameter", "message": "startDateTime and "
                                           "endDateTime are required"}}
                window, before = (start, end), {}
            current = {}
            resources = {}
            for event in box.events.values():
                for inst in instances(event, *window):
                    current[inst.id] = inst.version()
                    resources[inst.id] = self._event_json(event, inst)
            items = [resources[i] for i in sorted(current) if before.get(i) != current[i]]
            items += [{"@odata.type": "#microsoft.graph.event", "id": i, "@removed": {"reason": "deleted"}}
                      for i in sorted(set(before) - set(current))]
            snapshot = current
        here, rest = items[:size], items[size:]
        link = f"{self.api}/users/{urllib.parse.quote(user)}/calendarView/delta"
        body = {"@odata.context": f"{self.api}/$metadata#Collection(event)", "value": here}
        if rest:
            token = secrets.token_urlsafe(12)
            self._pages[token] = (rest, window, snapshot)
            body["@odata.nextLink"] = f"{link}?$skiptoken={token}"
        else:
            token = box.new_state({"window": window, "snapshot": snapshot})
            body["@odata.deltaLink"] = f"{link}?$deltatoken={token}"
        return 200, body, applied

    @staticmethod
    def _event_json(event: Event, inst) -> dict:
        return {
            "@odata.type": "#microsoft.graph.event", "@odata.etag": f'W/"{inst.version()}"',
            "id": inst.id, "iCalUId": inst.uid, "subject": inst.title,
            "sensitivity": "private" if inst.private else "normal",
            "showAs": {"busy": "busy", "free": "free", "tentative": "tentative", "oof": "oof"}[inst.free_busy],
            "isAllDay": inst.all_day, "isCancelled": inst.cancelled, "type": inst.kind,
            "start": _graph_time(inst.start), "end": _graph_time(inst.end),
        }
