"""The SIP user directory FreeSWITCH fetches over HTTP (mod_xml_curl), served from the store.

FreeSWITCH looks users up for every REGISTER and every authenticated call
(``action=sip_auth``), for ``bridge user/<ext>@<domain>`` (``action=user_call``),
for voicemail (``action=voicemail-lookup``) and more.  mod_xml_curl POSTs each
lookup as form fields to ``gateway-url`` (``freeswitch_conf`` points it at
``http://<service.directory>/directory``)::

    hostname=fs1&section=directory&tag_name=domain&key_name=name&key_value=sip.acme.example
    &Event-Name=REQUEST_PARAMS&...&action=sip_auth&sip_profile=internal&sip_auth_username=2001
    &sip_auth_realm=sip.acme.example&...&key=id&user=2001&domain=sip.acme.example&ip=192.0.2.7

(mod_xml_curl.c ``xml_url_fetch``; the ``action``/``sip_*`` fields from sofia_reg.c
``sofia_reg_parse_auth``; ``key``/``user``/``domain``/``ip`` from switch_xml.c
``switch_xml_locate_user``.)  The answer is a ``freeswitch/xml`` document with
the domain and the user: the A1 hash (never a password), ``user_context``,
caller ID, ``mailbox`` and ``vm-enabled`` (the name mod_voicemail reads).  A
user or domain we do not know, or any other lookup, gets FreeSWITCH's
"not found" document, after which FreeSWITCH consults its static XML
(``directory/switchboard_fallback.xml`` holds only credential-less mailboxes).
Requests we cannot read get a 4xx with a one-line message, never a traceback.

Each request is answered from one LMDB read transaction: the domain → company
index (rebuilt when the store's generation changes) and the extension record
come from the same snapshot, and an extension is only answered for the SIP
domain of its own company.

Guard: peers outside loopback are refused (403) unless credentials are set;
with credentials (``user:password``, e.g. from ``$SWITCHBOARD_DIRECTORY_CREDENTIALS``,
rendered into xml_curl.conf.xml as ``gateway-credentials``) every request must
carry them as HTTP basic auth (401 otherwise).

Production runs :func:`serve_directory` (a gevent ``WSGIServer`` in the
``switchboard serve`` process); ``python -m esl_app.directory --store DIR``
runs it alone, which the tests and a manual ``curl`` use.
"""
from __future__ import annotations

import argparse
import base64
import hmac
import ipaddress
import logging
import os
import re
import signal
import sys
import xml.etree.ElementTree as ET
from urllib.parse import parse_qsl

from fastpath import records as rec

from . import fs_conf

__all__ = ["make_app", "serve_directory", "lookup", "DirectoryApp", "MAX_BODY", "main"]

log = logging.getLogger(__name__)

#: mod_xml_curl sends every variable of the channel for user_call lookups: tens of KB.
MAX_BODY = 1 << 20
MAX_FIELDS = 5000
_EXTENSION = re.compile(r"[0-9]{1,16}")
_FORM = "application/x-www-form-urlencoded"
_XML_TYPE = ("Content-Type", "text/xml; charset=utf-8")
_STATUS = {400: "400 Bad Request", 401: "401 Unauthorized", 403: "403 Forbidden", 404: "404 Not Found",
           405: "405 Method Not Allowed", 411: "411 Length Required", 413: "413 Payload Too Large",
           415: "415 Unsupported Media Type", 500: "500 Internal Server Error"}


class _BadRequest(Exception):
    def __init__(self, status: int, message: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or []


NOT_FOUND = ET.tostring(fs_conf.not_found_document(), encoding="unicode").encode() + b"\n"


# --- the lookup, independent of HTTP ----------------------------------------------

class _DomainIndex:
    """SIP domain → companies, for the store generation it was built from."""

    def __init__(self):
        self.generation = None
        self.by_domain: dict[str, dict[str, rec.CompanyRec]] = {}

    def get(self, store, txn, domain: str) -> dict[str, rec.CompanyRec]:
        raw = txn.get(b"generation", db=store.db["meta"])
        generation = bytes(raw) if raw is not None else b""
        if generation != self.generation:
            by_domain: dict[str, dict[str, rec.CompanyRec]] = {}
            for _key, value in txn.cursor(db=store.db["company"]):
                company = rec.decode_company(value)
                by_domain.setdefault(company.sip_domain.lower(), {})[company.id] = company
            self.by_domain, self.generation = by_domain, generation
        return self.by_domain.get(domain.lower(), {})


def lookup(store, fields: dict[str, str], index: _DomainIndex | None = None) -> bytes:
    """The XML answer to one mod_xml_curl request (``fields``: first value of each form field).

    Raises :class:`ValueError` for a request that is not a lookup at all (no ``section``)."""
    section = fields.get("section", "").strip()
    if not section:
        raise ValueError("missing form field 'section' (expected a mod_xml_curl request)")
    if section != "directory" or fields.get("purpose"):
        return NOT_FOUND                   # gateways / network-list scans, other sections
    tag_name, key_name = fields.get("tag_name", "domain"), fields.get("key_name", "name")
    if tag_name not in ("", "domain") or key_name not in ("", "name"):
        return NOT_FOUND
    domain = (fields.get("key_value") or fields.get("domain") or "").strip()
    user = fields.get("user", "").strip()
    key = fields.get("key", "id").strip() or "id"
    if not domain or key != "id" or (user and not _EXTENSION.fullmatch(user)):
        return NOT_FOUND
    index = index if index is not None else _DomainIndex()
    with store.read() as txn:
        companies = index.get(store, txn, domain)
        if not companies:
            return NOT_FOUND
        users = []
        variables = None
        if user:
            raw = txn.get(user.encode(), db=store.db["ext"])
            if raw is None:
                return NOT_FOUND
            record = rec.decode_extension(user, raw)
            company = companies.get(record.company)
            if company is None:            # an extension of another company's domain
                return NOT_FOUND
            if isinstance(record, rec.DepartmentRec):
                users.append(fs_conf.department_user(record, company))
            else:
                users.append(fs_conf.employee_user(record, company))
        elif len(companies) == 1:
            company = next(iter(companies.values()))
            variables = {fs_conf.COMPANY_VARIABLE: company.id}
    document = fs_conf.directory_document([fs_conf.domain_element(domain, users, variables)])
    return fs_conf.to_xml(document).encode("utf-8")


# --- HTTP ----------------------------------------------------------------------------

def _peer_is_loopback(environ) -> bool:
    try:
        address = ipaddress.ip_address((environ.get("REMOTE_ADDR") or "").split("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


class DirectoryApp:
    """The WSGI application: ``POST /directory`` (GET with a query string works too)."""

    def __init__(self, store, *, credentials: str | None = None, path: str = fs_conf.DIRECTORY_PATH):
        if credentials is not None and ":" not in credentials:
            raise ValueError("directory credentials must be USER:PASSWORD")
        self.store = store
        self.path = path
        self.index = _DomainIndex()
        self._authorization = (b"Basic " + base64.b64encode(credentials.encode())) if credentials else None

    def __call__(self, environ, start_response):
        try:
            body = self._handle(environ)
            status, headers = "200 OK", [_XML_TYPE]
        except _BadRequest as exc:
            status, headers = _STATUS[exc.status], [("Content-Type", "text/plain; charset=utf-8")] + exc.headers
            body = (str(exc) + "\n").encode()
            if exc.status != 404:
                log.info("directory: %s from %s: %s", status, environ.get("REMOTE_ADDR"), exc)
        except Exception:
            log.exception("directory: lookup failed")
            status, headers = _STATUS[500], [("Content-Type", "text/plain; charset=utf-8")]
            body = b"internal error; see Switchboard's log\n"
        headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        return [body]

    def _handle(self, environ) -> bytes:
        if environ.get("PATH_INFO", "") != self.path:
            raise _BadRequest(404, f"no such resource; the directory is at {self.path}")
        self._check_peer(environ)
        method = environ.get("REQUEST_METHOD", "")
        if method == "POST":
            query = self._read_form(environ)
        elif method == "GET":
            query = environ.get("QUERY_STRING", "")
        else:
            raise _BadRequest(405, "use POST (or GET) like mod_xml_curl", [("Allow", "GET, POST")])
        fields = self._parse(query)
        try:
            return lookup(self.store, fields, self.index)
        except ValueError as exc:
            raise _BadRequest(400, str(exc)) from None

    def _check_peer(self, environ) -> None:
        if self._authorization is None:
            if not _peer_is_loopback(environ):
                raise _BadRequest(403, "the directory answers loopback peers only unless credentials are set")
            return
        given = (environ.get("HTTP_AUTHORIZATION") or "").encode("latin-1", "replace")
        if not hmac.compare_digest(given, self._authorization):
            raise _BadRequest(401, "credentials required", [("WWW-Authenticate", 'Basic realm="switchboard"')])

    @staticmethod
    def _read_form(environ) -> str:
        content_type = (environ.get("CONTENT_TYPE") or _FORM).split(";")[0].strip().lower()
        if content_type != _FORM:
            raise _BadRequest(415, f"expected {_FORM}, got {content_type}")
        length = environ.get("CONTENT_LENGTH") or ""
        if not length.strip().isdigit():
            raise _BadRequest(411 if not length else 400, "a Content-Length is required")
        size = int(length)
        if size > MAX_BODY:
            raise _BadRequest(413, f"request body over {MAX_BODY} bytes")
        data = environ["wsgi.input"].read(size) if size else b""
        if len(data) != size:
            raise _BadRequest(400, "request body shorter than its Content-Length")
        try:
            return data.decode("ascii")
        except UnicodeDecodeError:
            raise _BadRequest(400, "the form must be URL-encoded ASCII") from None

    @staticmethod
    def _parse(query: str) -> dict[str, str]:
        try:
            pairs = parse_qsl(query.strip(), keep_blank_values=True, errors="strict",
                              max_num_fields=MAX_FIELDS)
        except UnicodeDecodeError:
            raise _BadRequest(400, "a form value is not valid UTF-8 once decoded") from None
        except ValueError as exc:
            raise _BadRequest(400, f"unreadable form: {exc}") from None
        fields: dict[str, str] = {}
        for name, value in pairs:
            fields.setdefault(name, value)
        return fields


def make_app(store, *, credentials: str | None = None) -> DirectoryApp:
    """The WSGI callable mod_xml_curl talks to (see the module docstring for the guard)."""
    return DirectoryApp(store, credentials=credentials)


def serve_directory(listen, store, *, credentials: str | None = None, max_connections: int = 256):
    """Start a gevent ``WSGIServer`` for the directory on ``listen`` and return it.

    ``listen`` is a :class:`~esl_app.service_config.Listen` (``service.directory``)
    or a ``(host, port)`` tuple; port 0 picks a free port (``server.server_port``).
    Requests run in greenlets of a pool of ``max_connections``; the accept loop
    runs in the caller's gevent hub.  Stop it with ``server.stop(timeout=...)``."""
    from gevent.pool import Pool
    from gevent.pywsgi import WSGIServer

    host, port = (listen.host, listen.port) if hasattr(listen, "host") else listen
    server = WSGIServer((host, port), make_app(store, credentials=credentials),
                        spawn=Pool(max_connections), log=None, error_log=log)
    server.start()
    log.info("directory: listening on %s:%s", host, server.server_port)
    return server


# --- standalone --------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """``python -m esl_app.directory --store DIR [--listen HOST:PORT]``: serve until SIGTERM/SIGINT.

    Prints ``listening on HOST:PORT`` once ready (port 0 picks one)."""
    import gevent
    from gevent.event import Event

    from fastpath.store import Store, default_store_path

    parser = argparse.ArgumentParser(prog="python -m esl_app.directory", description=main.__doc__)
    parser.add_argument("--store", default=None)
    parser.add_argument("--listen", default="127.0.0.1:8085", metavar="HOST:PORT")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    if not port.isdigit() or not host:
        parser.error(f"--listen expects HOST:PORT, got {args.listen!r}")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    with Store(args.store or default_store_path(), readonly=True) as store:
        server = serve_directory((host.strip("[]"), int(port)), store,
                                 credentials=os.environ.get(fs_conf.DIRECTORY_CREDENTIALS_ENV) or None)
        print(f"listening on {host}:{server.server_port}", flush=True)
        stop = Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(signum, stop.set)
        stop.wait()
        server.stop(timeout=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
