import re
from uuid import uuid4

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
