"""Back-office for customer-service reps: every write goes through `customers.services`."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets, unquote
from django.contrib.admin.views.main import ORDER_VAR
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import F, Func, IntegerField, Q, UUIDField, Value
from django.http import Http404, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from import_export.admin import ImportMixin
from simple_history.admin import SimpleHistoryAdmin

from customers import activity, bulk_export, notes, selectors, services
from customers.actor import Actor
from customers.duplicates import open_duplicates_of
from customers.errors import ApplicationError
from customers.extensions import HistoryEntry, apply_preference_views, history_sources
from customers.importing import CustomerResource
from customers.merge import BOTH, MERGED, SURVIVOR, merge_undoable, mergeable_fields
from customers.messaging import inbound
from customers.models import (
    AccessAction,
    AccessLog,
    Customer,
    CustomerActivity,
    CustomerExportJob,
    CustomerMerge,
    CustomerNote,
    CustomerPreferences,
    CustomerStatus,
    CustomerStatusChange,
    DeadLetter,
    DeadLetterStatus,
    DuplicateCandidate,
    DuplicateReason,
    DuplicateStatus,
    ExportFormat,
    NoteKind,
    OutboxEvent,
)

BULK_ACTION_LIMIT = 5_000  # customers changed one by one through the services per action
COUNT_CAP = 250  # the customer list counts its rows (and a search collects its matches) up to this many: 5 pages
RECENT_HISTORY = 15
TIMELINE_PAGE_SIZE = 20  # activity entries per page of the customer page's timeline
TIMELINE_VAR = "timeline"  # the customer page's query parameter: the timeline page's cursor

METRIC_FIELDS = (
    "order_count",
    "open_order_count",
    "total_spent",
    "spent_currency",
    "average_order_value",
    "last_order_at",
    "loyalty_points",
    "satisfaction_score",
    "profile_completeness",
)
SYSTEM_FIELDS = ("customer_number", "status", "version", "created_at", "updated_at", "last_activity_at")


def _add_service_errors(form: forms.BaseForm, error: ApplicationError) -> None:
    if not error.errors:
        form.add_error(None, error.message)
    for field, field_messages in error.errors.items():
        target = field if field in form.fields else None
        for message in field_messages:
            form.add_error(target, message)


class CustomerAdminForm(forms.ModelForm):
    class Meta:
        model = Customer
        fields = services.PROFILE_FIELDS

    def _post_clean(self):
        # Validate through the same rules the service applies, and show them on the fields.
        if self.errors:
            return
        adding = self.instance._state.adding
        names = services.PROFILE_FIELDS if adding else self.changed_data
        values = {name: self.cleaned_data[name] for name in names if name in self.cleaned_data}
        values = {name: value for name, value in values.items() if name in services.PROFILE_FIELDS}
        if not adding and not values:
            return
        try:
            self.service_values = services.customer_validate_profile(
                values, customer_id=None if self.instance._state.adding else self.instance.pk
            )
        except ApplicationError as error:
            _add_service_errors(self, error)


class PreferencesFormSet(forms.BaseInlineFormSet):
    """Shows the opt-ins as consent has them (the form starts from them, so a change is measured against them)."""

    def get_queryset(self):
        if not hasattr(self, "_shown"):
            self._shown = list(super().get_queryset())
            apply_preference_views(self._shown)
        return self._shown


class PreferencesForm(forms.ModelForm):
    """Checked by the service's own rules (language, currency, time zone, custom): errors show on the fields
    and nothing is saved, instead of the service refusing the save later (an HTTP 500)."""

    class Meta:
        model = CustomerPreferences
        fields = services.PREFERENCE_FIELDS

    def _post_clean(self):
        super()._post_clean()
        self.service_values = {}
        if self.errors:
            return
        changed = {name: self.cleaned_data[name] for name in self.changed_data if name in services.PREFERENCE_FIELDS}
        if not changed:
            return
        try:
            self.service_values = services.customer_preferences_validate(changed)
        except ApplicationError as error:
            _add_service_errors(self, error)


class PreferencesInline(admin.StackedInline):
    model = CustomerPreferences
    form = PreferencesForm
    formset = PreferencesFormSet
    can_delete = False
    max_num = 1
    min_num = 1
    readonly_fields = ("updated_at",)
    fieldsets = (
        (None, {"fields": (("language", "currency", "timezone", "theme"),)}),
        ("Marketing opt-ins", {"fields": (("email_opt_in", "sms_opt_in", "push_opt_in", "direct_mail_opt_in"),)}),
        (
            "Notifications",
            {"fields": (("notify_order_updates", "notify_promotions", "notify_newsletters", "notify_system_alerts"),)},
        ),
        ("Privacy", {"fields": (("data_sharing", "analytics_tracking", "personalization", "third_party_sharing"),)}),
        (None, {"fields": ("custom", "updated_at")}),
    )


class StatusChangeInline(admin.TabularInline):
    model = CustomerStatusChange
    extra = 0
    can_delete = False
    fields = ("occurred_at", "from_status", "to_status", "reason", "actor")
    readonly_fields = fields
    verbose_name_plural = "status changes"

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class StatusReasonForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=1000)


def _kind_choices(user) -> list[tuple[str, str]]:
    allowed = user.has_perm("customers.view_compliance_note")
    return [choice for choice in NoteKind.choices if allowed or choice[0] != NoteKind.COMPLIANCE]


class NoteForm(forms.ModelForm):
    class Meta:
        model = CustomerNote
        fields = ("kind", "text", "is_pinned")
        widgets = {"text": forms.Textarea(attrs={"rows": 2, "cols": 70})}


class NoteInline(admin.TabularInline):
    """Notes on the customer page: pinned first; compliance notes only for those who may see them."""

    model = CustomerNote
    form = NoteForm
    extra = 1
    fields = ("is_pinned", "kind", "text", "written_by", "updated_at")
    readonly_fields = ("written_by", "updated_at")
    verbose_name_plural = "notes (pinned first)"

    def get_queryset(self, request):
        return notes.notes_visible_to(Actor.for_staff(request.user)).order_by("-is_pinned", "-created_at", "-id")

    def get_formset(self, request, obj=None, **kwargs):
        formset = super().get_formset(request, obj, **kwargs)
        formset.form.base_fields["kind"].choices = _kind_choices(request.user)
        return formset


def save_note_formset(request, *, customer_id, formset) -> None:
    """The inline's notes, each through its service; a refused one is reported, the others still apply."""
    actor = Actor.for_staff(request.user)
    formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []

    def attempt(call, **kwargs):
        try:
            return call(actor=actor, customer_id=customer_id, **kwargs)
        except ApplicationError as error:
            messages.error(request, f"Note not saved: {error.message}")
            return None

    for inline_form in formset.initial_forms:
        note = inline_form.instance
        if formset._should_delete_form(inline_form):
            attempt(services.note_delete, note_id=note.pk)
            formset.deleted_objects.append(note)
        elif inline_form.has_changed():
            changes = {name: inline_form.cleaned_data[name] for name in inline_form.changed_data}
            if attempt(services.note_update, note_id=note.pk, changes=changes) is not None:
                formset.changed_objects.append((note, list(changes)))
    for inline_form in formset.extra_forms:
        if not inline_form.has_changed() or formset._should_delete_form(inline_form):
            continue
        values = {name: inline_form.cleaned_data.get(name) for name in ("kind", "text", "is_pinned")}
        created = attempt(services.note_create, **values)
        if created is not None:
            formset.new_objects.append(created)


# ---------------------------------------------------------------- the customer page (customer 360)


@dataclass
class PageFlag:
    label: str
    level: str = "info"  # info | warning | error
    url: str = ""


@dataclass
class PageSection:
    """A box of the customer page's summary; higher apps add theirs by extending `customer_page_sections`."""

    title: str
    rows: list[tuple[str, Any]] = dataclass_field(default_factory=list)
    empty: str = "—"
    link: tuple[str, str] | None = None  # (url, label)


def _money(amount, currency) -> str:
    return f"{amount:,.2f} {currency}"


class ArrayPosition(Func):
    """`array_position(<ids>, <column>)`: where a row's id sits in a list found beforehand (to keep its order)."""

    function = "array_position"
    output_field = IntegerField()

    def __init__(self, ids, column):
        super().__init__(Value(list(ids), output_field=ArrayField(UUIDField())), F(column))


class CappedCountPaginator(Paginator):
    """Counts up to COUNT_CAP rows: the changelist then says "more than 1,000" instead of counting a million.

    A count reads every matching row; a capped one stops after COUNT_CAP + 1. After a search, `ids`
    holds the matches in the order to show: a page is then read by primary key.
    """

    ids: list | None = None
    unsearched = None  # the list's queryset before the search: a page is read from it by primary key

    @cached_property
    def count(self) -> int:
        if self.ids is not None:
            return len(self.ids)
        return self.object_list.order_by().values("pk")[: COUNT_CAP + 1].count()

    def page(self, number):
        if self.ids is None:
            return super().page(number)
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        # Just this page's rows, by primary key and in their place (not a query naming every match twice).
        return self._get_page(_in_order(self.unsearched, self.ids[bottom : bottom + self.per_page]), number, self)


def _in_order(customers, ids: list):
    """These customers in the order of `ids`."""
    return customers.filter(pk__in=ids).annotate(search_position=ArrayPosition(ids, "pk")).order_by("search_position")


def _plain_ordering(order_by) -> list[str] | None:
    """The list's ordering as field names (`-created_at`), or None when it holds expressions."""
    names = list(order_by or ("-created_at", "-pk"))
    return names if all(isinstance(name, str) and "__" not in name for name in names) else None


class PossibleDuplicateFilter(admin.SimpleListFilter):
    title = "possible duplicate"
    parameter_name = "duplicate"

    def lookups(self, request, model_admin):
        return [("yes", "Has an open duplicate candidate")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            open_pairs = DuplicateCandidate.objects.filter(status=DuplicateStatus.OPEN)
            return queryset.filter(
                Q(pk__in=open_pairs.values("customer_id")) | Q(pk__in=open_pairs.values("other_id"))
            )
        return queryset


class TagForm(forms.Form):
    tag = forms.CharField(max_length=50, help_text="Letters, digits and . : / - (as on the customer)")


class ReasonOnlyForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=1000)


@admin.register(Customer)
class CustomerAdmin(ImportMixin, SimpleHistoryAdmin):
    form = CustomerAdminForm
    list_display = ("customer_number", "full_name", "email", "phone", "status", "customer_type", "created_at")
    list_filter = ("status", "customer_type", "registration_source", PossibleDuplicateFilter, "created_at")
    search_fields = ("email",)  # the real search is `selectors.customer_search`, see get_search_results
    search_help_text = (
        "Partial name, email, phone (any format), customer number, postal code or external id; exact matches first"
    )
    list_per_page = 50
    show_full_result_count = False  # a COUNT(*) over a million rows on every page is not worth it
    ordering = ("-created_at",)
    readonly_fields = SYSTEM_FIELDS + METRIC_FIELDS
    inlines = [PreferencesInline, NoteInline, StatusChangeInline]
    history_list_display = ["history_actor", "history_change_reason"]
    actions = [
        "suspend_customers",
        "reactivate_customers",
        "merge_two_customers",
        "add_tag",
        "remove_tag",
        "deactivate_customers",
        "export_csv",
        "export_xlsx",
    ]
    resource_classes = [CustomerResource]
    fieldsets = (
        (
            "Identity",
            {
                "fields": (
                    "customer_number",
                    "status",
                    ("email", "email_verified"),
                    ("first_name", "last_name"),
                    ("phone", "phone_verified"),
                    ("date_of_birth", "gender"),
                    ("customer_type", "company_name"),
                )
            },
        ),
        (
            "Registration",
            {
                "fields": (
                    ("registration_source", "registered_at"),
                    "external_id",
                    "tags",
                    ("last_login_at", "last_activity_at"),
                )
            },
        ),
        (
            "Purchase metrics",
            {
                "fields": (
                    ("order_count", "open_order_count", "total_spent", "spent_currency"),
                    ("average_order_value", "last_order_at"),
                    ("loyalty_points", "satisfaction_score"),
                    "profile_completeness",
                )
            },
        ),
        ("Extra data", {"classes": ("collapse",), "fields": ("metadata", "custom_attributes")}),
        ("System", {"fields": (("version", "created_at", "updated_at"),)}),
    )

    def get_search_results(self, request, queryset, search_term):
        results = selectors.customer_search(queryset, search_term)
        ordering = _plain_ordering(queryset.query.order_by)
        if not (search_term or "").strip() or request.method != "GET" or ordering is None:
            return results, False  # actions (POST) act on every match, uncapped
        # One query collects the matches, at most COUNT_CAP + 1 of them, without sorting them in SQL (a
        # sort would read every match of a common name). They are ordered here: the exact match first
        # (unless a column header was clicked), then the list's order. The page reads its rows by primary
        # key and the paginator counts what was collected. A term matching more than COUNT_CAP customers
        # shows COUNT_CAP + 1 of them, ordered the same way, and the page asks for more words; the
        # customer it names by an identifier (email, number, external id, phone) is looked up by index
        # and shown first even then. (An exact name is first among the collected matches.)
        fields = [name.lstrip("-") for name in ordering]
        columns = ("pk", "search_rank", *fields)
        found = list(results.order_by().values_list(*columns)[: COUNT_CAP + 1])
        if len(found) > COUNT_CAP:  # past the cap, the one customer the term names exactly may be uncollected
            collected = {row[0] for row in found}
            named = selectors.customer_identified_by(queryset, search_term).order_by().values_list(*columns)
            found += [row for row in named if row[0] not in collected]
        for position in reversed(range(len(ordering))):  # stable sorts, last key first
            found.sort(key=lambda row, i=position: row[2 + i], reverse=ordering[position].startswith("-"))
        if ORDER_VAR not in request.GET:
            found.sort(key=lambda row: row[1])
        ids = [row[0] for row in found]
        request._customer_search = (ids, queryset)  # the paginator reads a page of them (see its `page`)
        return _in_order(queryset, ids), False

    @property
    def count_cap(self) -> int:
        """How far the list counts (its pagination template says "more than" beyond it)."""
        return COUNT_CAP

    @property
    def count_cap_display(self) -> str:
        return f"{COUNT_CAP:,}"

    def get_paginator(self, request, queryset, per_page, orphans=0, allow_empty_first_page=True):
        paginator = CappedCountPaginator(queryset, per_page, orphans, allow_empty_first_page)
        paginator.ids, paginator.unsearched = getattr(request, "_customer_search", (None, None))
        return paginator

    def get_actions(self, request):
        """The changelist asks three times a request, and each time every action's permission (some of
        them a query): once a request is enough. A copy each time: callers pop what they hide."""
        cached = getattr(request, "_customer_admin_actions", None)
        if cached is None:
            cached = request._customer_admin_actions = super().get_actions(request)
        return dict(cached)

    def get_object(self, request, object_id, from_field=None):
        try:
            return self.get_queryset(request).select_related("merged_into").get(pk=object_id)
        except (Customer.DoesNotExist, ValueError, TypeError, forms.ValidationError):
            return None

    def has_change_permission(self, request, obj=None) -> bool:
        if obj is not None and obj.status in (CustomerStatus.MERGED, CustomerStatus.ERASED):
            return False  # a merged or erased customer is read-only (undo a merge from the merge's page)
        if obj is not None and self._notes_only(request):
            return True  # the page's form is saved, but only its notes (see _notes_only)
        return super().has_change_permission(request, obj)

    def _notes_only(self, request) -> bool:
        """Staff who may write notes but not change the customer (Compliance): the customer page accepts a
        POST for its notes inline alone; every other field and inline stays read-only and is never saved."""
        user = request.user
        may_write_notes = user.has_perm("customers.add_customernote") or user.has_perm("customers.change_customernote")
        return may_write_notes and not user.has_perm("customers.change_customer")

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and self._notes_only(request):
            return flatten_fieldsets(self.get_fieldsets(request, obj))
        return super().get_readonly_fields(request, obj)

    def get_inline_instances(self, request, obj=None):
        instances = super().get_inline_instances(request, obj)
        if obj is None:
            instances = [inline for inline in instances if not isinstance(inline, NoteInline)]
        elif self._notes_only(request):
            for inline in instances:
                if not isinstance(inline, NoteInline):  # view only, whatever the inline's own permissions
                    inline.has_add_permission = inline.has_change_permission = inline.has_delete_permission = (
                        lambda request, obj=None: False
                    )
                    inline.max_num = 0
        return instances

    def save_formset(self, request, form, formset, change):
        if formset.model is CustomerNote:
            save_note_formset(request, customer_id=form.instance.pk, formset=formset)
            return
        super().save_formset(request, form, formset, change)

    # ------------------------------------------------------------ the customer page

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        if request.method == "GET":
            customer = self.get_object(request, object_id)
            if customer is not None and self.has_view_or_change_permission(request, customer):
                services.access_log_record(user=request.user, customer_id=customer.pk, action=AccessAction.VIEW)
                extra_context["customer_page"] = self.customer_page(request, customer)
        return super().change_view(request, object_id, form_url, extra_context)

    # The history screens need the history's own view permission (view_historicalcustomer), not view_customer.
    enforce_history_permissions = True

    def history_view(self, request, object_id, extra_context=None):
        self._log_view(request, object_id)  # past values are personal data too
        return super().history_view(request, object_id, extra_context)

    def history_form_view(self, request, object_id, version_id, extra_context=None):
        self._log_view(request, object_id)
        return super().history_form_view(request, object_id, version_id, extra_context)

    def _log_view(self, request, object_id) -> None:
        if request.method == "GET":
            customer = self.get_object(request, object_id)
            if customer is not None and self.has_view_history_or_change_history_permission(request, customer):
                services.access_log_record(user=request.user, customer_id=customer.pk, action=AccessAction.VIEW)

    def customer_page(self, request, customer: Customer) -> dict:
        actor = Actor.for_staff(request.user)
        pinned = []
        if request.user.has_perm("customers.view_customernote"):
            pinned = list(notes.customer_notes(actor=actor, customer_id=customer.pk).filter(is_pinned=True)[:5])
        # Past values and the activity are shown only to holders of their view permission (Marketing is not).
        may_see_history = self.has_view_history_permission(request, customer)
        return {
            "flags": self.customer_page_flags(request, customer),
            "facts": self.customer_page_facts(request, customer),
            "pinned_notes": pinned,
            "sections": self.customer_page_sections(request, customer),
            "show_history": may_see_history,
            "history": self.customer_page_history(request, customer) if may_see_history else [],
            "timeline": self.customer_page_timeline(request, customer),
            "links": self.customer_page_links(request, customer),
        }

    def customer_page_timeline(self, request, customer: Customer) -> dict | None:
        """One page of the activity timeline, with links to the newer and older pages of this section."""
        if not request.user.has_perm("customers.view_customeractivity"):
            return None
        cursor = None
        if request.GET.get(TIMELINE_VAR):
            try:
                cursor = activity.Cursor.decode(request.GET[TIMELINE_VAR])
            except ApplicationError:
                cursor = None  # a mangled link: the newest page
        page = activity.customer_timeline(customer_id=customer.pk, cursor=cursor, page_size=TIMELINE_PAGE_SIZE)

        def link(to) -> str:
            query = request.GET.copy()
            query.pop(TIMELINE_VAR, None)
            if to is not None:
                query[TIMELINE_VAR] = to.encode()
            return f"?{query.urlencode()}#customer-timeline" if query else "?#customer-timeline"

        changelist = reverse("admin:customers_customeractivity_changelist")
        return {
            "entries": page.results,
            "limit": TIMELINE_PAGE_SIZE,
            "more": page.next is not None,
            "paged": cursor is not None,
            "older_url": link(page.next) if page.next is not None else "",
            "newer_url": link(page.previous) if page.previous is not None else "",
            "newest_url": link(None) if cursor is not None else "",
            "full_url": f"{changelist}?customer__id__exact={customer.pk}",
        }

    def customer_page_flags(self, request, customer: Customer) -> list[PageFlag]:
        """Restricted, merged, possible duplicate; higher apps add theirs (e.g. erasure pending)."""
        flags = []
        if customer.processing_restricted:
            flags.append(PageFlag("Processing restricted (Art. 18)", "warning"))
        if customer.status == CustomerStatus.MERGED and customer.merged_into is not None:
            flags.append(
                PageFlag(
                    f"Merged into {customer.merged_into.customer_number}",
                    "error",
                    reverse("admin:customers_customer_change", args=[customer.merged_into_id]),
                )
            )
        if open_duplicates_of(customer.pk).exists():
            url = reverse("admin:customers_duplicatecandidate_changelist")
            flags.append(PageFlag("Possible duplicate", "warning", f"{url}?q={customer.customer_number}"))
        return flags

    def customer_page_facts(self, request, customer: Customer) -> list[tuple[str, Any]]:
        """Short facts beside the name (status, type; higher apps add the tier)."""
        return [
            ("Status", customer.get_status_display()),
            ("Type", customer.get_customer_type_display()),
            ("Customer since", customer.registered_at.date().isoformat()),
        ]

    def customer_page_sections(self, request, customer: Customer) -> list[PageSection]:
        return [
            PageSection(
                "Contact",
                [
                    ("Email", customer.email + (" ✓" if customer.email_verified else "")),
                    ("Phone", (customer.phone or "—") + (" ✓" if customer.phone_verified else "")),
                    ("Company", customer.company_name or "—"),
                    ("Tags", ", ".join(customer.tags) or "—"),
                ],
            ),
            PageSection(
                "Purchases",
                [
                    ("Orders", f"{customer.order_count} ({customer.open_order_count} open)"),
                    ("Total spent", _money(customer.total_spent, customer.spent_currency)),
                    ("Average order", _money(customer.average_order_value, customer.spent_currency)),
                    ("Last order", customer.last_order_at.date().isoformat() if customer.last_order_at else "—"),
                    ("Loyalty points", customer.loyalty_points),
                    ("Satisfaction", customer.satisfaction_score or "—"),
                ],
            ),
        ]

    def customer_page_links(self, request, customer: Customer) -> list[tuple[str, str]]:
        links = []
        if request.user.has_perm("customers.view_accesslog"):
            url = reverse("admin:customers_accesslog_changelist")
            links.append((f"{url}?customer__id__exact={customer.pk}", "Access log"))
        if request.user.has_perm("customers.view_customermerge"):
            url = reverse("admin:customers_customermerge_changelist")
            links.append((f"{url}?q={customer.customer_number}", "Merges"))
        return links

    def customer_page_history(self, request, customer: Customer) -> list[HistoryEntry]:
        """The latest changes to the customer, its preferences, notes and (registered) other records."""
        kinds = {"+": "created", "~": "changed", "-": "deleted"}

        def entries(rows, what):
            return [
                HistoryEntry(
                    at=row.history_date,
                    what=what,
                    change=row.history_change_reason or kinds.get(row.history_type, row.history_type),
                    who=row.history_actor or (str(row.history_user) if row.history_user_id else ""),
                )
                for row in rows
            ]

        fields = ("history_date", "history_type", "history_change_reason", "history_actor", "history_user_id")
        found = entries(
            Customer.history.filter(id=customer.pk).order_by("-history_date").only(*fields)[:RECENT_HISTORY],
            "Profile",
        )
        found += entries(
            CustomerPreferences.history.filter(customer_id=customer.pk)
            .order_by("-history_date")
            .only(*fields)[:RECENT_HISTORY],
            "Preferences",
        )
        if request.user.has_perm("customers.view_historicalcustomernote"):
            note_history = notes.note_history_visible_to(Actor.for_staff(request.user)).filter(customer_id=customer.pk)
            found += entries(note_history.order_by("-history_date").only(*fields)[:RECENT_HISTORY], "Note")
        for source in history_sources():
            found += source(customer.pk, RECENT_HISTORY)
        return sorted(found, key=lambda entry: entry.at, reverse=True)[:RECENT_HISTORY]

    # ------------------------------------------------------------ merge

    def get_urls(self):
        own = [
            path("merge/", self.admin_site.admin_view(self.merge_view), name="customers_customer_merge"),
        ]
        return own + super().get_urls()

    def merge_view(self, request):
        if not request.user.has_perm("customers.merge_customer"):
            raise PermissionDenied
        ids = [value for value in (request.GET.get("a"), request.GET.get("b")) if value]
        found = {str(c.pk): c for c in Customer.objects.filter(pk__in=ids)} if len(ids) == 2 else {}
        if len(found) != 2:
            self.message_user(request, "Choose two customers to merge.", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:customers_customer_changelist"))
        first, second = found[ids[0]], found[ids[1]]
        form = MergeForm(request.POST or None, first=first, second=second)
        if request.method == "POST" and form.is_valid():
            survivor, merged = (first, second) if form.cleaned_data["survivor"] == "a" else (second, first)
            try:
                merge = services.customer_merge(
                    actor=Actor.for_staff(request.user),
                    survivor_id=survivor.pk,
                    merged_id=merged.pk,
                    choices=form.choices(survivor_is_a=survivor is first),
                    reason=form.cleaned_data["reason"],
                )
            except ApplicationError as error:
                form.add_error(None, error.message)
            else:
                undo = reverse("admin:customers_customermerge_change", args=[merge.pk])
                self.message_user(
                    request,
                    format_html(
                        '{} was merged into {}. <a href="{}">Undo the merge</a> (until {}).',
                        merged.customer_number,
                        survivor.customer_number,
                        undo,
                        merge.undo_until.date().isoformat(),
                    ),
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:customers_customer_change", args=[survivor.pk]))
        return TemplateResponse(
            request,
            "admin/customers/customer/merge.html",
            {
                **self.admin_site.each_context(request),
                "title": f"Merge {first.customer_number} and {second.customer_number}",
                "form": form,
                "first": first,
                "second": second,
                "rows": form.rows(),
                "counts": {
                    "a": _merge_counts(first),
                    "b": _merge_counts(second),
                },
                "opts": self.model._meta,
            },
        )

    @admin.action(description="Merge the two selected customers…", permissions=["merge"])
    def merge_two_customers(self, request, queryset):
        ids = list(queryset.values_list("pk", flat=True)[:3])
        if len(ids) != 2:
            self.message_user(request, "Select exactly two customers to merge.", messages.WARNING)
            return None
        return HttpResponseRedirect(f"{reverse('admin:customers_customer_merge')}?a={ids[0]}&b={ids[1]}")

    def has_merge_permission(self, request) -> bool:
        return request.user.has_perm("customers.merge_customer")

    # ------------------------------------------------------------ bulk work through the services

    def _bulk(self, request, queryset, *, title: str, form_class, apply=None, apply_all=None, done: str):
        """`apply(actor, customer, data)` per customer, or `apply_all(actor, queryset, data)` → (changed, refused
        {customer id: message}) for a service that changes them all at once."""
        if "apply" in request.POST:
            form = form_class(request.POST)
            if form.is_valid():
                count = queryset.count()
                if count > BULK_ACTION_LIMIT:
                    limit = f"At most {BULK_ACTION_LIMIT:,} customers at once ({count:,} selected)."
                    self.message_user(request, limit, messages.ERROR)
                    return None
                actor = Actor.for_staff(request.user)
                if apply_all is not None:
                    try:
                        changed, refused = apply_all(actor, queryset, form.cleaned_data)
                    except ApplicationError as error:
                        self.message_user(request, error.message, messages.ERROR)
                        return None
                    numbers = dict(Customer.objects.filter(pk__in=list(refused)).values_list("pk", "customer_number"))
                    for customer_id, message in refused.items():
                        label = numbers.get(customer_id, customer_id)
                        self.message_user(request, f"{label}: {message}", messages.ERROR)
                    self.message_user(request, f"{changed} customer(s) {done}.", messages.SUCCESS)
                    return None
                changed = 0
                for customer in queryset.only("pk", "customer_number", "tags", "status").iterator(chunk_size=500):
                    try:
                        changed += 1 if apply(actor, customer, form.cleaned_data) else 0
                    except ApplicationError as error:
                        self.message_user(request, f"{customer.customer_number}: {error.message}", messages.ERROR)
                self.message_user(request, f"{changed} customer(s) {done}.", messages.SUCCESS)
                return None
        else:
            form = form_class()
        return TemplateResponse(
            request,
            "admin/customers/customer/bulk_action.html",
            {
                **self.admin_site.each_context(request),
                "title": title,
                "customers": queryset[:100],
                "count": queryset.count(),
                "form": form,
                "action": request.POST.get("action"),
                "select_across": request.POST.get("select_across", "0"),
                "selected": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
                "opts": self.model._meta,
            },
        )

    @staticmethod
    def _tags_change(**change):
        """The tag actions: one service call, which reads each customer's tags under its row lock."""

        def apply_all(actor, queryset, data):
            result = services.customers_tags_change(
                actor=actor, customer_ids=queryset.order_by().values("pk"), **{key: [data["tag"]] for key in change}
            )
            return len(result.changed), result.refused

        return apply_all

    @admin.action(description="Add a tag to the selected customers…", permissions=["change"])
    def add_tag(self, request, queryset):
        return self._bulk(
            request, queryset, title="Add a tag", form_class=TagForm, apply_all=self._tags_change(add=1), done="tagged"
        )

    @admin.action(description="Remove a tag from the selected customers…", permissions=["change"])
    def remove_tag(self, request, queryset):
        return self._bulk(
            request,
            queryset,
            title="Remove a tag",
            form_class=TagForm,
            apply_all=self._tags_change(remove=1),
            done="untagged",
        )

    @admin.action(description="Deactivate the selected customers (with a reason)…", permissions=["change"])
    def deactivate_customers(self, request, queryset):
        def apply(actor, customer, data):
            if customer.status == CustomerStatus.INACTIVE:
                return False
            services.customer_deactivate(actor=actor, customer_id=customer.pk, reason=data["reason"])
            return True

        return self._bulk(
            request, queryset, title="Deactivate customers", form_class=ReasonOnlyForm, apply=apply, done="deactivated"
        )

    # ------------------------------------------------------------ exports

    def _export(self, request, queryset, fmt: str):
        try:
            started = bulk_export.export_start(user=request.user, queryset=queryset, fmt=fmt)
        except ApplicationError as error:
            self.message_user(request, error.message, messages.ERROR)
            return None
        if started.job is not None:
            job_url = reverse("admin:customers_customerexportjob_change", args=[started.job.pk])
            self.message_user(
                request,
                format_html(
                    "{} customers: the export runs in the background. <a href=\"{}\">Follow its progress</a>; "
                    "the download link appears there when it is done.",
                    f"{started.count:,}",
                    job_url,
                ),
                messages.SUCCESS,
            )
            return HttpResponseRedirect(job_url)
        body, content_type = started.body, started.content_type
        response = (
            HttpResponse(body, content_type=content_type)
            if isinstance(body, bytes)
            else StreamingHttpResponse(body, content_type=content_type)
        )
        response["Content-Disposition"] = f'attachment; filename="{bulk_export.export_filename(fmt)}"'
        return response

    @admin.action(description="Export the selected customers as CSV", permissions=["export"])
    def export_csv(self, request, queryset):
        return self._export(request, queryset, ExportFormat.CSV)

    @admin.action(description="Export the selected customers as Excel (XLSX)", permissions=["export"])
    def export_xlsx(self, request, queryset):
        return self._export(request, queryset, ExportFormat.XLSX)

    def has_export_permission(self, request) -> bool:
        return request.user.has_perm("customers.export_customer")

    def save_model(self, request, obj, form, change):
        if change and self._notes_only(request):
            return  # nothing of the customer itself may change
        actor = Actor.for_staff(request.user)
        values = getattr(form, "service_values", None)
        if not change:
            form.instance = services.customer_create(actor=actor, **values)
        elif values:
            form.instance = services.customer_update(actor=actor, customer_id=obj.pk, changes=values)

    def save_related(self, request, form, formsets, change):
        actor = Actor.for_staff(request.user)
        if change and self._notes_only(request):
            for formset in formsets:  # read-only here: nothing of them is saved
                formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
            formsets = [formset for formset in formsets if formset.model is CustomerNote]
        for formset in formsets:
            if formset.model is not CustomerPreferences:
                self.save_formset(request, form, formset, change=change)
                continue
            formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
            for inline_form in formset.forms:
                if not inline_form.has_changed():  # also False for a view-only inline (no data posted)
                    continue
                changed = getattr(inline_form, "service_values", None) or {
                    name: inline_form.cleaned_data[name]
                    for name in inline_form.changed_data
                    if name in services.PREFERENCE_FIELDS
                }
                if changed:
                    services.customer_preferences_update(actor=actor, customer_id=form.instance.pk, changes=changed)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # customers are deactivated or erased, never deleted

    def _change_status(self, request, queryset, *, to_status: str, title: str):
        if not request.user.has_perm("customers.suspend_customer"):
            raise PermissionDenied
        if "apply" in request.POST:
            form = StatusReasonForm(request.POST)
            if form.is_valid():
                actor = Actor.for_staff(request.user)
                done = 0
                for customer in queryset:
                    try:
                        services.customer_change_status(
                            actor=actor, customer_id=customer.pk, status=to_status, reason=form.cleaned_data["reason"]
                        )
                        done += 1
                    except ApplicationError as error:
                        self.message_user(request, f"{customer.customer_number}: {error.message}", messages.ERROR)
                self.message_user(request, f"{done} customer(s) now {to_status}.", messages.SUCCESS)
                return None
        else:
            form = StatusReasonForm()
        return TemplateResponse(
            request,
            "admin/customers/customer/change_status.html",
            {
                **self.admin_site.each_context(request),
                "title": title,
                "customers": queryset,
                "form": form,
                "action": request.POST.get("action"),
                "opts": self.model._meta,
                "to_status": to_status,
            },
        )

    @admin.action(description="Suspend selected customers (with a reason)", permissions=["suspend"])
    def suspend_customers(self, request, queryset):
        return self._change_status(request, queryset, to_status=CustomerStatus.SUSPENDED, title="Suspend customers")

    @admin.action(description="Reactivate selected customers (with a reason)", permissions=["suspend"])
    def reactivate_customers(self, request, queryset):
        return self._change_status(request, queryset, to_status=CustomerStatus.ACTIVE, title="Reactivate customers")

    def has_suspend_permission(self, request) -> bool:
        return request.user.has_perm("customers.suspend_customer")


# ---------------------------------------------------------------- events: timeline, outbox, dead letters


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(CustomerActivity)
class CustomerActivityAdmin(ReadOnlyAdmin):
    """The whole timeline of a customer (the customer page shows the latest entries)."""

    list_display = ("occurred_at", "customer", "type", "source", "summary")
    list_filter = ("type", "source", "occurred_at")
    list_select_related = ("customer",)
    date_hierarchy = "occurred_at"
    raw_id_fields = ("customer",)
    show_full_result_count = False
    ordering = ("-occurred_at", "-id")


@admin.register(OutboxEvent)
class OutboxEventAdmin(ReadOnlyAdmin):
    """What the relay still has to publish, and why it failed (payloads may hold personal data)."""

    list_display = ("occurred_at", "event_type", "subject", "published_at", "attempts", "next_attempt_at", "last_error")
    list_filter = (("published_at", admin.EmptyFieldListFilter), "event_type")
    search_fields = ("=subject", "=event_id")
    show_full_result_count = False
    ordering = ("-occurred_at",)


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    """Inbound messages that could not be applied: see why, replay them once fixed, or discard them."""

    list_display = ("received_at", "reason", "event_type", "event_id", "times_seen", "status", "error")
    list_filter = ("status", "reason", "event_type")
    search_fields = ("=event_id",)
    fields = (
        ("reason", "status"),
        ("event_type", "event_id", "routing_key"),
        "error",
        ("received_at", "last_seen_at", "times_seen"),
        ("resolved_at", "resolved_by"),
        "body",
    )
    actions = ["replay", "discard"]

    def has_change_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("customers.change_deadletter")

    @admin.action(description="Replay selected messages (apply them again)", permissions=["change"])
    def replay(self, request, queryset):
        label = Actor.for_staff(request.user).label
        outcomes = {DeadLetterStatus.REPLAYED: 0, DeadLetterStatus.PARKED: 0}
        for dead_letter in queryset.filter(status=DeadLetterStatus.PARKED):
            outcomes[inbound.replay_dead_letter(dead_letter, actor_label=label)] += 1
        self.message_user(
            request,
            f"{outcomes[DeadLetterStatus.REPLAYED]} applied; {outcomes[DeadLetterStatus.PARKED]} still cannot be.",
            messages.SUCCESS if not outcomes[DeadLetterStatus.PARKED] else messages.WARNING,
        )

    @admin.action(description="Discard selected messages", permissions=["change"])
    def discard(self, request, queryset):
        count = inbound.discard_dead_letters(
            ids=list(queryset.values_list("pk", flat=True)), actor_label=Actor.for_staff(request.user).label
        )
        self.message_user(request, f"{count} message(s) discarded.", messages.SUCCESS)


# ---------------------------------------------------------------- merge: the form


MERGE_LABELS = {
    "email": "Email",
    "first_name": "First name",
    "last_name": "Last name",
    "phone": "Phone",
    "date_of_birth": "Date of birth",
    "gender": "Gender",
    "customer_type": "Type",
    "company_name": "Company",
    "registration_source": "Registered through",
    "external_id": "External id",
    "tags": "Tags",
    "metadata": "Metadata",
    "custom_attributes": "Custom attributes",
    "email_verified": "Email verified",
    "phone_verified": "Phone verified",
    "registered_at": "Registered at",
    "last_login_at": "Last login",
}


class MergeForm(forms.Form):
    """Which record survives, and for each field where the two differ, whose value wins."""

    survivor = forms.ChoiceField(widget=forms.RadioSelect, initial="a")
    reason = forms.CharField(required=False, max_length=1000, widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args, first: Customer, second: Customer, **kwargs):
        super().__init__(*args, **kwargs)
        self.first, self.second = first, second
        self.fields["survivor"].choices = [
            ("a", f"Keep {first.customer_number} (created {first.created_at:%Y-%m-%d})"),
            ("b", f"Keep {second.customer_number} (created {second.created_at:%Y-%m-%d})"),
        ]
        self.differing = [
            name for name in mergeable_fields() if getattr(first, name) != getattr(second, name)
        ]
        for name in self.differing:
            choices = [("a", str(getattr(first, name))), ("b", str(getattr(second, name)))]
            if name == "tags":
                choices.append(("both", "both"))
            self.fields[f"field_{name}"] = forms.ChoiceField(
                choices=choices, widget=forms.RadioSelect, required=False, label=MERGE_LABELS.get(name, name)
            )

    def rows(self):
        return [
            {
                "name": name,
                "label": MERGE_LABELS.get(name, name),
                "field": self[f"field_{name}"],
                "a": getattr(self.first, name),
                "b": getattr(self.second, name),
            }
            for name in self.differing
        ]

    def choices(self, *, survivor_is_a: bool) -> dict[str, str]:
        """The service's view: per field, survivor | merged | both (unanswered: the survivor's value)."""
        picked = {}
        for name in self.differing:
            value = self.cleaned_data.get(f"field_{name}") or ""
            if value == "both":
                picked[name] = BOTH
            elif value in ("a", "b"):
                picked[name] = SURVIVOR if (value == "a") == survivor_is_a else MERGED
        return {name: choice for name, choice in picked.items() if choice != SURVIVOR}


def _merge_counts(customer: Customer) -> dict[str, int]:
    return {
        "notes": CustomerNote.objects.filter(customer=customer).count(),
        "orders": customer.order_count,
        "loyalty points": customer.loyalty_points,
    }


# ---------------------------------------------------------------- notes across all customers


class NoteAdminForm(NoteForm):
    class Meta(NoteForm.Meta):
        widgets = {"text": forms.Textarea(attrs={"rows": 6, "cols": 90})}


class NoteAddForm(NoteAdminForm):
    """A new note from the notes list: for which customer, then as on the customer page."""

    class Meta(NoteAdminForm.Meta):
        fields = ("customer", "kind", "text", "is_pinned")

    def clean_customer(self):
        customer = self.cleaned_data["customer"]
        if customer.status in (CustomerStatus.MERGED, CustomerStatus.ERASED):
            raise forms.ValidationError(f"A {customer.status} customer's notes cannot change.")
        return customer


@admin.register(CustomerNote)
class CustomerNoteAdmin(SimpleHistoryAdmin):
    """Every note staff may see: full-text search on the text, filters by kind, author and date."""

    form = NoteAdminForm
    enforce_history_permissions = True  # a note's versions need view_historicalcustomernote
    list_display = ("created_at", "customer_link", "kind", "is_pinned", "written_by", "excerpt")
    list_filter = ("kind", ("author", admin.RelatedOnlyFieldListFilter), "is_pinned", "created_at")
    list_select_related = ("customer",)
    search_fields = ("text",)  # the real search is full text, see get_search_results
    search_help_text = "Words from the note (full text: 'refund' finds 'refunds'; use quotes for a phrase)"
    show_full_result_count = False
    list_per_page = 50
    ordering = ("-created_at", "-id")
    readonly_fields = ("customer_link", "written_by", "created_at", "updated_at")
    fields = ("customer_link", "kind", "text", "is_pinned", "written_by", ("created_at", "updated_at"))
    history_list_display = ["history_actor", "history_change_reason"]

    def get_queryset(self, request):
        return notes.notes_visible_to(Actor.for_staff(request.user))

    # The history screens read the history table, not get_queryset: the compliance rule is applied there too.
    def get_history_queryset(self, request, history_manager, pk_name, object_id):
        visible = notes.note_history_visible_to(Actor.for_staff(request.user))
        return visible.filter(**{pk_name: object_id}).select_related("history_user")

    def history_view(self, request, object_id, extra_context=None):
        if not self._history_visible(request, object_id):
            raise Http404("No such note.")
        return super().history_view(request, object_id, extra_context)

    def history_form_view(self, request, object_id, version_id, extra_context=None):
        if not self._history_visible(request, object_id, version_id):
            raise Http404("No such note version.")
        return super().history_form_view(request, object_id, version_id, extra_context)

    def _history_visible(self, request, object_id, version_id=None) -> bool:
        try:
            rows = notes.note_history_visible_to(Actor.for_staff(request.user)).filter(id=int(unquote(object_id)))
            if version_id is not None:
                rows = rows.filter(history_id=int(version_id))
        except (TypeError, ValueError):
            return False
        return rows.exists()

    def get_search_results(self, request, queryset, search_term):
        from django.contrib.postgres.search import SearchQuery

        term = (search_term or "").strip()
        if not term:
            return queryset, False
        query = SearchQuery(term, config="english", search_type="websearch")
        return queryset.filter(search=query), False

    raw_id_fields = ("customer",)  # a million customers: no select box

    def get_fields(self, request, obj=None):
        return NoteAddForm.Meta.fields if obj is None else self.fields

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = NoteAddForm
        form = super().get_form(request, obj, **kwargs)
        if "kind" in form.base_fields:
            form.base_fields["kind"].choices = _kind_choices(request.user)
        return form

    @admin.display(description="customer", ordering="customer__customer_number")
    def customer_link(self, note: CustomerNote) -> str:
        url = reverse("admin:customers_customer_change", args=[note.customer_id])
        return format_html('<a href="{}">{}</a>', url, note.customer.customer_number)

    @admin.display(description="note")
    def excerpt(self, note: CustomerNote) -> str:
        return note.text if len(note.text) <= 120 else note.text[:119] + "…"

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # each deletion goes through the service
        return actions

    def save_model(self, request, obj, form, change):
        if not change:
            values = {name: form.cleaned_data[name] for name in ("kind", "text", "is_pinned")}
            created = services.note_create(
                actor=Actor.for_staff(request.user), customer_id=form.cleaned_data["customer"].pk, **values
            )
            for model_field in created._meta.concrete_fields:  # the admin goes on with `obj` (log, redirect)
                setattr(obj, model_field.attname, getattr(created, model_field.attname))
            obj._state.adding = False
            return
        changes = {name: form.cleaned_data[name] for name in form.changed_data if name in ("kind", "text", "is_pinned")}
        if changes:
            form.instance = services.note_update(
                actor=Actor.for_staff(request.user), customer_id=obj.customer_id, note_id=obj.pk, changes=changes
            )

    def delete_model(self, request, obj):
        services.note_delete(actor=Actor.for_staff(request.user), customer_id=obj.customer_id, note_id=obj.pk)


# ---------------------------------------------------------------- duplicates and merges


def _customer_link(customer: Customer) -> str:
    url = reverse("admin:customers_customer_change", args=[customer.pk])
    return format_html('<a href="{}">{}</a> {}', url, customer.customer_number, customer.full_name)


class OpenByDefaultFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [(status.value, status.label) for status in DuplicateStatus] + [("all", "All")]

    def choices(self, changelist):
        for lookup, title in self.lookup_choices:
            yield {
                "selected": (self.value() or DuplicateStatus.OPEN) == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request, queryset):
        value = self.value() or DuplicateStatus.OPEN
        return queryset if value == "all" else queryset.filter(status=value)


@admin.register(DuplicateCandidate)
class DuplicateCandidateAdmin(admin.ModelAdmin):
    """Pairs that may be one person: review, then merge or dismiss. Nothing is merged automatically."""

    list_display = ("detected_at", "first", "second", "why", "status", "review")
    list_filter = (OpenByDefaultFilter,)
    list_select_related = ("customer", "other")
    search_fields = ("customer__customer_number", "other__customer_number")
    search_help_text = "Customer number"
    show_full_result_count = False
    ordering = ("-detected_at", "-id")
    actions = ["dismiss"]

    @admin.display(description="customer")
    def first(self, candidate) -> str:
        return _customer_link(candidate.customer)

    @admin.display(description="possible duplicate")
    def second(self, candidate) -> str:
        return _customer_link(candidate.other)

    @admin.display(description="why")
    def why(self, candidate) -> str:
        labels = dict(DuplicateReason.choices)
        return "; ".join(labels.get(reason, reason) for reason in candidate.reasons)

    @admin.display(description="")
    def review(self, candidate) -> str:
        if candidate.status != DuplicateStatus.OPEN:
            return ""
        url = reverse("admin:customers_customer_merge")
        link = '<a class="button" href="{}?a={}&b={}">Compare and merge…</a>'
        return format_html(link, url, candidate.customer_id, candidate.other_id)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False if obj is not None else super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Dismiss: not the same person", permissions=["dismiss"])
    def dismiss(self, request, queryset):
        actor = Actor.for_staff(request.user)
        for candidate in queryset.filter(status=DuplicateStatus.OPEN):
            services.duplicate_dismiss(actor=actor, candidate_id=candidate.pk)
        self.message_user(request, "Dismissed.", messages.SUCCESS)

    def has_dismiss_permission(self, request) -> bool:
        return request.user.has_perm("customers.change_duplicatecandidate")


@admin.register(CustomerMerge)
class CustomerMergeAdmin(admin.ModelAdmin):
    """Every merge, with what it moved; undo one within the window."""

    list_display = ("merged_at", "survivor_link", "merged_link", "merged_by", "undo_until", "undone_at")
    list_select_related = ("survivor", "merged")
    search_fields = ("survivor__customer_number", "merged__customer_number")
    search_help_text = "Customer number of either"
    ordering = ("-merged_at",)
    fields = (
        ("survivor_link", "merged_link"),
        ("merged_at", "merged_by"),
        "reason",
        "field_choices",
        "moved",
        ("undo_until", "undone_at", "undone_by"),
    )
    readonly_fields = (
        "survivor_link",
        "merged_link",
        "merged_at",
        "merged_by",
        "reason",
        "field_choices",
        "moved",
        "undo_until",
        "undone_at",
        "undone_by",
    )

    @admin.display(description="survivor")
    def survivor_link(self, merge) -> str:
        return _customer_link(merge.survivor)

    @admin.display(description="merged")
    def merged_link(self, merge) -> str:
        return _customer_link(merge.merged)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_urls(self):
        return [
            path(
                "<uuid:merge_id>/undo/", self.admin_site.admin_view(self.undo_view), name="customers_customermerge_undo"
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        merge = CustomerMerge.objects.filter(pk=object_id).first()
        extra_context = {
            **(extra_context or {}),
            "can_undo": bool(merge and merge_undoable(merge) and request.user.has_perm("customers.merge_customer")),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def undo_view(self, request, merge_id):
        if request.method != "POST" or not request.user.has_perm("customers.merge_customer"):
            raise PermissionDenied
        back = reverse("admin:customers_customermerge_change", args=[merge_id])
        try:
            merge = services.customer_merge_undo(
                actor=Actor.for_staff(request.user), merge_id=merge_id, reason=request.POST.get("reason", "")
            )
        except ApplicationError as error:
            self.message_user(request, error.message, messages.ERROR)
            return HttpResponseRedirect(back)
        self.message_user(request, "The merge was undone: both customers are back.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:customers_customer_change", args=[merge.merged_id]))


# ---------------------------------------------------------------- who saw whose data


@admin.register(AccessLog)
class AccessLogAdmin(ReadOnlyAdmin):
    """Administrators only (the Administrator group holds view_accesslog): every page view, export, download."""

    list_display = ("at", "staff_user", "customer_link", "action", "reference")
    list_filter = ("action", "user", "at")
    # No join: neither key has a constraint, and an INNER JOIN would hide the rows of a removed staff
    # account or an erased customer. Each row's names are looked up by key (an outer lookup) instead.
    list_select_related = False
    search_fields = ("=reference",)  # see get_search_results
    search_help_text = "Customer number, customer id, or an export / request id"
    show_full_result_count = False
    list_per_page = 100
    ordering = ("-at", "-id")

    def get_search_results(self, request, queryset, search_term):
        term = (search_term or "").strip()
        if not term:
            return queryset, False
        customers = Customer.objects.filter(customer_number__iexact=term).values("pk")
        match = Q(customer_id__in=customers) | Q(reference=term)
        try:
            from uuid import UUID

            match |= Q(customer_id=UUID(term))
        except ValueError:
            pass
        return queryset.filter(match), False

    def get_queryset(self, request):
        from django.contrib.auth import get_user_model
        from django.db.models import OuterRef, Subquery

        users = get_user_model().objects.filter(pk=OuterRef("user_id"))
        customers = Customer.objects.filter(pk=OuterRef("customer_id"))
        return (
            super()
            .get_queryset(request)
            .annotate(
                staff_username=Subquery(users.values(get_user_model().USERNAME_FIELD)[:1]),
                customer_number=Subquery(customers.values("customer_number")[:1]),
            )
        )

    @admin.display(description="staff user", ordering="staff_username")
    def staff_user(self, entry) -> str:
        return entry.staff_username or f"(removed user #{entry.user_id})"

    @admin.display(description="customer")
    def customer_link(self, entry) -> str:
        url = reverse("admin:customers_customer_change", args=[entry.customer_id])
        return format_html('<a href="{}">{}</a>', url, entry.customer_number or str(entry.customer_id))


# ---------------------------------------------------------------- export jobs


@admin.register(CustomerExportJob)
class CustomerExportJobAdmin(ReadOnlyAdmin):
    """Large exports: progress while a worker writes the file, then the download (for whoever asked)."""

    list_display = ("created_at", "format", "status", "progress", "rows_total", "requested_by", "download")
    list_filter = ("status", "format")
    list_select_related = ("requested_by",)
    ordering = ("-created_at",)
    fields = (
        ("status", "format"),
        "progress",
        ("rows_done", "rows_total"),
        "download",
        ("created_at", "started_at", "finished_at", "expires_at"),
        "columns",
        "error",
    )
    readonly_fields = (
        "status",
        "format",
        "progress",
        "rows_done",
        "rows_total",
        "download",
        "created_at",
        "started_at",
        "finished_at",
        "expires_at",
        "columns",
        "error",
    )
    change_form_template = "admin/customers/customerexportjob/change_form.html"

    def get_queryset(self, request):
        jobs = super().get_queryset(request)
        if not request.user.has_perm("customers.change_customerexportjob"):
            jobs = jobs.filter(requested_by=request.user)
        return jobs

    @admin.display(description="progress")
    def progress(self, job) -> str:
        job.rows_done = bulk_export.rows_done(job)  # a running job reports through the cache
        return format_html('<progress max="100" value="{}"></progress> {}%', job.percent, job.percent)

    @admin.display(description="file")
    def download(self, job) -> str:
        if job.status != "done":
            return "—"
        url = reverse("admin:customers_customerexportjob_download", args=[job.pk])
        return format_html('<a class="button export-download" href="{}">Download</a>', url)

    def get_urls(self):
        return [
            path(
                "<uuid:job_id>/download/",
                self.admin_site.admin_view(self.download_view),
                name="customers_customerexportjob_download",
            ),
            *super().get_urls(),
        ]

    def download_view(self, request, job_id):
        from pathlib import Path

        from django.http import FileResponse

        try:
            job = bulk_export.export_job_download(user=request.user, job_id=job_id)
        except ApplicationError:
            raise Http404("No such export, or not ready.") from None
        content_type = "text/csv" if job.format == ExportFormat.CSV else (
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        )
        return FileResponse(
            Path(job.file_path).open("rb"),
            as_attachment=True,
            filename=bulk_export.export_filename(job.format, job.finished_at or timezone.now()),
            content_type=content_type,
        )
