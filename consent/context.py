"""The acting client's IP address and user agent, for consent recorded away from the consent API.

`RequestOriginMiddleware` (in `MIDDLEWARE`, after the correlation-id middleware) keeps the request's
origin in a context variable for the length of the request, so consent recorded by an event
subscriber that never sees the request (a marketing opt-in changed through
`PUT/PATCH /customers/{id}/preferences`, the choices made at sign-up through `POST /customers`)
carries it too; the consent API reads the same origin.

A service acting on the customer's behalf (the storefront registers customers and saves their
choices server-side) is not the customer: its peer address is its own server's. Such a caller
passes the customer's own IP address and user agent in two headers, which every consent-recording
endpoint documents:

    X-Customer-IP: 203.0.113.7
    X-Customer-User-Agent: Mozilla/5.0 (...)

They are trusted only from a service token (an API token not limited to one customer: the caller
already holds `customers:write` for every customer). A customer's own token records its peer
address and user agent; the headers are ignored, so a customer cannot claim another's address.
An X-Customer-IP that is not an IP address is ignored (the record then holds no IP rather than
a wrong one). Staff and system changes record neither.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_ipv46_address

CUSTOMER_IP_HEADER = "X-Customer-IP"
CUSTOMER_USER_AGENT_HEADER = "X-Customer-User-Agent"
_CUSTOMER_IP_META = "HTTP_X_CUSTOMER_IP"
_CUSTOMER_USER_AGENT_META = "HTTP_X_CUSTOMER_USER_AGENT"
USER_AGENT_MAX = 1000


def _valid_ip(value: str | None) -> str | None:
    value = (value or "").strip()
    if not value:
        return None
    try:
        validate_ipv46_address(value)
    except DjangoValidationError:
        return None
    return value


@dataclass(frozen=True)
class RequestOrigin:
    """Where a request came from: its peer, and what a service caller said about the customer."""

    peer_ip: str | None = None
    peer_user_agent: str = ""
    customer_ip: str | None = None
    customer_user_agent: str = ""
    on_behalf: bool = False  # at least one X-Customer-* header was sent

    def for_actor(self, actor) -> tuple[str | None, str]:
        """The (IP, user agent) to record for a change this actor makes."""
        if actor is None or actor.kind != "token":
            return None, ""
        if actor.customer_id is None and self.on_behalf:
            return self.customer_ip, self.customer_user_agent
        return self.peer_ip, self.peer_user_agent


def origin_of(request) -> RequestOrigin:
    meta = request.META
    on_behalf = _CUSTOMER_IP_META in meta or _CUSTOMER_USER_AGENT_META in meta
    return RequestOrigin(
        peer_ip=_valid_ip(meta.get("REMOTE_ADDR")),
        peer_user_agent=(meta.get("HTTP_USER_AGENT") or "").strip()[:USER_AGENT_MAX],
        customer_ip=_valid_ip(meta.get(_CUSTOMER_IP_META)),
        customer_user_agent=(meta.get(_CUSTOMER_USER_AGENT_META) or "").strip()[:USER_AGENT_MAX],
        on_behalf=on_behalf,
    )


_request_origin: ContextVar[RequestOrigin | None] = ContextVar("consent_request_origin", default=None)


def request_origin_for(request, actor) -> tuple[str | None, str]:
    """For the consent API: the (IP, user agent) to record for this request's actor."""
    return origin_of(request).for_actor(actor)


def current_origin_for(actor) -> tuple[str | None, str]:
    """For subscribers: the (IP, user agent) of the request being served, as recorded for `actor`."""
    origin = _request_origin.get()
    if origin is None:
        return None, ""
    return origin.for_actor(actor)


class RequestOriginMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = _request_origin.set(origin_of(request))
        try:
            return self.get_response(request)
        finally:
            _request_origin.reset(token)
