"""The activity timeline: what a customer did and what happened to them, newest first.

Fed from three doors:
- the storefront tracks events through `POST /customers/{id}/activities` (`activity_track`);
- inbound order, support and loyalty events add entries set-based (`messaging.effects`);
- our own domain events add entries in the writer's transaction (`connect_event_activity`), for
  every event type in `EVENT_ACTIVITY` — other apps' types included, subscribed by name, so
  customers never imports them. Personal fields (as flagged in the event's schema) stay out.

Each entry coming from an event carries its `event_id` (unique), so a redelivery adds nothing.
Old entries are deleted by `activity_prune` (privacy's retention, and the daily task).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from customers import events
from customers.actor import Actor
from customers.cache import invalidate_customer_on_commit
from customers.errors import Conflict, CustomerNotFound, InvalidStatusTransition, ValidationFailed
from customers.models import Customer, CustomerActivity, CustomerStatus

# What the storefront may track.
TRACKABLE_TYPES = (
    "page_view",
    "product_view",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "wishlist_add",
    "checkout_started",
    "login",
    "logout",
    "password_reset",
    "email_open",
    "email_click",
    "sms_click",
    "push_open",
    "app_open",
)
MAX_DATA_BYTES = 4096
MAX_CLOCK_SKEW = timedelta(minutes=5)
LAST_ACTIVITY_STEP = timedelta(minutes=1)


def _check_json(data: Any) -> dict:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValidationFailed("`data` must be a JSON object.", errors={"data": ["Must be a JSON object."]})
    if len(json.dumps(data, default=str)) > MAX_DATA_BYTES:
        raise ValidationFailed(
            f"`data` is larger than {MAX_DATA_BYTES} bytes.", errors={"data": [f"At most {MAX_DATA_BYTES} bytes."]}
        )
    return data


@transaction.atomic
def activity_track(
    *,
    actor: Actor,
    customer_id: UUID,
    activity_type: str,
    occurred_at: datetime | None = None,
    summary: str = "",
    data: dict | None = None,
    source: str = "storefront",
    event_id: UUID | None = None,
) -> tuple[CustomerActivity, bool]:
    """Add one tracked activity; with an `event_id`, a retry returns the first one. Returns (activity, created)."""
    if activity_type not in TRACKABLE_TYPES:
        raise ValidationFailed("Unknown activity type.", errors={"type": ["Not a trackable activity type."]})
    now = timezone.now()
    occurred_at = occurred_at or now
    if occurred_at > now + MAX_CLOCK_SKEW:
        raise ValidationFailed("The activity is in the future.", errors={"occurred_at": ["Must not be in the future."]})
    if occurred_at < now - timedelta(days=30 * settings.ACTIVITY_RETENTION_MONTHS):
        raise ValidationFailed(
            "The activity is older than the retention period.", errors={"occurred_at": ["Too old to be kept."]}
        )
    data = _check_json(data)
    customer = Customer.objects.filter(pk=customer_id).only("pk", "status").first()
    if customer is None:
        raise CustomerNotFound(customer_id)
    if customer.status == CustomerStatus.ERASED:
        raise InvalidStatusTransition("An erased customer's activity is not tracked.", code="CUSTOMER_ERASED")

    if event_id is not None:
        existing = CustomerActivity.objects.filter(event_id=event_id).first()
        if existing is not None:
            return _same_customer(existing, customer_id), False
    activity = CustomerActivity(
        customer_id=customer_id,
        type=activity_type,
        occurred_at=occurred_at,
        source=(source or "storefront")[:100],
        summary=(summary or "")[:300],
        data=data,
        event_id=event_id,
        created_at=now,
    )
    try:
        with transaction.atomic():
            activity.save()
    except IntegrityError:  # the same event_id, tracked concurrently
        return _same_customer(CustomerActivity.objects.get(event_id=event_id), customer_id), False

    _move_last_activity(actor=actor, customer_id=customer_id, occurred_at=occurred_at)
    return activity, True


def _move_last_activity(*, actor: Actor, customer_id: UUID, occurred_at: datetime) -> None:
    """Move `last_activity_at` forward, as a change of the customer's metrics: a version bump and a
    `customer.metrics.updated.v1` (segments re-evaluate the customer on it; its rules may read it).

    Only by `LAST_ACTIVITY_STEP` or more: a storefront tracks several events a minute, and each
    would otherwise bump the version (a rep's edit in progress would conflict) and record an event.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE customers_customer SET last_activity_at = %s, version = version + 1, updated_at = now()"
            " WHERE id = %s AND (last_activity_at IS NULL OR last_activity_at <= %s) RETURNING version",
            [occurred_at, customer_id, occurred_at - LAST_ACTIVITY_STEP],
        )
        moved = cursor.fetchone()
    if moved is None:
        return
    events.record(
        event_type=events.CUSTOMER_METRICS_UPDATED,
        subject=customer_id,
        data={
            "customer_id": str(customer_id),
            "version": moved[0],
            "changed_fields": ["last_activity_at"],
            "last_activity_at": occurred_at.astimezone(UTC).isoformat(),
        },
        actor=actor,
    )
    invalidate_customer_on_commit(customer_id)


def _same_customer(activity: CustomerActivity, customer_id: UUID) -> CustomerActivity:
    if str(activity.customer_id) != str(customer_id):
        raise Conflict("This event_id was already tracked for another customer.", code="ACTIVITY_ID_CONFLICT")
    return activity


def activity_prune(*, before: datetime, dry_run: bool = False, batch_size: int = 10_000) -> int:
    """Delete activity that occurred before `before`, in batches (the BRIN index finds them)."""
    if dry_run:
        return CustomerActivity.objects.filter(occurred_at__lt=before).count()
    deleted = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM customers_customeractivity WHERE id IN ("
                " SELECT id FROM customers_customeractivity WHERE occurred_at < %s LIMIT %s)",
                [before, batch_size],
            )
            count = cursor.rowcount
        deleted += count
        if count < batch_size:
            return deleted


# ---------------------------------------------------------------- the timeline


@dataclass(frozen=True)
class Cursor:
    occurred_at: datetime
    id: int
    backwards: bool = False

    def encode(self) -> str:
        raw = json.dumps([self.occurred_at.isoformat(), self.id, self.backwards])
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            occurred_at, pk, backwards = json.loads(raw)
            moment = datetime.fromisoformat(occurred_at)
            if moment.tzinfo is None or not isinstance(pk, int) or not isinstance(backwards, bool):
                raise ValueError
            return cls(moment, pk, backwards)
        except (ValueError, TypeError):
            raise ValidationFailed("Invalid cursor.", errors={"cursor": ["Invalid cursor."]}) from None


@dataclass
class TimelinePage:
    results: list[CustomerActivity]
    next: Cursor | None
    previous: Cursor | None


def customer_timeline(
    *,
    customer_id: UUID,
    types: list[str] | None = None,
    occurred_after: datetime | None = None,
    occurred_before: datetime | None = None,
    cursor: Cursor | None = None,
    page_size: int = 50,
) -> TimelinePage:
    """One page of the timeline, newest first, keyset-paginated on (occurred_at, id).

    A cursor points between two entries, so entries inserted while a client pages (newer ones,
    or older ones in the range already read) never shift or repeat what it sees next.
    """
    entries: QuerySet[CustomerActivity] = CustomerActivity.objects.filter(customer_id=customer_id)
    if types:
        entries = entries.filter(type__in=types)
    if occurred_after:
        entries = entries.filter(occurred_at__gte=occurred_after)
    if occurred_before:
        entries = entries.filter(occurred_at__lt=occurred_before)
    backwards = cursor is not None and cursor.backwards
    if cursor is not None:
        after_cursor = Q(occurred_at=cursor.occurred_at) & (Q(id__gt=cursor.id) if backwards else Q(id__lt=cursor.id))
        beyond = Q(occurred_at__gt=cursor.occurred_at) if backwards else Q(occurred_at__lt=cursor.occurred_at)
        entries = entries.filter(beyond | after_cursor)
    ordering = ("occurred_at", "id") if backwards else ("-occurred_at", "-id")
    rows = list(entries.order_by(*ordering)[: page_size + 1])
    more = len(rows) > page_size
    rows = rows[:page_size]
    if backwards:
        rows.reverse()
    if not rows:
        return TimelinePage([], None, None)
    first, last = rows[0], rows[-1]
    has_next = more if not backwards else True
    has_previous = (cursor is not None) if not backwards else more
    return TimelinePage(
        rows,
        next=Cursor(last.occurred_at, last.id) if has_next else None,
        previous=Cursor(first.occurred_at, first.id, backwards=True) if has_previous else None,
    )


# ---------------------------------------------------------------- our own events on the timeline

Summary = Callable[[dict], str]


def _listed(data: dict, key: str = "changed_fields") -> str:
    return ", ".join(str(item) for item in (data.get(key) or [])) or "details withheld"


EVENT_ACTIVITY: dict[str, tuple[str, Summary]] = {
    events.CUSTOMER_CREATED: ("registered", lambda d: f"Registered (source: {d.get('registration_source', '?')})"),
    events.CUSTOMER_UPDATED: ("profile_changed", lambda d: f"Profile changed: {_listed(d)}"),
    events.CUSTOMER_PREFERENCES_UPDATED: ("preferences_changed", lambda d: f"Preferences changed: {_listed(d)}"),
    events.CUSTOMER_STATUS_CHANGED: (
        "status_changed",
        lambda d: f"Status {d.get('from_status', '?')} → {d.get('to_status', '?')}",
    ),
    events.CUSTOMER_RESTRICTION_CHANGED: (
        "processing_restriction_changed",
        lambda d: "Processing restricted" if d.get("restricted") else "Processing restriction lifted",
    ),
    events.CUSTOMER_ERASURE_REQUESTED: ("erasure_requested", lambda d: "Erasure requested (user deleted in identity)"),
    events.CUSTOMER_MERGED: (
        "merged",
        lambda d: "Duplicate record merged in"
        + (f"; values taken from it: {_listed(d, 'fields_from_merged')}" if d.get("fields_from_merged") else ""),
    ),
    events.CUSTOMER_MERGE_UNDONE: ("merge_undone", lambda d: "Merge undone: the other record was restored"),
    # Other apps' events, subscribed by name (customers never imports them).
    "customer.address.added.v1": (
        "address_added",
        lambda d: f"Address added ({d.get('type', '?')}, {d.get('country', '?')})",
    ),
    "customer.address.updated.v1": (
        "address_updated",
        lambda d: f"Address updated ({d.get('type', '?')}, {d.get('country', '?')})",
    ),
    "customer.address.removed.v1": ("address_removed", lambda d: f"Address removed ({d.get('type', '?')})"),
    "customer.default_address.changed.v1": (
        "default_address_changed",
        lambda d: f"Default {d.get('type', '?')} address changed",
    ),
    "customer.consent.granted.v1": ("consent_granted", lambda d: f"Consent granted: {d.get('purpose', '?')}"),
    "customer.consent.revoked.v1": ("consent_revoked", lambda d: f"Consent revoked: {d.get('purpose', '?')}"),
    "customer.consent.denied.v1": ("consent_denied", lambda d: f"Consent denied: {d.get('purpose', '?')}"),
    "customer.segment.assigned.v1": ("segment_joined", lambda d: f"Joined segment {d.get('segment_code', '?')}"),
    "customer.segment.removed.v1": ("segment_left", lambda d: f"Left segment {d.get('segment_code', '?')}"),
    "customer.tier.changed.v1": (
        "tier_changed",
        lambda d: f"Tier {d.get('from_tier') or 'none'} → {d.get('to_tier', '?')}",
    ),
    "customer.privacy_request.filed.v1": ("privacy_request_filed", lambda d: f"Privacy request filed: {d.get('kind')}"),
}

_INSERT_FROM_EVENT = """
INSERT INTO customers_customeractivity
    (customer_id, type, occurred_at, source, summary, data, event_id, created_at)
SELECT c.id, %s, %s, %s, %s, %s::jsonb, %s, now()
FROM customers_customer c
WHERE c.id = %s
ON CONFLICT (event_id) DO NOTHING
"""


def _on_event(*, event, actor=None) -> None:
    """In the writer's transaction: one timeline entry for the event (nothing if the subject is no customer)."""
    from customers.messaging.schemas import without_personal_data

    type_, summarize = EVENT_ACTIVITY[event.event_type]
    try:
        customer_id = UUID(str(event.subject))
    except ValueError:
        return
    data = without_personal_data(event.event_type, event.data or {})
    with connection.cursor() as cursor:
        cursor.execute(
            _INSERT_FROM_EVENT,
            [
                type_,
                event.occurred_at,
                event.source,
                summarize(data)[:300],
                json.dumps(data, default=str),
                event.event_id,
                customer_id,
            ],
        )


def connect_event_activity() -> None:
    for event_type in EVENT_ACTIVITY:
        events.subscribe(event_type, _on_event)
