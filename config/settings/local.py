"""Developer machine: debug on, well-known development keys (never used in production)."""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "local-dev-secret-key-not-for-production-use-0123456789")
os.environ.setdefault("JWT_SIGNING_KEY", "local-dev-jwt-signing-key-at-least-32-bytes-long")
os.environ.setdefault("DJANGO_DEBUG", "true")

from .base import *  # noqa: F403

ALLOWED_HOSTS = ["*"]
