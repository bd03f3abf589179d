"""Production: every secret from the environment, no defaults; HTTPS only."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import DATABASES, PREPARED_PLAN_OPTIONS, env

DEBUG = False
if not env("DATABASE_URL", default=""):
    raise ImproperlyConfigured("Set the DATABASE_URL environment variable")
DATABASES["default"] = {**env.db("DATABASE_URL"), "CONN_MAX_AGE": 300, "CONN_HEALTH_CHECKS": True}
DATABASES["default"].setdefault("OPTIONS", {}).setdefault("options", PREPARED_PLAN_OPTIONS)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS")

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
SECURE_REDIRECT_EXEMPT = [r"^health/"]
SESSION_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
