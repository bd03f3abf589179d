"""Purposes and policy versions: only the Compliance group may add or change them (Django permissions)."""

from __future__ import annotations

import logging

from django import forms
from django.contrib import admin
from simple_history.admin import SimpleHistoryAdmin

from consent import selectors, services
from consent.models import ConsentPurpose, PolicyVersion, notice_text_hash
from customers.actor import Actor
from customers.errors import ApplicationError

logger = logging.getLogger(__name__)


class PolicyVersionInline(admin.TabularInline):
    model = PolicyVersion
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("version", "effective_at", "requires_reconsent", "text_hash", "notice_url")
    readonly_fields = fields
    verbose_name_plural = "policy versions (add one under Policy versions)"

    def has_add_permission(self, request, obj=None) -> bool:
        return False


def _add_service_errors(form: forms.ModelForm, error: ApplicationError) -> None:
    """The service's refusal as form errors: on the field it names when the form has it, else on top."""
    placed = False
    for name, messages in (getattr(error, "errors", None) or {}).items():
        for message in messages if isinstance(messages, list | tuple) else [messages]:
            form.add_error(name if name in form.fields else None, message)
            placed = True
    if not placed:
        form.add_error(None, error.message)


class ConsentPurposeForm(forms.ModelForm):
    """Runs the service's own checks in `clean`, so a refusal is shown on the form, never a 500."""

    class Meta:
        model = ConsentPurpose
        fields = services.PURPOSE_FIELDS

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        values = {name: data[name] for name in services.PURPOSE_FIELDS if name in data}
        adding = self.instance._state.adding
        if not adding:
            values.pop("code", None)
        try:
            services.purpose_validate(values=values, purpose_id=None if adding else self.instance.pk)
        except ApplicationError as error:
            _add_service_errors(self, error)
        return data


@admin.register(ConsentPurpose)
class ConsentPurposeAdmin(SimpleHistoryAdmin):
    form = ConsentPurposeForm
    list_display = (
        "code",
        "name",
        "is_marketing",
        "default_validity_months",
        "allows_implicit",
        "current_version",
        "display_order",
    )
    list_filter = ("is_marketing",)
    ordering = ("display_order", "code")
    inlines = [PolicyVersionInline]
    history_list_display = ["history_actor", "history_change_reason"]

    @admin.display(description="current policy version")
    def current_version(self, purpose) -> str:
        version = selectors.current_policy_version(purpose)
        return version.version if version else "— none in effect —"

    def get_readonly_fields(self, request, obj=None):
        return ("code",) if obj is not None else ()

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # records point at purposes; a purpose is never removed

    def save_model(self, request, obj, form, change):
        actor = Actor.for_staff(request.user)
        values = {name: form.cleaned_data[name] for name in services.PURPOSE_FIELDS if name in form.cleaned_data}
        if change:
            values.pop("code", None)
            form.instance = services.purpose_update(actor=actor, purpose_id=obj.pk, changes=values)
        else:
            form.instance = services.purpose_create(actor=actor, **values)

    def save_related(self, request, form, formsets, change):
        for formset in formsets:  # the versions inline is read-only: nothing to save
            formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []


class HttpsURLField(forms.URLField):
    def __init__(self, **kwargs):
        kwargs.setdefault("assume_scheme", "https")
        super().__init__(**kwargs)


class PolicyVersionForm(forms.ModelForm):
    text_hash = forms.CharField(
        required=False,
        max_length=64,
        help_text="Leave empty when you give the notice text: it is computed. Required with a URL only.",
    )

    class Meta:
        model = PolicyVersion
        fields = ("purpose", *services.POLICY_VERSION_FIELDS)
        field_classes = {"notice_url": HttpsURLField}

    def clean(self):
        data = super().clean()
        if "text_hash" not in self.fields:  # wording frozen: nothing to compute
            return data
        text = data.get("notice_text") or ""
        given = (data.get("text_hash") or "").strip().lower()
        if text:
            computed = notice_text_hash(text)
            if given and given != computed:
                self.add_error("text_hash", "Does not match the notice text (leave it empty to compute it).")
            data["text_hash"] = computed
        else:
            data["text_hash"] = given
        return data

    def _post_clean(self):
        super()._post_clean()
        if self.errors:
            return
        data = self.cleaned_data
        values = {name: data[name] for name in services.POLICY_VERSION_FIELDS if name in data}
        adding = self.instance._state.adding
        purpose = data.get("purpose") or (None if adding else self.instance.purpose)
        try:
            services.policy_version_validate(
                values=values,
                purpose_id=getattr(purpose, "pk", None),
                policy_version_id=None if adding else self.instance.pk,
            )
        except ApplicationError as error:
            _add_service_errors(self, error)


@admin.register(PolicyVersion)
class PolicyVersionAdmin(SimpleHistoryAdmin):
    form = PolicyVersionForm
    list_display = ("purpose", "version", "effective_at", "requires_reconsent", "in_use", "created_at")
    list_filter = ("purpose", "requires_reconsent")
    list_select_related = ("purpose",)
    ordering = ("purpose__display_order", "-effective_at")
    history_list_display = ["history_actor", "history_change_reason"]

    @admin.display(boolean=True, description="in use")
    def in_use(self, version) -> bool:
        return services.policy_version_in_use(version)

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and services.policy_version_in_use(obj):
            # The wording customers agreed to is proof: frozen (the database refuses too).
            return PolicyVersion.WORDING_FIELDS
        return ()

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change):
        actor = Actor.for_staff(request.user)
        fields = [name for name in services.POLICY_VERSION_FIELDS if name in form.cleaned_data]
        values = {name: form.cleaned_data[name] for name in fields}
        if change:
            form.instance = services.policy_version_update(actor=actor, policy_version_id=obj.pk, changes=values)
        else:
            form.instance = services.policy_version_create(
                actor=actor, purpose_id=form.cleaned_data["purpose"].pk, **values
            )
