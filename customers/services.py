"""Every write use-case of the customers app. API, admin and tasks call these, nothing else."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.db import IntegrityError, transaction
from django.utils import timezone

from customers import events, selectors
from customers.actor import SCOPE_ADMIN, Actor
from customers.cache import invalidate_customer_on_commit, invalidate_customers_on_commit
from customers.duplicates import ON_CREATE, WATCHED_FIELDS, duplicates_detect
from customers.errors import (
    CustomerNotFound,
    EmailAlreadyExists,
    Forbidden,
    InvalidStatusTransition,
    ValidationFailed,
)
from customers.extensions import preference_view_values
from customers.history import stamp
from customers.models import Customer, CustomerPreferences, CustomerStatus, CustomerStatusChange, CustomerType
from customers.validation import (
    normalize_currency,
    normalize_email,
    normalize_language,
    normalize_phone,
    normalize_tags,
    validate_date_of_birth,
    validate_json_object,
    validate_timezone,
)

PROFILE_FIELDS = (
    "email",
    "first_name",
    "last_name",
    "phone",
    "date_of_birth",
    "gender",
    "customer_type",
    "company_name",
    "registration_source",
    "external_id",
    "tags",
    "metadata",
    "custom_attributes",
    "email_verified",
    "phone_verified",
    "registered_at",
    "last_login_at",
)
# What replacing a profile (PUT) resets when the new profile leaves it out. Identity links and facts
# about the account (external id, registration source and time, verification flags, last login)
# change only when named.
_KEPT_WHEN_REPLACED = frozenset(
    {
        "email",
        "external_id",
        "registration_source",
        "registered_at",
        "email_verified",
        "phone_verified",
        "last_login_at",
    }
)
REPLACED_PROFILE_FIELDS = tuple(name for name in PROFILE_FIELDS if name not in _KEPT_WHEN_REPLACED)
PREFERENCE_FIELDS = tuple(
    f.name for f in CustomerPreferences._meta.concrete_fields if f.name not in ("customer", "updated_at")
)


def _profile_completeness(customer: Customer) -> int:
    filled = [
        bool(customer.email),
        bool(customer.first_name),
        bool(customer.last_name),
        bool(customer.phone),
        customer.date_of_birth is not None,
        customer.gender != "unknown",
    ]
    if customer.customer_type == CustomerType.BUSINESS:
        filled.append(bool(customer.company_name))
    return round(100 * sum(filled) / len(filled))


def _clean_profile(values: dict[str, Any]) -> dict[str, Any]:
    unknown = set(values) - set(PROFILE_FIELDS)
    if unknown:
        raise ValidationFailed(
            "Unknown fields.", errors={name: ["This field is not part of a customer."] for name in sorted(unknown)}
        )
    cleaned = dict(values)
    if "email" in cleaned:
        cleaned["email"] = normalize_email(cleaned["email"])
    if "phone" in cleaned:
        cleaned["phone"] = normalize_phone(cleaned["phone"])
    if "date_of_birth" in cleaned:
        cleaned["date_of_birth"] = validate_date_of_birth(cleaned["date_of_birth"])
    if "tags" in cleaned:
        cleaned["tags"] = normalize_tags(cleaned["tags"] or [])
    for field in ("metadata", "custom_attributes"):
        if field in cleaned:
            cleaned[field] = validate_json_object(cleaned[field] if cleaned[field] is not None else {}, field)
    for field in ("first_name", "last_name", "company_name"):
        if field in cleaned:
            cleaned[field] = (cleaned[field] or "").strip()
    if "external_id" in cleaned:
        cleaned["external_id"] = (cleaned["external_id"] or "").strip() or None
    return cleaned


def _clean_preferences(values: dict[str, Any]) -> dict[str, Any]:
    unknown = set(values) - set(PREFERENCE_FIELDS)
    if unknown:
        raise ValidationFailed(
            "Unknown fields.", errors={name: ["This field is not a preference."] for name in sorted(unknown)}
        )
    cleaned = dict(values)
    if "language" in cleaned:
        cleaned["language"] = normalize_language(cleaned["language"])
    if "currency" in cleaned:
        cleaned["currency"] = normalize_currency(cleaned["currency"])
    if "timezone" in cleaned:
        cleaned["timezone"] = validate_timezone(cleaned["timezone"])
    if "custom" in cleaned:
        cleaned["custom"] = validate_json_object(cleaned["custom"] or {}, "custom")
    return cleaned


def _check_business_fields(customer: Customer) -> None:
    if customer.customer_type == CustomerType.BUSINESS and not customer.company_name:
        raise ValidationFailed(
            "A business customer needs a company name.",
            errors={"company_name": ["Required for business customers."]},
        )


def _save_guarding_uniques(instance: Customer, *, savepoint: bool = True) -> None:
    """Save, turning a lost race on a unique column into the same error the pre-check gives.

    `savepoint=False` for a caller whose own atomic block holds nothing written before the save: the
    error leaves that block, which rolls back on its own (to its savepoint when nested).
    """
    try:
        with transaction.atomic(savepoint=savepoint):
            instance.save()
    except IntegrityError as error:
        message = str(error)
        if "customer_email_ci_unique" in message:
            raise EmailAlreadyExists() from None
        if "external_id" in message:
            raise ValidationFailed(
                "Another customer has this external id.",
                code="EXTERNAL_ID_ALREADY_EXISTS",
                errors={"external_id": ["Another customer has this external id."]},
            ) from None
        raise


def _email_taken(email: str, *, excluding: UUID | None = None) -> bool:
    query = selectors.with_email(Customer.objects.all(), email)
    if excluding is not None:
        query = query.exclude(pk=excluding)
    return query.exists()


def customer_validate_profile(values: dict[str, Any], *, customer_id: UUID | None) -> dict[str, Any]:
    """The checks create and update apply, without writing: for forms that show errors per field."""
    cleaned = _clean_profile(values)
    if "email" in cleaned and _email_taken(cleaned["email"], excluding=customer_id):
        raise EmailAlreadyExists()
    return cleaned


def customer_preferences_validate(values: dict[str, Any]) -> dict[str, Any]:
    """The checks customer_preferences_update applies, without writing: for forms that show errors per field."""
    return _clean_preferences(values)


def _created_payload(customer: Customer) -> dict:
    return {
        "customer_id": str(customer.id),
        "customer_number": customer.customer_number,
        "email": customer.email,
        "first_name": customer.first_name,
        "last_name": customer.last_name,
        "customer_type": customer.customer_type,
        "registration_source": customer.registration_source,
        "status": customer.status,
    }


def customer_representation_changed(*, customer_id: UUID) -> None:
    """For other apps' services: what GET /customers/{id} shows changed in this transaction.

    Drops the cached representation once the transaction commits.
    """
    invalidate_customer_on_commit(customer_id)


def customers_representation_changed(*, customer_ids: list[UUID]) -> None:
    """`customer_representation_changed` for many customers (e.g. a new consent wording that makes
    their opt-ins read differently): the cached representations are dropped on commit, in chunks."""
    invalidate_customers_on_commit(list(customer_ids))


@transaction.atomic
def customer_create(*, actor: Actor, preferences: dict[str, Any] | None = None, **profile: Any) -> Customer:
    """Register a customer with default preferences (or the given ones)."""
    cleaned = _clean_profile(profile)
    if "email" not in cleaned:
        raise ValidationFailed("Email is required.", errors={"email": ["This field is required."]})
    cleaned_preferences = _clean_preferences(preferences or {})
    if _email_taken(cleaned["email"]):
        raise EmailAlreadyExists()

    now = timezone.now()
    customer = Customer(**cleaned, created_at=now, updated_at=now)
    customer.registered_at = cleaned.get("registered_at") or now
    _check_business_fields(customer)
    customer.profile_completeness = _profile_completeness(customer)
    stamp(customer, actor, "created")
    # Its first write: a lost race rolls customer_create's own block back, no savepoint needed. The
    # INSERT returns the customer number the database gave.
    _save_guarding_uniques(customer, savepoint=False)

    prefs = CustomerPreferences(customer=customer, updated_at=now, **cleaned_preferences)
    stamp(prefs, actor, "created")
    prefs.save(force_insert=True)  # its key is the new customer's: no UPDATE to try first

    with selectors.registering(customer):  # its subscribers (consent) are handed this instance, not a reload
        events.record(
            event_type=events.CUSTOMER_CREATED, subject=customer.id, data=_created_payload(customer), actor=actor
        )
    duplicates_detect(customer=customer, reasons=ON_CREATE)
    return customer


def _lock_customer(customer_id: UUID) -> Customer:
    try:
        return Customer.objects.select_for_update().get(pk=customer_id)
    except (Customer.DoesNotExist, ValueError):
        raise CustomerNotFound(customer_id) from None


def _refuse_erased(customer: Customer) -> None:
    if customer.status == CustomerStatus.ERASED:
        raise InvalidStatusTransition("An erased customer cannot be changed.", code="CUSTOMER_ERASED")
    if customer.status == CustomerStatus.MERGED:
        raise InvalidStatusTransition(
            "A merged customer cannot be changed (change the customer it was merged into, or undo the merge).",
            code="CUSTOMER_MERGED",
        )


@transaction.atomic
def customer_update(
    *,
    actor: Actor,
    customer_id: UUID,
    changes: dict[str, Any],
    expected_version: int | None = None,
    replace: bool = False,
) -> Customer:
    """Change profile fields; the event names the fields that changed, never their old values.

    `replace=True` replaces the profile: `REPLACED_PROFILE_FIELDS` the changes leave out go back to
    their empty defaults.
    """
    if replace:
        changes = {name: Customer._meta.get_field(name).get_default() for name in REPLACED_PROFILE_FIELDS} | changes
    customer = _lock_customer(customer_id)
    _refuse_erased(customer)
    if expected_version is not None and expected_version != customer.version:
        raise InvalidStatusTransition(
            f"The customer changed since version {expected_version} (now {customer.version}).",
            code="VERSION_CONFLICT",
        )
    cleaned = _clean_profile(changes)
    if (
        "email" in cleaned
        and cleaned["email"] != customer.email
        and _email_taken(cleaned["email"], excluding=customer.id)
    ):
        raise EmailAlreadyExists()

    changed = sorted(name for name, value in cleaned.items() if getattr(customer, name) != value)
    if not changed:
        return customer
    for name in changed:
        setattr(customer, name, cleaned[name])
    _check_business_fields(customer)
    if "email" in changed:
        customer.email_verified = "email_verified" in cleaned and cleaned["email_verified"]
    if "phone" in changed:
        customer.phone_verified = "phone_verified" in cleaned and cleaned["phone_verified"]
    customer.profile_completeness = _profile_completeness(customer)
    customer.updated_at = timezone.now()
    customer.version += 1
    stamp(customer, actor, "updated: " + ", ".join(changed))
    _save_guarding_uniques(customer)

    events.record(
        event_type=events.CUSTOMER_UPDATED,
        subject=customer.id,
        data={"customer_id": str(customer.id), "changed_fields": changed, "version": customer.version},
        actor=actor,
    )
    if WATCHED_FIELDS.intersection(changed):
        duplicates_detect(customer=customer)
    invalidate_customer_on_commit(customer.id)
    return customer


@transaction.atomic
def customer_preferences_update(*, actor: Actor, customer_id: UUID, changes: dict[str, Any]) -> CustomerPreferences:
    customer = _lock_customer(customer_id)
    _refuse_erased(customer)
    cleaned = _clean_preferences(changes)
    prefs = CustomerPreferences.objects.select_for_update().get(customer=customer)
    # A column another app owns the view of (consent: the opt-ins) has changed when the request differs
    # from what is stored or from what is shown (e.g. switching on an opt-in whose grant lapsed).
    shown = preference_view_values([customer.pk]).get(customer.pk, {})
    changed = sorted(
        name for name, value in cleaned.items() if getattr(prefs, name) != value or shown.get(name, value) != value
    )
    if not changed:
        return prefs
    for name in changed:
        setattr(prefs, name, cleaned[name])
    now = timezone.now()
    prefs.updated_at = now
    stamp(prefs, actor, "updated: " + ", ".join(changed))
    prefs.save()

    # The preferences are part of the customer's representation and version; saving (not a queryset
    # update) keeps the customer's history in step with its version.
    customer.version += 1
    customer.updated_at = now
    stamp(customer, actor, "preferences updated: " + ", ".join(changed))
    customer.save(update_fields=["version", "updated_at"])
    events.record(
        event_type=events.CUSTOMER_PREFERENCES_UPDATED,
        subject=customer.id,
        data={"customer_id": str(customer.id), "changed_fields": changed},
        actor=actor,
    )
    invalidate_customer_on_commit(customer.id)
    return prefs


@transaction.atomic
def customer_preferences_update_many(
    *, actor: Actor, changes_by_customer: dict[UUID, dict[str, Any]], reason: str
) -> dict[UUID, list[str]]:
    """`customer_preferences_update` for many customers at once (e.g. consent expiry turning opt-ins
    off), set-based: a fixed number of statements per call, whatever the number of customers.

    Same effects per customer: the preferences and the customer saved with history naming the actor
    and `reason`, the customer's `version` bumped, one `customer.preferences.updated.v1` event, the
    cached representation dropped on commit. Same lock order: the customers' rows first (by id), then
    their preferences. Erased and merged customers are skipped. Returns customer id → changed fields.
    """
    from simple_history.utils import bulk_update_with_history

    if not changes_by_customer:
        return {}
    cleaned = {customer_id: _clean_preferences(changes) for customer_id, changes in changes_by_customer.items()}
    customers = {
        customer.pk: customer
        for customer in Customer.objects.select_for_update(of=("self",))
        .filter(pk__in=list(cleaned))
        .exclude(status__in=[CustomerStatus.ERASED, CustomerStatus.MERGED])
        .order_by("pk")
    }
    preferences = list(
        CustomerPreferences.objects.select_for_update().filter(customer_id__in=list(customers)).order_by("customer_id")
    )
    now = timezone.now()
    changed_by_customer: dict[UUID, list[str]] = {}
    for prefs in preferences:
        wanted = cleaned[prefs.customer_id]
        changed = sorted(name for name, value in wanted.items() if getattr(prefs, name) != value)
        if not changed:
            continue
        for name in changed:
            setattr(prefs, name, wanted[name])
        prefs.updated_at = now
        changed_by_customer[prefs.customer_id] = changed
    if not changed_by_customer:
        return {}
    fields = sorted({name for changed in changed_by_customer.values() for name in changed})
    history = {
        "default_date": now,
        "default_user": actor.user if actor.kind == "staff" else None,
        "custom_historical_attrs": {"history_actor": actor.label},
    }
    bulk_update_with_history(
        [prefs for prefs in preferences if prefs.customer_id in changed_by_customer],
        CustomerPreferences,
        [*fields, "updated_at"],
        default_change_reason=f"{reason}: {', '.join(fields)}",
        **history,
    )
    touched = [customers[customer_id] for customer_id in changed_by_customer]
    for customer in touched:
        customer.version += 1
        customer.updated_at = now
    bulk_update_with_history(
        touched, Customer, ["version", "updated_at"], default_change_reason=f"preferences updated: {reason}", **history
    )
    events.record_many(
        event_type=events.CUSTOMER_PREFERENCES_UPDATED,
        items=[
            (customer_id, {"customer_id": str(customer_id), "changed_fields": changed})
            for customer_id, changed in changed_by_customer.items()
        ],
        actor=actor,
    )
    invalidate_customers_on_commit(list(changed_by_customer))
    return changed_by_customer


@dataclass(frozen=True)
class _Transition:
    needs_admin: bool


_ALLOWED_TRANSITIONS: dict[tuple[str, str], _Transition] = {
    (CustomerStatus.ACTIVE, CustomerStatus.INACTIVE): _Transition(needs_admin=False),
    (CustomerStatus.INACTIVE, CustomerStatus.ACTIVE): _Transition(needs_admin=False),
    (CustomerStatus.ACTIVE, CustomerStatus.SUSPENDED): _Transition(needs_admin=True),
    (CustomerStatus.INACTIVE, CustomerStatus.SUSPENDED): _Transition(needs_admin=True),
    (CustomerStatus.SUSPENDED, CustomerStatus.ACTIVE): _Transition(needs_admin=True),
    (CustomerStatus.SUSPENDED, CustomerStatus.INACTIVE): _Transition(needs_admin=True),
}


def _apply_status(*, actor: Actor, customer: Customer, new_status: str, reason: str) -> None:
    previous = customer.status
    customer.status = new_status
    customer.updated_at = timezone.now()
    customer.version += 1
    stamp(customer, actor, f"status {previous} → {new_status}")
    customer.save(update_fields=["status", "updated_at", "version"])
    CustomerStatusChange.objects.create(
        customer=customer, from_status=previous, to_status=new_status, reason=reason, actor=actor.label
    )
    events.record(
        event_type=events.CUSTOMER_STATUS_CHANGED,
        subject=customer.id,
        data={"customer_id": str(customer.id), "from_status": previous, "to_status": new_status, "reason": reason},
        actor=actor,
    )
    invalidate_customer_on_commit(customer.id)


@transaction.atomic
def customer_change_status(*, actor: Actor, customer_id: UUID, status: str, reason: str) -> Customer:
    """Move a customer through its lifecycle; erasure has its own workflow and is refused here."""
    reason = (reason or "").strip()
    if not reason:
        raise ValidationFailed("Say why the status changes.", errors={"reason": ["This field is required."]})
    if status not in CustomerStatus.values:
        raise ValidationFailed(f"Unknown status {status!r}.", errors={"status": [f"Unknown status {status!r}."]})
    customer = _lock_customer(customer_id)
    if customer.status == status:
        return customer
    if status == CustomerStatus.ERASED:
        raise InvalidStatusTransition("Customers are erased only through a privacy erasure request.")
    if CustomerStatus.MERGED in (status, customer.status):
        # Into merged only by a merge, out of it only by undoing the merge (customers.merge).
        raise InvalidStatusTransition(f"A customer cannot go from {customer.status} to {status}: merges change that.")
    transition = _ALLOWED_TRANSITIONS.get((customer.status, status))
    if transition is None:
        raise InvalidStatusTransition(f"A customer cannot go from {customer.status} to {status}.")
    if transition.needs_admin and not actor.has_scope(SCOPE_ADMIN):
        raise Forbidden(f"Changing a customer from {customer.status} to {status} needs {SCOPE_ADMIN}.")
    _apply_status(actor=actor, customer=customer, new_status=status, reason=reason)
    return customer


@transaction.atomic
def customer_deactivate(*, actor: Actor, customer_id: UUID, reason: str = "Deactivated on request") -> Customer:
    """The API's DELETE: the customer stays, inactive. Idempotent for an inactive customer."""
    customer = _lock_customer(customer_id)
    if customer.status == CustomerStatus.INACTIVE:
        return customer
    if customer.status != CustomerStatus.ACTIVE:
        raise InvalidStatusTransition(f"A {customer.status} customer cannot be deactivated.")
    _apply_status(actor=actor, customer=customer, new_status=CustomerStatus.INACTIVE, reason=reason)
    events.record(
        event_type=events.CUSTOMER_DEACTIVATED,
        subject=customer.id,
        data={"customer_id": str(customer.id), "reason": reason},
        actor=actor,
    )
    return customer


@transaction.atomic
def customer_set_processing_restriction(*, actor: Actor, customer_id: UUID, restricted: bool, reason: str) -> Customer:
    """Restrict (GDPR Art. 18) or lift the restriction; both are recorded with who and why."""
    customer = _lock_customer(customer_id)
    _refuse_erased(customer)
    if customer.processing_restricted == restricted:
        return customer
    customer.processing_restricted = restricted
    customer.updated_at = timezone.now()
    customer.version += 1
    stamp(customer, actor, ("restricted: " if restricted else "restriction lifted: ") + reason)
    customer.save(update_fields=["processing_restricted", "updated_at", "version"])
    events.record(
        event_type=events.CUSTOMER_RESTRICTION_CHANGED,
        subject=customer.id,
        data={"customer_id": str(customer.id), "restricted": restricted},
        actor=actor,
    )
    invalidate_customer_on_commit(customer.id)
    return customer


@dataclass
class TagsChanged:
    changed: list[UUID]  # customers whose tags changed (in id order)
    refused: dict[UUID, str]  # customers left as they were, and why (e.g. too many tags)


@transaction.atomic
def customers_tags_change(
    *, actor: Actor, customer_ids, add: list[str] | tuple = (), remove: list[str] | tuple = ()
) -> TagsChanged:
    """Add and/or remove tags on many customers (a list of ids or a queryset of them), set-based.

    The customers' rows are locked (in id order, like every writer) and the new tags computed from the
    locked values, so a concurrent change of a customer's tags is never lost. Per changed customer: the
    version bumped, a history row naming the actor, one `customer.updated.v1` event, the cached
    representation dropped on commit. Erased and merged customers are skipped; a customer the change
    would take past the tag limit is refused and reported. A fixed number of statements per call.
    """
    from simple_history.utils import bulk_update_with_history

    add, remove = normalize_tags(list(add)), normalize_tags(list(remove))
    if set(add) & set(remove):
        raise ValidationFailed("A tag cannot be added and removed at once.", errors={"tags": ["Added and removed."]})
    if not add and not remove:
        return TagsChanged([], {})
    customers = list(
        Customer.objects.select_for_update(of=("self",))
        .filter(pk__in=customer_ids)
        .exclude(status__in=[CustomerStatus.ERASED, CustomerStatus.MERGED])
        .order_by("pk")
    )
    now = timezone.now()
    touched, refused = [], {}
    for customer in customers:
        kept = [tag for tag in customer.tags if tag not in remove]
        wanted = kept + [tag for tag in add if tag not in kept]
        if wanted == list(customer.tags):
            continue
        try:
            customer.tags = normalize_tags(wanted)
        except ValidationFailed as error:
            refused[customer.pk] = error.message
            continue
        customer.version += 1
        customer.updated_at = now
        touched.append(customer)
    if touched:
        bulk_update_with_history(
            touched,
            Customer,
            ["tags", "version", "updated_at"],
            default_change_reason="updated: tags",
            default_date=now,
            default_user=actor.user if actor.kind == "staff" else None,
            custom_historical_attrs={"history_actor": actor.label},
        )
        events.record_many(
            event_type=events.CUSTOMER_UPDATED,
            items=[
                (one.pk, {"customer_id": str(one.pk), "changed_fields": ["tags"], "version": one.version})
                for one in touched
            ],
            actor=actor,
        )
        invalidate_customers_on_commit([customer.pk for customer in touched])
    return TagsChanged([customer.pk for customer in touched], refused)


# The activity timeline's use-cases (customers.activity), offered here like every other service.
# The back-office's use-cases (notes, duplicates, merges, access log, exports), offered here like every other service.
from customers.access_log import access_log_record as access_log_record  # noqa: E402
from customers.access_log import access_log_record_ids as access_log_record_ids  # noqa: E402
from customers.activity import activity_prune as activity_prune  # noqa: E402
from customers.activity import activity_track as activity_track  # noqa: E402

# What every app's services offer privacy (see customers.data_rights), re-exported as this app's own.
from customers.data_rights import (  # noqa: E402
    erase_customers_data as erase_customers_data,
)
from customers.data_rights import (  # noqa: E402
    export_customer_data as export_customer_data,
)
from customers.data_rights import (  # noqa: E402
    export_rows as export_rows,
)
from customers.data_rights import (  # noqa: E402
    scrub_personal_fields as scrub_personal_fields,
)
from customers.duplicates import duplicate_dismiss as duplicate_dismiss  # noqa: E402
from customers.merge import customer_merge as customer_merge  # noqa: E402
from customers.merge import customer_merge_note_moved as customer_merge_note_moved  # noqa: E402
from customers.merge import customer_merge_undo as customer_merge_undo  # noqa: E402
from customers.notes import note_create as note_create  # noqa: E402
from customers.notes import note_delete as note_delete  # noqa: E402
from customers.notes import note_pin as note_pin  # noqa: E402
from customers.notes import note_update as note_update  # noqa: E402
