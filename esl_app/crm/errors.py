"""Errors of the CRM sources, with structure (wazo-calld habit): an ``error_id``,
the ``source`` that failed, the HTTP ``status`` when there was one, and for
rate limits the server's ``retry_after`` hint (exchangelib's ``back_off``).

``transient`` says whether asking again later may help; the resolver skips a
failing source for this call either way, the refresher backs off from it.
Messages name the source and the request (method and path), never a URL with
its query, a header or a credential.
"""
from __future__ import annotations

from fastpath.errors import SwitchboardError


class CrmError(SwitchboardError):
    """A CRM source could not answer."""

    error_id = "crm_error"
    transient = False

    def __init__(self, source: str, message: str, *, status: int | None = None, details: dict | None = None):
        self.source = source
        self.status = status
        self.details = dict(details or {})
        super().__init__(f"{source}: {message}")


class CrmConfigError(CrmError):
    """The source is configured wrongly (missing credentials, bad URL…); carries every problem."""

    error_id = "crm_config"

    def __init__(self, source: str, problems: list[str]):
        self.problems = list(problems)
        super().__init__(source, "; ".join(self.problems))


class CrmAuthError(CrmError):
    """The CRM refused the credentials (401/403, expired or revoked token)."""

    error_id = "crm_auth"


class CrmRateLimited(CrmError):
    """The CRM asked us to slow down (429, Bitrix24's QUERY_LIMIT_EXCEEDED)."""

    error_id = "crm_rate_limited"
    transient = True

    def __init__(self, source: str, message: str, *, retry_after: float | None = None, **kw):
        self.retry_after = retry_after
        super().__init__(source, message, **kw)


class CrmUnavailable(CrmError):
    """The CRM is down or unreachable (connection refused, 5xx)."""

    error_id = "crm_unavailable"
    transient = True


class CrmTimeout(CrmUnavailable):
    """The CRM did not answer within the time budget."""

    error_id = "crm_timeout"


class CrmBadResponse(CrmError):
    """The CRM answered something that is not what its API documents (malformed JSON, wrong shape)."""

    error_id = "crm_bad_response"
    transient = True
