import re
from uuid import uuid4

from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware

from customers.context import correlation_id

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


class CorrelationIdMiddleware:
    """Takes the caller's X-Correlation-ID (or makes one) so events can be traced back to the request."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Correlation-ID") or request.headers.get("X-Request-ID") or ""
        value = incoming if _SAFE_ID.match(incoming) else str(uuid4())
        token = correlation_id.set(value)
        try:
            response = self.get_response(request)
        finally:
            correlation_id.reset(token)
        response["X-Correlation-ID"] = value
        return response


# The bearer-token API and the health probes keep no session, sign no user in by cookie and show no
# flash messages, so those three middlewares run for the back office only: they were 4% of a cached
# GET's instructions (callgrind). Subclasses, so Django's admin checks still find them. CSRF keeps
# running everywhere (DRF's views are exempt themselves).
STATELESS_PATH_PREFIXES = ("/api/", "/health/")


def _back_office_only(middleware_class):
    class BackOfficeOnly(middleware_class):
        def __call__(self, request):
            if request.path_info.startswith(STATELESS_PATH_PREFIXES):
                return self.get_response(request)
            return super().__call__(request)

    BackOfficeOnly.__name__ = BackOfficeOnly.__qualname__ = f"BackOffice{middleware_class.__name__}"
    return BackOfficeOnly


BackOfficeSessionMiddleware = _back_office_only(SessionMiddleware)
BackOfficeAuthenticationMiddleware = _back_office_only(AuthenticationMiddleware)
BackOfficeMessageMiddleware = _back_office_only(MessageMiddleware)
