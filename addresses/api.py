"""The address book API under /customers/{customer_id}/addresses: thin views over `services` and `selectors`."""

from __future__ import annotations

import django_filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.filters import OrderingFilter
from rest_framework.response import Response

from addresses import selectors, services
from addresses.models import TYPES_FOR_KIND, Address, AddressType
from addresses.validation import ADDRESS_FIELDS
from customers.actor import SCOPE_READ, SCOPE_WRITE
from customers.apikit import CreatedCursorPagination, StrictSerializer, problems, scope_note
from customers.selectors import customer_get

# ---------------------------------------------------------------- representation


@extend_schema_field(
    {
        "type": "string",
        "enum": list(AddressType.values),
        "description": "`both` serves as shipping and billing address",
    },
    # Other apps' serializers have `type` fields with other choices; a component of its own keeps this
    # enum's name stable (drf-spectacular would otherwise name the collision with a hash, and warn).
    component_name="AddressTypeEnum",
)
class AddressTypeField(serializers.ChoiceField):
    """`type`: shipping, billing or both."""

    def __init__(self, **kwargs):
        super().__init__(choices=AddressType.choices, **kwargs)


class AddressSerializer(serializers.ModelSerializer):
    """An address as the API shows it (also as `default_*_address` of the customer)."""

    customer_id = serializers.UUIDField(read_only=True)
    type = AddressTypeField(read_only=True)
    latitude = serializers.DecimalField(max_digits=9, decimal_places=6, coerce_to_string=False, allow_null=True)
    longitude = serializers.DecimalField(max_digits=9, decimal_places=6, coerce_to_string=False, allow_null=True)
    is_default = serializers.BooleanField(read_only=True, help_text="The default for at least one of its types")

    class Meta:
        model = Address
        fields = [
            "id",
            "customer_id",
            "type",
            "label",
            "first_name",
            "last_name",
            "company",
            "line1",
            "line2",
            "city",
            "state",
            "postal_code",
            "country",
            "phone",
            "latitude",
            "longitude",
            "is_default",
            "is_default_shipping",
            "is_default_billing",
            "is_validated",
            "last_used_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


_READ_ONLY = frozenset(
    {
        "id",
        "customer_id",
        "is_default_shipping",
        "is_default_billing",
        "is_validated",
        "last_used_at",
        "created_at",
        "updated_at",
    }
)


class AddressUpdateSerializer(StrictSerializer):
    """What a client may write. Per-country rules (required fields, postal code, state) are the service's."""

    ignored_read_only = _READ_ONLY | {"is_default"}
    type = AddressTypeField()
    label = serializers.CharField(max_length=50, required=False, allow_blank=True, help_text='e.g. "Home"')
    first_name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    last_name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    company = serializers.CharField(max_length=200, required=False, allow_blank=True)
    line1 = serializers.CharField(max_length=200)
    line2 = serializers.CharField(max_length=200, required=False, allow_blank=True)
    city = serializers.CharField(max_length=100, required=False, allow_blank=True)
    state = serializers.CharField(
        max_length=100, required=False, allow_blank=True, help_text="State/province: code or name (stored as code)"
    )
    postal_code = serializers.CharField(max_length=20, required=False, allow_blank=True)
    country = serializers.CharField(max_length=10, help_text="ISO 3166-1 alpha-2, e.g. DE")
    phone = serializers.CharField(
        max_length=32, required=False, allow_blank=True, help_text="E.164, or national form of the address's country"
    )
    latitude = serializers.FloatField(required=False, allow_null=True, min_value=-90, max_value=90)
    longitude = serializers.FloatField(required=False, allow_null=True, min_value=-180, max_value=180)


class AddressCreateSerializer(AddressUpdateSerializer):
    """A new address; per-country rules (required fields, postal code, state) are checked by the service."""

    ignored_read_only = _READ_ONLY
    is_default = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Make it the default for its type(s) now; the first address of a type becomes its default anyway",
    )


class SetDefaultSerializer(StrictSerializer):
    """Optional: which type a `both` address becomes the default for."""

    type = AddressTypeField(
        required=False,
        help_text="For a `both` address: become the default for only this type (default: every type it serves)",
    )


# ---------------------------------------------------------------- filters


class AddressFilter(django_filters.FilterSet):
    type = django_filters.ChoiceFilter(
        choices=AddressType.choices,
        method="filter_type",
        help_text="`shipping` or `billing`: addresses usable for it (`both` included); `both`: only those",
    )

    class Meta:
        model = Address
        fields = ["type"]

    def filter_type(self, queryset, name, value):
        if value in TYPES_FOR_KIND:
            return queryset.filter(type__in=TYPES_FOR_KIND[value])
        return queryset.filter(type=value)


# ---------------------------------------------------------------- views

CUSTOMER_ID = OpenApiParameter("customer_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The customer")
ADDRESS_ID = OpenApiParameter("address_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The address")
NOT_FOUND = (404, "CUSTOMER_NOT_FOUND, ADDRESS_NOT_FOUND")
WRITE_ERRORS = (
    (400, "VALIDATION_ERROR, ADDRESS_LIMIT_EXCEEDED"),
    (403, "PERMISSION_DENIED"),
    NOT_FOUND,
    (409, "CUSTOMER_ERASED"),
)


def _blank(name: str):
    return None if name in ("latitude", "longitude") else ""


@extend_schema(parameters=[CUSTOMER_ID])
@extend_schema_view(
    list=extend_schema(
        summary="List a customer's addresses",
        description=scope_note(SCOPE_READ) + " Deleted addresses are not listed.",
        responses={
            200: AddressSerializer(many=True),
            **problems((400, "VALIDATION_ERROR"), (403, "PERMISSION_DENIED"), (404, "CUSTOMER_NOT_FOUND")),
        },
    ),
    create=extend_schema(
        summary="Add an address",
        description=scope_note(SCOPE_WRITE)
        + " Validated and normalized for its country. The first address of a type becomes its default."
        " At most 10 addresses per customer.",
        request=AddressCreateSerializer,
        responses={
            201: AddressSerializer,
            **problems(
                (400, "VALIDATION_ERROR, ADDRESS_LIMIT_EXCEEDED"),
                (403, "PERMISSION_DENIED"),
                (404, "CUSTOMER_NOT_FOUND"),
                (409, "CUSTOMER_ERASED"),
            ),
        },
    ),
    retrieve=extend_schema(
        summary="Get an address",
        parameters=[ADDRESS_ID],
        description=scope_note(SCOPE_READ),
        responses={200: AddressSerializer, **problems((403, "PERMISSION_DENIED"), NOT_FOUND)},
    ),
    update=extend_schema(
        summary="Replace an address",
        parameters=[ADDRESS_ID],
        description=scope_note(SCOPE_WRITE)
        + " Fields left out are cleared. `is_default` is read-only here: use set-default.",
        request=AddressUpdateSerializer,
        responses={200: AddressSerializer, **problems(*WRITE_ERRORS)},
    ),
    partial_update=extend_schema(
        summary="Change some fields of an address",
        parameters=[ADDRESS_ID],
        description=scope_note(SCOPE_WRITE) + " The whole address is validated again for its country.",
        request=AddressUpdateSerializer,
        responses={200: AddressSerializer, **problems(*WRITE_ERRORS)},
    ),
    destroy=extend_schema(
        summary="Remove an address",
        parameters=[ADDRESS_ID],
        description=scope_note(SCOPE_WRITE)
        + " Kept for order history, gone from the API. A default passes to the most recently used remaining"
        " address of its type.",
        responses={204: None, **problems((403, "PERMISSION_DENIED"), NOT_FOUND, (409, "CUSTOMER_ERASED"))},
    ),
)
class AddressViewSet(viewsets.GenericViewSet):
    serializer_class = AddressSerializer
    pagination_class = CreatedCursorPagination
    filterset_class = AddressFilter
    filter_backends = [django_filters.rest_framework.DjangoFilterBackend, OrderingFilter]
    ordering_fields = ["created_at", "updated_at"]
    ordering = ["-created_at"]
    lookup_url_kwarg = "address_id"
    lookup_value_regex = "[0-9a-fA-F-]{36}"

    def _customer_id(self):
        """BOLA: a token limited to another customer gets CUSTOMER_NOT_FOUND, as if B did not exist."""
        return customer_get(actor=self.request.auth, customer_id=self.kwargs["customer_id"]).pk

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Address.objects.none()
        return selectors.addresses_of(self._customer_id())

    def _respond(self, address: Address, status_code: int = status.HTTP_200_OK) -> Response:
        return Response(AddressSerializer(address).data, status=status_code)

    def list(self, request, customer_id=None):
        addresses = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(addresses)
        return self.get_paginated_response(AddressSerializer(page, many=True).data)

    def retrieve(self, request, customer_id=None, address_id=None):
        return self._respond(selectors.address_get(customer_id=self._customer_id(), address_id=address_id))

    def create(self, request, customer_id=None):
        customer_pk = self._customer_id()
        payload = AddressCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = dict(payload.validated_data)
        make_default = data.pop("is_default", False)
        address = services.address_create(
            actor=request.auth, customer_id=customer_pk, make_default=make_default, **data
        )
        response = self._respond(address, status.HTTP_201_CREATED)
        response["Location"] = f"/api/v1/customers/{customer_pk}/addresses/{address.pk}"
        return response

    def _update(self, request, address_id, *, partial: bool) -> Response:
        customer_pk = self._customer_id()
        selectors.address_get(customer_id=customer_pk, address_id=address_id)  # 404 before 400
        payload = AddressUpdateSerializer(data=request.data, partial=partial)
        payload.is_valid(raise_exception=True)
        changes = dict(payload.validated_data)
        if not partial:
            changes = {name: changes.get(name, _blank(name)) for name in ADDRESS_FIELDS}
        address = services.address_update(
            actor=request.auth, customer_id=customer_pk, address_id=address_id, changes=changes
        )
        return self._respond(address)

    def update(self, request, customer_id=None, address_id=None):
        return self._update(request, address_id, partial=False)

    def partial_update(self, request, customer_id=None, address_id=None):
        return self._update(request, address_id, partial=True)

    def destroy(self, request, customer_id=None, address_id=None):
        services.address_delete(actor=request.auth, customer_id=self._customer_id(), address_id=address_id)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Make an address the default",
        parameters=[ADDRESS_ID],
        description=scope_note(SCOPE_WRITE)
        + " The previous default of the type is unset in the same transaction. A `both` address becomes the"
        " default for shipping and billing unless `type` names one.",
        request=SetDefaultSerializer,
        responses={
            200: AddressSerializer,
            **problems((400, "VALIDATION_ERROR"), (403, "PERMISSION_DENIED"), NOT_FOUND, (409, "CUSTOMER_ERASED")),
        },
    )
    @action(detail=True, methods=["post"], url_path="set-default")
    def set_default(self, request, customer_id=None, address_id=None):
        customer_pk = self._customer_id()
        selectors.address_get(customer_id=customer_pk, address_id=address_id)  # 404 before 400
        payload = SetDefaultSerializer(data=request.data or {})
        payload.is_valid(raise_exception=True)
        address = services.address_set_default(
            actor=request.auth,
            customer_id=customer_pk,
            address_id=address_id,
            kind=payload.validated_data.get("type"),
        )
        return self._respond(address)
