"""Test run: the real PostgreSQL and Redis, a separate Redis database, tasks run eagerly."""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "test-secret-key-not-for-production-use-0123456789")
os.environ.setdefault("JWT_SIGNING_KEY", "test-jwt-signing-key-at-least-32-bytes-long!!")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")

from .base import *  # noqa: F403
from .base import CACHES, DATABASES

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DATABASES["default"]["CONN_MAX_AGE"] = 0
# One test database per run, so concurrent runs on one machine never drop each other's database.
DATABASES["default"]["TEST"] = {"NAME": f"test_customer_service_{os.getpid()}"}
# A cache that is never reachable, for tests of how the service behaves when Redis is down.
CACHES["unreachable"] = {
    "BACKEND": "django_redis.cache.RedisCache",
    "LOCATION": "redis://127.0.0.1:1/0",
    "OPTIONS": {"IGNORE_EXCEPTIONS": True, "SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
}
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
# The test machine is busy (parallel suites, benchmarks): a cache write that times out silently
# would make cache assertions flaky, so give Redis more time here than in production.
CACHES["default"]["OPTIONS"] = {**CACHES["default"]["OPTIONS"], "SOCKET_TIMEOUT": 5, "SOCKET_CONNECT_TIMEOUT": 5}
# Keys of this run carry its own prefix, so concurrent runs sharing the Redis database never wipe
# or count each other's keys.
TEST_REDIS_PREFIX = f"t{os.getpid()}"
CACHES["default"]["KEY_PREFIX"] = TEST_REDIS_PREFIX
RATE_LIMIT_KEY_PREFIX = f"{TEST_REDIS_PREFIX}:ratelimit"
