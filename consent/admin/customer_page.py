"""The customer page: consent state and full record, read-only, and the audit export action."""

from __future__ import annotations

import logging

from django.apps import apps
from django.contrib import admin

from consent.admin.export import consent_records_csv
from consent.models import ConsentRecord, ConsentState
from customers import services as customer_services

logger = logging.getLogger(__name__)


class _ReadOnlyInline(admin.TabularInline):
    extra = 0
    max_num = 0
    can_delete = False

    def get_readonly_fields(self, request, obj=None):
        return self.fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ConsentStateInline(_ReadOnlyInline):
    model = ConsentState
    fields = ("purpose", "status", "policy_version", "source", "granted_at", "valid_until", "updated_at")
    verbose_name = "consent"
    verbose_name_plural = "consent: current state per purpose"

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("purpose", "policy_version__purpose")  # a version's name includes its purpose
            .order_by("purpose__display_order")
        )


class ConsentRecordInline(_ReadOnlyInline):
    model = ConsentRecord
    fk_name = "customer"
    fields = (
        "occurred_at",
        "purpose",
        "previous_status",
        "status",
        "policy_version",
        "source",
        "trigger",
        "actor",
        "ip_address",
        "user_agent",
        "reason",
    )
    classes = ("collapse",)
    verbose_name = "consent record"
    verbose_name_plural = "consent record (every change, newest first)"

    def get_queryset(self, request):
        return (
            super().get_queryset(request).select_related("purpose", "policy_version__purpose").order_by("-occurred_at")
        )


def _extend_customer_admin() -> None:
    """Subclass whatever admin is registered for Customer now (another app may have extended it)
    and add the consent inlines and the audit export."""
    customer_model = apps.get_model("customers", "Customer")
    base = admin.site._registry[customer_model].__class__

    class CustomerConsentAdmin(base):
        inlines = [*base.inlines, ConsentStateInline, ConsentRecordInline]
        actions = [*(base.actions or []), "export_consent_records"]

        def get_inline_instances(self, request, obj=None):
            instances = super().get_inline_instances(request, obj)
            if obj is None:  # nothing recorded before the customer exists
                instances = [i for i in instances if not isinstance(i, (ConsentStateInline, ConsentRecordInline))]
            return instances

        @admin.action(
            description="Export consent records of selected customers as CSV (audit)", permissions=["export_consent"]
        )
        def export_consent_records(self, request, queryset):
            logger.info("consent records exported by staff:%s", request.user.get_username())
            customer_services.access_log_record_ids(
                user=request.user, customer_ids=queryset.values("pk"), action="export", reference="consent-records"
            )
            return consent_records_csv(
                ConsentRecord.objects.filter(customer_id__in=queryset.values("pk")),
                filename_prefix="consent-records-customers",
            )

        def has_export_consent_permission(self, request) -> bool:
            return request.user.has_perm("consent.export_consentrecord")

        def customer_page_sections(self, request, customer):
            from customers.admin import PageSection

            sections = super().customer_page_sections(request, customer)
            states = ConsentState.objects.filter(customer_id=customer.pk).select_related("purpose")
            rows = []
            for state in sorted(states, key=lambda one: (one.purpose.display_order, one.purpose.code)):
                until = f" until {state.valid_until:%Y-%m-%d}" if state.valid_until else ""
                rows.append((state.purpose.name, state.status + until))
            sections.append(PageSection("Consent", rows, empty="Nothing recorded"))
            return sections

    CustomerConsentAdmin.__name__ = f"{base.__name__}WithConsent"
    CustomerConsentAdmin.__qualname__ = CustomerConsentAdmin.__name__
    admin.site.unregister(customer_model)
    admin.site.register(customer_model, CustomerConsentAdmin)


_extend_customer_admin()
