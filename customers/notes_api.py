"""The notes API for other services (CRM, support desk): `customers:admin` only; customer tokens never see notes."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from customers import notes, selectors
from customers.actor import SCOPE_ADMIN, Actor
from customers.apikit import CreatedCursorPagination, StrictSerializer, problems
from customers.errors import Forbidden
from customers.models import CustomerNote, NoteKind

CUSTOMER_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The customer's id")
NOTE_ID = OpenApiParameter("note_id", OpenApiTypes.INT, OpenApiParameter.PATH, description="The note's id")
SCOPE_NOTE = (
    f"Requires scope `{SCOPE_ADMIN}`. Tokens limited to a customer (`customer_id` claim) are refused: "
    "customers never see staff notes. Compliance notes are visible only to the Compliance and "
    "Administrator staff groups, never through the API."
)


class NeedsAdminScope(permissions.BasePermission):
    message = f"Notes need the scope {SCOPE_ADMIN}."

    def has_permission(self, request, view) -> bool:
        actor = request.auth
        return isinstance(actor, Actor) and actor.has_scope(SCOPE_ADMIN)


class NoteSerializer(serializers.ModelSerializer):
    class Meta:
        model = CustomerNote
        fields = ["id", "customer_id", "kind", "text", "is_pinned", "written_by", "created_at", "updated_at"]
        read_only_fields = fields

    customer_id = serializers.UUIDField(read_only=True)


WRITABLE_NOTE_KINDS = [choice for choice in NoteKind.choices if choice[0] != NoteKind.COMPLIANCE]


class NoteInputSerializer(StrictSerializer):
    ignored_read_only = frozenset({"id", "customer_id", "written_by", "created_at", "updated_at"})
    kind = serializers.ChoiceField(
        choices=WRITABLE_NOTE_KINDS,
        required=False,
        help_text="Default: general (compliance notes are written by compliance staff in the admin)",
    )
    text = serializers.CharField(max_length=notes.NOTE_MAX_LENGTH, trim_whitespace=True)
    is_pinned = serializers.BooleanField(required=False)


class NotePatchSerializer(NoteInputSerializer):
    text = serializers.CharField(max_length=notes.NOTE_MAX_LENGTH, required=False)


class NotePageSerializer(serializers.Serializer):
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = NoteSerializer(many=True)


def _checked(request, customer_id):
    actor = request.auth
    if actor.customer_id is not None:
        raise Forbidden("A customer's own token cannot read or write staff notes.")
    return selectors.customer_get(actor=actor, customer_id=customer_id)


class CustomerNotesView(APIView):
    permission_classes = [NeedsAdminScope]
    pagination_class = CreatedCursorPagination

    @extend_schema(
        operation_id="customers_notes_list",
        summary="A customer's notes",
        description=SCOPE_NOTE + " Newest first; `pinned=true` lists only pinned notes.",
        parameters=[
            CUSTOMER_ID,
            OpenApiParameter("pinned", OpenApiTypes.BOOL, OpenApiParameter.QUERY, description="Only pinned notes"),
        ],
        responses={200: NotePageSerializer, **problems((403, "PERMISSION_DENIED"), (404, "CUSTOMER_NOT_FOUND"))},
        tags=["customers"],
    )
    def get(self, request, id):
        customer = _checked(request, id)
        found = notes.customer_notes(actor=request.auth, customer_id=customer.pk)
        if request.query_params.get("pinned") in ("true", "1"):
            found = found.filter(is_pinned=True)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(found, request, view=self)
        return paginator.get_paginated_response(NoteSerializer(page, many=True).data)

    @extend_schema(
        operation_id="customers_notes_create",
        summary="Write a note about a customer",
        description=SCOPE_NOTE,
        parameters=[CUSTOMER_ID],
        request=NoteInputSerializer,
        responses={
            201: NoteSerializer,
            **problems(
                (400, "VALIDATION_ERROR"),
                (403, "PERMISSION_DENIED"),
                (404, "CUSTOMER_NOT_FOUND"),
                (409, "CUSTOMER_ERASED, CUSTOMER_MERGED"),
            ),
        },
        tags=["customers"],
    )
    def post(self, request, id):
        customer = _checked(request, id)
        payload = NoteInputSerializer(data=_compliance_passthrough(request.data))
        payload.is_valid(raise_exception=True)
        note = notes.note_create(actor=request.auth, customer_id=customer.pk, **payload.validated_data)
        return Response(NoteSerializer(note).data, status=status.HTTP_201_CREATED)


def _compliance_passthrough(data):
    """`kind: compliance` is not a choice here; answer it with the service's PERMISSION_DENIED, not a 400."""
    if isinstance(data, dict) and data.get("kind") == NoteKind.COMPLIANCE:
        raise Forbidden("Only the Compliance and Administrator staff groups write compliance notes.")
    return data


class CustomerNoteView(APIView):
    permission_classes = [NeedsAdminScope]

    def _note(self, request, id, note_id) -> CustomerNote:
        customer = _checked(request, id)
        try:
            return notes.customer_notes(actor=request.auth, customer_id=customer.pk).get(pk=note_id)
        except (CustomerNote.DoesNotExist, ValueError):
            raise notes.NoteNotFound(note_id) from None

    @extend_schema(
        operation_id="customers_notes_retrieve",
        summary="One note",
        description=SCOPE_NOTE,
        parameters=[CUSTOMER_ID, NOTE_ID],
        responses={
            200: NoteSerializer,
            **problems((403, "PERMISSION_DENIED"), (404, "CUSTOMER_NOT_FOUND, NOTE_NOT_FOUND")),
        },
        tags=["customers"],
    )
    def get(self, request, id, note_id):
        return Response(NoteSerializer(self._note(request, id, note_id)).data)

    @extend_schema(
        operation_id="customers_notes_partial_update",
        summary="Change a note's text, kind or pin",
        description=SCOPE_NOTE + " Every version is kept in the note's history.",
        parameters=[CUSTOMER_ID, NOTE_ID],
        request=NotePatchSerializer,
        responses={
            200: NoteSerializer,
            **problems(
                (400, "VALIDATION_ERROR"),
                (403, "PERMISSION_DENIED"),
                (404, "CUSTOMER_NOT_FOUND, NOTE_NOT_FOUND"),
                (409, "CUSTOMER_ERASED, CUSTOMER_MERGED"),
            ),
        },
        tags=["customers"],
    )
    def patch(self, request, id, note_id):
        note = self._note(request, id, note_id)
        payload = NotePatchSerializer(data=_compliance_passthrough(request.data), partial=True)
        payload.is_valid(raise_exception=True)
        note = notes.note_update(
            actor=request.auth, customer_id=note.customer_id, note_id=note.pk, changes=dict(payload.validated_data)
        )
        return Response(NoteSerializer(note).data)

    @extend_schema(
        operation_id="customers_notes_destroy",
        summary="Delete a note",
        description=SCOPE_NOTE + " Its history stays until the customer is erased.",
        parameters=[CUSTOMER_ID, NOTE_ID],
        responses={
            204: None,
            **problems(
                (403, "PERMISSION_DENIED"),
                (404, "CUSTOMER_NOT_FOUND, NOTE_NOT_FOUND"),
                (409, "CUSTOMER_ERASED, CUSTOMER_MERGED"),
            ),
        },
        tags=["customers"],
    )
    def delete(self, request, id, note_id):
        note = self._note(request, id, note_id)
        notes.note_delete(actor=request.auth, customer_id=note.customer_id, note_id=note.pk)
        return Response(status=status.HTTP_204_NO_CONTENT)
