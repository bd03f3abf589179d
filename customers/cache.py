"""The customer representation cache: `customer::{id}` in Redis, dropped on commit of every change."""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from prometheus_client import Counter

customer_cache_requests = Counter("customer_cache_requests", "Customer representation cache lookups", ["result"])


def customer_key(customer_id: object) -> str:
    return f"customer::{customer_id}"


def get_customer_representation(customer_id: object) -> bytes | None:
    value = cache.get(customer_key(customer_id))
    customer_cache_requests.labels(result="hit" if value is not None else "miss").inc()
    return value


def put_customer_representation(customer_id: object, body: bytes) -> None:
    cache.set(customer_key(customer_id), body, timeout=settings.CUSTOMER_CACHE_TTL_SECONDS)


def invalidate_customer_on_commit(customer_id: object) -> None:
    """Drop the entry once the change is committed, so the next read sees it (and a rollback keeps it)."""
    key = customer_key(customer_id)
    transaction.on_commit(lambda: cache.delete(key))
