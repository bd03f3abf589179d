"""The acting client's IP address and user agent, for consent recorded away from the consent API.

The consent API passes them to the services explicitly. A marketing opt-in changed through
`PUT /customers/{id}/preferences` reaches consent through an event subscriber that never sees the
request; `RequestOriginMiddleware` (add it to `MIDDLEWARE` after the correlation-id middleware)
keeps them in a context variable for the length of the request so that record carries them too.
"""

from __future__ import annotations

from contextvars import ContextVar

_request_origin: ContextVar[tuple[str | None, str] | None] = ContextVar("consent_request_origin", default=None)


def client_ip(request) -> str | None:
    """The peer address. Behind a proxy, configure it to set REMOTE_ADDR (we do not trust X-Forwarded-For)."""
    return request.META.get("REMOTE_ADDR") or None


def client_user_agent(request) -> str:
    return request.META.get("HTTP_USER_AGENT", "")


def current_request_origin() -> tuple[str | None, str] | None:
    return _request_origin.get()


class RequestOriginMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = _request_origin.set((client_ip(request), client_user_agent(request)))
        try:
            return self.get_response(request)
        finally:
            _request_origin.reset(token)
