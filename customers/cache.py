"""The customer representation cache: `customer::{id}` in Redis, dropped on commit of every change.

A plain delete-on-commit leaves a race: a reader that missed, read the old row, and stores it just
after the writer's delete would serve the old representation for the whole TTL. So every entry
carries the customer's cache *generation*, a random token under `customer-gen::{id}` that each
invalidation replaces; an entry whose generation is not the current one is a miss. The reader takes
the generation in the same round trip as the entry (MGET), before it reads the database.

The generation outlives every entry stored against it (`GENERATION_TTL_FACTOR`), so a generation can
never expire and come back while an entry made under it is still alive.
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Iterable

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from prometheus_client import Counter
from redis.exceptions import RedisError

from customers import ratelimit

logger = logging.getLogger(__name__)

customer_cache_requests = Counter("customer_cache_requests", "Customer representation cache lookups", ["result"])
customer_cache_invalidation_failures = Counter(
    "customer_cache_invalidation_failures", "Customer cache invalidations Redis did not take (entries may be stale)"
)

GENERATION_TTL_FACTOR = 3
_INVALIDATION_CHUNK = 1000


def customer_key(customer_id: object) -> str:
    return f"customer::{customer_id}"


def generation_key(customer_id: object) -> str:
    return f"customer-gen::{customer_id}"


def get_customer_representation(customer_id: object) -> tuple[bytes | None, int | None]:
    """The cached body (or None on a miss) and the generation to store a freshly built body under."""
    key, gen_key = customer_key(customer_id), generation_key(customer_id)
    values = cache.get_many([key, gen_key])
    generation = values.get(gen_key)
    entry = values.get(key)
    if isinstance(entry, tuple) and entry[0] == generation:
        customer_cache_requests.labels(result="hit").inc()
        return entry[1], generation
    customer_cache_requests.labels(result="miss").inc()
    return None, generation


# The request counted (INCR and EXPIRE, as `RequestCount.add_to`) and the entry read with its
# generation, in one command: one request packed and one reply parsed instead of a pipeline's
# three (2.3% of a cached GET's instructions). All three keys on one server: not for Redis Cluster.
_COUNTED_READ = """
local count = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return {count, redis.call('GET', KEYS[2]), redis.call('GET', KEYS[3])}
"""


@functools.cache
def _counted_read_script(client):
    return client.register_script(_COUNTED_READ)


def get_customer_representation_counted(customer_id: object, counting) -> tuple[bytes | None, int | None, int | None]:
    """`get_customer_representation` with the request counted against its rate limit (a
    `ratelimit.RequestCount`) in the same Redis round trip: (body, generation, count). The count is
    None when Redis could not be asked (the limit fails open, the body is a miss)."""
    if settings.RATE_LIMIT_CACHE_ALIAS != "default":  # the limit lives elsewhere: two round trips
        return (*get_customer_representation(customer_id), ratelimit.count_alone(counting))
    keys = [counting.key, cache.make_key(customer_key(customer_id)), cache.make_key(generation_key(customer_id))]
    try:
        client = cache.client.get_client(write=True)
        script = _counted_read_script(client)
        count, raw_entry, raw_generation = script(keys=keys, args=[ratelimit.KEY_TTL_SECONDS], client=client)
    except RedisError as error:
        ratelimit.redis_unreachable(error)
        customer_cache_requests.labels(result="miss").inc()
        return None, None, None
    generation = None if raw_generation is None else cache.client.decode(raw_generation)
    entry = None if raw_entry is None else cache.client.decode(raw_entry)
    if isinstance(entry, tuple) and entry[0] == generation:
        customer_cache_requests.labels(result="hit").inc()
        return entry[1], generation, count
    customer_cache_requests.labels(result="miss").inc()
    return None, generation, count


def put_customer_representation(
    customer_id: object, body: bytes, generation: int | None, *, ttl_seconds: int | None = None
) -> None:
    """Store the body; `ttl_seconds` shortens the TTL (a body that will be wrong by then), 0 stores nothing."""
    timeout = settings.CUSTOMER_CACHE_TTL_SECONDS
    if ttl_seconds is not None:
        timeout = min(timeout, ttl_seconds)
    if timeout <= 0:
        return
    cache.set(customer_key(customer_id), (generation, body), timeout=timeout)


def invalidate_customer_on_commit(customer_id: object) -> None:
    """Drop the entry once the change is committed, so the next read sees it (and a rollback keeps it)."""
    invalidate_customers_on_commit([customer_id])


def invalidate_customers_on_commit(customer_ids: Iterable[object]) -> None:
    ids = list(customer_ids)
    if ids:
        transaction.on_commit(lambda: invalidate_customers_now(ids))


# Per customer: a new generation (stored as django-redis stores an integer: raw digits, so
# cache.get_many reads it back as an int) and no entry. ARGV: TTL, the two keys' prefix and suffix,
# the new generation, then the customer ids joined by commas: one argument (two per customer took
# 2.8 ms of CPU to pack for an inbound batch's 500 customers; this takes 0.9 ms). One
# generation serves them all: each only has to differ from the generation its own customer had.
_INVALIDATE = """
local ttl, gen_prefix, gen_suffix, entry_prefix, entry_suffix, generation = unpack(ARGV, 1, 6)
local count = 0
for id in string.gmatch(ARGV[7], '[^,]+') do
    redis.call('SET', gen_prefix .. id .. gen_suffix, generation, 'EX', ttl)
    redis.call('DEL', entry_prefix .. id .. entry_suffix)
    count = count + 1
end
return count
"""
_MARK = "\x00"


def _key_parts(key_of) -> tuple[str, str] | None:
    """(prefix, suffix) around the customer id in the full cache key; None if the key function hides it."""
    prefix, found, suffix = str(cache.make_key(key_of(_MARK))).partition(_MARK)
    return (prefix, suffix) if found else None


def invalidate_customers_now(customer_ids: list[object]) -> None:
    """New generation and no entry for each customer, in one round trip per chunk (a script).

    When Redis does not take it, the failure is logged and counted: an entry that survives the outage
    can then be served for at most the TTL after Redis is back (the README says so).
    """
    generation_ttl = settings.CUSTOMER_CACHE_TTL_SECONDS * GENERATION_TTL_FACTOR
    try:
        client = cache.client.get_client(write=True)
        parts = _key_parts(generation_key), _key_parts(customer_key)
        if None in parts:  # a custom key function: one key at a time, in a pipeline
            pipe = client.pipeline(transaction=False)
            for customer_id in customer_ids:
                pipe.set(cache.make_key(generation_key(customer_id)), secrets.randbits(62), ex=generation_ttl)
                pipe.delete(cache.make_key(customer_key(customer_id)))
            pipe.execute()
            return
        script = client.register_script(_INVALIDATE)
        generation = secrets.randbits(62)
        for start in range(0, len(customer_ids), _INVALIDATION_CHUNK):
            chunk = ",".join(str(customer_id) for customer_id in customer_ids[start : start + _INVALIDATION_CHUNK])
            script(keys=[], args=[generation_ttl, *parts[0], *parts[1], generation, chunk], client=client)
    except RedisError as error:
        customer_cache_invalidation_failures.inc(len(customer_ids))
        logger.warning(
            "customer cache invalidation failed for %d customer(s): %s", len(customer_ids), type(error).__name__
        )
