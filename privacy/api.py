"""Data-subject requests through the API: the storefront files them, a customer's own token follows them."""

from __future__ import annotations

from django.http import JsonResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import api_view
from rest_framework.response import Response
from rest_framework.views import APIView

from customers.actor import SCOPE_ADMIN, SCOPE_READ, SCOPE_WRITE, Actor
from customers.apikit import StrictSerializer, problems
from privacy import services
from privacy.models import DataSubjectRequest, RequestKind

OWN_OR_ADMIN = f"A customer's own token (`customer_id` claim) needs `{{scope}}`; any other token needs `{SCOPE_ADMIN}`."
FILING = (
    f"Any token with `{SCOPE_WRITE}` may file access, portability, rectification, restriction and objection "
    f"requests; erasure needs the customer's own token or `{SCOPE_ADMIN}`."
)


class PrivacyRequestSerializer(serializers.ModelSerializer):
    customer_id = serializers.UUIDField(read_only=True)
    is_overdue = serializers.BooleanField(read_only=True)
    export_ready = serializers.SerializerMethodField()

    class Meta:
        model = DataSubjectRequest
        fields = [
            "id",
            "customer_id",
            "kind",
            "status",
            "received_at",
            "due_at",
            "extension_months",
            "completed_at",
            "status_reason",
            "is_overdue",
            "export_ready",
        ]
        read_only_fields = fields

    def get_export_ready(self, request: DataSubjectRequest) -> bool:
        return bool(request.result_file)


class FileRequestSerializer(StrictSerializer):
    kind = serializers.ChoiceField(choices=RequestKind.choices)
    notes = serializers.CharField(required=False, allow_blank=True, max_length=2000)


def _file(request, customer_id, kind: str, notes: str = "") -> Response:
    actor: Actor = request.auth
    privacy_request, created = services.privacy_request_file(
        actor=actor, customer_id=customer_id, kind=kind, notes=notes
    )
    privacy_request.refresh_from_db()
    return Response(
        PrivacyRequestSerializer(privacy_request).data,
        status=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK,
    )


class CustomerPrivacyRequests(APIView):
    @extend_schema(
        summary="File a data-subject request",
        description=(
            "Access and portability start an export at once; restriction and objection apply at once; erasure "
            "waits for compliance approval. Filing the same open request again returns it (200). " + FILING
        ),
        request=FileRequestSerializer,
        responses={
            202: PrivacyRequestSerializer,
            200: OpenApiResponse(PrivacyRequestSerializer, description="An open request of this kind already exists"),
            **problems((400, "VALIDATION_ERROR"), (403, "PERMISSION_DENIED"), (404, "CUSTOMER_NOT_FOUND")),
        },
    )
    def post(self, request, customer_id):
        payload = FileRequestSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        return _file(request, customer_id, payload.validated_data["kind"], payload.validated_data.get("notes", ""))

    @extend_schema(
        summary="List a customer's data-subject requests",
        description=OWN_OR_ADMIN.format(scope=SCOPE_READ),
        responses={
            200: PrivacyRequestSerializer(many=True),
            **problems((403, "PERMISSION_DENIED"), (404, "CUSTOMER_NOT_FOUND")),
        },
    )
    def get(self, request, customer_id):
        requests = services.privacy_requests_of(actor=request.auth, customer_id=customer_id)
        return Response(PrivacyRequestSerializer(requests, many=True).data)


class PrivacyRequestDetail(APIView):
    @extend_schema(
        summary="Get a data-subject request",
        description=OWN_OR_ADMIN.format(scope=SCOPE_READ),
        responses={
            200: PrivacyRequestSerializer,
            **problems((403, "PERMISSION_DENIED"), (404, "PRIVACY_REQUEST_NOT_FOUND")),
        },
    )
    def get(self, request, request_id):
        privacy_request = services.privacy_request_get(actor=request.auth, request_id=request_id)
        return Response(PrivacyRequestSerializer(privacy_request).data)


class CustomerData(APIView):
    required_scopes: dict = {}

    @extend_schema(
        summary="Download the customer's latest data export",
        description=(
            "200 with the export document when the latest export is complete; 202 with the request while it runs. "
            + OWN_OR_ADMIN.format(scope=SCOPE_READ)
        ),
        responses={
            200: OpenApiResponse(description="The export document (see privacy/schemas/export.v1.json)"),
            202: PrivacyRequestSerializer,
            **problems((403, "PERMISSION_DENIED"), (404, "CUSTOMER_NOT_FOUND, EXPORT_NOT_FOUND")),
        },
    )
    def get(self, request, customer_id):
        privacy_request, document = services.privacy_latest_export(actor=request.auth, customer_id=customer_id)
        if document is not None:
            services.privacy_export_downloaded(actor=request.auth, request=privacy_request)
            return JsonResponse(document, json_dumps_params={"ensure_ascii": False})
        if privacy_request is not None and privacy_request.is_open:
            return Response(PrivacyRequestSerializer(privacy_request).data, status=status.HTTP_202_ACCEPTED)
        raise services.ExportNotFound()

    @extend_schema(
        summary="Ask for erasure of the customer's data",
        description="Files an erasure request (same as POST /customers/{id}/erasure). "
        + OWN_OR_ADMIN.format(scope=SCOPE_WRITE),
        request=None,
        responses={
            202: PrivacyRequestSerializer,
            200: PrivacyRequestSerializer,
            **problems((403, "PERMISSION_DENIED"), (404, "CUSTOMER_NOT_FOUND")),
        },
    )
    def delete(self, request, customer_id):
        return _file(request, customer_id, RequestKind.ERASURE)


@extend_schema(
    summary="Ask for erasure of the customer's data",
    description="Files an erasure request; compliance approves it. " + OWN_OR_ADMIN.format(scope=SCOPE_WRITE),
    request=None,
    responses={
        202: PrivacyRequestSerializer,
        200: PrivacyRequestSerializer,
        **problems((403, "PERMISSION_DENIED"), (404, "CUSTOMER_NOT_FOUND")),
    },
)
@api_view(["POST"])
def customer_erasure(request, customer_id):
    return _file(request, customer_id, RequestKind.ERASURE)


class LiftRestrictionSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=2000)


class RestrictionSerializer(serializers.Serializer):
    customer_id = serializers.UUIDField(source="id")
    processing_restricted = serializers.BooleanField()


@extend_schema(
    summary="Lift the customer's processing restriction (Art. 18(3))",
    description="Recorded in the customer's history and on their restriction request. "
    + OWN_OR_ADMIN.format(scope=SCOPE_WRITE),
    request=LiftRestrictionSerializer,
    responses={
        200: RestrictionSerializer,
        **problems(
            (400, "VALIDATION_ERROR"),
            (403, "PERMISSION_DENIED"),
            (404, "CUSTOMER_NOT_FOUND"),
            (409, "NOT_RESTRICTED"),
        ),
    },
)
@api_view(["POST"])
def customer_lift_restriction(request, customer_id):
    payload = LiftRestrictionSerializer(data=request.data)
    payload.is_valid(raise_exception=True)
    customer = services.privacy_lift_restriction(
        actor=request.auth, customer_id=customer_id, reason=payload.validated_data["reason"]
    )
    return Response(RestrictionSerializer(customer).data)
