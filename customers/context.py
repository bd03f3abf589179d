"""Per-request (or per-task) context that events carry without threading it through every call."""

from contextvars import ContextVar
from uuid import uuid4

correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)


def current_correlation_id() -> str:
    value = correlation_id.get()
    if value is None:
        value = str(uuid4())
        correlation_id.set(value)
    return value
