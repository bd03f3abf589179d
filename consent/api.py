"""The consent API: thin serializers and views over `consent.services` and `consent.selectors`.

Same auth as the customers API: reads need `customers:read`, writes `customers:write`, and a
token limited to one customer reaches only that customer (another's → 404 CUSTOMER_NOT_FOUND).
"""

from __future__ import annotations

import django_filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import serializers, viewsets
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response

from consent import selectors, services
from consent.context import CUSTOMER_IP_HEADER, CUSTOMER_USER_AGENT_HEADER, request_origin_for
from consent.models import ConsentPurpose, ConsentRecord, ConsentSource, ConsentStatus, ConsentTrigger
from customers import selectors as customer_selectors
from customers.actor import SCOPE_ADMIN, SCOPE_READ, SCOPE_WRITE
from customers.apikit import StrictSerializer, problems, scope_note

CUSTOMER_ID = OpenApiParameter("customer_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="Customer id")
PURPOSE = OpenApiParameter(
    "purpose", OpenApiTypes.STR, OpenApiParameter.PATH, description="Purpose code, e.g. marketing_email"
)
IP_NOTE = (
    " The customer's IP address and user agent are recorded: the request's own, or, for a service token "
    f"acting on the customer's behalf (e.g. the storefront's server), the `{CUSTOMER_IP_HEADER}` and "
    f"`{CUSTOMER_USER_AGENT_HEADER}` headers (ignored for a customer's own token)."
)
CUSTOMER_ORIGIN_HEADERS = [
    OpenApiParameter(
        CUSTOMER_IP_HEADER,
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        required=False,
        description="Service tokens acting on the customer's behalf: the customer's IP address (IPv4 or IPv6), "
        "recorded as the proof of consent. Ignored for a customer's own token.",
    ),
    OpenApiParameter(
        CUSTOMER_USER_AGENT_HEADER,
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        required=False,
        description="Service tokens acting on the customer's behalf: the customer's browser or app user agent.",
    ),
]

# ---------------------------------------------------------------- representation


def _status_field_class(values: list[str]):
    """A choice field documented as a pattern rather than an enum.

    drf-spectacular names enums by field name; a second choice set under a name another component
    already uses (`status`: the customer's; `source`: the client sources accepted on input) makes
    it warn unless SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"] names both. Until that settings
    entry exists, these are documented as a pattern.
    """

    @extend_schema_field({"type": "string", "pattern": "^(" + "|".join(values) + ")$"})
    class StatusField(serializers.ChoiceField):
        pass

    return StatusField


ConsentStatusField = _status_field_class(ConsentStatus.values)
ConsentSourceField = _status_field_class(ConsentSource.values)
RequestableStatusField = _status_field_class(list(services.REQUESTABLE_STATUSES))


class PolicyVersionBriefSerializer(serializers.Serializer):
    version = serializers.CharField()
    effective_at = serializers.DateTimeField()
    text_hash = serializers.CharField(help_text="SHA-256 of the notice text")
    notice_url = serializers.CharField(allow_blank=True)


class PolicyVersionSerializer(PolicyVersionBriefSerializer):
    notice_text = serializers.CharField(allow_blank=True, help_text="The exact notice to show")
    requires_reconsent = serializers.BooleanField(
        help_text="Grants on earlier versions need renewal once this version is in effect"
    )


class ConsentStateSerializer(serializers.Serializer):
    purpose = serializers.CharField(source="purpose.code")
    purpose_name = serializers.CharField(source="purpose.name")
    is_marketing = serializers.BooleanField(source="purpose.is_marketing")
    status = ConsentStatusField(choices=ConsentStatus.choices, help_text=", ".join(ConsentStatus.values))
    recorded = serializers.BooleanField(help_text="False only for a customer no state was ever recorded for")
    policy_version = PolicyVersionBriefSerializer(
        allow_null=True, help_text="The wording granted (or refused, or in force when nothing was asked)"
    )
    source = serializers.CharField(allow_blank=True, help_text="How the last change came in")
    granted_at = serializers.DateTimeField(allow_null=True)
    valid_until = serializers.DateTimeField(allow_null=True, help_text="When the grant expires (null: no expiry)")
    updated_at = serializers.DateTimeField(allow_null=True, help_text="When the last change occurred")
    needs_renewal = serializers.BooleanField(
        help_text="Granted on a version older than one that requires re-consent: no longer counts"
    )
    is_valid = serializers.BooleanField(
        help_text="Counts as consent now: granted, within validity, on a current-enough version"
    )


class ConsentRecordSerializer(serializers.ModelSerializer):
    purpose = serializers.CharField(source="purpose.code")
    status = ConsentStatusField(choices=ConsentStatus.choices, help_text=", ".join(ConsentStatus.values))
    source = ConsentSourceField(choices=ConsentSource.choices, help_text=", ".join(ConsentSource.values))
    previous_status = serializers.SerializerMethodField()
    policy_version = serializers.CharField(source="policy_version.version")
    policy_version_id = serializers.UUIDField()
    policy_text_hash = serializers.CharField(source="policy_version.text_hash")
    recorded_by = serializers.CharField(source="actor", help_text="token:<subject>, staff:<username> or system:<job>")

    class Meta:
        model = ConsentRecord
        fields = [
            "id",
            "customer_id",
            "purpose",
            "status",
            "previous_status",
            "policy_version",
            "policy_version_id",
            "policy_text_hash",
            "implicit",
            "trigger",
            "occurred_at",
            "recorded_at",
            "valid_until",
            "source",
            "recorded_by",
            "ip_address",
            "user_agent",
            "reason",
        ]
        read_only_fields = fields

    @extend_schema_field(
        {"type": "string", "nullable": True, "enum": [*ConsentStatus.values, None], "description": "Null on the first"}
    )
    def get_previous_status(self, record) -> str | None:
        return record.previous_status or None

    def get_fields(self):
        fields = super().get_fields()
        for name in selectors.PROOF_FIELDS:
            fields[name].allow_null = True
            fields[name].help_text = PROOF_NOTE
        return fields

    def to_representation(self, record):
        data = super().to_representation(record)
        if not self.context.get("show_proof", False):
            for name in selectors.PROOF_FIELDS:
                data[name] = None
        return data


PROOF_NOTE = f"Personal: shown only to `{SCOPE_ADMIN}` tokens and the customer's own token; null for others."


class PurposeSerializer(serializers.ModelSerializer):
    current_policy_version = serializers.SerializerMethodField()

    class Meta:
        model = ConsentPurpose
        fields = [
            "code",
            "name",
            "description",
            "is_marketing",
            "default_validity_months",
            "allows_implicit",
            "current_policy_version",
        ]
        read_only_fields = fields

    @extend_schema_field(PolicyVersionSerializer(allow_null=True))
    def get_current_policy_version(self, purpose) -> dict | None:
        version = self.context["current_versions"].get(purpose.id)
        return PolicyVersionSerializer(version).data if version is not None else None


class ConsentChangeSerializer(StrictSerializer):
    ignored_read_only = frozenset(
        {
            "purpose",
            "purpose_name",
            "is_marketing",
            "recorded",
            "granted_at",
            "valid_until",
            "updated_at",
            "needs_renewal",
            "is_valid",
        }
    )
    status = RequestableStatusField(
        choices=[(status, status) for status in services.REQUESTABLE_STATUSES],
        help_text="granted, denied, revoked (withdraw), or pending (asked, answer to come)",
    )
    policy_version = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=50,
        help_text="Label of the version the customer was shown; default: the one in effect",
    )
    source = serializers.ChoiceField(
        choices=[(source, source) for source in services.CLIENT_SOURCES], default=ConsentSource.WEB
    )
    implicit = serializers.BooleanField(
        default=False, help_text="Granted without an affirmative act (only purposes that allow it; never marketing)"
    )


class ObjectionSerializer(StrictSerializer):
    source = serializers.ChoiceField(
        choices=[(source, source) for source in services.CLIENT_SOURCES], default=ConsentSource.WEB
    )


class ObjectionResultSerializer(serializers.Serializer):
    changes = ConsentRecordSerializer(many=True, help_text="The records written (empty when nothing changed)")
    consents = ConsentStateSerializer(many=True, help_text="The customer's consent per purpose afterwards")


# ---------------------------------------------------------------- filters and pagination


class ConsentRecordFilter(django_filters.FilterSet):
    purpose = django_filters.CharFilter(field_name="purpose__code", help_text="Purpose code")
    status = django_filters.ChoiceFilter(choices=ConsentStatus.choices)
    source = django_filters.ChoiceFilter(choices=ConsentSource.choices)
    trigger = django_filters.ChoiceFilter(choices=ConsentTrigger.choices)
    occurred_after = django_filters.IsoDateTimeFilter(field_name="occurred_at", lookup_expr="gte")
    occurred_before = django_filters.IsoDateTimeFilter(field_name="occurred_at", lookup_expr="lt")

    class Meta:
        model = ConsentRecord
        fields = ["status", "source", "trigger"]


class OccurredCursorPagination(CursorPagination):
    """Newest first; `page_size` up to 100; stable under concurrent inserts."""

    ordering = ("-occurred_at", "-recorded_at", "-id")  # the id makes ties (one call, many records) stable
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 100


# ---------------------------------------------------------------- views


def _states_payload(customer_id, *, needs_renewal: bool | None = None) -> list[dict]:
    states = selectors.customer_consent_states(customer_id=customer_id)
    if needs_renewal is not None:
        states = [state for state in states if bool(state.needs_renewal) == needs_renewal]
    return ConsentStateSerializer(states, many=True).data


def _state_payload(customer_id, purpose_code: str) -> dict:
    state = next(
        state
        for state in selectors.customer_consent_states(customer_id=customer_id)
        if state.purpose.code == purpose_code
    )
    return ConsentStateSerializer(state).data


class _CustomerScoped:
    def _customer(self):
        """BOLA: the customer, or CUSTOMER_NOT_FOUND when it does not exist or the token may not see it."""
        return customer_selectors.customer_get(actor=self.request.auth, customer_id=self.kwargs["customer_id"])


@extend_schema_view(
    list=extend_schema(
        summary="A customer's consent per purpose",
        description=scope_note(SCOPE_READ)
        + " Every purpose is listed, with the state, the policy version and the dates. "
        "`needs_renewal=true` lists the grants that a newer policy version requires to be renewed.",
        parameters=[
            CUSTOMER_ID,
            OpenApiParameter(
                "needs_renewal",
                OpenApiTypes.BOOL,
                OpenApiParameter.QUERY,
                description="Only purposes whose grant needs renewal (true) or does not (false)",
            ),
        ],
        responses={
            200: ConsentStateSerializer(many=True),
            **problems((400, "VALIDATION_ERROR"), (403, "PERMISSION_DENIED"), (404, "CUSTOMER_NOT_FOUND")),
        },
    ),
    update=extend_schema(
        summary="Grant, deny or withdraw consent for one purpose",
        description=scope_note(SCOPE_WRITE)
        + " One call each way: withdrawing is as easy as granting. Allowed moves: nothing/not_requested → "
        "pending, granted, denied (granted/denied directly: the checkbox beside its notice, answered at once); "
        "pending → granted, denied; granted → revoked (or expired, by the expiry job); denied, revoked, "
        "expired → granted. Asking for the current state is refused with 409 CONSENT_ALREADY_IN_STATE; granted "
        "on a newer policy version renews the grant. A marketing purpose's opt-in in the preferences follows."
        + IP_NOTE,
        parameters=[CUSTOMER_ID, PURPOSE, *CUSTOMER_ORIGIN_HEADERS],
        request=ConsentChangeSerializer,
        responses={
            200: ConsentStateSerializer,
            **problems(
                (
                    400,
                    "VALIDATION_ERROR, POLICY_VERSION_NOT_FOUND, POLICY_VERSION_OUTDATED, IMPLICIT_CONSENT_NOT_ALLOWED",
                ),
                (403, "PERMISSION_DENIED"),
                (404, "CUSTOMER_NOT_FOUND, PURPOSE_NOT_FOUND"),
                (409, "CONSENT_TRANSITION_NOT_ALLOWED, CONSENT_ALREADY_IN_STATE, CUSTOMER_ERASED, CUSTOMER_MERGED"),
            ),
        },
    ),
)
class CustomerConsentViewSet(_CustomerScoped, viewsets.GenericViewSet):
    serializer_class = ConsentStateSerializer
    pagination_class = None
    filter_backends: list = []

    def list(self, request, customer_id=None):
        customer = self._customer()
        raw = request.query_params.get("needs_renewal")
        needs_renewal = None
        if raw is not None:
            if raw.lower() not in ("true", "false", "1", "0"):
                raise serializers.ValidationError({"needs_renewal": ["Use true or false."]})
            needs_renewal = raw.lower() in ("true", "1")
        return Response(_states_payload(customer.pk, needs_renewal=needs_renewal))

    def update(self, request, customer_id=None, purpose=None):
        customer = self._customer()
        payload = ConsentChangeSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        ip_address, user_agent = request_origin_for(request, request.auth)
        services.consent_change(
            actor=request.auth,
            customer_id=customer.pk,
            purpose_code=purpose,
            status=data["status"],
            policy_version=data.get("policy_version") or None,
            source=data["source"],
            implicit=data["implicit"],
            ip_address=ip_address,
            user_agent=user_agent,
        )
        return Response(_state_payload(customer.pk, purpose))

    @extend_schema(
        summary="Object to direct marketing (GDPR Art. 21(3))",
        description=scope_note(SCOPE_WRITE)
        + " One call ends all direct marketing: every granted marketing purpose is revoked, every one "
        "not yet answered is recorded as denied, and the marketing opt-ins are switched off. Repeating it "
        "changes nothing." + IP_NOTE,
        parameters=[CUSTOMER_ID, *CUSTOMER_ORIGIN_HEADERS],
        request=ObjectionSerializer,
        responses={
            200: ObjectionResultSerializer,
            **problems(
                (400, "VALIDATION_ERROR"),
                (403, "PERMISSION_DENIED"),
                (404, "CUSTOMER_NOT_FOUND"),
                (409, "CUSTOMER_ERASED, CUSTOMER_MERGED"),
            ),
        },
    )
    def object_to_marketing(self, request, customer_id=None):
        customer = self._customer()
        payload = ObjectionSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        ip_address, user_agent = request_origin_for(request, request.auth)
        records = services.consent_object_to_marketing(
            actor=request.auth,
            customer_id=customer.pk,
            source=payload.validated_data["source"],
            ip_address=ip_address,
            user_agent=user_agent,
        )
        context = {"show_proof": selectors.proof_visible_to(request.auth, customer.pk)}
        return Response(
            {
                "changes": ConsentRecordSerializer(records, many=True, context=context).data,
                "consents": _states_payload(customer.pk),
            }
        )


class CustomerConsentHistoryViewSet(_CustomerScoped, viewsets.GenericViewSet):
    serializer_class = ConsentRecordSerializer
    pagination_class = OccurredCursorPagination
    filterset_class = ConsentRecordFilter
    filter_backends = [django_filters.rest_framework.DjangoFilterBackend]
    queryset = ConsentRecord.objects.none()  # for the schema; the records are always one customer's

    @extend_schema(
        summary="A customer's consent record",
        description=scope_note(SCOPE_READ)
        + " Every change ever recorded, newest first: who, what, when, how and on which wording. "
        f"The personal proof fields (`ip_address`, `user_agent`, `reason`) are shown only to `{SCOPE_ADMIN}` "
        "tokens and to the customer's own token; for other callers they are null.",
        parameters=[CUSTOMER_ID],
        responses={
            200: ConsentRecordSerializer(many=True),
            **problems((400, "VALIDATION_ERROR"), (403, "PERMISSION_DENIED"), (404, "CUSTOMER_NOT_FOUND")),
        },
    )
    def list(self, request, customer_id=None):
        customer = self._customer()
        records = self.filter_queryset(selectors.customer_consent_records(customer_id=customer.pk))
        page = self.paginate_queryset(records)
        context = {"show_proof": selectors.proof_visible_to(request.auth, customer.pk)}
        return self.get_paginated_response(ConsentRecordSerializer(page, many=True, context=context).data)


@extend_schema_view(
    list=extend_schema(
        summary="Consent purposes with their current policy versions",
        description=scope_note(SCOPE_READ).split(".")[0]
        + ". The notice to show for each purpose is its current policy version.",
        responses={200: PurposeSerializer(many=True), **problems((403, "PERMISSION_DENIED"))},
    ),
)
class PurposeViewSet(viewsets.GenericViewSet):
    serializer_class = PurposeSerializer
    pagination_class = None
    queryset = ConsentPurpose.objects.none()  # for the schema

    def list(self, request):
        context = {"current_versions": selectors.current_policy_versions()}
        return Response(PurposeSerializer(selectors.purposes(), many=True, context=context).data)
