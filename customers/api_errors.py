"""One place that turns every error into `application/problem+json` with a stable code."""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from customers.errors import ApplicationError

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://errors.customer-service.local/"

_KIND_STATUS = {
    "invalid": status.HTTP_400_BAD_REQUEST,
    "not_found": status.HTTP_404_NOT_FOUND,
    "conflict": status.HTTP_409_CONFLICT,
    "forbidden": status.HTTP_403_FORBIDDEN,
    "unavailable": status.HTTP_503_SERVICE_UNAVAILABLE,
    "internal": status.HTTP_500_INTERNAL_SERVER_ERROR,
}

_DRF_CODES = {
    exceptions.NotAuthenticated: ("NOT_AUTHENTICATED", "Not authenticated"),
    exceptions.AuthenticationFailed: ("NOT_AUTHENTICATED", "Not authenticated"),
    exceptions.PermissionDenied: ("PERMISSION_DENIED", "Permission denied"),
    exceptions.NotFound: ("NOT_FOUND", "Not found"),
    exceptions.MethodNotAllowed: ("METHOD_NOT_ALLOWED", "Method not allowed"),
    exceptions.NotAcceptable: ("NOT_ACCEPTABLE", "Not acceptable"),
    exceptions.UnsupportedMediaType: ("UNSUPPORTED_MEDIA_TYPE", "Unsupported media type"),
    exceptions.Throttled: ("RATE_LIMITED", "Too many requests"),
    exceptions.ParseError: ("MALFORMED_REQUEST", "Malformed request"),
    exceptions.ValidationError: ("VALIDATION_ERROR", "Invalid input"),
}


def _problem_body(*, status_code: int, code: str, title: str, detail: str, errors: dict | None = None) -> dict:
    body = {
        "type": PROBLEM_TYPE_BASE + code.lower().replace("_", "-"),
        "title": title,
        "status": status_code,
        "detail": detail,
        "code": code,
    }
    if errors:
        body["errors"] = errors
    return body


def problem(*, status_code: int, code: str, title: str, detail: str, errors: dict | None = None) -> Response:
    body = _problem_body(status_code=status_code, code=code, title=title, detail=detail, errors=errors)
    return Response(body, status=status_code, content_type=PROBLEM_CONTENT_TYPE)


def _flatten_detail(detail) -> str:
    if isinstance(detail, list):
        return " ".join(str(item) for item in detail)
    if isinstance(detail, dict):
        return "Some fields are invalid."
    return str(detail)


def _field_errors(detail) -> dict:
    if isinstance(detail, dict):
        return {
            field: [str(message) for message in (messages if isinstance(messages, list) else [messages])]
            if not isinstance(messages, dict)
            else _field_errors(messages)
            for field, messages in detail.items()
        }
    return {"non_field_errors": [str(message) for message in detail]} if isinstance(detail, list) else {}


def problem_exception_handler(exc, context):
    # Services roll their own transaction back; this covers ATOMIC_REQUESTS deployments too.
    set_rollback()

    if isinstance(exc, ApplicationError):
        status_code = _KIND_STATUS[exc.kind]
        title = exc.code.replace("_", " ").capitalize()
        return problem(status_code=status_code, code=exc.code, title=title, detail=exc.message, errors=exc.errors)

    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    if isinstance(exc, exceptions.APIException):
        code, title = next((value for cls, value in _DRF_CODES.items() if isinstance(exc, cls)), ("ERROR", "Error"))
        errors = _field_errors(exc.detail) if isinstance(exc, exceptions.ValidationError) else None
        detail = "Some fields are invalid." if errors else _flatten_detail(exc.detail)
        response = problem(status_code=exc.status_code, code=code, title=title, detail=detail, errors=errors)
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            response["Retry-After"] = str(int(exc.wait))
        if getattr(exc, "auth_header", None):
            response["WWW-Authenticate"] = exc.auth_header
        return response

    logger.exception("unhandled error in %s", context.get("view").__class__.__name__)
    return problem(
        status_code=500, code="INTERNAL_ERROR", title="Internal error", detail="Something went wrong on our side."
    )


def _plain_problem(request, *, status_code: int, code: str, title: str, detail: str) -> JsonResponse:
    """For Django's own error handlers, which run outside DRF (no Response rendering there)."""
    body = _problem_body(status_code=status_code, code=code, title=title, detail=detail)
    return JsonResponse(body, status=status_code, content_type=PROBLEM_CONTENT_TYPE)


def _is_api(request) -> bool:
    return request.path.startswith("/api/")


def page_not_found(request, exception):
    """Django's 404 for paths no URL pattern takes (e.g. `/api/v1/customers/not-a-uuid`): problem+json under /api/."""
    if _is_api(request):
        return _plain_problem(
            request, status_code=404, code="NOT_FOUND", title="Not found", detail="No such resource."
        )
    return defaults.page_not_found(request, exception)


def server_error(request):
    if _is_api(request):
        return _plain_problem(
            request, status_code=500, code="INTERNAL_ERROR", title="Internal error", detail="Something went wrong."
        )
    return defaults.server_error(request)
