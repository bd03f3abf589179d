"""The customers API: thin serializers and views over `services` and `selectors`."""

from __future__ import annotations

import functools
import math
from uuid import UUID

import django_filters
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.filters import OrderingFilter
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from customers import cache, ratelimit, selectors, services
from customers.actor import SCOPE_ADMIN, SCOPE_READ, SCOPE_WRITE
from customers.apikit import (
    CreatedCursorPagination,
    StrictSerializer,
    problems,
    representation_writer,
    scope_note,
)
from customers.errors import CustomerNotFound, Forbidden
from customers.extensions import (
    apply_preference_views,
    load_representation_fields,
    representation_fields,
)
from customers.models import Customer, CustomerPreferences, CustomerStatus, CustomerType, RegistrationSource
from customers.precompiled import PrecompiledQuery, as_uuids

# ---------------------------------------------------------------- representation


class CommunicationSerializer(serializers.Serializer):
    email = serializers.BooleanField(source="email_opt_in", required=False)
    sms = serializers.BooleanField(source="sms_opt_in", required=False)
    push = serializers.BooleanField(source="push_opt_in", required=False)
    direct_mail = serializers.BooleanField(source="direct_mail_opt_in", required=False)


class NotificationsSerializer(serializers.Serializer):
    order_updates = serializers.BooleanField(source="notify_order_updates", required=False)
    promotions = serializers.BooleanField(source="notify_promotions", required=False)
    newsletters = serializers.BooleanField(source="notify_newsletters", required=False)
    system_alerts = serializers.BooleanField(source="notify_system_alerts", required=False)


class PrivacySettingsSerializer(serializers.Serializer):
    data_sharing = serializers.BooleanField(required=False)
    analytics_tracking = serializers.BooleanField(required=False)
    personalization = serializers.BooleanField(required=False)
    third_party_sharing = serializers.BooleanField(required=False)


class StrictCommunication(StrictSerializer, CommunicationSerializer):
    pass


class StrictNotifications(StrictSerializer, NotificationsSerializer):
    pass


class StrictPrivacySettings(StrictSerializer, PrivacySettingsSerializer):
    pass


class PreferencesSerializer(serializers.Serializer):
    language = serializers.CharField(help_text="BCP 47 tag, e.g. en-US")
    currency = serializers.CharField(help_text="ISO 4217 code, e.g. EUR")
    timezone = serializers.CharField(help_text="IANA time zone, e.g. Europe/Berlin")
    communication = CommunicationSerializer(source="*", help_text="Marketing opt-ins per channel")
    notifications = NotificationsSerializer(source="*")
    privacy = PrivacySettingsSerializer(source="*")
    theme = serializers.ChoiceField(choices=CustomerPreferences._meta.get_field("theme").choices)
    custom = serializers.JSONField()
    updated_at = serializers.DateTimeField(read_only=True)


class PreferencesInputSerializer(StrictSerializer):
    ignored_read_only = frozenset({"updated_at"})
    language = serializers.CharField(required=False, max_length=35)
    currency = serializers.CharField(required=False, max_length=3)
    timezone = serializers.CharField(required=False, max_length=64)
    communication = StrictCommunication(source="*", required=False)
    notifications = StrictNotifications(source="*", required=False)
    privacy = StrictPrivacySettings(source="*", required=False)
    theme = serializers.ChoiceField(choices=CustomerPreferences._meta.get_field("theme").choices, required=False)
    custom = serializers.DictField(required=False)


class MetricsSerializer(serializers.Serializer):
    order_count = serializers.IntegerField(help_text="Open and completed orders")
    open_order_count = serializers.IntegerField(help_text="Orders placed and not completed, cancelled or refunded yet")
    total_spent = serializers.DecimalField(max_digits=14, decimal_places=2, coerce_to_string=True)
    currency = serializers.CharField(source="spent_currency")
    average_order_value = serializers.DecimalField(max_digits=14, decimal_places=2, coerce_to_string=True)
    last_order_at = serializers.DateTimeField(allow_null=True)
    loyalty_points = serializers.IntegerField()
    satisfaction_score = serializers.DecimalField(max_digits=3, decimal_places=2, allow_null=True)


class CustomerListSerializer(serializers.ListSerializer):
    def to_representation(self, data):
        return customer_representations(list(data.all() if hasattr(data, "all") else data))


def _preferences_of(customer: Customer):
    try:
        return customer.preferences
    except CustomerPreferences.DoesNotExist:
        return None


class CustomerSerializer(serializers.ModelSerializer):
    """The customer as the API shows it; other apps add fields through `customers.extensions`."""

    preferences = PreferencesSerializer(read_only=True)
    metrics = MetricsSerializer(source="*", read_only=True, help_text="Read-only: fed by order and loyalty events")

    class Meta:
        model = Customer
        fields = [
            "id",
            "customer_number",
            "email",
            "first_name",
            "last_name",
            "phone",
            "date_of_birth",
            "gender",
            "customer_type",
            "company_name",
            "registration_source",
            "external_id",
            "tags",
            "metadata",
            "custom_attributes",
            "status",
            "email_verified",
            "phone_verified",
            "registered_at",
            "last_activity_at",
            "last_login_at",
            "created_at",
            "updated_at",
            "version",
            "processing_restricted",
            "merged_into",
            "profile_completeness",
            "metrics",
            "preferences",
        ]
        read_only_fields = fields
        list_serializer_class = CustomerListSerializer

    def get_fields(self):
        fields = super().get_fields()
        for extension in representation_fields():
            fields[extension.name] = extension.make_field()
        return fields

    def to_representation(self, instance):
        return customer_representations([instance])[0]


@functools.cache
def _representation_writer():
    """The customer serializer's representation, as `representation_writer` runs it, built once per
    process: DRF builds a serializer's fields (model introspection, nested serializers) for every
    new instance, which cost more than the rest of an uncached GET. Built on first use, after every
    app registered its fields."""
    return representation_writer(CustomerSerializer())


def customer_representations(customers: list[Customer]) -> list[dict]:
    """The API's representation of each customer: the extensions' fields and the preference views
    loaded for all of them at once (one query per extension, not per customer)."""
    return _representations_with_lifetime(customers)[0]


def _representations_with_lifetime(customers: list[Customer]) -> tuple[list[dict], dict]:
    """`customer_representations`, and per customer the moment it may read differently by time alone."""
    ids = [customer.pk for customer in customers]
    extras = load_representation_fields(ids)
    fresh_until = apply_preference_views([_preferences_of(customer) for customer in customers])
    represent = _representation_writer()
    represented = []
    for customer in customers:
        for extension, values in extras:
            setattr(customer, extension.name, values.get(customer.pk, extension.default))
        represented.append(represent(customer))
    return represented, fresh_until


class CustomerInputSerializer(StrictSerializer):
    """What a client may write. Formats (email, phone, codes) are checked by the service."""

    ignored_read_only = frozenset(
        {
            "id",
            "customer_number",
            "status",
            "created_at",
            "updated_at",
            "version",
            "profile_completeness",
            "metrics",
            "last_activity_at",
            "processing_restricted",
            "merged_into",
        }
    )
    email = serializers.CharField(max_length=254)

    def to_internal_value(self, data):
        # Fields other apps add to the representation (address defaults, tier) are read-only too.
        if isinstance(data, dict):
            data = {key: value for key, value in data.items() if key not in {f.name for f in representation_fields()}}
        return super().to_internal_value(data)

    first_name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    last_name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    phone = serializers.CharField(
        max_length=32, required=False, allow_blank=True, help_text="E.164 or any form with +country code"
    )
    date_of_birth = serializers.DateField(required=False, allow_null=True)
    gender = serializers.ChoiceField(choices=Customer._meta.get_field("gender").choices, required=False)
    customer_type = serializers.ChoiceField(choices=CustomerType.choices, required=False)
    company_name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    registration_source = serializers.ChoiceField(choices=RegistrationSource.choices, required=False)
    external_id = serializers.CharField(max_length=100, required=False, allow_null=True, allow_blank=True)
    tags = serializers.ListField(child=serializers.CharField(max_length=50), required=False, max_length=50)
    metadata = serializers.DictField(required=False)
    custom_attributes = serializers.DictField(required=False)
    email_verified = serializers.BooleanField(required=False)
    phone_verified = serializers.BooleanField(required=False)
    registered_at = serializers.DateTimeField(required=False)
    last_login_at = serializers.DateTimeField(required=False, allow_null=True)
    preferences = PreferencesInputSerializer(required=False, help_text="Only on create: initial preferences")


class StatusChangeSerializer(StrictSerializer):
    status = serializers.ChoiceField(choices=CustomerStatus.choices)
    reason = serializers.CharField(max_length=1000)


# ---------------------------------------------------------------- filters


class CustomerFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=CustomerStatus.choices)
    customer_type = django_filters.ChoiceFilter(choices=CustomerType.choices)
    registration_source = django_filters.ChoiceFilter(choices=RegistrationSource.choices)
    tag = django_filters.CharFilter(method="filter_tag", help_text="Customers carrying this tag")
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
    q = django_filters.CharFilter(
        method="filter_q", help_text="Partial name, email, phone (any format) or customer number"
    )
    # Exact identifiers, for services that look a customer up (a `q` for an email also finds longer ones).
    email = django_filters.CharFilter(method="filter_email", help_text="Exactly this email, in any letter case")
    customer_number = django_filters.CharFilter(
        method="filter_customer_number", help_text="Exactly this customer number (C and 9 digits, any case)"
    )
    external_id = django_filters.CharFilter(field_name="external_id", help_text="Exactly this legacy system id")

    class Meta:
        model = Customer
        fields = ["status", "customer_type", "registration_source"]

    def filter_tag(self, queryset, name, value):
        return queryset.filter(tags__contains=[value])

    def filter_q(self, queryset, name, value):
        return selectors.customer_search(queryset, value)

    def filter_email(self, queryset, name, value):
        return selectors.with_email(queryset, value.strip())

    def filter_customer_number(self, queryset, name, value):
        return selectors.with_customer_number(queryset, value)


# ---------------------------------------------------------------- views


def _representation_bytes(customer: Customer) -> tuple[bytes, int | None]:
    """The body, and for how many seconds it holds (None: until the customer changes)."""
    (represented,), fresh_until = _representations_with_lifetime([customer])
    until = fresh_until.get(customer.pk)
    seconds = None if until is None else max(0, math.ceil((until - timezone.now()).total_seconds()))
    return JSONRenderer().render(represented), seconds


# Documented here, read by consent's RequestOriginMiddleware: a service registering a customer or
# saving their choices on their behalf names the customer's own origin for the consent records.
CUSTOMER_ORIGIN_HEADERS = [
    OpenApiParameter(
        "X-Customer-IP",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        required=False,
        description="Service tokens acting on the customer's behalf: the customer's IP address (IPv4 or IPv6), "
        "recorded with any consent this call records (sign-up choices, marketing opt-ins). Ignored for a "
        "customer's own token.",
    ),
    OpenApiParameter(
        "X-Customer-User-Agent",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        required=False,
        description="Service tokens acting on the customer's behalf: the customer's browser or app user agent.",
    ),
]


def _customer_with_preferences():
    return Customer.objects.select_related("preferences")


# GET by id reads this on every cache miss.
_customer_by_id = PrecompiledQuery(
    lambda customer_id: _customer_with_preferences().filter(pk=customer_id).order_by(), customer_id=UUID
)


def _customer_read_for_representation(customer_id: str) -> Customer:
    try:
        (customer_uuid,) = as_uuids([customer_id])
    except ValueError:
        raise CustomerNotFound(customer_id) from None
    found = _customer_by_id.instances(customer_id=customer_uuid)
    if not found:
        raise CustomerNotFound(customer_id)
    return found[0]


# A profile body can break a field's format or name an external id another customer has (a 400, unlike
# a taken email's 409). Every body's MALFORMED_REQUEST is documented by `schema.document_request_body_problems`.
_PROFILE_INVALID = "VALIDATION_ERROR, INVALID_EMAIL_FORMAT, INVALID_PHONE, EXTERNAL_ID_ALREADY_EXISTS"


@extend_schema_view(
    list=extend_schema(
        summary="List and search customers",
        description=scope_note(SCOPE_READ),
        responses={
            200: CustomerSerializer(many=True),
            **problems((400, "VALIDATION_ERROR"), (403, "PERMISSION_DENIED")),
        },
    ),
    create=extend_schema(
        summary="Register a customer",
        description=scope_note(SCOPE_WRITE) + " Customer-limited tokens cannot create customers.",
        parameters=CUSTOMER_ORIGIN_HEADERS,
        request=CustomerInputSerializer,
        responses={
            201: CustomerSerializer,
            **problems(
                (400, _PROFILE_INVALID),
                (403, "PERMISSION_DENIED"),
                (409, "EMAIL_ALREADY_EXISTS"),
            ),
        },
    ),
    retrieve=extend_schema(
        summary="Get a customer",
        description=scope_note(SCOPE_READ) + " Served from cache; a change is visible on the next read.",
        responses={200: CustomerSerializer, **problems((403, "PERMISSION_DENIED"), (404, "CUSTOMER_NOT_FOUND"))},
    ),
    update=extend_schema(
        summary="Replace a customer's profile",
        description=scope_note(SCOPE_WRITE)
        + " Profile fields the body leaves out ("
        + ", ".join(services.REPLACED_PROFILE_FIELDS)
        + ") go back to their empty defaults;"
        " external_id, registration facts, verification flags and last login change only when given.",
        request=CustomerInputSerializer,
        responses={
            200: CustomerSerializer,
            **problems(
                (400, _PROFILE_INVALID),
                (403, "PERMISSION_DENIED"),
                (404, "CUSTOMER_NOT_FOUND"),
                (409, "EMAIL_ALREADY_EXISTS, CUSTOMER_ERASED, CUSTOMER_MERGED, VERSION_CONFLICT"),
            ),
        },
    ),
    partial_update=extend_schema(
        summary="Change some of a customer's profile fields",
        description=scope_note(SCOPE_WRITE),
        request=CustomerInputSerializer,
        responses={
            200: CustomerSerializer,
            **problems(
                (400, _PROFILE_INVALID),
                (403, "PERMISSION_DENIED"),
                (404, "CUSTOMER_NOT_FOUND"),
                (409, "EMAIL_ALREADY_EXISTS, CUSTOMER_ERASED, CUSTOMER_MERGED, VERSION_CONFLICT"),
            ),
        },
    ),
    destroy=extend_schema(
        summary="Deactivate a customer",
        description=scope_note(SCOPE_WRITE) + " The customer is kept with status `inactive`.",
        responses={
            204: None,
            **problems((403, "PERMISSION_DENIED"), (404, "CUSTOMER_NOT_FOUND"), (409, "INVALID_STATUS_TRANSITION")),
        },
    ),
)
class CustomerViewSet(
    mixins.ListModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = CustomerSerializer
    pagination_class = CreatedCursorPagination
    filterset_class = CustomerFilter
    filter_backends = [django_filters.rest_framework.DjangoFilterBackend, OrderingFilter]
    ordering_fields = [
        "created_at",
        "updated_at",
        "registered_at",
        "last_name",
        "email",
        "customer_number",
        "total_spent",
        "order_count",
        "last_order_at",
    ]
    ordering = ["-created_at"]
    lookup_value_regex = "[0-9a-fA-F-]{36}"
    required_scopes = {"change_status": SCOPE_WRITE}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Customer.objects.none()
        return selectors.customers_visible_to(self.request.auth).select_related("preferences")

    def _customer(self) -> Customer:
        return selectors.customer_get(actor=self.request.auth, customer_id=self.kwargs["pk"])

    def _respond_with(self, customer_id, status_code: int = status.HTTP_200_OK) -> Response:
        customer = selectors.customer_get(
            actor=self.request.auth, customer_id=customer_id, queryset=_customer_with_preferences()
        )
        return Response(customer_representations([customer])[0], status=status_code)

    @property
    def counts_requests_itself(self) -> bool:
        """GET by id counts itself against the rate limit, in the round trip that reads the cache."""
        return self.action == "retrieve"

    def retrieve(self, request, pk=None):
        actor = request.auth
        counting = ratelimit.RequestCount(actor)
        if actor.customer_id is not None and str(actor.customer_id) != str(pk).lower():
            self._within_rate_limit(counting, ratelimit.count_alone(counting))
            selectors.customer_get(actor=actor, customer_id=pk)  # raises CUSTOMER_NOT_FOUND
        body, generation, count = cache.get_customer_representation_counted(pk, counting)
        self._within_rate_limit(counting, count)
        if body is None:
            customer = _customer_read_for_representation(pk)  # an own token asking for another was refused above
            body, holds_for = _representation_bytes(customer)
            cache.put_customer_representation(customer.pk, body, generation, ttl_seconds=holds_for)
        return HttpResponse(body, content_type="application/json")

    def _within_rate_limit(self, counting, count: int | None) -> None:
        if count is not None and not counting.verdict(count):
            self.throttled(self.request, counting.retry_after())

    def create(self, request):
        if request.auth.customer_id is not None:
            raise Forbidden("A customer's own token cannot register other customers.")
        payload = CustomerInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = dict(payload.validated_data)
        preferences = data.pop("preferences", None)
        customer = services.customer_create(actor=request.auth, preferences=preferences, **data)
        if _json_as_stored(customer):
            # The instance the service saved is what was stored (the INSERT returned the customer number):
            # shown as it is, not read back.
            response = Response(customer_representations([customer])[0], status=status.HTTP_201_CREATED)
        else:
            response = self._respond_with(customer.pk, status.HTTP_201_CREATED)
        response["Location"] = f"/api/v1/customers/{customer.pk}"
        return response

    def _update(self, request, *, partial: bool):
        customer = self._customer()
        payload = CustomerInputSerializer(data=request.data, partial=partial)
        payload.is_valid(raise_exception=True)
        changes = dict(payload.validated_data)
        if "preferences" in changes:
            raise serializers.ValidationError({"preferences": ["Change preferences at /customers/{id}/preferences."]})
        services.customer_update(
            actor=request.auth,
            customer_id=customer.pk,
            changes=changes,
            expected_version=_if_match(request),
            replace=not partial,
        )
        return self._respond_with(customer.pk)

    def update(self, request, pk=None):
        return self._update(request, partial=False)

    def partial_update(self, request, pk=None):
        return self._update(request, partial=True)

    def destroy(self, request, pk=None):
        customer = self._customer()
        services.customer_deactivate(actor=request.auth, customer_id=customer.pk, reason="Deactivated through the API")
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        methods=["GET"],
        summary="Get a customer's preferences",
        description=scope_note(SCOPE_READ),
        responses={200: PreferencesSerializer, **problems((403, "PERMISSION_DENIED"), (404, "CUSTOMER_NOT_FOUND"))},
    )
    @extend_schema(
        methods=["PUT", "PATCH"],
        summary="Change a customer's preferences",
        description=scope_note(SCOPE_WRITE),
        parameters=CUSTOMER_ORIGIN_HEADERS,
        request=PreferencesInputSerializer,
        responses={
            200: PreferencesSerializer,
            **problems(
                (400, "VALIDATION_ERROR"),
                (403, "PERMISSION_DENIED"),
                (404, "CUSTOMER_NOT_FOUND"),
                (409, "CUSTOMER_ERASED, CUSTOMER_MERGED"),
            ),
        },
    )
    @action(detail=True, methods=["get", "put", "patch"], url_path="preferences")
    def preferences(self, request, pk=None):
        customer = self._customer()
        if request.method != "GET":
            if request.method == "PUT":
                # A PUT that left a group out would silently reset it, marketing opt-ins (consent) included:
                # PUT must carry the whole document; PATCH changes parts.
                missing = sorted(set(PreferencesInputSerializer().fields) - set(request.data or {}))
                if missing:
                    raise serializers.ValidationError(
                        {name: ["Required on PUT (use PATCH to change only some preferences)."] for name in missing}
                    )
            payload = PreferencesInputSerializer(data=request.data, partial=request.method == "PATCH")
            payload.is_valid(raise_exception=True)
            services.customer_preferences_update(
                actor=request.auth, customer_id=customer.pk, changes=dict(payload.validated_data)
            )
        prefs = CustomerPreferences.objects.get(customer_id=customer.pk)
        apply_preference_views([prefs])  # the opt-ins as consent shows them
        return Response(PreferencesSerializer(prefs).data)

    @extend_schema(
        summary="Change a customer's status",
        description=(
            f"Requires scope `{SCOPE_WRITE}`; moving to or from `suspended` also needs `{SCOPE_ADMIN}`. "
            "`erased` is reached only through a privacy erasure request. The reason is recorded."
        ),
        request=StatusChangeSerializer,
        responses={
            200: CustomerSerializer,
            **problems(
                (400, "VALIDATION_ERROR"),
                (403, "PERMISSION_DENIED"),
                (404, "CUSTOMER_NOT_FOUND"),
                (409, "INVALID_STATUS_TRANSITION"),
            ),
        },
    )
    @action(detail=True, methods=["post"], url_path="status")
    def change_status(self, request, pk=None):
        customer = self._customer()
        payload = StatusChangeSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        services.customer_change_status(actor=request.auth, customer_id=customer.pk, **payload.validated_data)
        return self._respond_with(customer.pk)


def _json_as_stored(customer: Customer) -> bool:
    """Whether the customer's JSON fields read back exactly as they are in memory: jsonb hands an object
    back with its keys in its own order and its numbers in its own form, so only empty ones do."""
    prefs = _preferences_of(customer)
    return not (customer.metadata or customer.custom_attributes or (prefs is not None and prefs.custom))


def _if_match(request) -> int | None:
    """`If-Match: "<version>"` makes an update conditional on the version the client saw."""
    header = request.headers.get("If-Match", "").strip().strip("W/").strip('"')
    if not header:
        return None
    if not header.isdigit():
        raise serializers.ValidationError({"If-Match": ['Send the customer\'s version, e.g. If-Match: "3".']})
    return int(header)
