"""API building blocks every app's `api.py` uses: strict input, problem documentation, pagination."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.pagination import CursorPagination


class StrictSerializer(serializers.Serializer):
    """Refuses keys it does not know, so a typo never passes silently as 'no change'.

    Read-only names of the representation are accepted and ignored, so a client may PUT back
    what it GOT.
    """

    ignored_read_only: frozenset[str] = frozenset()

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = set(data) - set(self.fields) - self.ignored_read_only
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in sorted(unknown)})
            data = {key: value for key, value in data.items() if key not in self.ignored_read_only}
        return super().to_internal_value(data)


class ProblemSerializer(serializers.Serializer):
    type = serializers.URLField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    code = serializers.CharField(help_text="Stable machine-readable error code")
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()), required=False, help_text="Messages per field"
    )


def problems(*entries: tuple[int, str]) -> dict[int, OpenApiResponse]:
    """Document error responses: (status, "CODE_A, CODE_B") pairs; 401 and 429 apply everywhere."""
    documented = {
        401: "NOT_AUTHENTICATED",
        429: "RATE_LIMITED (with Retry-After)",
    }
    for status_code, codes in entries:
        documented[status_code] = codes
    return {
        status_code: OpenApiResponse(ProblemSerializer, description=f"application/problem+json; code: {codes}")
        for status_code, codes in documented.items()
    }


def scope_note(scope: str) -> str:
    return f"Requires scope `{scope}`. A token with a `customer_id` claim only reaches that customer."


class CreatedCursorPagination(CursorPagination):
    """Newest first; `page_size` up to 100; stable under concurrent inserts."""

    ordering = "-created_at"
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100
