"""Compliance back-office: the request queue, its actions, exports, the erasure log, retention report."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Case, IntegerField, Value, When
from django.http import FileResponse, Http404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from simple_history.admin import SimpleHistoryAdmin

from customers import services as customer_services
from customers.actor import Actor
from customers.errors import ApplicationError
from privacy import retention, services
from privacy.models import OPEN_STATUSES, DataSubjectRequest, ErasureLog, RequestStatus


class DueFilter(admin.SimpleListFilter):
    title = "deadline"
    parameter_name = "due"

    def lookups(self, request, model_admin):
        return [("overdue", "Overdue"), ("week", "Due within 7 days")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "overdue":
            return queryset.filter(status__in=OPEN_STATUSES, due_at__lt=now)
        if self.value() == "week":
            return queryset.filter(status__in=OPEN_STATUSES, due_at__gte=now, due_at__lt=now + timedelta(days=7))
        return queryset


class ReasonForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=2000)
    months = forms.IntegerField(min_value=1, max_value=2, required=False, help_text="Only for extensions")


@admin.register(DataSubjectRequest)
class DataSubjectRequestAdmin(SimpleHistoryAdmin):
    list_display = ("short_id", "customer", "kind", "status", "received_at", "due_at", "deadline", "download")
    list_filter = (DueFilter, "status", "kind", "received_at")
    search_fields = ("customer__customer_number", "customer__email", "id")
    list_select_related = ("customer",)
    readonly_fields = (
        "customer",
        "kind",
        "status",
        "received_at",
        "due_at",
        "extension_months",
        "extension_reason",
        "completed_at",
        "filed_by",
        "handled_by",
        "status_reason",
        "result_file",
        "result_expires_at",
        "updated_at",
    )
    fields = (*readonly_fields[:10], "notes", *readonly_fields[10:])
    history_list_display = ["history_actor", "history_change_reason"]
    actions = [
        "start_export",
        "approve_erasure",
        "put_on_hold",
        "extend_deadline",
        "reject",
        "complete",
        "lift_restriction",
    ]

    def get_queryset(self, request):
        # Open requests first, the most urgent at the top; closed ones after.
        return (
            super()
            .get_queryset(request)
            .annotate(
                is_closed=Case(
                    When(status__in=OPEN_STATUSES, then=Value(0)), default=Value(1), output_field=IntegerField()
                )
            )
            .order_by("is_closed", "due_at")
        )

    def has_add_permission(self, request) -> bool:
        return False  # requests are filed by the customer (API) or from the customer page

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="id")
    def short_id(self, obj):
        return str(obj.id)[:8]

    @admin.display(description="deadline")
    def deadline(self, obj):
        if not obj.is_open:
            return "—"
        days = (obj.due_at - timezone.now()).days
        if days < 0:
            return format_html('<strong style="color:#ba2121">overdue by {} day(s)</strong>', -days)
        return f"{days} day(s) left"

    @admin.display(description="export")
    def download(self, obj):
        if not obj.result_file:
            return ""
        return format_html('<a href="{}">download</a>', reverse("admin:privacy_download_export", args=[obj.pk]))

    def get_urls(self):
        return [
            path(
                "<uuid:request_id>/download/",
                self.admin_site.admin_view(self.download_view),
                name="privacy_download_export",
            ),
            path(
                "retention-report/",
                self.admin_site.admin_view(self.retention_report_view),
                name="privacy_retention_report",
            ),
            *super().get_urls(),
        ]

    def download_view(self, request, request_id):
        if not request.user.has_perm("privacy.download_export"):
            raise PermissionDenied
        privacy_request = DataSubjectRequest.objects.filter(pk=request_id).exclude(result_file="").first()
        if privacy_request is None or not Path(privacy_request.result_file).exists():
            raise Http404("No export file for this request.")
        services.privacy_export_downloaded(actor=Actor.for_staff(request.user), request=privacy_request)
        customer_services.access_log_record(
            user=request.user, customer_id=privacy_request.customer_id, action="download", reference=privacy_request.pk
        )
        return FileResponse(
            open(privacy_request.result_file, "rb"),
            as_attachment=True,
            filename=Path(privacy_request.result_file).name,
            content_type="application/json",
        )

    def retention_report_view(self, request):
        if not request.user.has_perm("privacy.view_retention_report"):
            raise PermissionDenied
        counts = retention.apply_retention(actor=Actor.for_staff(request.user), dry_run=True)
        return TemplateResponse(
            request,
            "admin/privacy/retention_report.html",
            {
                **self.admin_site.each_context(request),
                "title": "Retention: what the next sweep would do",
                "counts": counts,
                "policies": services.retention_policies(),
            },
        )

    def _each(self, request, queryset, call, done_message):
        actor = Actor.for_staff(request.user)
        done = 0
        for privacy_request in queryset:
            try:
                call(actor, privacy_request)
                done += 1
            except ApplicationError as error:
                self.message_user(request, f"{privacy_request}: {error.message}", messages.ERROR)
        if done:
            self.message_user(request, f"{done} request(s) {done_message}.", messages.SUCCESS)

    def _with_reason(self, request, queryset, title, call, done_message, ask_months=False):
        if "apply" in request.POST:
            form = ReasonForm(request.POST)
            if form.is_valid():
                self._each(request, queryset, lambda actor, r: call(actor, r, form.cleaned_data), done_message)
                return None
        else:
            form = ReasonForm()
        if not ask_months:
            del form.fields["months"]
        return TemplateResponse(
            request,
            "admin/privacy/reason.html",
            {
                **self.admin_site.each_context(request),
                "title": title,
                "requests": queryset,
                "form": form,
                "action": request.POST.get("action"),
                "opts": self.model._meta,
            },
        )

    @admin.action(description="Start (or regenerate) the export", permissions=["change"])
    def start_export(self, request, queryset):
        def export(actor, privacy_request):
            services.privacy_export_start(actor=actor, request_id=privacy_request.pk)  # a Celery job, on commit
            customer_services.access_log_record(
                user=request.user,
                customer_id=privacy_request.customer_id,
                action="export",
                reference=privacy_request.pk,
            )

        self._each(request, queryset, export, "queued for export")

    @admin.action(description="Approve and run the erasure", permissions=["approve_erasure"])
    def approve_erasure(self, request, queryset):
        self._each(
            request,
            queryset,
            lambda actor, r: services.privacy_approve_erasure(actor=actor, request_id=r.pk),
            "approved for erasure",
        )

    @admin.action(description="Put on hold (with a reason)", permissions=["change"])
    def put_on_hold(self, request, queryset):
        return self._with_reason(
            request,
            queryset,
            "Put requests on hold",
            lambda actor, r, data: services.privacy_request_transition(
                actor=actor, request_id=r.pk, to=RequestStatus.ON_HOLD, reason=data["reason"]
            ),
            "put on hold",
        )

    @admin.action(description="Extend the deadline (with a reason)", permissions=["change"])
    def extend_deadline(self, request, queryset):
        return self._with_reason(
            request,
            queryset,
            "Extend the deadline",
            lambda actor, r, data: services.privacy_request_extend(
                actor=actor, request_id=r.pk, months=data.get("months") or 1, reason=data["reason"]
            ),
            "extended",
            ask_months=True,
        )

    @admin.action(description="Reject (with a reason)", permissions=["change"])
    def reject(self, request, queryset):
        return self._with_reason(
            request,
            queryset,
            "Reject requests",
            lambda actor, r, data: services.privacy_request_transition(
                actor=actor, request_id=r.pk, to=RequestStatus.REJECTED, reason=data["reason"]
            ),
            "rejected",
        )

    @admin.action(description="Mark done (rectification handled by hand)", permissions=["change"])
    def complete(self, request, queryset):
        self._each(
            request,
            queryset,
            lambda actor, r: services.privacy_request_complete_manually(actor=actor, request_id=r.pk),
            "completed",
        )

    @admin.action(description="Lift the restriction (with a reason)", permissions=["change"])
    def lift_restriction(self, request, queryset):
        return self._with_reason(
            request,
            queryset,
            "Lift the processing restriction",
            lambda actor, r, data: services.privacy_request_lift_restriction(
                actor=actor, request_id=r.pk, reason=data["reason"]
            ),
            "lifted",
        )

    def has_approve_erasure_permission(self, request) -> bool:
        return request.user.has_perm("privacy.approve_erasure")


@admin.register(ErasureLog)
class ErasureLogAdmin(admin.ModelAdmin):
    list_display = ("performed_at", "trigger", "customer_id", "performed_by", "counts")
    list_filter = ("trigger", "performed_at")
    search_fields = ("customer_id",)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


# ---------------------------------------------------------------- the customer page


def _extend_customer_admin() -> None:
    """Subclass whatever admin is registered for Customer now: an "erasure pending" flag and the open
    privacy requests on the customer page."""
    from django.apps import apps

    from customers.admin import PageFlag, PageSection

    customer_model = apps.get_model("customers", "Customer")
    base = admin.site._registry[customer_model].__class__

    class CustomerPrivacyAdmin(base):
        def _open_requests(self, customer):
            if not hasattr(customer, "_open_privacy_requests"):  # one query for the flag and the section
                found = DataSubjectRequest.objects.filter(customer_id=customer.pk, status__in=OPEN_STATUSES)
                customer._open_privacy_requests = list(found.order_by("due_at"))
            return customer._open_privacy_requests

        def customer_page_flags(self, request, customer):
            flags = super().customer_page_flags(request, customer)
            if any(item.kind == "erasure" for item in self._open_requests(customer)):
                url = reverse("admin:privacy_datasubjectrequest_changelist")
                flags.append(PageFlag("Erasure pending", "error", f"{url}?q={customer.customer_number}"))
            return flags

        def customer_page_sections(self, request, customer):
            sections = super().customer_page_sections(request, customer)
            rows = [
                (item.get_kind_display(), f"{item.get_status_display()}, due {item.due_at:%Y-%m-%d}")
                for item in self._open_requests(customer)
            ]
            link = None
            if request.user.has_perm("privacy.view_datasubjectrequest"):
                url = reverse("admin:privacy_datasubjectrequest_changelist")
                link = (f"{url}?q={customer.customer_number}", "All privacy requests")
            sections.append(PageSection("Open privacy requests", rows, empty="None", link=link))
            return sections

    CustomerPrivacyAdmin.__name__ = f"{base.__name__}WithPrivacy"
    CustomerPrivacyAdmin.__qualname__ = CustomerPrivacyAdmin.__name__
    admin.site.unregister(customer_model)
    admin.site.register(customer_model, CustomerPrivacyAdmin)


_extend_customer_admin()
