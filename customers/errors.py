"""Errors every service raises: plain Python, a stable `code`, no HTTP or DRF in sight.

The API maps `kind` to an HTTP status in one place (`customers.api_errors`); the admin shows
`message`; Celery tasks log `code`.
"""

from __future__ import annotations


class ApplicationError(Exception):
    code = "APPLICATION_ERROR"
    kind = "invalid"  # invalid | not_found | conflict | forbidden | unavailable | internal

    def __init__(self, message: str, *, code: str | None = None, errors: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.errors = errors or {}


class ValidationFailed(ApplicationError):
    """Input broke a rule; `errors` maps each field to its messages."""

    code = "VALIDATION_ERROR"
    kind = "invalid"


class NotFound(ApplicationError):
    code = "NOT_FOUND"
    kind = "not_found"


class Conflict(ApplicationError):
    code = "CONFLICT"
    kind = "conflict"


class Forbidden(ApplicationError):
    code = "PERMISSION_DENIED"
    kind = "forbidden"


class CustomerNotFound(NotFound):
    code = "CUSTOMER_NOT_FOUND"

    def __init__(self, customer_id: object = None) -> None:
        super().__init__("No customer with this id." if customer_id is None else f"Customer {customer_id} not found.")


class EmailAlreadyExists(Conflict):
    code = "EMAIL_ALREADY_EXISTS"

    def __init__(self) -> None:
        super().__init__(
            "A customer with this email already exists.",
            errors={"email": ["A customer with this email already exists."]},
        )


class InvalidStatusTransition(Conflict):
    code = "INVALID_STATUS_TRANSITION"
