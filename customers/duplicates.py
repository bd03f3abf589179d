"""Possible duplicates: found when a customer is created or their email, phone or name changes (and when
an address gives them a postal code), listed for a rep to review; never merged automatically.

Three signals, each answered by an index:
- the same normalized phone (E.164, `customer_phone_eq_idx`);
- the same mailbox: the email lower-cased, without `+tag` where the provider ignores it, without
  dots where Gmail ignores them (`CanonicalEmail`, `customer_email_canonical_idx`);
- the same first and last name (case-insensitive) and an active address at the same postal code
  (the address book answers through `customers.extensions.address_lookup`).
"""

from __future__ import annotations

from uuid import UUID

from django.db import transaction
from django.db.models import CharField, Q, Value
from django.utils import timezone

from customers.actor import Actor
from customers.errors import NotFound
from customers.extensions import address_lookup
from customers.models import (
    EMAIL_DOTS_IGNORED,
    EMAIL_PLUS_TAG_IGNORED,
    CanonicalEmail,
    Customer,
    CustomerStatus,
    DuplicateCandidate,
    DuplicateReason,
    DuplicateStatus,
)

MAX_MATCHES_PER_SIGNAL = 20  # a shared office phone must not produce a thousand candidates
_GONE = (CustomerStatus.ERASED, CustomerStatus.MERGED)
# The customer fields whose change is worth a new look.
WATCHED_FIELDS = frozenset({"email", "phone", "first_name", "last_name"})


def canonical_email(email: str) -> str:
    """The Python twin of `customers.models.CanonicalEmail` (the two must agree; a test checks)."""
    address = (email or "").strip().lower()
    local, _, domain = address.partition("@")
    if domain in EMAIL_DOTS_IGNORED:
        return local.split("+", 1)[0].replace(".", "") + "@gmail.com"
    if domain in EMAIL_PLUS_TAG_IGNORED:
        return local.split("+", 1)[0] + "@" + domain
    return address


def _candidates(customer: Customer, reasons: set[str]) -> dict[UUID, set[str]]:
    """Other customers that look like this one, by reason: one query for all signals (a UNION ALL
    of each signal's own capped lookup, so each still goes through its index)."""
    others = Customer.objects.exclude(pk=customer.pk).exclude(status__in=_GONE)
    signals = []

    def signal(matching, reason: str) -> None:
        tagged = matching.annotate(reason=Value(reason, output_field=CharField())).values_list("pk", "reason")
        signals.append(tagged[:MAX_MATCHES_PER_SIGNAL])

    if DuplicateReason.PHONE in reasons and customer.phone:
        signal(others.filter(phone=customer.phone), DuplicateReason.PHONE)
    if DuplicateReason.EMAIL in reasons and customer.email:
        key = canonical_email(customer.email)
        signal(others.annotate(mailbox=CanonicalEmail("email")).filter(mailbox=key), DuplicateReason.EMAIL)
    lookup = address_lookup()
    if (
        DuplicateReason.NAME_POSTAL_CODE in reasons
        and lookup is not None
        and customer.first_name
        and customer.last_name
    ):
        codes = lookup.postal_codes_of(customer.pk)
        if codes:
            same_name = others.filter(
                Q(first_name__iexact=customer.first_name) & Q(last_name__iexact=customer.last_name),
                pk__in=lookup.customers_at(codes),
            )
            signal(same_name, DuplicateReason.NAME_POSTAL_CODE)
    found: dict[UUID, set[str]] = {}
    if not signals:
        return found
    matches = signals[0].union(*signals[1:], all=True) if len(signals) > 1 else signals[0]
    for other_id, reason in matches:
        found.setdefault(other_id, set()).add(str(reason))
    return found


# What a customer created a moment ago can match: no address of theirs exists yet for the name and
# postal code signal to find.
ON_CREATE = frozenset({DuplicateReason.PHONE, DuplicateReason.EMAIL})


def duplicates_detect(
    *, customer_id: UUID | str | None = None, customer: Customer | None = None, reasons: set[str] | None = None
) -> list[DuplicateCandidate]:
    """Record (or add reasons to) a candidate for every customer that looks like this one.

    Runs in the caller's transaction. A pair a rep dismissed stays dismissed. A service that has just
    saved the customer passes its instance (`customer`) instead of the id: it is not read again.
    """
    if customer is None:
        customer = Customer.objects.filter(pk=customer_id).first()
    if customer is None or customer.status in _GONE:
        return []
    found = _candidates(customer, set(reasons or DuplicateReason.values))
    if not found:
        return []
    pairs = {tuple(sorted((customer.pk, other), key=str)): why for other, why in found.items()}
    existing = {
        (candidate.customer_id, candidate.other_id): candidate
        for candidate in DuplicateCandidate.objects.select_for_update().filter(
            customer_id__in=[a for a, _ in pairs], other_id__in=[b for _, b in pairs]
        )
    }
    touched = []
    now = timezone.now()
    for (first, second), why in pairs.items():
        candidate = existing.get((first, second))
        if candidate is None:
            candidate = DuplicateCandidate.objects.create(
                customer_id=first, other_id=second, reasons=sorted(why), detected_at=now
            )
        elif not why <= set(candidate.reasons):
            candidate.reasons = sorted(set(candidate.reasons) | why)
            candidate.save(update_fields=["reasons"])
        touched.append(candidate)
    return touched


def open_duplicates_of(customer_id: UUID | str):
    """The open candidates a customer is part of."""
    return DuplicateCandidate.objects.filter(
        Q(customer_id=customer_id) | Q(other_id=customer_id), status=DuplicateStatus.OPEN
    )


@transaction.atomic
def duplicate_dismiss(*, actor: Actor, candidate_id: int | str) -> DuplicateCandidate:
    """A rep reviewed the pair: not the same person. It is not proposed again."""
    candidate = DuplicateCandidate.objects.select_for_update().filter(pk=candidate_id).first()
    if candidate is None:
        raise NotFound("No such duplicate candidate.", code="DUPLICATE_CANDIDATE_NOT_FOUND")
    if candidate.status == DuplicateStatus.OPEN:
        candidate.status = DuplicateStatus.DISMISSED
        candidate.resolved_at = timezone.now()
        candidate.resolved_by = actor.label
        candidate.save(update_fields=["status", "resolved_at", "resolved_by"])
    return candidate


def on_address_changed(*, event, actor=None) -> None:
    """In the address writer's transaction: a new or changed address may give a name + postal code match."""
    try:
        customer_id = UUID(str(event.subject))
    except ValueError:
        return
    duplicates_detect(customer_id=customer_id, reasons={DuplicateReason.NAME_POSTAL_CODE})


# The address book's events, subscribed by name (customers never imports addresses).
ADDRESS_EVENTS = ("customer.address.added.v1", "customer.address.updated.v1")


def connect_address_events() -> None:
    from customers import events

    for event_type in ADDRESS_EVENTS:
        events.subscribe(event_type, on_address_changed)
