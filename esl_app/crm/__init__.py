"""CRM sources for ICM: who is responsible for a caller, cached in the store.

* :mod:`.base` — the interface (``find_responsible(phone_e164) -> CrmAnswer | None``,
  a strict time budget) and phone matching;
* adapters: :mod:`.amocrm` (REST v4), :mod:`.bitrix24` (REST),
  :mod:`.megaplan` (API v3), :mod:`.generic` (any HTTP/JSON service);
* :mod:`.errors` — auth errors, rate limits (with ``retry_after``), outages,
  timeouts, bad answers;
* :mod:`.secrets` — credentials from the environment or a secrets file;
* :mod:`.mapping` — CRM users to extensions (configured, or by e-mail);
* :mod:`.cache` — answers in the store's ``crm`` table with a TTL, which the
  call path (``fastpath.icm_lookup``) reads;
* :mod:`.resolver` and :mod:`.refresher` — asking the sources in order, and
  keeping answers fresh with capped backoff;
* :mod:`.config` — sources from the service config.
"""
from .base import CrmAnswer, CrmSource, PhoneReader
from .errors import (CrmAuthError, CrmBadResponse, CrmConfigError, CrmError, CrmRateLimited, CrmTimeout,
                     CrmUnavailable)

__all__ = ["CrmAnswer", "CrmSource", "PhoneReader", "CrmError", "CrmAuthError", "CrmRateLimited",
           "CrmUnavailable", "CrmTimeout", "CrmBadResponse", "CrmConfigError"]
