"""The consent record (read-only, filterable, exportable) and the current state per customer and purpose."""

from __future__ import annotations

import logging
from uuid import UUID

from django.contrib import admin

from consent import selectors
from consent.admin.export import consent_records_csv, customer_number_subquery
from consent.models import ConsentRecord, ConsentState
from customers import selectors as customer_selectors
from customers import services as customer_services
from customers.actor import Actor

logger = logging.getLogger(__name__)
_STAFF_READ = Actor.system("consent_admin")  # the admin's own permissions decide who sees this list


def _customer_search(queryset, term: str):
    term = term.strip()
    if not term:
        return queryset
    try:
        return queryset.filter(customer_id=UUID(term))
    except ValueError:
        pass
    customers = customer_selectors.customers_visible_to(_STAFF_READ)
    if "@" in term:
        customers = customer_selectors.with_email(customers, term)
    else:
        customers = customers.filter(customer_number__iexact=term)
    return queryset.filter(customer_id__in=customers.values("pk"))


@admin.register(ConsentRecord)
class ConsentRecordAdmin(admin.ModelAdmin):
    list_display = (
        "occurred_at",
        "customer_link",
        "purpose",
        "previous_status",
        "status",
        "source",
        "trigger",
        "policy_version",
        "actor",
    )
    list_filter = ("purpose", "status", "source", "trigger", "implicit", "occurred_at")
    list_select_related = ("purpose", "policy_version")
    search_fields = ("actor",)  # see get_search_results
    search_help_text = "Customer id, customer number or exact email"
    show_full_result_count = False
    list_per_page = 100
    ordering = ("-occurred_at", "-recorded_at")
    actions = ["export_csv"]
    fields = (
        ("customer", "purpose"),
        ("previous_status", "status", "implicit", "trigger"),
        ("occurred_at", "recorded_at", "valid_until"),
        ("source", "actor"),
        ("ip_address", "user_agent"),
        "reason",
        "policy_version",
        "redacted_at",
    )

    def get_readonly_fields(self, request, obj=None):
        return [name for row in self.fields for name in (row if isinstance(row, tuple) else (row,))]

    def get_search_results(self, request, queryset, search_term):
        return _customer_search(queryset, search_term), False

    def get_queryset(self, request):
        # No join on the customer: the record's customer column has no foreign-key constraint.
        return super().get_queryset(request).annotate(customer_number=customer_number_subquery())

    @admin.display(description="customer", ordering="customer_id")
    def customer_link(self, record) -> str:
        return record.customer_number or str(record.customer_id)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_export_permission(self, request) -> bool:
        return request.user.has_perm("consent.export_consentrecord")

    @admin.action(description="Export selected consent records as CSV (audit)", permissions=["export"])
    def export_csv(self, request, queryset):
        logger.info("consent records exported by staff:%s", request.user.get_username())
        records = ConsentRecord.objects.filter(pk__in=queryset.values("pk"))
        customer_services.access_log_record_ids(
            user=request.user,
            customer_ids=records.values("customer_id").distinct(),
            action="export",
            reference="consent-records",
        )
        return consent_records_csv(records)


class NeedsRenewalFilter(admin.SimpleListFilter):
    title = "needs renewal"
    parameter_name = "needs_renewal"

    def lookups(self, request, model_admin):
        return (("yes", "Yes"), ("no", "No"))

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(needs_renewal=True)
        if self.value() == "no":
            return queryset.filter(needs_renewal=False)
        return queryset


@admin.register(ConsentState)
class ConsentStateAdmin(admin.ModelAdmin):
    list_display = (
        "customer_link",
        "purpose",
        "status",
        "policy_version",
        "granted_at",
        "valid_until",
        "needs_renewal_flag",
        "updated_at",
    )
    list_filter = (NeedsRenewalFilter, "purpose", "status", "source")
    ordering = ("-id",)  # the primary key: cheap on millions of rows
    show_full_result_count = False
    list_per_page = 100
    search_fields = ("status",)  # see get_search_results
    search_help_text = "Customer id, customer number or exact email"
    fields = (
        "customer",
        "purpose",
        "status",
        "policy_version",
        "source",
        "granted_at",
        "valid_until",
        "updated_at",
        "last_record",
    )
    readonly_fields = fields

    def get_queryset(self, request):
        return selectors.consent_states().select_related("customer")

    def get_search_results(self, request, queryset, search_term):
        return _customer_search(queryset, search_term), False

    @admin.display(description="customer", ordering="customer__customer_number")
    def customer_link(self, state) -> str:
        return state.customer.customer_number

    @admin.display(boolean=True, description="needs renewal")
    def needs_renewal_flag(self, state) -> bool:
        return state.needs_renewal

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
