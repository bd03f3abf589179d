"""The activity API: track a storefront event, read a customer's timeline."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from customers import activity, selectors
from customers.actor import SCOPE_READ, SCOPE_WRITE
from customers.apikit import StrictSerializer, problems, scope_note
from customers.models import CustomerActivity

CUSTOMER_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The customer's id")


class ActivitySerializer(serializers.ModelSerializer):
    class Meta:
        model = CustomerActivity
        fields = ["id", "type", "occurred_at", "source", "summary", "data", "event_id", "created_at"]
        read_only_fields = fields


class ActivityInputSerializer(StrictSerializer):
    type = serializers.ChoiceField(choices=activity.TRACKABLE_TYPES)
    occurred_at = serializers.DateTimeField(required=False, help_text="When it happened; default: now")
    summary = serializers.CharField(max_length=300, required=False, allow_blank=True)
    data = serializers.DictField(required=False, help_text=f"At most {activity.MAX_DATA_BYTES} bytes of JSON")
    source = serializers.CharField(max_length=100, required=False, help_text="Default: storefront")
    event_id = serializers.UUIDField(
        required=False, help_text="Chosen by the client: a retry with the same id returns the first entry (200)"
    )


class TimelineQuerySerializer(serializers.Serializer):
    type = serializers.ListField(
        child=serializers.CharField(max_length=50),
        required=False,
        help_text="Only these types; repeat the parameter or separate with commas",
    )
    occurred_after = serializers.DateTimeField(required=False, help_text="Inclusive")
    occurred_before = serializers.DateTimeField(required=False, help_text="Exclusive")
    cursor = serializers.CharField(required=False, help_text="From `next` or `previous` of a page")
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=100, default=50)


class TimelinePageSerializer(serializers.Serializer):
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = ActivitySerializer(many=True)


class CustomerActivitiesView(APIView):
    @extend_schema(
        operation_id="customers_activities_create",
        summary="Track a customer activity",
        description=scope_note(SCOPE_WRITE)
        + f" Storefront events: {', '.join(f'`{t}`' for t in activity.TRACKABLE_TYPES)}.",
        parameters=[CUSTOMER_ID],
        request=ActivityInputSerializer,
        responses={
            201: ActivitySerializer,
            200: OpenApiResponse(ActivitySerializer, description="Already tracked with this `event_id`"),
            **problems(
                (400, "VALIDATION_ERROR"),
                (403, "PERMISSION_DENIED"),
                (404, "CUSTOMER_NOT_FOUND"),
                (409, "CUSTOMER_ERASED, ACTIVITY_ID_CONFLICT"),
            ),
        },
        tags=["customers"],
    )
    def post(self, request, id):
        customer = selectors.customer_get(actor=request.auth, customer_id=id)
        payload = ActivityInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        values = dict(payload.validated_data)
        entry, created = activity.activity_track(
            actor=request.auth, customer_id=customer.pk, activity_type=values.pop("type"), **values
        )
        return Response(
            ActivitySerializer(entry).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class CustomerTimelineView(APIView):
    @extend_schema(
        operation_id="customers_timeline_list",
        summary="A customer's activity timeline",
        description=scope_note(SCOPE_READ)
        + " Newest first; cursor pagination that stays stable while new activity arrives.",
        parameters=[CUSTOMER_ID, TimelineQuerySerializer],
        responses={
            200: TimelinePageSerializer,
            **problems((400, "VALIDATION_ERROR"), (403, "PERMISSION_DENIED"), (404, "CUSTOMER_NOT_FOUND")),
        },
        tags=["customers"],
    )
    def get(self, request, id):
        customer = selectors.customer_get(actor=request.auth, customer_id=id)
        query = TimelineQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        types = [part.strip() for value in params.get("type", []) for part in value.split(",") if part.strip()]
        cursor = activity.Cursor.decode(params["cursor"]) if params.get("cursor") else None
        page = activity.customer_timeline(
            customer_id=customer.pk,
            types=types,
            occurred_after=params.get("occurred_after"),
            occurred_before=params.get("occurred_before"),
            cursor=cursor,
            page_size=params["page_size"],
        )
        url = request.build_absolute_uri()

        def link(position):
            return replace_query_param(url, "cursor", position.encode()) if position else None

        return Response(
            {
                "next": link(page.next),
                "previous": link(page.previous) if page.previous else None,
                "results": ActivitySerializer(page.results, many=True).data,
            }
        )
