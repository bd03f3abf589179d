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
rate_limit_unavailable = Counter(
    "api_rate_limit_unavailable", "Requests let through because the rate-limit store was unreachable"
)


class TokenSubjectRateThrottle(BaseThrottle):
    def allow_request(self, request, view) -> bool:
        actor = request.auth
        if actor is None:
            return True
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        key = f"{settings.RATE_LIMIT_KEY_PREFIX}:{actor.subject}:{window}"
        try:
            pipe = get_redis_connection(settings.RATE_LIMIT_CACHE_ALIAS).pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, WINDOW_SECONDS + 5)
            count, _ = pipe.execute()
        except RedisError as error:
            rate_limit_unavailable.inc()
            logger.warning("rate limit not enforced: Redis unreachable (%s)", type(error).__name__)
            return True
        self._retry_after = max(1, int((window + 1) * WINDOW_SECONDS - now) + 1)
        return count <= settings.API_RATE_LIMIT_PER_MINUTE

    def wait(self) -> float | None:
        return getattr(self, "_retry_after", None)
