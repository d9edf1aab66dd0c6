"""Calendar sync: referral statuses from Exchange (EWS), Microsoft 365 (Graph) and CalDAV.

Modules, one concern each:

* :mod:`.keywords` -- how an event becomes a status (keyword rules, private events);
  which status is in force (manual over calendar, the most restrictive calendar one)
  is decided by :mod:`fastpath.referral_status`, shared with the routing engines;
* :mod:`.expand` -- iCalendar / server occurrences -> concrete intervals in the horizon;
* :mod:`.source` -- the source interface and its errors;
* :mod:`.caldav_source`, :mod:`.ews_source`, :mod:`.graph_source` -- the three sources;
* :mod:`.config` -- the calendar config file and secrets;
* :mod:`.worker` -- syncing all calendars into the store, with backoff and status;
* :mod:`.service` -- what the CLI (``sync``, ``serve``, ``status``) calls.

Library imports (caldav, exchangelib, msal, icalendar) happen inside the
modules that need them, so the routing path never pays for them.
"""
