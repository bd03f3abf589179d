"""Per-token rate limit counted atomically in Redis (fixed one-minute windows).

When Redis cannot be reached the limit is not enforced (fail open) and a warning is logged:
refusing every request because a counter is unavailable would turn a cache outage into a full
outage of the API.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django_redis import get_redis_connection
from prometheus_client import Counter
from redis.exceptions import RedisError
from rest_framework.throttling import BaseThrottle

logger = logging.getLogger(__name__)
WINDOW_SECONDS = 60
KEY_TTL_SECONDS = WINDOW_SECONDS + 5
rate_limit_unavailable = Counter(
    "api_rate_limit_unavailable", "Requests let through because the rate-limit store was unreachable"
)


class RequestCount:
    """One request counted against its token's budget: the commands go into a Redis pipeline (which may
    carry other reads, e.g. the customer cache's), `verdict` reads their replies."""

    def __init__(self, actor) -> None:
        self.now = time.time()
        self.window = int(self.now // WINDOW_SECONDS)
        self.key = f"{settings.RATE_LIMIT_KEY_PREFIX}:{actor.subject}:{self.window}"

    @staticmethod
    def pipeline():
        return get_redis_connection(settings.RATE_LIMIT_CACHE_ALIAS).pipeline(transaction=False)

    def add_to(self, pipe) -> None:
        pipe.incr(self.key)
        pipe.expire(self.key, KEY_TTL_SECONDS)

    def retry_after(self) -> int:
        return max(1, int((self.window + 1) * WINDOW_SECONDS - self.now) + 1)

    @staticmethod
    def verdict(count: int) -> bool:
        return count <= settings.API_RATE_LIMIT_PER_MINUTE


def redis_unreachable(error: RedisError) -> None:
    """Fail open: the request goes on, counted as let through."""
    rate_limit_unavailable.inc()
    logger.warning("rate limit not enforced: Redis unreachable (%s)", type(error).__name__)


def count_alone(counting: RequestCount) -> int | None:
    """The request's count in its window, in a round trip of its own; None when Redis is unreachable."""
    try:
        pipe = counting.pipeline()
        counting.add_to(pipe)
        count, _ = pipe.execute()
    except RedisError as error:
        redis_unreachable(error)
        return None
    return count


class TokenSubjectRateThrottle(BaseThrottle):
    """DRF's throttle for every API view, except one that counts its requests itself (to share the
    round trip with its own Redis reads) and says so with `counts_requests_itself`."""

    def allow_request(self, request, view) -> bool:
        actor = request.auth
        if actor is None or getattr(view, "counts_requests_itself", False):
            return True
        counting = RequestCount(actor)
        count = count_alone(counting)
        self._retry_after = counting.retry_after()
        return count is None or counting.verdict(count)

    def wait(self) -> float | None:
        return getattr(self, "_retry_after", None)
