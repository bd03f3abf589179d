"""Liveness and readiness for the orchestrator; no authentication, no personal data."""

from django.db import connection
from django.http import JsonResponse
from django_redis import get_redis_connection


def live(request):
    return JsonResponse({"status": "ok"})


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:  # any failure means "not ready", whatever the driver raises
        return False


def _redis_ok() -> bool:
    try:
        return bool(get_redis_connection("default").ping())
    except Exception:
        return False


def ready(request):
    checks = {"postgresql": _database_ok(), "redis": _redis_ok()}
    failing = [name for name, ok in checks.items() if not ok]
    body = {"status": "ok" if not failing else "unavailable", "checks": checks}
    if failing:
        body["failing"] = failing
    return JsonResponse(body, status=503 if failing else 200)
