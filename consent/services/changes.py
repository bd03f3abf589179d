"""The customer's choices: grant, deny, withdraw, object to marketing; and erasure's redaction."""

from __future__ import annotations

import logging
from uuid import UUID

from django.db import transaction
from django.utils import timezone

from consent import selectors
from consent.errors import ConsentAlreadyInState, TransitionNotAllowed
from consent.models import (
    ConsentPurpose,
    ConsentRecord,
    ConsentState,
    ConsentTrigger,
)
from consent.services._common import (
    ALLOWED_TRANSITIONS,
    NOTHING,
    PREFERENCE_FIELD_BY_PURPOSE,
    REQUESTABLE_STATUSES,
    S,
    append_change,
    clean_origin,
    expire_now,
    grant_version,
    lock_customer,
    locked_state,
    named_version,
    shown_version,
    source_for,
    transition_allowed,
    write_preferences,
)
from customers.actor import Actor
from customers.errors import ValidationFailed

logger = logging.getLogger(__name__)


@transaction.atomic
def consent_change(
    *,
    actor: Actor,
    customer_id: UUID | str,
    purpose_code: str,
    status: str,
    source: str | None = None,
    policy_version: str | None = None,
    ip_address: str | None = None,
    user_agent: str = "",
    reason: str = "",
    implicit: bool = False,
) -> ConsentState:
    """Grant, deny, withdraw (revoke) or mark as asked (pending) one purpose; one call each way.

    `policy_version` is the label of the wording the customer was shown (default: the one in
    effect); `source` defaults from the actor (staff → admin, token → web, system → system).
    A withdrawal records the wording of the grant it withdraws. Asking for the state the consent
    is already in is refused (CONSENT_ALREADY_IN_STATE); granted → granted on a newer version is a
    renewal. The moves allowed are in `_common` (the issue's plus one documented widening).
    """
    if status not in REQUESTABLE_STATUSES:
        raise ValidationFailed(
            f"Status must be one of {', '.join(REQUESTABLE_STATUSES)}.",
            errors={"status": [f"Must be one of: {', '.join(REQUESTABLE_STATUSES)}."]},
        )
    origin = clean_origin(
        actor=actor, source=source or source_for(actor), ip_address=ip_address, user_agent=user_agent, reason=reason
    )
    purpose = selectors.purpose_get(purpose_code)
    if implicit and (status != S.GRANTED or not purpose.allows_implicit):
        raise ValidationFailed(
            f"Consent for {purpose.code} cannot be implicit.",
            code="IMPLICIT_CONSENT_NOT_ALLOWED",
            errors={"implicit": ["Only grants of purposes that allow it may be implicit (never marketing)."]},
        )
    customer = lock_customer(actor, customer_id)
    now = timezone.now()
    state = locked_state(customer.pk, purpose)
    current = state.status if state is not None else NOTHING

    trigger = ConsentTrigger.CHOICE
    if current == S.GRANTED and state.valid_until is not None and state.valid_until <= now:
        # A grant past its validity no longer counts, even before the expiry task has run: write the
        # expiry down first (as the task would), so a new grant is a real move and a withdrawal a no-op.
        state = expire_now(state=state, purpose=purpose, now=now)
        current = S.EXPIRED
        if status == S.REVOKED:
            _sync_preference(actor, customer.pk, purpose, S.EXPIRED)
            return state
    if status == current:
        if status != S.GRANTED:
            raise ConsentAlreadyInState(f"Consent for {purpose.code} is already {current}: nothing to change.")
        version = grant_version(purpose, policy_version, now)
        if version.pk == state.policy_version_id:
            raise ConsentAlreadyInState(
                f"Consent for {purpose.code} is already granted on version {version.version}: nothing to change."
            )
        if version.effective_at < state.policy_version.effective_at:
            raise TransitionNotAllowed(
                f"Consent for {purpose.code} is already granted on the newer version {state.policy_version.version}."
            )
        trigger = ConsentTrigger.RENEWAL
    elif not transition_allowed(current, status):
        allowed = ", ".join(sorted(ALLOWED_TRANSITIONS.get(current, ()))) or "nothing"
        raise TransitionNotAllowed(
            f"Consent for {purpose.code} cannot go from {current or 'no record'} to {status} "
            f"(from {current or 'no record'} it can go to: {allowed})."
        )
    elif status == S.GRANTED:
        version = grant_version(purpose, policy_version, now)
    elif status == S.REVOKED:
        if policy_version:
            named_version(purpose, policy_version, now)  # a wrong label is an error, not ignored
        version = state.policy_version  # the wording of the grant being withdrawn
    else:
        version = shown_version(purpose, policy_version, now)

    state = append_change(
        actor=actor,
        customer_id=customer.pk,
        purpose=purpose,
        state=state,
        status=status,
        version=version,
        origin=origin,
        trigger=trigger,
        now=now,
        implicit=implicit,
    )
    _sync_preference(actor, customer.pk, purpose, status)
    return state


def _sync_preference(actor: Actor, customer_id, purpose: ConsentPurpose, status: str) -> None:
    field = PREFERENCE_FIELD_BY_PURPOSE.get(purpose.code)
    if field is not None:
        write_preferences(actor=actor, customer_id=customer_id, changes={field: status == S.GRANTED})


@transaction.atomic
def consent_object_to_marketing(
    *,
    actor: Actor,
    customer_id: UUID | str,
    source: str | None = None,
    ip_address: str | None = None,
    user_agent: str = "",
    reason: str = "",
) -> list[ConsentRecord]:
    """GDPR Art. 21(3): one call ends all direct marketing.

    Every granted marketing purpose is revoked; one never granted (nothing recorded, not_requested,
    pending) is recorded as denied, so the objection stands against a later request. Denied,
    revoked and expired purposes are left as they are, which makes a repeated objection a no-op.
    """
    origin = clean_origin(
        actor=actor, source=source or source_for(actor), ip_address=ip_address, user_agent=user_agent, reason=reason
    )
    customer = lock_customer(actor, customer_id)
    now = timezone.now()
    versions = selectors.current_policy_versions(at=now)
    records: list[ConsentRecord] = []
    preference_changes: dict[str, bool] = {}
    for purpose in ConsentPurpose.objects.filter(is_marketing=True).order_by("display_order", "code"):
        state = locked_state(customer.pk, purpose)
        current = state.status if state is not None else NOTHING
        if current == S.GRANTED:
            status, version = S.REVOKED, state.policy_version
        elif current in (NOTHING, S.NOT_REQUESTED, S.PENDING) and purpose.id in versions:
            status, version = S.DENIED, versions[purpose.id]
        else:
            continue
        state = append_change(
            actor=actor,
            customer_id=customer.pk,
            purpose=purpose,
            state=state,
            status=status,
            version=version,
            origin=origin,
            trigger=ConsentTrigger.OBJECTION,
            now=now,
        )
        records.append(state.last_record)
        field = PREFERENCE_FIELD_BY_PURPOSE.get(purpose.code)
        if field is not None:
            preference_changes[field] = False
    write_preferences(actor=actor, customer_id=customer.pk, changes=preference_changes)
    return records


# ----------------------------------------------------------------


@transaction.atomic
def consent_records_redact(*, actor: Actor, customer_id: UUID | str) -> int:
    """For erasure: blank the personal fields (IP address, user agent, staff reason) of a customer's
    records. The proof facts stay; the customer id is left pointing at the anonymized customer.
    This is the one update the append-only trigger lets through.
    """
    count = ConsentRecord.objects.filter(customer_id=customer_id, redacted_at__isnull=True)._redact_personal_data(
        at=timezone.now()
    )
    logger.info("consent records redacted for erasure: %s (by %s)", count, actor.label)
    return count
