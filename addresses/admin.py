"""Back-office for addresses: inline on the customer page and a list searchable by postal code and city.

Every write (add, edit, set default, delete) goes through `addresses.services`, so the default and
limit rules, history, events and cache invalidation are the same as through the API. The customer
page gets its address inline by re-registering the customer admin with one more inline, so the
customers app stays unaware of addresses.
"""

from __future__ import annotations

from django import forms
from django.apps import apps
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from simple_history.admin import SimpleHistoryAdmin

from addresses import selectors, services
from addresses.models import MAX_ACTIVE_ADDRESSES, Address, AddressType, kinds_of
from addresses.validation import ADDRESS_FIELDS
from customers.actor import Actor
from customers.admin import CustomerAdmin
from customers.errors import ApplicationError

DETAIL_FIELDSETS = (
    ("type", "label"),
    ("first_name", "last_name", "company"),
    "line1",
    "line2",
    ("postal_code", "city"),
    ("state", "country"),
    "phone",
    ("latitude", "longitude"),
)


def _add_service_errors(form: forms.BaseForm, error: ApplicationError) -> None:
    if not error.errors:
        form.add_error(None, error.message)
    for field, field_messages in error.errors.items():
        target = field if field in form.fields else None
        for message in field_messages:
            form.add_error(target, message if target else f"{field}: {message}")


def _mirror(target: Address, source: Address) -> None:
    """Make the admin's own object show what the service saved (the admin logs and redirects with it)."""
    for field in source._meta.concrete_fields:
        setattr(target, field.attname, getattr(source, field.attname))
    target._state.adding = False


def default_marker(address: Address) -> str:
    kinds = address.default_for
    return "★ default " + " & ".join(kinds) if kinds else "—"


class AddressForm(forms.ModelForm):
    """Validated by the same rules as the API (per country), shown on the fields."""

    make_default = forms.BooleanField(
        required=False, label="Make default", help_text="Default for every type this address serves"
    )

    class Meta:
        model = Address
        fields = ADDRESS_FIELDS

    def _post_clean(self):
        # No model validation here: the service validates and normalizes, the database enforces.
        if self.errors or not self.has_changed():
            return
        try:
            self.service_values = services.address_validate(
                {name: self.cleaned_data.get(name) for name in ADDRESS_FIELDS}
            )
        except ApplicationError as error:
            _add_service_errors(self, error)


class AddressInlineFormSet(forms.BaseInlineFormSet):
    def clean(self):
        super().clean()
        if any(self.errors):
            return
        removed = sum(1 for form in self.initial_forms if self._should_delete_form(form))
        added = sum(1 for form in self.extra_forms if form.has_changed() and not self._should_delete_form(form))
        customer_id = self.instance.pk if self.instance is not None and not self.instance._state.adding else None
        try:
            services.address_limit_check(customer_id=customer_id, adding=added, removing=removed)
        except ApplicationError as error:
            raise forms.ValidationError(error.message, code=error.code) from None


class AddressInline(admin.StackedInline):
    model = Address
    form = AddressForm
    formset = AddressInlineFormSet
    fk_name = "customer"
    extra = 0
    max_num = MAX_ACTIVE_ADDRESSES
    readonly_fields = ("default_for_display", "is_validated", "last_used_at")
    fieldsets = (
        (None, {"fields": (("default_for_display", "is_validated", "last_used_at"), *DETAIL_FIELDSETS)}),
        (None, {"fields": ("make_default",)}),
    )
    verbose_name_plural = "addresses (deleting one keeps it for order history)"

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .filter(deleted_at__isnull=True)
            .order_by("-is_default_shipping", "-is_default_billing", "-created_at")
        )

    @admin.display(description="Default")
    def default_for_display(self, obj: Address) -> str:
        if obj.pk is None or obj._state.adding:
            return "—"
        if len(obj.default_for) == len(kinds_of(obj.type)):
            return default_marker(obj)
        url = reverse("admin:addresses_address_set_default", args=[obj.pk])
        back = reverse("admin:customers_customer_change", args=[obj.customer_id])
        return format_html('{} <a href="{}?next={}">Make default…</a>', default_marker(obj), url, back)


def save_address_formset(request, *, customer_id, formset) -> None:
    """The inline's changes, each through its service; a refused one is reported, the others still apply."""
    actor = Actor.for_staff(request.user)
    formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []

    def attempt(call, **kwargs):
        try:
            return call(actor=actor, customer_id=customer_id, **kwargs)
        except ApplicationError as error:
            messages.error(request, f"Address not saved: {error.message}")
            return None

    for inline_form in formset.initial_forms:
        address = inline_form.instance
        if formset._should_delete_form(inline_form):
            attempt(services.address_delete, address_id=address.pk)
            formset.deleted_objects.append(address)
            continue
        changed = [name for name in inline_form.changed_data if name in ADDRESS_FIELDS]
        if changed:
            values = {name: inline_form.service_values[name] for name in changed}
            if attempt(services.address_update, address_id=address.pk, changes=values) is not None:
                formset.changed_objects.append((address, changed))
        if inline_form.cleaned_data.get("make_default"):
            attempt(services.address_set_default, address_id=address.pk)
    for inline_form in formset.extra_forms:
        if not inline_form.has_changed() or formset._should_delete_form(inline_form):
            continue
        created = attempt(
            services.address_create,
            make_default=inline_form.cleaned_data.get("make_default", False),
            **inline_form.service_values,
        )
        if created is not None:
            formset.new_objects.append(created)


class CustomerWithAddressesAdmin(CustomerAdmin):
    """The customer page with the address book inline."""

    inlines = [*CustomerAdmin.inlines, AddressInline]

    def customer_page_sections(self, request, customer):
        from customers.admin import PageSection

        sections = super().customer_page_sections(request, customer)
        active = list(selectors.addresses_of(customer.pk).order_by("-is_default_shipping", "-is_default_billing"))
        rows = [(f"Default {kind}", str(address)) for address in active for kind in address.default_for]
        rows.append(("Address book", f"{len(active)} address(es)"))
        sections.append(PageSection("Addresses", rows))
        return sections

    def save_formset(self, request, form, formset, change):
        if formset.model is Address:
            save_address_formset(request, customer_id=form.instance.pk, formset=formset)
            return
        super().save_formset(request, form, formset, change)


_Customer = apps.get_model("customers", "Customer")
admin.site.unregister(_Customer)
admin.site.register(_Customer, CustomerWithAddressesAdmin)


# ---------------------------------------------------------------- the address list


class LifecycleFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("active", "Active"), ("deleted", "Deleted (kept for orders)"), ("all", "All")]

    def choices(self, changelist):
        for lookup, title in self.lookup_choices:
            yield {
                "selected": (self.value() or "active") == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request, queryset):
        value = self.value() or "active"
        if value == "active":
            return queryset.filter(deleted_at__isnull=True)
        if value == "deleted":
            return queryset.filter(deleted_at__isnull=False)
        return queryset


class AddressAdminForm(AddressForm):
    class Meta:
        model = Address
        fields = ("customer", *ADDRESS_FIELDS)

    def clean(self):
        cleaned = super().clean()
        customer = cleaned.get("customer")
        adding = self.instance._state.adding and customer is not None
        if adding:
            try:
                services.address_limit_check(customer_id=customer.pk)
            except ApplicationError as error:
                raise forms.ValidationError(error.message, code=error.code) from None
        return cleaned


class SetDefaultForm(forms.Form):
    type = forms.ChoiceField(
        choices=[
            (AddressType.BOTH, "Shipping and billing"),
            (AddressType.SHIPPING, "Shipping only"),
            (AddressType.BILLING, "Billing only"),
        ],
        initial=AddressType.BOTH,
        widget=forms.RadioSelect,
    )


@admin.register(Address)
class AddressAdmin(SimpleHistoryAdmin):
    form = AddressAdminForm
    list_display = (
        "__str__",
        "customer_link",
        "type",
        "default_for_display",
        "postal_code",
        "city",
        "country",
        "is_validated",
        "updated_at",
    )
    list_filter = (LifecycleFilter, "type", "is_validated", "country")
    search_fields = ("postal_code", "city")
    search_help_text = "Partial postal code or city"
    list_select_related = ("customer",)
    list_per_page = 50
    show_full_result_count = False
    ordering = ("-created_at",)
    autocomplete_fields = ("customer",)
    readonly_fields = ("default_for_display", "is_validated", "last_used_at", "created_at", "updated_at", "deleted_at")
    history_list_display = ["history_actor", "history_change_reason"]
    actions = ["make_default_action", "delete_addresses"]

    def get_fieldsets(self, request, obj=None):
        return (
            (None, {"fields": ("customer", *DETAIL_FIELDSETS)}),
            ("Defaults", {"fields": ("default_for_display", "make_default")}),
            ("System", {"fields": (("is_validated", "last_used_at"), ("created_at", "updated_at", "deleted_at"))}),
        )

    def get_readonly_fields(self, request, obj=None):
        readonly = list(self.readonly_fields)
        if obj is not None:
            readonly.append("customer")
        return readonly

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # a bulk delete would skip the service; ours goes through it
        return actions

    def has_change_permission(self, request, obj=None) -> bool:
        if obj is not None and obj.deleted_at is not None:
            return False  # kept for order history, read-only until erasure removes it
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        if obj is not None and obj.deleted_at is not None:
            return False
        return super().has_delete_permission(request, obj)

    @admin.display(description="Customer", ordering="customer__customer_number")
    def customer_link(self, obj: Address) -> str:
        url = reverse("admin:customers_customer_change", args=[obj.customer_id])
        return format_html('<a href="{}">{}</a>', url, obj.customer)

    @admin.display(description="Default")
    def default_for_display(self, obj: Address) -> str:
        return default_marker(obj)

    def save_model(self, request, obj, form, change):
        actor = Actor.for_staff(request.user)
        make_default = form.cleaned_data.get("make_default", False)
        values = getattr(form, "service_values", None)
        if not change:
            saved = services.address_create(
                actor=actor, customer_id=form.cleaned_data["customer"].pk, make_default=make_default, **values
            )
        else:
            saved = obj
            changed = [name for name in form.changed_data if name in ADDRESS_FIELDS]
            if changed:
                saved = services.address_update(
                    actor=actor,
                    customer_id=obj.customer_id,
                    address_id=obj.pk,
                    changes={name: values[name] for name in changed},
                )
            if make_default:
                saved = services.address_set_default(actor=actor, customer_id=obj.customer_id, address_id=obj.pk)
        _mirror(obj, saved)
        form.instance = obj

    def save_related(self, request, form, formsets, change):
        pass  # no related objects; the service saved everything

    def delete_model(self, request, obj):
        services.address_delete(actor=Actor.for_staff(request.user), customer_id=obj.customer_id, address_id=obj.pk)

    def delete_queryset(self, request, queryset):
        actor = Actor.for_staff(request.user)
        for address in queryset.filter(deleted_at__isnull=True):
            services.address_delete(actor=actor, customer_id=address.customer_id, address_id=address.pk)

    @admin.action(description="Make the selected addresses the default (for their types)", permissions=["change"])
    def make_default_action(self, request, queryset):
        actor = Actor.for_staff(request.user)
        done = 0
        for address in queryset.filter(deleted_at__isnull=True):
            try:
                services.address_set_default(actor=actor, customer_id=address.customer_id, address_id=address.pk)
                done += 1
            except ApplicationError as error:
                self.message_user(request, f"{address}: {error.message}", messages.ERROR)
        self.message_user(request, f"{done} address(es) now default.", messages.SUCCESS)

    @admin.action(description="Delete the selected addresses (kept for order history)", permissions=["delete"])
    def delete_addresses(self, request, queryset):
        actor = Actor.for_staff(request.user)
        done = 0
        for address in queryset.filter(deleted_at__isnull=True):
            try:
                services.address_delete(actor=actor, customer_id=address.customer_id, address_id=address.pk)
                done += 1
            except ApplicationError as error:
                self.message_user(request, f"{address}: {error.message}", messages.ERROR)
        self.message_user(request, f"{done} address(es) deleted.", messages.SUCCESS)

    # ------------------------------------------------------------ set default with a choice of type

    def get_urls(self):
        own = [
            path(
                "<uuid:address_id>/set-default/",
                self.admin_site.admin_view(self.set_default_view),
                name="addresses_address_set_default",
            )
        ]
        return own + super().get_urls()

    def set_default_view(self, request, address_id):
        address = Address.objects.filter(pk=address_id, deleted_at__isnull=True).select_related("customer").first()
        if address is None:
            return HttpResponseRedirect(reverse("admin:addresses_address_changelist"))
        if not self.has_change_permission(request, address):
            raise PermissionDenied
        back = request.GET.get("next") or reverse("admin:addresses_address_change", args=[address.pk])
        if not back.startswith("/admin/"):
            back = reverse("admin:addresses_address_change", args=[address.pk])
        form = SetDefaultForm(request.POST or None, initial={"type": address.type})
        if address.type != AddressType.BOTH:
            form.fields["type"].choices = [(kind, f"Default {kind} address") for kind in kinds_of(address.type)]
        if request.method == "POST" and form.is_valid():
            try:
                services.address_set_default(
                    actor=Actor.for_staff(request.user),
                    customer_id=address.customer_id,
                    address_id=address.pk,
                    kind=form.cleaned_data["type"],
                )
            except ApplicationError as error:
                form.add_error(None, error.message)
            else:
                self.message_user(request, f"{address} is now a default address.", messages.SUCCESS)
                return HttpResponseRedirect(back)
        return TemplateResponse(
            request,
            "admin/addresses/address/set_default.html",
            {
                **self.admin_site.each_context(request),
                "title": "Make this the default address",
                "address": address,
                "form": form,
                "opts": self.model._meta,
                "next": back,
            },
        )
