"""Read queries on consent that the API, the admin, tasks and later apps (segments, exports) share.

`customers_consenting_to(purpose)` is the one answer to "may we process this customer's data for
this purpose right now": every consumer (segments, exports, marketing sync) must use it.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from django.db import connection
from django.db.models import Exists, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from consent.errors import PurposeNotFound
from consent.models import ConsentPurpose, ConsentRecord, ConsentState, ConsentStatus, PolicyVersion
from customers import selectors as customer_selectors
from customers.actor import SCOPE_ADMIN, Actor
from customers.precompiled import PrecompiledQuery, as_uuids

ERASED = "erased"  # customers.models.CustomerStatus.ERASED
MERGED = "merged"  # customers.models.CustomerStatus.MERGED: the person is reached through the survivor
GONE = (ERASED, MERGED)  # customers no consent counts for, and no share is measured over
_SYSTEM = Actor.system("consent")


def purpose_get(code: str) -> ConsentPurpose:
    try:
        return ConsentPurpose.objects.get(code=code)
    except ConsentPurpose.DoesNotExist:
        raise PurposeNotFound(code) from None


def purposes() -> QuerySet[ConsentPurpose]:
    return ConsentPurpose.objects.order_by("display_order", "code")


def effective_versions(purpose: ConsentPurpose | UUID, *, at: datetime | None = None) -> QuerySet[PolicyVersion]:
    """The purpose's versions in effect at `at` (default now), newest first."""
    at = at or timezone.now()
    return PolicyVersion.objects.filter(purpose=purpose, effective_at__lte=at).order_by("-effective_at")


def current_policy_version(purpose: ConsentPurpose | UUID, *, at: datetime | None = None) -> PolicyVersion | None:
    """The wording shown now: the latest version whose effective date has come."""
    return effective_versions(purpose, at=at).first()


def current_policy_versions(*, at: datetime | None = None) -> dict[UUID, PolicyVersion]:
    """Purpose id → its current version, in one query."""
    at = at or timezone.now()
    current: dict[UUID, PolicyVersion] = {}
    for version in PolicyVersion.objects.filter(effective_at__lte=at).order_by("purpose_id", "-effective_at"):
        current.setdefault(version.purpose_id, version)
    return current


def renewal_required_after(*, at: datetime | None = None) -> Exists:
    """True for a granted state whose version predates a version in effect that requires re-consent.

    Usable on `ConsentState` querysets (OuterRef on the state's purpose and version).
    """
    at = at or timezone.now()
    return Exists(
        PolicyVersion.objects.filter(
            purpose_id=OuterRef("purpose_id"),
            requires_reconsent=True,
            effective_at__lte=at,
            effective_at__gt=OuterRef("policy_version__effective_at"),
        )
    )


def consent_states(*, at: datetime | None = None) -> QuerySet[ConsentState]:
    """States annotated with `needs_renewal` and `is_valid` (granted, in validity, current enough)."""
    at = at or timezone.now()
    granted = Q(status=ConsentStatus.GRANTED)
    in_validity = Q(valid_until__isnull=True) | Q(valid_until__gt=at)
    return (
        ConsentState.objects.select_related("purpose", "policy_version")
        .annotate(renewal_due=renewal_required_after(at=at))
        .annotate(needs_renewal=Q(granted, renewal_due=True))
        .annotate(is_valid=Q(granted, in_validity, renewal_due=False))
    )


def consent_states_needing_renewal(*, purpose_code: str | None = None) -> QuerySet[ConsentState]:
    """Grants on a version older than one that requires re-consent: the `needs_renewal` filter."""
    states = consent_states().filter(needs_renewal=True)
    if purpose_code is not None:
        states = states.filter(purpose=purpose_get(purpose_code))
    return states


def customer_consent_states(*, customer_id: UUID) -> list[ConsentState]:
    """The customer's state for every purpose; purposes never recorded show as unsaved `not_requested`."""
    states = {state.purpose_id: state for state in consent_states().filter(customer_id=customer_id)}
    versions = current_policy_versions()
    result = []
    for purpose in purposes():
        state = states.get(purpose.id)
        if state is None:
            state = ConsentState(
                customer_id=customer_id,
                purpose=purpose,
                status=ConsentStatus.NOT_REQUESTED,
                policy_version=versions.get(purpose.id),
                source="",
            )
            state.needs_renewal = False
            state.is_valid = False
            state.recorded = False
        else:
            state.recorded = True
        result.append(state)
    return result


def customer_consent_records(*, customer_id: UUID) -> QuerySet[ConsentRecord]:
    return ConsentRecord.objects.filter(customer_id=customer_id).select_related("purpose", "policy_version")


def consenting_customer_ids(purpose: str | ConsentPurpose, *, at: datetime | None = None) -> QuerySet:
    """Ids of customers holding a valid grant for the purpose (a subquery, for `pk__in=`)."""
    if not isinstance(purpose, ConsentPurpose):
        purpose = purpose_get(purpose)
    return consent_states(at=at).filter(purpose=purpose, is_valid=True).values("customer_id")


def _customers_consent_counts_for():
    """Customers whose consent counts at all: not erased or merged away."""
    return customer_selectors.customers_visible_to(_SYSTEM).exclude(status__in=GONE)


def customers_consenting_to(purpose: str | ConsentPurpose, *, at: datetime | None = None):
    """Customers we may process for `purpose` now: granted, not past validity, on a current-enough
    version, not erased or merged away. Revocation and expiry take effect at once (no cache, no task in between).
    """
    return _customers_consent_counts_for().filter(pk__in=consenting_customer_ids(purpose, at=at))


def _consenting_purposes(customer_ids: list[UUID], purpose_codes: list[str], at: datetime) -> QuerySet:
    next_reconsent = PolicyVersion.objects.filter(
        purpose_id=OuterRef("purpose_id"), requires_reconsent=True, effective_at__gt=at
    ).order_by("effective_at")
    return (
        consent_states(at=at)
        .filter(customer_id__in=customer_ids, purpose__code__in=purpose_codes, is_valid=True)
        .filter(customer_id__in=_customers_consent_counts_for().values("pk"))
        .annotate(reconsent_from=Subquery(next_reconsent.values("effective_at")[:1]))
        .values_list("customer_id", "purpose__code", "valid_until", "reconsent_from")
    )


# It runs on every uncached read of a customer (the marketing opt-ins are consent's view).
_consenting_purposes_query = PrecompiledQuery(
    _consenting_purposes, customer_ids=[UUID], purpose_codes=[str], at=datetime
)


def consenting_purposes_of(
    customer_ids: list[UUID], purpose_codes: list[str], *, at: datetime | None = None
) -> dict[tuple[UUID, str], datetime | None]:
    """(customer id, purpose code) for each of these customers and purposes where the customer is in
    `customers_consenting_to(purpose)` — the same rule, for a batch of customers in one query — with
    the moment that consent stops counting by time alone: its validity ending, or a wording that
    requires re-consent taking effect (None: no such moment yet).
    """
    if not customer_ids or not purpose_codes:
        return {}
    rows = _consenting_purposes_query.rows(
        customer_ids=as_uuids(customer_ids), purpose_codes=list(purpose_codes), at=at or timezone.now()
    )
    return {
        (customer_id, code): min((moment for moment in lapses if moment is not None), default=None)
        for customer_id, code, *lapses in rows
    }


def customer_consents_to(*, customer_id: UUID, purpose: str | ConsentPurpose, at: datetime | None = None) -> bool:
    return customers_consenting_to(purpose, at=at).filter(pk=customer_id).exists()


RECORDED_SHARE_SQL = """
    SELECT p.code,
           count(c.id) AS recorded,
           (SELECT count(*) FROM customers_customer WHERE status NOT IN (%(erased)s, %(merged)s)) AS customers
    FROM consent_consentpurpose p
    LEFT JOIN consent_consentstate s ON s.purpose_id = p.id
    LEFT JOIN customers_customer c ON c.id = s.customer_id AND c.status NOT IN (%(erased)s, %(merged)s)
    GROUP BY p.code, p.display_order
    ORDER BY p.display_order, p.code
"""


def recorded_state_share() -> list[dict]:
    """Per purpose: how many customers (not erased or merged away) have an explicit, recorded consent state.

    One statement, so both counts come from the same snapshot while customers keep registering.
    """
    with connection.cursor() as cursor:
        cursor.execute(RECORDED_SHARE_SQL, {"erased": ERASED, "merged": MERGED})
        rows = cursor.fetchall()
    return [
        {"purpose": code, "recorded": recorded, "customers": total, "share": recorded / total if total else 1.0}
        for code, recorded, total in rows
    ]


# Personal proof facts of a consent record: the customer's IP address and user agent, and the reason staff typed.
PROOF_FIELDS = ("ip_address", "user_agent", "reason")


def proof_visible_to(actor: Actor, customer_id) -> bool:
    """Who may see a record's proof facts: customers:admin tokens, or the customer's own token."""
    own = actor.customer_id is not None and str(actor.customer_id) == str(customer_id)
    return own or actor.has_scope(SCOPE_ADMIN)
