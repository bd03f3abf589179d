"""Back-office for marketing: segment definitions with a live rule preview, calculations, members.

Every write goes through `segments.services`. Who may change which segment is decided per segment
with django-guardian: Marketing sees every segment and may create new ones (and then holds the
change permissions on them); changing any other segment takes an object permission an
administrator grants. Staff holding the model-wide permission (Administrator) change them all.
The storefront API keeps its scope-based checks.
"""

from __future__ import annotations

import csv
import io
import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from guardian.admin import ReinforcedGuardedModelAdminMixin
from guardian.shortcuts import assign_perm
from simple_history.admin import SimpleHistoryAdmin

from customers import services as customer_services
from customers.actor import Actor
from customers.errors import ApplicationError
from segments import selectors, services
from segments.models import (
    CustomerTier,
    Segment,
    SegmentCalculation,
    SegmentKind,
    SegmentMembership,
    SegmentStatus,
)

CHANGE = "segments.change_segment"
DELETE = "segments.delete_segment"
RECALCULATE = "segments.recalculate_segment"
MANAGE_MEMBERS = "segments.manage_segment_members"
EXPORT = "segments.export_segment_members"
# What the creator of a segment holds on it (an administrator grants the same to others).
CREATOR_PERMISSIONS = ("change_segment", "recalculate_segment", "manage_segment_members", "export_segment_members")
EXPORT_COLUMNS = ("customer_id", "customer_number", "email", "first_name", "last_name", "joined_at", "score", "source")


def may(user, permission: str, segment: Segment | None = None) -> bool:
    """Model-wide permission, or (for a segment) the object permission guardian holds for it."""
    if user.has_perm(permission):
        return True
    return segment is not None and user.has_perm(permission, segment)


def _add_service_errors(form: forms.BaseForm, error: ApplicationError) -> None:
    if not error.errors:
        form.add_error(None, error.message)
    for field, field_messages in error.errors.items():
        target = field if field in form.fields else ("rules" if field.startswith("rules") else None)
        for message in field_messages:
            form.add_error(target, f"{field}: {message}" if target == "rules" and field != "rules" else message)


def _purpose_choices():
    from consent import selectors as consent_selectors

    return [("", "— none —")] + [(p.code, f"{p.code} ({p.name})") for p in consent_selectors.purposes()]


class SegmentAdminForm(forms.ModelForm):
    rules = forms.JSONField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 14, "cols": 90, "class": "vLargeTextField segment-rules"}),
        help_text='e.g. {"all": [{"field": "total_spent", "op": "gte", "value": 1000}, '
        '{"field": "country", "op": "in", "value": ["DE", "AT"]}]}. The count of customers the rules select '
        "now is shown as you type.",
    )
    requires_consent = forms.ChoiceField(required=False, choices=())
    status = forms.ChoiceField(
        choices=[(SegmentStatus.ACTIVE, "active"), (SegmentStatus.INACTIVE, "inactive")], initial=SegmentStatus.ACTIVE
    )

    class Meta:
        model = Segment
        fields = ("code", "name", "description", "kind", "status", "rules", "requires_consent")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["requires_consent"].choices = _purpose_choices()
        if self.instance.pk and self.instance.status not in (SegmentStatus.ACTIVE, SegmentStatus.INACTIVE):
            self.fields["status"].choices = [
                (self.instance.status, self.instance.status),
                *self.fields["status"].choices,
            ]

    def _post_clean(self):
        if self.errors:
            return
        adding = self.instance._state.adding
        names = [name for name in self.Meta.fields if name in self.cleaned_data]
        if not adding:
            names = [name for name in names if name in self.changed_data]
        values = {name: self.cleaned_data[name] for name in names}
        if "rules" in values and values["rules"] in ("", {}):
            values["rules"] = None
        if not adding and values.get("status") not in (None, SegmentStatus.ACTIVE, SegmentStatus.INACTIVE):
            values.pop("status")
        self.service_values = values
        if not values:
            return
        try:
            services.segment_validate(values, segment_id=None if adding else self.instance.pk)
        except ApplicationError as error:
            _add_service_errors(self, error)


@admin.register(Segment)
class SegmentAdmin(ReinforcedGuardedModelAdminMixin, SimpleHistoryAdmin):
    form = SegmentAdminForm
    change_form_template = "admin/segments/segment/change_form.html"
    list_display = ("name", "code", "kind", "status", "member_count", "last_calculated_at", "is_builtin", "members")
    list_filter = ("kind", "status", "is_builtin")
    search_fields = ("code", "name")
    ordering = ("name",)
    readonly_fields = ("error", "member_count", "last_calculated_at", "is_builtin", "created_by", "created_at")
    actions = ["recalculate_segments", "show_overlap"]
    history_list_display = ["history_actor", "history_change_reason"]
    fieldsets = (
        (None, {"fields": ("code", "name", "description", ("kind", "status"))}),
        ("Who belongs", {"fields": ("rules", "requires_consent")}),
        (
            "State",
            {"fields": (("member_count", "last_calculated_at"), "error", ("is_builtin", "created_by", "created_at"))},
        ),
    )

    # ------------------------------------------------------------ permissions

    def has_change_permission(self, request, obj=None) -> bool:
        if obj is None:
            # The change views open for anyone who may change some segment; each object decides.
            return may(request.user, CHANGE) or self._changes_any(request)
        return may(request.user, CHANGE, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        if obj is not None and obj.is_builtin:
            return False
        return may(request.user, DELETE, obj)

    def _changes_any(self, request) -> bool:
        from guardian.shortcuts import get_objects_for_user

        if not hasattr(request, "_segments_changes_any"):
            request._segments_changes_any = get_objects_for_user(
                request.user, CHANGE, klass=Segment, accept_global_perms=False
            ).exists()
        return request._segments_changes_any

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            fields.append("kind")
            if obj.is_builtin:
                fields.append("code")
        return fields

    def get_actions(self, request):
        actions = super().get_actions(request)
        if not (may(request.user, RECALCULATE) or self._changes_any(request)):
            actions.pop("recalculate_segments", None)
        return actions

    # ------------------------------------------------------------ list

    @admin.display(description="members")
    def members(self, obj: Segment):
        url = reverse("admin:segments_segmentmembership_changelist")
        return format_html('<a href="{}?segment__id__exact={}&current=yes">{}</a>', url, obj.pk, obj.member_count)

    # ------------------------------------------------------------ saving through the services

    def save_model(self, request, obj, form, change):
        actor = Actor.for_staff(request.user)
        values = getattr(form, "service_values", {})
        if not change:
            form.instance = services.segment_create(actor=actor, **values)
            for permission in CREATOR_PERMISSIONS:
                assign_perm(permission, request.user, form.instance)
        elif values:
            form.instance = services.segment_update(actor=actor, segment_id=obj.pk, changes=values)

    def save_related(self, request, form, formsets, change):
        pass  # no inlines; membership changes go through their own views

    def delete_model(self, request, obj):
        services.segment_delete(actor=Actor.for_staff(request.user), segment_id=obj.pk)

    def delete_queryset(self, request, queryset):
        for segment in queryset:
            self.delete_model(request, segment)

    # ------------------------------------------------------------ extra views

    def get_urls(self):
        def view(function):
            return self.admin_site.admin_view(function)

        return [
            path("preview/", view(self.preview_view), name="segments_segment_preview"),
            path("<uuid:segment_id>/recalculate/", view(self.recalculate_view), name="segments_segment_recalculate"),
            path("<uuid:segment_id>/upload/", view(self.upload_view), name="segments_segment_upload"),
            path("<uuid:segment_id>/export/", view(self.export_view), name="segments_segment_export"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        segment = Segment.objects.filter(pk=object_id).first()
        extra = {
            "preview_url": reverse("admin:segments_segment_preview"),
            "may_manage_object_permissions": request.user.has_perm("guardian.change_userobjectpermission"),
        }
        if segment is not None:
            extra.update(
                {
                    "segment": segment,
                    "may_recalculate": segment.is_dynamic and may(request.user, RECALCULATE, segment),
                    "may_upload": segment.kind == SegmentKind.STATIC and may(request.user, MANAGE_MEMBERS, segment),
                    "may_export": may(request.user, EXPORT, segment),
                    "members_url": reverse("admin:segments_segmentmembership_changelist")
                    + f"?segment__id__exact={segment.pk}&current=yes",
                    "calculations": segment.calculations.all()[:5],
                }
            )
        return super().change_view(request, object_id, form_url, extra_context={**extra, **(extra_context or {})})

    def add_view(self, request, form_url="", extra_context=None):
        extra = {"preview_url": reverse("admin:segments_segment_preview")}
        return super().add_view(request, form_url, extra_context={**extra, **(extra_context or {})})

    def preview_view(self, request):
        """POST {rules, requires_consent} → {count, sample} or {errors}: the live count of the rule editor."""
        if request.method != "POST":
            return JsonResponse({"detail": "POST the rules."}, status=405)
        if not (self.has_add_permission(request) or self.has_change_permission(request)):
            raise PermissionDenied
        try:
            payload = json.loads(request.body or b"{}")
        except ValueError:
            return JsonResponse({"errors": {"rules": ["Not valid JSON."]}}, status=400)
        rules = payload.get("rules")
        requires_consent = payload.get("requires_consent") or ""
        try:
            services.segment_validate_rules(rules, code=payload.get("code") or None, requires_consent=requires_consent)
            result = selectors.preview(rules, requires_consent=requires_consent, sample_size=5)
        except ApplicationError as error:
            return JsonResponse({"errors": error.errors or {"rules": [error.message]}}, status=400)
        sample = [
            {"customer_number": row["customer_number"], "name": f"{row['first_name']} {row['last_name']}".strip()}
            for row in result["sample"]
        ]
        return JsonResponse({"count": result["count"], "sample": sample})

    def _segment_for(self, request, segment_id, permission: str) -> Segment:
        segment = get_object_or_404(Segment, pk=segment_id)
        if not may(request.user, permission, segment):
            raise PermissionDenied
        return segment

    def recalculate_view(self, request, segment_id):
        segment = self._segment_for(request, segment_id, RECALCULATE)
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:segments_segment_change", args=[segment.pk]))
        try:
            job = services.segment_request_calculation(actor=Actor.for_staff(request.user), segment_id=segment.pk)
            self.message_user(request, f"Recalculation of {segment.name} queued (job {job.pk}).", messages.SUCCESS)
        except ApplicationError as error:
            self.message_user(request, error.message, messages.ERROR)
        return HttpResponseRedirect(reverse("admin:segments_segment_change", args=[segment.pk]))

    def upload_view(self, request, segment_id):
        segment = self._segment_for(request, segment_id, MANAGE_MEMBERS)
        if segment.kind != SegmentKind.STATIC:
            self.message_user(request, "Only static segments take uploaded members.", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:segments_segment_change", args=[segment.pk]))
        form = MemberUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                result = services.segment_members_import(
                    actor=Actor.for_staff(request.user),
                    segment_id=segment.pk,
                    rows=form.cleaned_data["rows"],
                    replace=form.cleaned_data["replace"],
                )
            except ApplicationError as error:
                form.add_error(None, error.message)
            else:
                self.message_user(
                    request,
                    f"{len(result.changed)} added, {len(result.unchanged)} already members, "
                    f"{len(result.not_found)} not found, {len(result.not_consenting)} without the required consent"
                    + (f", {len(result.removed)} removed (not in the file)." if form.cleaned_data["replace"] else "."),
                    messages.SUCCESS,
                )
                if result.not_found:
                    shown = ", ".join(str(item) for item in result.not_found[:20])
                    self.message_user(request, f"Not found: {shown}", messages.WARNING)
                return HttpResponseRedirect(reverse("admin:segments_segment_change", args=[segment.pk]))
        return TemplateResponse(
            request,
            "admin/segments/segment/upload.html",
            {
                **self.admin_site.each_context(request),
                "title": f"Upload members of {segment.name}",
                "segment": segment,
                "form": form,
                "opts": self.model._meta,
            },
        )

    def export_view(self, request, segment_id):
        segment = self._segment_for(request, segment_id, EXPORT)
        consenting = selectors.segment_members(segment, consenting_only=True)
        # Member lists carry personal data: who exported whom goes to the access log (one row per member).
        customer_services.access_log_record_ids(
            user=request.user, customer_ids=consenting.values("customer_id"), action="export",
            reference=f"segment:{segment.code}",
        )
        members = (
            consenting
            .order_by("id")
            .values_list(
                "customer_id",
                "customer__customer_number",
                "customer__email",
                "customer__first_name",
                "customer__last_name",
                "joined_at",
                "score",
                "source",
            )
        )

        def rows():
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(EXPORT_COLUMNS)
            for row in members.iterator(chunk_size=2000):
                writer.writerow([*row[:5], row[5].isoformat(), row[6], row[7]])
                if buffer.tell() > 64 * 1024:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
            yield buffer.getvalue()

        response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="segment-{segment.code}-members.csv"'
        return response

    # ------------------------------------------------------------ actions

    @admin.action(description="Recalculate the selected dynamic segments")
    def recalculate_segments(self, request, queryset):
        actor = Actor.for_staff(request.user)
        queued, refused = 0, []
        for segment in queryset:
            if not segment.is_dynamic or not may(request.user, RECALCULATE, segment):
                refused.append(segment.name)
                continue
            try:
                services.segment_request_calculation(actor=actor, segment_id=segment.pk)
                queued += 1
            except ApplicationError as error:
                refused.append(f"{segment.name} ({error.message})")
        self.message_user(request, f"{queued} recalculation(s) queued.", messages.SUCCESS)
        if refused:
            self.message_user(request, "Not recalculated: " + "; ".join(refused), messages.WARNING)

    @admin.action(description="Show the overlap of the selected segments")
    def show_overlap(self, request, queryset):
        chosen = list(queryset.order_by("name")[: selectors.MAX_OVERLAP_SEGMENTS + 1])
        if not 2 <= len(chosen) <= selectors.MAX_OVERLAP_SEGMENTS:
            self.message_user(request, "Choose 2 to 10 segments.", messages.ERROR)
            return None
        counts = selectors.segments_overlap([segment.pk for segment in chosen])

        def cell(a, b):
            if a.pk == b.pk:
                return counts["sizes"][a.pk]
            return counts["pairs"].get((a.pk, b.pk), counts["pairs"].get((b.pk, a.pk)))

        table = [(row, [cell(row, column) for column in chosen]) for row in chosen]
        return TemplateResponse(
            request,
            "admin/segments/segment/overlap.html",
            {
                **self.admin_site.each_context(request),
                "title": "Segment overlap",
                "segments": chosen,
                "table": table,
                "opts": self.model._meta,
            },
        )


class MemberUploadForm(forms.Form):
    file = forms.FileField(
        help_text="CSV with a header row and one of the columns customer_id, customer_number or email (UTF-8)."
    )
    replace = forms.BooleanField(required=False, help_text="Remove the current members the file does not name")

    def clean(self):
        cleaned = super().clean()
        upload = cleaned.get("file")
        if upload is None:
            return cleaned
        if upload.size > 5 * 1024 * 1024:
            raise forms.ValidationError("At most 5 MB.")
        try:
            text = upload.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise forms.ValidationError("The file is not UTF-8 text.") from None
        reader = csv.DictReader(io.StringIO(text))
        columns = {str(name or "").strip().lower() for name in reader.fieldnames or []}
        if not columns & set(services.IDENTIFIER_COLUMNS):
            raise forms.ValidationError("The header needs a customer_id, customer_number or email column.")
        cleaned["rows"] = list(reader)
        return cleaned


class CurrentFilter(admin.SimpleListFilter):
    title = "current"
    parameter_name = "current"

    def lookups(self, request, model_admin):
        return [("yes", "Current members"), ("no", "Past members")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(left_at__isnull=True)
        if self.value() == "no":
            return queryset.filter(left_at__isnull=False)
        return queryset


@admin.register(SegmentMembership)
class SegmentMembershipAdmin(admin.ModelAdmin):
    """Who is and was in which segment: read-only (membership changes go through the services)."""

    list_display = ("customer", "segment", "joined_at", "left_at", "score", "source")
    list_filter = (CurrentFilter, "source", "segment")
    list_select_related = ("customer", "segment")
    search_fields = ("customer__customer_number", "customer__email")
    search_help_text = "Customer number or email"
    show_full_result_count = False
    list_per_page = 100
    ordering = ("-id",)
    raw_id_fields = ("customer",)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(SegmentCalculation)
class SegmentCalculationAdmin(admin.ModelAdmin):
    list_display = ("segment", "status", "trigger", "requested_by", "requested_at", "duration", "joined", "left")
    list_filter = ("status", "trigger", "segment")
    list_select_related = ("segment",)
    ordering = ("-requested_at",)
    readonly_fields = [field.name for field in SegmentCalculation._meta.fields]

    @admin.display(description="seconds")
    def duration(self, obj):
        return None if obj.duration_seconds is None else round(obj.duration_seconds, 2)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(CustomerTier)
class CustomerTierAdmin(admin.ModelAdmin):
    list_display = ("customer", "tier", "reached_at", "evaluated_at")
    list_filter = ("tier",)
    list_select_related = ("customer",)
    search_fields = ("customer__customer_number", "customer__email")
    show_full_result_count = False
    readonly_fields = ("customer", "tier", "reached_at", "qualifications", "evaluated_at")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


# ---------------------------------------------------------------- the customer page and the customer list


class AssignSegmentForm(forms.Form):
    segment = forms.ModelChoiceField(queryset=Segment.objects.none(), help_text="Static segments you may manage")

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["segment"].queryset = _manageable_static_segments(user)


def _manageable_static_segments(user):
    static = Segment.objects.filter(kind=SegmentKind.STATIC).exclude(status=SegmentStatus.INACTIVE).order_by("name")
    if user.has_perm(MANAGE_MEMBERS):
        return static
    from guardian.shortcuts import get_objects_for_user

    return get_objects_for_user(user, MANAGE_MEMBERS, klass=static, accept_global_perms=False)


def _may_manage_some_segment(user) -> bool:
    if user.has_perm(MANAGE_MEMBERS):
        return True
    from guardian.models import GroupObjectPermission, UserObjectPermission

    codename = MANAGE_MEMBERS.split(".", 1)[1]
    return (
        UserObjectPermission.objects.filter(user=user, permission__codename=codename).exists()
        or GroupObjectPermission.objects.filter(group__user=user, permission__codename=codename).exists()
    )


def _extend_customer_admin() -> None:
    """Subclass whatever admin is registered for Customer now: the tier and segments on the customer
    page, and the bulk action that puts the selected customers in a static segment."""
    from django.apps import apps

    from customers.admin import PageSection

    customer_model = apps.get_model("customers", "Customer")
    base = admin.site._registry[customer_model].__class__

    class CustomerSegmentsAdmin(base):
        actions = [*(base.actions or []), "assign_to_segment"]

        def customer_page_facts(self, request, customer):
            facts = super().customer_page_facts(request, customer)
            tier = CustomerTier.objects.filter(customer_id=customer.pk).first()
            facts.append(("Tier", tier.get_tier_display() if tier else "—"))
            return facts

        def customer_page_sections(self, request, customer):
            sections = super().customer_page_sections(request, customer)
            memberships = selectors.customer_memberships(customer.pk).select_related("segment").order_by("-joined_at")
            rows = [
                (membership.segment.name, f"since {membership.joined_at:%Y-%m-%d} ({membership.source})")
                for membership in memberships
            ]
            sections.append(PageSection("Segments", rows, empty="In no segment"))
            return sections

        @admin.action(description="Assign the selected customers to a static segment…", permissions=["assign_segment"])
        def assign_to_segment(self, request, queryset):
            form = AssignSegmentForm(request.POST if "apply" in request.POST else None, user=request.user)
            if "apply" in request.POST and form.is_valid():
                segment = form.cleaned_data["segment"]
                ids = list(queryset.values_list("pk", flat=True)[: services.MAX_BULK_MEMBERS + 1])
                try:
                    result = services.segment_members_add(
                        actor=Actor.for_staff(request.user), segment_id=segment.pk, customer_ids=ids
                    )
                except ApplicationError as error:
                    self.message_user(request, error.message, messages.ERROR)
                    return None
                self.message_user(
                    request,
                    f"{segment.name}: {len(result.changed)} added, {len(result.unchanged)} already members, "
                    f"{len(result.not_consenting)} without the required consent, {len(result.not_found)} not eligible.",
                    messages.SUCCESS,
                )
                return None
            return TemplateResponse(
                request,
                "admin/customers/customer/bulk_action.html",
                {
                    **self.admin_site.each_context(request),
                    "title": "Assign to a static segment",
                    "customers": queryset[:100],
                    "count": queryset.count(),
                    "form": form,
                    "action": request.POST.get("action"),
                    "select_across": request.POST.get("select_across", "0"),
                    "selected": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
                    "opts": self.model._meta,
                },
            )

        def has_assign_segment_permission(self, request) -> bool:
            # Asked on every customer list (several times): the model permission, or any object permission
            # to manage members (the form then lists exactly the segments it covers), once per request.
            if not hasattr(request, "_may_assign_segments"):
                request._may_assign_segments = _may_manage_some_segment(request.user)
            return request._may_assign_segments

    CustomerSegmentsAdmin.__name__ = f"{base.__name__}WithSegments"
    CustomerSegmentsAdmin.__qualname__ = CustomerSegmentsAdmin.__name__
    admin.site.unregister(customer_model)
    admin.site.register(customer_model, CustomerSegmentsAdmin)


_extend_customer_admin()
