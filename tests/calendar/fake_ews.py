"""A local Exchange Web Services endpoint speaking the SOAP our EWS source uses.

No Exchange can run here, so this answers the requests exchangelib really
sends (captured from exchangelib 5.6 and checked in ``test_fake_ews``) with
responses shaped as Microsoft's EWS schemas (``messages.xsd`` /
``types.xsd``) and reference pages describe them:

* ``ConvertId`` -- exchangelib's server-version probe: answered like Exchange
  2016 does for a malformed id (``ErrorInvalidIdMalformed``) with the
  ``ServerVersionInfo`` SOAP header;
* ``GetFolder`` for the distinguished folders ``root`` and ``calendar``;
* ``SyncFolderItems`` (``IdOnly`` shape): ``Create`` / ``Update`` / ``Delete``
  changes against the snapshot behind the caller's ``SyncState``, at most
  ``MaxChangesReturned`` per call, ``IncludesLastItemInRange``;
* ``FindItem`` with ``CalendarView``: the mailbox's events expanded server-side
  (occurrences and exceptions, deleted occurrences left out) with the fields
  asked for, times in UTC.

Failures on demand: ``busy(n, back_off_ms)`` answers the next ``n`` requests
with the ``ErrorServerBusy`` SOAP fault carrying ``BackOffMilliseconds``
(Exchange 2013+ throttling); ``expire_states()`` makes saved sync states
invalid (``ErrorInvalidSyncStateData``); wrong credentials get HTTP 401, as
IIS answers; ``deny_impersonation`` answers ``ErrorImpersonateUserDenied``.
Basic authentication only (NTLM is exchangelib's and requests-ntlm's business).
"""
from __future__ import annotations

import base64
import datetime as dt
import http.server
import threading
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from lxml import etree

from .events import UTC, Event, Mailbox, instances

S = "http://schemas.xmlsoap.org/soap/envelope/"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
NS = {"s": S, "m": M, "t": T}

HEADER = ('<s:Header><h:ServerVersionInfo MajorVersion="15" MinorVersion="1" MajorBuildNumber="2507" '
          'MinorBuildNumber="6" Version="V2017_07_11" xmlns:h="http://schemas.microsoft.com/exchange/services/2006/types" '
          'xmlns="http://schemas.microsoft.com/exchange/services/2006/types" '
          'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema"/>'
          '</s:Header>')
_SENSITIVITY = {True: "Private", False: "Normal"}
_FREE_BUSY = {"busy": "Busy", "free": "Free", "tentative": "Tentative", "oof": "OOF"}
_WINDOWS_ZONES = {"UTC": "UTC", "Europe/London": "GMT Standard Time", "Europe/Berlin": "W. Europe Standard Time",
                  "America/New_York": "Eastern Standard Time", "Asia/Tokyo": "Tokyo Standard Time"}


def _envelope(body: str) -> bytes:
    return ('<?xml version="1.0" encoding="utf-8"?>'
            f'<s:Envelope xmlns:s="{S}">{HEADER}<s:Body xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            f'xmlns:xsd="http://www.w3.org/2001/XMLSchema">{body}</s:Body></s:Envelope>').encode()


def _fault(code: str, message: str, detail_xml: str = "") -> bytes:
    return ('<?xml version="1.0" encoding="utf-8"?>'
            f'<s:Envelope xmlns:s="{S}"><s:Body><s:Fault>'
            f'<faultcode xmlns:a="{T}">a:{code}</faultcode>'
            f'<faultstring xml:lang="en-US">{escape(message)}</faultstring>'
            f'<detail><e:ResponseCode xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">{code}'
            f'</e:ResponseCode><e:Message xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">'
            f'{escape(message)}</e:Message>{detail_xml}</detail></s:Fault></s:Body></s:Envelope>').encode()


def _error_message(operation: str, code: str, text: str, extra: str = "") -> str:
    return (f'<m:{operation}Response xmlns:m="{M}" xmlns:t="{T}"><m:ResponseMessages>'
            f'<m:{operation}ResponseMessage ResponseClass="Error"><m:MessageText>{escape(text)}</m:MessageText>'
            f'<m:ResponseCode>{code}</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>{extra}'
            f'</m:{operation}ResponseMessage></m:ResponseMessages></m:{operation}Response>')


def _ews_time(value: dt.datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class FakeExchange:
    """``FakeExchange(users={"svc@example.com": "pw"})``; ``mailbox(smtp)`` holds the calendars."""

    def __init__(self, users: dict[str, str], *, zone: str = "Europe/Berlin"):
        self.users = dict(users)
        self.zone = zone                               # the organizers' zone: all-day items are midnight there
        self.mailboxes: dict[str, Mailbox] = {}
        self.requests: list[tuple[str, str]] = []      # (operation, mailbox), for assertions
        self.lock = threading.Lock()
        self._busy: list[int] = []                     # back-off ms for the next requests
        self.deny_impersonation: set[str] = set()
        self.server: http.server.ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    # -- test controls -------------------------------------------------------------------------

    def mailbox(self, smtp: str) -> Mailbox:
        with self.lock:
            return self.mailboxes.setdefault(smtp.lower(), Mailbox())

    def put(self, smtp: str, event: Event) -> None:
        with self.lock:
            self.mailboxes.setdefault(smtp.lower(), Mailbox()).events[event.uid] = event

    def delete(self, smtp: str, uid: str) -> None:
        with self.lock:
            del self.mailboxes[smtp.lower()].events[uid]

    def busy(self, count: int, back_off_ms: int) -> None:
        with self.lock:
            self._busy.extend([back_off_ms] * count)

    def expire_states(self) -> None:
        with self.lock:
            for box in self.mailboxes.values():
                box.states.clear()

    def operations(self) -> list[str]:
        with self.lock:
            return [op for op, _ in self.requests]

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/EWS/Exchange.asmx"

    def start(self) -> "FakeExchange":
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status, payload = fake.handle(self.path, self.headers.get("Authorization", ""), body)
                self.send_response(status)
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="mail.example.com"')
                self.send_header("Content-Type", "text/xml; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
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

    # -- SOAP -----------------------------------------------------------------------------------

    def _authorised(self, header: str) -> bool:
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return self.users.get(user) == password

    def handle(self, path: str, authorization: str, body: bytes) -> tuple[int, bytes]:
        if path.lower() != "/ews/exchange.asmx":
            return 404, b""
        if not self._authorised(authorization):
            return 401, b"401 - Unauthorized: Access is denied due to invalid credentials."
        root = etree.fromstring(body)
        operation_el = root.find("s:Body", NS)[0]
        operation = etree.QName(operation_el).localname
        smtp = root.findtext("s:Header/t:ExchangeImpersonation/t:ConnectingSID/t:PrimarySmtpAddress", namespaces=NS)
        if smtp is None:
            smtp = operation_el.findtext(".//t:Mailbox/t:EmailAddress", namespaces=NS) or ""
        smtp = smtp.lower()
        with self.lock:
            self.requests.append((operation, smtp))
            back_off = self._busy.pop(0) if self._busy else None
        if back_off is not None:
            detail = (f'<t:MessageXml xmlns:t="{T}"><t:Value Name="BackOffMilliseconds">{back_off}</t:Value>'
                      f'</t:MessageXml>')
            return 500, _fault("ErrorServerBusy", "The server cannot service this request right now. "
                               "Try again later.", detail)
        if operation == "ConvertId":
            return 200, _envelope(_error_message("ConvertId", "ErrorInvalidIdMalformed", "Id is malformed."))
        if smtp in self.deny_impersonation:
            return 500, _fault("ErrorImpersonateUserDenied", "The account does not have permission to "
                               "impersonate the requested user.")
        with self.lock:
            box = self.mailboxes.get(smtp)
            if box is None:
                return 200, _envelope(_error_message(operation, "ErrorNonExistentMailbox",
                                                     f"The SMTP address has no mailbox associated with it."))
            if operation == "GetFolder":
                return 200, _envelope(self._get_folder(operation_el, smtp, box))
            if operation == "SyncFolderItems":
                return 200, _envelope(self._sync_folder_items(operation_el, smtp, box))
            if operation == "FindItem":
                return 200, _envelope(self._find_item(operation_el, smtp, box))
        return 500, _fault("ErrorInvalidRequest", f"The request is invalid: {operation} is not served here.")

    @staticmethod
    def _folder_id(smtp: str, name: str) -> str:
        return _b64(f"folder:{smtp}:{name}")

    def _get_folder(self, el, smtp: str, box: Mailbox) -> str:
        messages = []
        for fid in el.find("m:FolderIds", NS):
            name = fid.get("Id")
            if etree.QName(fid).localname != "DistinguishedFolderId" or name not in ("root", "calendar"):
                messages.append('<m:GetFolderResponseMessage ResponseClass="Error"><m:MessageText>The specified '
                                'folder could not be found in the store.</m:MessageText><m:ResponseCode>'
                                'ErrorFolderNotFound</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>'
                                '</m:GetFolderResponseMessage>')
                continue
            tag, cls, display, parent = (("Folder", "", "Top of Information Store", "root") if name == "root"
                                         else ("CalendarFolder", "IPF.Appointment", "Calendar", "root"))
            messages.append(
                f'<m:GetFolderResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>'
                f'<m:Folders><t:{tag}><t:FolderId Id="{self._folder_id(smtp, name)}" ChangeKey="AQAAAA=="/>'
                f'<t:ParentFolderId Id="{self._folder_id(smtp, parent)}" ChangeKey="AQAAAA=="/>'
                + (f'<t:FolderClass>{cls}</t:FolderClass>' if cls else "")
                + f'<t:DisplayName>{display}</t:DisplayName><t:TotalCount>{len(box.events)}</t:TotalCount>'
                f'<t:ChildFolderCount>0</t:ChildFolderCount><t:EffectiveRights><t:CreateAssociated>true'
                f'</t:CreateAssociated><t:CreateContents>true</t:CreateContents><t:CreateHierarchy>true'
                f'</t:CreateHierarchy><t:Delete>true</t:Delete><t:Modify>true</t:Modify><t:Read>true</t:Read>'
                f'<t:ViewPrivateItems>true</t:ViewPrivateItems></t:EffectiveRights>'
                f'<t:DistinguishedFolderId>{name}</t:DistinguishedFolderId></t:{tag}></m:Folders>'
                f'</m:GetFolderResponseMessage>')
        return (f'<m:GetFolderResponse xmlns:m="{M}" xmlns:t="{T}"><m:ResponseMessages>{"".join(messages)}'
                f'</m:ResponseMessages></m:GetFolderResponse>')

    @staticmethod
    def _item_id(smtp: str, uid: str) -> str:
        return _b64(f"item:{smtp}:{uid}")

    def _sync_folder_items(self, el, smtp: str, box: Mailbox) -> str:
        state = el.findtext("m:SyncState", namespaces=NS)
        limit = int(el.findtext("m:MaxChangesReturned", namespaces=NS) or 512)
        if state:
            if state not in box.states:
                # Exchange still writes the (empty) SyncState and IncludesLastItemInRange elements
                return _error_message("SyncFolderItems", "ErrorInvalidSyncStateData",
                                      "Synchronization state data is corrupt or otherwise invalid.",
                                      "<m:SyncState/><m:IncludesLastItemInRange>true</m:IncludesLastItemInRange>")
            before = dict(box.states[state])
        else:
            before = {}
        current = {uid: ev.changekey() for uid, ev in box.events.items()}
        changes = []
        for uid in sorted(set(before) | set(current)):
            if uid not in current:
                changes.append(("Delete", uid, None))
            elif uid not in before:
                changes.append(("Create", uid, current[uid]))
            elif before[uid] != current[uid]:
                changes.append(("Update", uid, current[uid]))
        page, rest = changes[:limit], changes[limit:]
        after = dict(before)
        parts = []
        for kind, uid, key in page:
            item_id = f'<t:ItemId Id="{self._item_id(smtp, uid)}" ChangeKey="{key or "DwAAAA=="}"/>'
            if kind == "Delete":
                after.pop(uid, None)
                parts.append(f"<t:Delete>{item_id}</t:Delete>")
            else:
                after[uid] = key
                parts.append(f"<t:{kind}><t:CalendarItem>{item_id}</t:CalendarItem></t:{kind}>")
        token = box.new_state(after)
        return (f'<m:SyncFolderItemsResponse xmlns:m="{M}" xmlns:t="{T}"><m:ResponseMessages>'
                f'<m:SyncFolderItemsResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>'
                f'<m:SyncState>{token}</m:SyncState>'
                f'<m:IncludesLastItemInRange>{"false" if rest else "true"}</m:IncludesLastItemInRange>'
                f'<m:Changes>{"".join(parts)}</m:Changes></m:SyncFolderItemsResponseMessage></m:ResponseMessages>'
                f'</m:SyncFolderItemsResponse>')

    def _find_item(self, el, smtp: str, box: Mailbox) -> str:
        view = el.find("m:CalendarView", NS)
        if view is None:
            return _error_message("FindItem", "ErrorInvalidRequest", "Only CalendarView is served here.")
        start = dt.datetime.fromisoformat(view.get("StartDate").replace("Z", "+00:00"))
        end = dt.datetime.fromisoformat(view.get("EndDate").replace("Z", "+00:00"))
        wanted = {f.get("FieldURI") for f in el.iterfind(".//t:FieldURI", NS)}
        items = []
        for event in box.events.values():
            for inst in instances(event, start, end):
                items.append(self._calendar_item(smtp, event, inst, wanted))
        return (f'<m:FindItemResponse xmlns:m="{M}" xmlns:t="{T}"><m:ResponseMessages>'
                f'<m:FindItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>'
                f'<m:RootFolder TotalItemsInView="{len(items)}" IncludesLastItemInRange="true"><t:Items>'
                f'{"".join(items)}</t:Items></m:RootFolder></m:FindItemResponseMessage></m:ResponseMessages>'
                f'</m:FindItemResponse>')

    def _calendar_item(self, smtp: str, event: Event, inst, wanted: set) -> str:
        if inst.all_day:
            # EWS gives all-day items as midnight to midnight in the organizer's zone, in UTC,
            # with that zone as StartTimeZone / EndTimeZone
            zone = self.zone
            start = dt.datetime.combine(inst.start, dt.time(), ZoneInfo(zone))
            end = dt.datetime.combine(inst.end, dt.time(), ZoneInfo(zone))
        else:
            zone, start, end = inst.zone, inst.start, inst.end
        windows_zone = _WINDOWS_ZONES.get(zone, "UTC")
        fields = {
            "item:Subject": f"<t:Subject>{escape(inst.title)}</t:Subject>",
            "item:Sensitivity": f"<t:Sensitivity>{_SENSITIVITY[inst.private]}</t:Sensitivity>",
            "calendar:UID": f"<t:UID>{escape(inst.uid)}</t:UID>",
            "calendar:Start": f"<t:Start>{_ews_time(start)}</t:Start>",
            "calendar:End": f"<t:End>{_ews_time(end)}</t:End>",
            "calendar:IsAllDayEvent": f"<t:IsAllDayEvent>{str(inst.all_day).lower()}</t:IsAllDayEvent>",
            "calendar:LegacyFreeBusyStatus":
                f"<t:LegacyFreeBusyStatus>{_FREE_BUSY[inst.free_busy]}</t:LegacyFreeBusyStatus>",
            "calendar:IsCancelled": f"<t:IsCancelled>{str(inst.cancelled).lower()}</t:IsCancelled>",
            "calendar:CalendarItemType": "<t:CalendarItemType>" + {
                "singleInstance": "Single", "occurrence": "Occurrence", "exception": "Exception"}[inst.kind]
                + "</t:CalendarItemType>",
            "calendar:StartTimeZone": f'<t:StartTimeZone Id="{windows_zone}" Name="{windows_zone}"/>',
            "calendar:EndTimeZone": f'<t:EndTimeZone Id="{windows_zone}" Name="{windows_zone}"/>',
        }
        # schema order of CalendarItem's elements (types.xsd): item fields, then calendar fields
        order = ["item:Subject", "item:Sensitivity", "calendar:UID", "calendar:Start", "calendar:End",
                 "calendar:IsAllDayEvent", "calendar:LegacyFreeBusyStatus", "calendar:IsCancelled",
                 "calendar:CalendarItemType", "calendar:StartTimeZone", "calendar:EndTimeZone"]
        item_id = _b64(f"occ:{smtp}:{inst.id}")
        body = "".join(fields[name] for name in order if name in wanted)
        return (f'<t:CalendarItem><t:ItemId Id="{item_id}" ChangeKey="{inst.version()}"/>{body}'
                f'</t:CalendarItem>')
