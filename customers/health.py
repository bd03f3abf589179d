"""Liveness and readiness for the orchestrator; no authentication, no personal data.

DRF views only so that the OpenAPI schema documents them: no authentication, no permission, no rate
limit, and JSON whatever the probe's `Accept` header says.
"""

from django.db import connection
from django.http import JsonResponse
from django_redis import get_redis_connection
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.decorators import (
    api_view,
    authentication_classes,
    content_negotiation_class,
    permission_classes,
    throttle_classes,
)
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import AllowAny

DEPENDENCIES = ("postgresql", "redis")  # what readiness checks, as `checks` and `failing` name them


class _AlwaysJSON(BaseContentNegotiation):
    """A probe gets its answer whatever it accepts (DRF's negotiation would answer 406)."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


def _probe(view):
    for decorate in (
        authentication_classes([]),
        permission_classes([AllowAny]),
        throttle_classes([]),
        content_negotiation_class(_AlwaysJSON),
    ):
        view = decorate(view)
    return api_view(["GET"])(view)


_LIVE = inline_serializer("Liveness", fields={"status": serializers.ChoiceField(choices=["ok"])})
_READINESS = inline_serializer(
    "Readiness",
    fields={
        "status": serializers.ChoiceField(choices=["ok", "unavailable"]),
        "checks": inline_serializer(
            "ReadinessChecks",
            fields={"postgresql": serializers.BooleanField(), "redis": serializers.BooleanField()},
            help_text="Whether each dependency answered",
        ),
        "failing": serializers.ListField(
            child=serializers.ChoiceField(choices=DEPENDENCIES),
            required=False,
            help_text="Only when unavailable: the dependencies that did not answer",
        ),
    },
)


@extend_schema(
    summary="Liveness",
    description="The process answers. No authentication.",
    tags=["health"],
    auth=[],
    responses={200: _LIVE},
)
@_probe
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


@extend_schema(
    summary="Readiness",
    description="PostgreSQL and Redis answer. No authentication.",
    tags=["health"],
    auth=[],
    responses={
        200: OpenApiResponse(_READINESS, description="Ready: every check passed"),
        503: OpenApiResponse(_READINESS, description="Not ready: `failing` names the dependencies that did not answer"),
    },
)
@_probe
def ready(request):
    checks = {"postgresql": _database_ok(), "redis": _redis_ok()}
    failing = [name for name, ok in checks.items() if not ok]
    body = {"status": "ok" if not failing else "unavailable", "checks": checks}
    if failing:
        body["failing"] = failing
    return JsonResponse(body, status=503 if failing else 200)
