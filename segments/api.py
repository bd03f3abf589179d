"""The segments API: definitions, calculations, members, overlap, a customer's segments and tier.

Thin: input serializer → service/selector → output serializer. Managing segments needs
`customers:admin`; reading definitions and memberships `customers:read`. Tokens limited to one
customer reach only that customer's own segments and tier.
"""

from __future__ import annotations

import django_filters
from django.db.models import Q
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.filters import OrderingFilter
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from customers.actor import SCOPE_ADMIN, SCOPE_READ
from customers.apikit import CreatedCursorPagination, StrictSerializer, problems, scope_note
from customers.errors import ValidationFailed
from customers.selectors import customer_get
from segments import selectors, services
from segments.errors import SegmentNotDynamic, SegmentNotFound
from segments.models import (
    CalculationStatus,
    CalculationTrigger,
    MembershipSource,
    Segment,
    SegmentCalculation,
    SegmentKind,
    SegmentMembership,
    SegmentStatus,
    Tier,
)
from segments.rules import describe_fields

RULES_HELP = (
    'A rule tree: {"all": [...]}, {"any": [...]}, {"not": {...}} or a condition '
    '{"field": ..., "op": ..., "value": ..., "weight": ...}. Fields: profile (age, gender, customer_type, status, '
    "tags, registration_source, registered_at, language, country, city), metrics (order_count, total_spent, "
    "average_order_value, last_order_at, loyalty_points, satisfaction_score, last_activity_at, "
    "orders_last_<days>_days), consent (purposes granted), segments (membership by code), "
    "custom_attributes.<key>. Operators: eq, neq, gt, gte, lt, lte, between, in, not_in, contains, not_contains, "
    "starts_with, exists, missing, within_last_days, more_than_days_ago. Negative operators and `not` include "
    "customers without a value. See GET /segments/fields."
)


def _enum(name: str, choices):
    """A ChoiceField whose enum is its own named component: other apps use these field names
    (status, kind, source) for other choice sets, so the automatic enum names would collide."""
    values = [value for value, _ in choices]
    description = "\n".join(f"* `{value}` - {label}" for value, label in choices)
    schema = {"type": "string", "enum": values, "description": description}
    field_class = type(name, (serializers.ChoiceField,), {})
    return extend_schema_field(schema, component_name=name.removesuffix("Field"))(field_class)


SegmentKindField = _enum("SegmentKindField", SegmentKind.choices)
SegmentStatusField = _enum("SegmentStatusField", SegmentStatus.choices)

SettableStatusField = _enum(
    "SettableStatusField", [(SegmentStatus.ACTIVE, "active"), (SegmentStatus.INACTIVE, "inactive")]
)
CalculationStatusField = _enum("SegmentCalculationStatusField", CalculationStatus.choices)
CalculationTriggerField = _enum("SegmentCalculationTriggerField", CalculationTrigger.choices)
MembershipSourceField = _enum("SegmentMembershipSourceField", MembershipSource.choices)
TierField = _enum("TierNameField", Tier.choices)
NextTierField = TierField

# ---------------------------------------------------------------- representation


class SegmentSerializer(serializers.ModelSerializer):
    kind = SegmentKindField(choices=SegmentKind.choices, read_only=True)
    status = SegmentStatusField(choices=SegmentStatus.choices, read_only=True)
    rules = serializers.JSONField(allow_null=True, help_text=RULES_HELP)

    class Meta:
        model = Segment
        fields = [
            "id",
            "code",
            "name",
            "description",
            "kind",
            "status",
            "error",
            "rules",
            "requires_consent",
            "member_count",
            "last_calculated_at",
            "is_builtin",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


_SEGMENT_READ_ONLY = frozenset(
    {"id", "error", "member_count", "last_calculated_at", "is_builtin", "created_by", "created_at", "updated_at"}
)


class SegmentInputSerializer(StrictSerializer):
    ignored_read_only = _SEGMENT_READ_ONLY
    code = serializers.CharField(max_length=50, help_text="Lower-case letters, digits and underscores, e.g. vip_de")
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    kind = SegmentKindField(choices=SegmentKind.choices, required=False, help_text="Cannot change later")
    status = SettableStatusField(
        choices=[(SegmentStatus.ACTIVE, "active"), (SegmentStatus.INACTIVE, "inactive")], required=False
    )
    rules = serializers.JSONField(required=False, allow_null=True, help_text=RULES_HELP)
    requires_consent = serializers.CharField(
        required=False, allow_blank=True, max_length=50, help_text="Consent purpose code members must have granted"
    )


class CalculationSerializer(serializers.ModelSerializer):
    job_id = serializers.UUIDField(source="id", read_only=True)
    segment_id = serializers.UUIDField(read_only=True)
    status = CalculationStatusField(choices=CalculationStatus.choices, read_only=True)
    trigger = CalculationTriggerField(choices=CalculationTrigger.choices, read_only=True)

    class Meta:
        model = SegmentCalculation
        fields = [
            "job_id",
            "segment_id",
            "status",
            "trigger",
            "requested_by",
            "requested_at",
            "started_at",
            "finished_at",
            "joined",
            "left",
            "rescored",
            "member_count",
            "error",
        ]
        read_only_fields = fields


class SegmentMemberSerializer(serializers.ModelSerializer):
    customer_id = serializers.UUIDField(read_only=True)
    customer_number = serializers.CharField(source="customer.customer_number", read_only=True)
    first_name = serializers.CharField(source="customer.first_name", read_only=True)
    last_name = serializers.CharField(source="customer.last_name", read_only=True)
    email = serializers.CharField(source="customer.email", read_only=True)
    score = serializers.DecimalField(max_digits=12, decimal_places=2, coerce_to_string=False, read_only=True)
    source = MembershipSourceField(choices=MembershipSource.choices, read_only=True)

    class Meta:
        model = SegmentMembership
        fields = ["customer_id", "customer_number", "first_name", "last_name", "email", "joined_at", "score", "source"]
        read_only_fields = fields


class PreviewInputSerializer(StrictSerializer):
    rules = serializers.JSONField(help_text=RULES_HELP)
    requires_consent = serializers.CharField(required=False, allow_blank=True, max_length=50)
    sample_size = serializers.IntegerField(required=False, min_value=0, max_value=50, default=10)


class PreviewSampleSerializer(serializers.Serializer):
    customer_id = serializers.UUIDField(source="id")
    customer_number = serializers.CharField()
    first_name = serializers.CharField()
    last_name = serializers.CharField()
    score = serializers.DecimalField(max_digits=12, decimal_places=2, coerce_to_string=False, source="segment_score")


class PreviewSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="Customers the rules select now")
    sample = PreviewSampleSerializer(many=True, help_text="A few of them, highest score first")


class OverlapSegmentSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    code = serializers.CharField()
    name = serializers.CharField()
    members = serializers.IntegerField(help_text="Current members")


class OverlapPairSerializer(serializers.Serializer):
    segment_a = serializers.UUIDField()
    segment_b = serializers.UUIDField()
    both = serializers.IntegerField(help_text="Customers currently in both")


class OverlapSerializer(serializers.Serializer):
    segments = OverlapSegmentSerializer(many=True)
    pairs = OverlapPairSerializer(many=True)


class BulkMembersInputSerializer(StrictSerializer):
    add = serializers.ListField(child=serializers.UUIDField(), required=False, max_length=services.MAX_BULK_MEMBERS)
    remove = serializers.ListField(child=serializers.UUIDField(), required=False, max_length=services.MAX_BULK_MEMBERS)

    def validate(self, attrs):
        if not attrs.get("add") and not attrs.get("remove"):
            raise serializers.ValidationError({"add": ["Give customer ids to add or to remove."]})
        return attrs


class BulkMembersResultSerializer(serializers.Serializer):
    added = serializers.ListField(child=serializers.UUIDField())
    removed = serializers.ListField(child=serializers.UUIDField())
    already_members = serializers.ListField(child=serializers.UUIDField())
    not_members = serializers.ListField(child=serializers.UUIDField())
    not_found = serializers.ListField(child=serializers.CharField(), help_text="Unknown or erased customers")
    not_consenting = serializers.ListField(
        child=serializers.UUIDField(), help_text="Not added: they lack the consent the segment requires"
    )
    member_count = serializers.IntegerField()


class CustomerSegmentSerializer(serializers.ModelSerializer):
    segment_id = serializers.UUIDField(read_only=True)
    code = serializers.CharField(source="segment.code", read_only=True)
    name = serializers.CharField(source="segment.name", read_only=True)
    kind = SegmentKindField(source="segment.kind", choices=SegmentKind.choices, read_only=True)
    score = serializers.DecimalField(max_digits=12, decimal_places=2, coerce_to_string=False, read_only=True)
    source = MembershipSourceField(choices=MembershipSource.choices, read_only=True)

    class Meta:
        model = SegmentMembership
        fields = ["segment_id", "code", "name", "kind", "joined_at", "score", "source"]
        read_only_fields = fields


class CustomerSegmentAssignSerializer(StrictSerializer):
    segment_id = serializers.UUIDField(required=False, help_text="The static segment (or give its code)")
    code = serializers.CharField(required=False, max_length=50, help_text="The static segment's code")

    def validate(self, attrs):
        if bool(attrs.get("segment_id")) == bool(attrs.get("code")):
            raise serializers.ValidationError({"segment_id": ["Give either segment_id or code."]})
        return attrs


class TierSerializer(serializers.Serializer):
    """The customer's tier and how far they are from the next one."""

    tier = TierField(choices=Tier.choices)
    reached_at = serializers.DateTimeField(allow_null=True, help_text="When they reached it (null: not evaluated yet)")
    qualifications = serializers.DictField(
        child=serializers.DictField(child=serializers.BooleanField()),
        help_text="Per tier above regular: which of its thresholds hold now",
    )
    next_tier = NextTierField(choices=Tier.choices, allow_null=True)
    progress = serializers.IntegerField(help_text="Percent of the next tier's thresholds met (mean, each capped)")
    remaining = serializers.DecimalField(
        max_digits=14, decimal_places=2, help_text="Amount still to spend for the next tier's spending threshold"
    )
    remaining_by_criterion = serializers.DictField(child=serializers.CharField(), help_text="Per threshold")


class RuleFieldSerializer(serializers.Serializer):
    field = serializers.CharField()
    group = serializers.CharField()
    type = serializers.CharField()
    operators = serializers.ListField(child=serializers.CharField())
    description = serializers.CharField()
    choices = serializers.ListField(child=serializers.CharField(), required=False)


# ---------------------------------------------------------------- filters and paging


class SegmentFilter(django_filters.FilterSet):
    kind = django_filters.ChoiceFilter(choices=SegmentKind.choices)
    status = django_filters.ChoiceFilter(choices=SegmentStatus.choices)
    is_builtin = django_filters.BooleanFilter()
    q = django_filters.CharFilter(method="filter_q", help_text="Part of the code or name")

    class Meta:
        model = Segment
        fields = ["kind", "status", "is_builtin"]

    def filter_q(self, queryset, name, value):
        return queryset.filter(Q(code__icontains=value) | Q(name__icontains=value))


class MembershipCursorPagination(CursorPagination):
    """Most recently joined first; stable while members join."""

    ordering = "-id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class NotCustomerLimited(permissions.BasePermission):
    """Segment definitions and member lists span customers: not for a token limited to one."""

    message = "A token limited to one customer cannot use segment endpoints."

    def has_permission(self, request, view) -> bool:
        actor = request.auth
        return getattr(actor, "customer_id", None) is None


# ---------------------------------------------------------------- views

SEGMENT_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The segment")
CUSTOMER_ID = OpenApiParameter("customer_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The customer")
FORBIDDEN = (403, "PERMISSION_DENIED")
SEGMENT_404 = (404, "SEGMENT_NOT_FOUND")
DEFINITION_ERRORS = (
    (400, "VALIDATION_ERROR, INVALID_SEGMENT_RULES"),
    FORBIDDEN,
    SEGMENT_404,
    (409, "SEGMENT_ALREADY_EXISTS, SEGMENT_CALCULATING, SEGMENT_BUILTIN, SEGMENT_IN_USE"),
)


@extend_schema_view(
    list=extend_schema(
        summary="List segments",
        description=scope_note(SCOPE_READ),
        responses={200: SegmentSerializer(many=True), **problems((400, "VALIDATION_ERROR"), FORBIDDEN)},
    ),
    create=extend_schema(
        summary="Define a segment",
        description=f"Requires scope `{SCOPE_ADMIN}`. A dynamic segment is calculated at once (status "
        "`calculating`); its rules are validated first, errors name the path of the bad node.",
        request=SegmentInputSerializer,
        responses={201: SegmentSerializer, **problems(*DEFINITION_ERRORS)},
    ),
    retrieve=extend_schema(
        summary="Get a segment",
        parameters=[SEGMENT_ID],
        description=scope_note(SCOPE_READ),
        responses={200: SegmentSerializer, **problems(FORBIDDEN, SEGMENT_404)},
    ),
    update=extend_schema(
        summary="Replace a segment's definition",
        parameters=[SEGMENT_ID],
        description=f"Requires scope `{SCOPE_ADMIN}`. Changed rules or consent requirement queue a recalculation.",
        request=SegmentInputSerializer,
        responses={200: SegmentSerializer, **problems(*DEFINITION_ERRORS)},
    ),
    partial_update=extend_schema(
        summary="Change some of a segment's definition",
        parameters=[SEGMENT_ID],
        description=f"Requires scope `{SCOPE_ADMIN}`. Changed rules or consent requirement queue a recalculation.",
        request=SegmentInputSerializer,
        responses={200: SegmentSerializer, **problems(*DEFINITION_ERRORS)},
    ),
    destroy=extend_schema(
        summary="Delete a segment",
        parameters=[SEGMENT_ID],
        description=f"Requires scope `{SCOPE_ADMIN}`. Current members get `customer.segment.removed.v1`. "
        "Built-in segments and segments other segments' rules refer to cannot be deleted.",
        responses={204: None, **problems(FORBIDDEN, SEGMENT_404, (409, "SEGMENT_BUILTIN, SEGMENT_IN_USE"))},
    ),
)
class SegmentViewSet(
    mixins.ListModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = SegmentSerializer
    permission_classes = [NotCustomerLimited, *APIView.permission_classes]
    pagination_class = CreatedCursorPagination
    filterset_class = SegmentFilter
    filter_backends = [django_filters.rest_framework.DjangoFilterBackend, OrderingFilter]
    ordering_fields = ["created_at", "name", "code", "member_count", "last_calculated_at"]
    ordering = ["-created_at"]
    lookup_value_regex = "[0-9a-fA-F-]{36}"
    required_scopes = {
        "create": SCOPE_ADMIN,
        "update": SCOPE_ADMIN,
        "partial_update": SCOPE_ADMIN,
        "destroy": SCOPE_ADMIN,
        "calculate": SCOPE_ADMIN,
        "preview": SCOPE_ADMIN,
        "preview_rules": SCOPE_ADMIN,
        "members_bulk": SCOPE_ADMIN,
    }

    def get_queryset(self):
        return selectors.segments()

    def _segment(self) -> Segment:
        return selectors.segment_get(self.kwargs["pk"])

    def retrieve(self, request, pk=None):
        return Response(SegmentSerializer(self._segment()).data)

    def create(self, request):
        payload = SegmentInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        segment = services.segment_create(actor=request.auth, **payload.validated_data)
        response = Response(SegmentSerializer(segment).data, status=status.HTTP_201_CREATED)
        response["Location"] = f"/api/v1/segments/{segment.pk}"
        return response

    def _update(self, request, *, partial: bool) -> Response:
        segment = self._segment()
        payload = SegmentInputSerializer(data=request.data, partial=partial)
        payload.is_valid(raise_exception=True)
        changes = dict(payload.validated_data)
        if not partial:
            changes.setdefault("description", "")
            changes.setdefault("requires_consent", "")
            changes.setdefault("status", segment.status if segment.status == SegmentStatus.INACTIVE else "active")
            changes.setdefault("rules", None)
        if changes.get("status") == SegmentStatus.ACTIVE and segment.status in (
            SegmentStatus.CALCULATING,
            SegmentStatus.ERROR,
        ):
            changes.pop("status")  # active is what a calculating or failed segment returns to by itself
        segment = services.segment_update(actor=request.auth, segment_id=segment.pk, changes=changes)
        return Response(SegmentSerializer(segment).data)

    def update(self, request, pk=None):
        return self._update(request, partial=False)

    def partial_update(self, request, pk=None):
        return self._update(request, partial=True)

    def destroy(self, request, pk=None):
        services.segment_delete(actor=request.auth, segment_id=self._segment().pk)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Recalculate a dynamic segment",
        parameters=[SEGMENT_ID],
        description=f"Requires scope `{SCOPE_ADMIN}`. Queues a full recalculation and answers 202 with its job; "
        "while one is queued or running, that job is returned instead of starting another. Poll "
        "GET /segments/{id}/calculations/{job_id}.",
        request=None,
        responses={
            202: CalculationSerializer,
            **problems(FORBIDDEN, SEGMENT_404, (409, "SEGMENT_NOT_DYNAMIC, SEGMENT_INACTIVE")),
        },
    )
    @action(detail=True, methods=["post"], url_path="calculate")
    def calculate(self, request, pk=None):
        job = services.segment_request_calculation(actor=request.auth, segment_id=self._segment().pk)
        job.refresh_from_db()
        response = Response(CalculationSerializer(job).data, status=status.HTTP_202_ACCEPTED)
        response["Location"] = f"/api/v1/segments/{job.segment_id}/calculations/{job.pk}"
        return response

    @extend_schema(
        summary="Get a calculation job",
        parameters=[
            SEGMENT_ID,
            OpenApiParameter("job_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The job"),
        ],
        description=scope_note(SCOPE_READ),
        responses={200: CalculationSerializer, **problems(FORBIDDEN, SEGMENT_404)},
    )
    @action(detail=True, methods=["get"], url_path=r"calculations/(?P<job_id>[0-9a-fA-F-]{36})")
    def calculation(self, request, pk=None, job_id=None):
        job = selectors.calculation_get(job_id)
        if str(job.segment_id) != str(self._segment().pk):
            raise SegmentNotFound(job_id)
        return Response(CalculationSerializer(job).data)

    @extend_schema(
        summary="List a segment's current members",
        parameters=[SEGMENT_ID],
        description=scope_note(SCOPE_READ) + " Most recently joined first. Members of a segment that requires "
        "consent are listed only while they hold it.",
        responses={200: SegmentMemberSerializer(many=True), **problems(FORBIDDEN, SEGMENT_404)},
    )
    @action(
        detail=True,
        methods=["get"],
        url_path="customers",
        pagination_class=MembershipCursorPagination,
        filter_backends=[],
    )
    def customers(self, request, pk=None):
        members = selectors.segment_members(self._segment(), consenting_only=True)
        page = self.paginate_queryset(members)
        return self.get_paginated_response(SegmentMemberSerializer(page, many=True).data)

    @extend_schema(
        summary="Preview a segment's saved rules",
        parameters=[
            SEGMENT_ID,
            OpenApiParameter("sample_size", OpenApiTypes.INT, description="How many customers to show (0-50)"),
        ],
        description=f"Requires scope `{SCOPE_ADMIN}`. Evaluates the rules now (not the stored membership).",
        responses={
            200: PreviewSerializer,
            **problems((400, "INVALID_SEGMENT_RULES"), FORBIDDEN, SEGMENT_404, (409, "SEGMENT_NOT_DYNAMIC")),
        },
    )
    @action(detail=True, methods=["get"], url_path="preview")
    def preview(self, request, pk=None):
        segment = self._segment()
        if not segment.is_dynamic:
            raise SegmentNotDynamic(segment.code)
        sample_size = _sample_size(request.query_params.get("sample_size"))
        result = selectors.preview(segment.rules, requires_consent=segment.requires_consent, sample_size=sample_size)
        return Response(PreviewSerializer(result).data)

    @extend_schema(
        summary="Preview unsaved rules",
        description=f"Requires scope `{SCOPE_ADMIN}`. Validates the rules and counts the customers they select "
        "now, with a sample. Nothing is saved.",
        request=PreviewInputSerializer,
        responses={200: PreviewSerializer, **problems((400, "VALIDATION_ERROR, INVALID_SEGMENT_RULES"), FORBIDDEN)},
    )
    @action(detail=False, methods=["post"], url_path="preview")
    def preview_rules(self, request):
        payload = PreviewInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        services.segment_validate_rules(data["rules"], requires_consent=data.get("requires_consent", ""))
        result = selectors.preview(
            data["rules"], requires_consent=data.get("requires_consent", ""), sample_size=data["sample_size"]
        )
        return Response(PreviewSerializer(result).data)

    @extend_schema(
        summary="Overlap between segments",
        parameters=[
            OpenApiParameter("ids", OpenApiTypes.STR, required=True, description="2 to 10 segment ids, comma-separated")
        ],
        description=scope_note(SCOPE_READ) + " Current members of each segment and of each pair.",
        responses={200: OverlapSerializer, **problems((400, "VALIDATION_ERROR"), FORBIDDEN, SEGMENT_404)},
    )
    @action(detail=False, methods=["get"], url_path="overlap")
    def overlap(self, request):
        raw = [item.strip() for item in request.query_params.get("ids", "").split(",") if item.strip()]
        if not 2 <= len(set(raw)) <= selectors.MAX_OVERLAP_SEGMENTS:
            raise ValidationFailed(
                "Give 2 to 10 segment ids.", errors={"ids": ["Give 2 to 10 comma-separated segment ids."]}
            )
        chosen = [selectors.segment_get(item) for item in dict.fromkeys(raw)]
        counts = selectors.segments_overlap([segment.pk for segment in chosen])
        body = {
            "segments": [
                {"id": s.pk, "code": s.code, "name": s.name, "members": counts["sizes"][s.pk]} for s in chosen
            ],
            "pairs": [{"segment_a": a, "segment_b": b, "both": n} for (a, b), n in counts["pairs"].items()],
        }
        return Response(OverlapSerializer(body).data)

    @extend_schema(
        summary="Add or remove members of a static segment",
        parameters=[SEGMENT_ID],
        description=f"Requires scope `{SCOPE_ADMIN}`. Up to {services.MAX_BULK_MEMBERS} ids each way. Unknown "
        "customers, and customers lacking the consent the segment requires, are reported and skipped.",
        request=BulkMembersInputSerializer,
        responses={
            200: BulkMembersResultSerializer,
            **problems(
                (400, "VALIDATION_ERROR"),
                FORBIDDEN,
                SEGMENT_404,
                (409, "SEGMENT_NOT_STATIC"),
                (500, "SEGMENT_UPDATE_FAILED"),
            ),
        },
    )
    @action(detail=True, methods=["post"], url_path="members/bulk")
    def members_bulk(self, request, pk=None):
        segment = self._segment()
        payload = BulkMembersInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        added = removed = None
        if payload.validated_data.get("add"):
            added = services.segment_members_add(
                actor=request.auth, segment_id=segment.pk, customer_ids=payload.validated_data["add"]
            )
        if payload.validated_data.get("remove"):
            removed = services.segment_members_remove(
                actor=request.auth, segment_id=segment.pk, customer_ids=payload.validated_data["remove"]
            )
        segment.refresh_from_db()
        body = {
            "added": added.changed if added else [],
            "already_members": added.unchanged if added else [],
            "not_consenting": added.not_consenting if added else [],
            "removed": removed.changed if removed else [],
            "not_members": removed.unchanged if removed else [],
            "not_found": [str(item) for item in (added.not_found if added else [])],
            "member_count": segment.member_count,
        }
        return Response(BulkMembersResultSerializer(body).data)

    @extend_schema(
        summary="The fields and operators rules can use",
        description=scope_note(SCOPE_READ),
        responses={200: RuleFieldSerializer(many=True), **problems(FORBIDDEN)},
    )
    @action(detail=False, methods=["get"], url_path="fields", pagination_class=None, filter_backends=[])
    def fields(self, request):
        return Response(RuleFieldSerializer(describe_fields(), many=True).data)


def _sample_size(raw) -> int:
    if raw in (None, ""):
        return 10
    if not str(raw).isdigit() or not 0 <= int(raw) <= 50:
        raise ValidationFailed("sample_size is 0 to 50.", errors={"sample_size": ["A whole number from 0 to 50."]})
    return int(raw)


@extend_schema(parameters=[CUSTOMER_ID])
@extend_schema_view(
    list=extend_schema(
        summary="A customer's current segments",
        description=scope_note(SCOPE_READ) + " With each membership's score and source.",
        responses={200: CustomerSegmentSerializer(many=True), **problems(FORBIDDEN, (404, "CUSTOMER_NOT_FOUND"))},
    ),
    create=extend_schema(
        summary="Put a customer in a static segment",
        description=f"Requires scope `{SCOPE_ADMIN}`. 201 when they joined, 200 when already a member.",
        request=CustomerSegmentAssignSerializer,
        responses={
            200: CustomerSegmentSerializer,
            201: CustomerSegmentSerializer,
            **problems(
                (400, "VALIDATION_ERROR"),
                FORBIDDEN,
                (404, "CUSTOMER_NOT_FOUND, SEGMENT_NOT_FOUND"),
                (409, "SEGMENT_NOT_STATIC, CONSENT_REQUIRED"),
                (500, "SEGMENT_UPDATE_FAILED"),
            ),
        },
    ),
    destroy=extend_schema(
        summary="Take a customer out of a static segment",
        description=f"Requires scope `{SCOPE_ADMIN}`. The membership is closed and kept as history.",
        parameters=[
            OpenApiParameter("segment_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The segment")
        ],
        responses={
            204: None,
            **problems(
                FORBIDDEN,
                (404, "CUSTOMER_NOT_FOUND, SEGMENT_NOT_FOUND, SEGMENT_MEMBERSHIP_NOT_FOUND"),
                (409, "SEGMENT_NOT_STATIC"),
            ),
        },
    ),
)
class CustomerSegmentViewSet(viewsets.GenericViewSet):
    serializer_class = CustomerSegmentSerializer
    pagination_class = None
    filter_backends: list = []
    lookup_url_kwarg = "segment_id"
    lookup_value_regex = "[0-9a-fA-F-]{36}"
    required_scopes = {"create": SCOPE_ADMIN, "destroy": SCOPE_ADMIN}

    def get_queryset(self):
        return SegmentMembership.objects.none()

    def _customer_id(self):
        """BOLA: a token limited to another customer gets CUSTOMER_NOT_FOUND, as if B did not exist."""
        return customer_get(actor=self.request.auth, customer_id=self.kwargs["customer_id"]).pk

    def list(self, request, customer_id=None):
        memberships = selectors.customer_memberships(self._customer_id())
        return Response(CustomerSegmentSerializer(memberships, many=True).data)

    def create(self, request, customer_id=None):
        customer_pk = self._customer_id()
        payload = CustomerSegmentAssignSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        segment = (
            selectors.segment_get(data["segment_id"])
            if data.get("segment_id")
            else selectors.segment_get_by_code(data["code"])
        )
        membership, created = services.customer_segment_assign(
            actor=request.auth, customer_id=customer_pk, segment_id=segment.pk
        )
        return Response(
            CustomerSegmentSerializer(membership).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    def destroy(self, request, customer_id=None, segment_id=None):
        customer_pk = self._customer_id()
        segment = selectors.segment_get(segment_id)
        services.customer_segment_remove(actor=request.auth, customer_id=customer_pk, segment_id=segment.pk)
        return Response(status=status.HTTP_204_NO_CONTENT)


class CustomerTierView(APIView):
    @extend_schema(
        summary="A customer's tier",
        parameters=[CUSTOMER_ID],
        description=scope_note(SCOPE_READ) + " The tier, when it was reached, which thresholds hold and the "
        "progress to the next tier.",
        responses={200: TierSerializer, **problems(FORBIDDEN, (404, "CUSTOMER_NOT_FOUND"))},
    )
    def get(self, request, customer_id=None):
        customer = customer_get(actor=request.auth, customer_id=customer_id)
        return Response(TierSerializer(selectors.customer_tiers([customer.pk])[customer.pk]).data)
