"""Preferences ↔ consent: the subscribers to the customers app's events, and the view of the opt-ins.

Both are registered in `ConsentConfig.ready`. The opt-in columns in the preferences are a view of
consent: `opt_ins_as_consented` is what the API and the admin show for them (through
`customers.extensions.register_preference_view`), true exactly while the customer is in
`selectors.customers_consenting_to(purpose)` — a grant that needs renewal or is past its validity
reads as off at once, before the expiry task has written anything.
"""

from __future__ import annotations

import logging
from datetime import datetime
from uuid import UUID

from django.db.models import Exists, OuterRef
from django.utils import timezone

from consent import selectors
from consent.context import current_origin_for
from consent.models import (
    ConsentPurpose,
    ConsentRecord,
    ConsentState,
    ConsentTrigger,
)
from consent.services._common import (
    NOTHING,
    PREFERENCE_FIELD_BY_PURPOSE,
    PURPOSE_BY_PREFERENCE_FIELD,
    SYSTEM_ACTOR,
    USER_AGENT_MAX,
    Origin,
    S,
    append_change,
    expire_now,
    grant_version,
    locked_state,
    record_event,
    source_for,
    valid_until_for,
)
from customers import selectors as customer_selectors
from customers import services as customer_services
from customers.actor import Actor
from customers.extensions import PreferenceViewResult

logger = logging.getLogger(__name__)


def on_customer_created(*, event, actor: Actor | None) -> None:
    """In the registration transaction: an explicit state for every purpose — granted where the
    customer opted in at sign-up, else not_requested — so no customer is ever without one.
    """
    actor = actor or SYSTEM_ACTOR
    customer_id = UUID(event.subject)
    customer = customer_selectors.registered_customer(customer_id)  # as customer_create saved it, not reloaded
    prefs = getattr(customer, "preferences", None)
    now = timezone.now()
    # Registered through the API: the customer's IP and user agent (a service registering on the
    # customer's behalf passes them in X-Customer-IP / X-Customer-User-Agent, see consent.context).
    ip_address, user_agent = current_origin_for(actor)
    origin = Origin(
        source=source_for(actor, registration_source=customer.registration_source),
        ip_address=ip_address,
        user_agent=user_agent,
        reason="Choice recorded at registration by staff in the admin" if actor.kind == "staff" else "",
    )
    versions = selectors.current_policy_versions(at=now)
    # Whether the customer already has a state for the purpose, in the same query as the purposes.
    already = ConsentState.objects.filter(customer_id=customer_id, purpose_id=OuterRef("pk"))
    pairs = []
    for purpose in selectors.purposes().annotate(already_recorded=Exists(already)):
        version = versions.get(purpose.id)
        if version is None or purpose.already_recorded:
            if version is None:
                logger.warning("consent purpose %s has no policy version in effect: not recorded", purpose.code)
            continue
        field = PREFERENCE_FIELD_BY_PURPOSE.get(purpose.code)
        granted = bool(field and prefs is not None and getattr(prefs, field))
        status = S.GRANTED if granted else S.NOT_REQUESTED
        record = ConsentRecord(
            customer_id=customer_id,
            purpose=purpose,
            status=status,
            previous_status=NOTHING,
            policy_version=version,
            trigger=ConsentTrigger.SIGN_UP,
            occurred_at=now,
            recorded_at=now,
            valid_until=valid_until_for(purpose, now) if granted else None,
            source=origin.source,
            actor=actor.label,
            ip_address=origin.ip_address,
            user_agent=origin.user_agent,
            reason=origin.reason,
        )
        state = ConsentState(
            customer_id=customer_id,
            purpose=purpose,
            status=status,
            policy_version=version,
            source=origin.source,
            granted_at=now if granted else None,
            valid_until=record.valid_until,
            updated_at=now,
            last_record=record,
        )
        pairs.append((record, state))
    ConsentRecord.objects.bulk_create([record for record, _ in pairs])
    ConsentState.objects.bulk_create([state for _, state in pairs])
    for record, _ in pairs:
        record_event(record, actor)


def opt_ins_as_consented(customer_ids: list[UUID]) -> PreferenceViewResult:
    """customer id -> {preference column: whether consent for its purpose counts now}, and the next
    moment one of them reads differently by time alone (a grant's validity ending, or a wording that
    requires re-consent taking effect over it), in one query."""
    consenting = selectors.consenting_purposes_of(customer_ids, list(PREFERENCE_FIELD_BY_PURPOSE))
    values = {
        customer_id: {field: (customer_id, code) in consenting for code, field in PREFERENCE_FIELD_BY_PURPOSE.items()}
        for customer_id in customer_ids
    }
    fresh_until: dict[UUID, datetime] = {}
    for (customer_id, _), lapse in consenting.items():
        if lapse is not None and (customer_id not in fresh_until or lapse < fresh_until[customer_id]):
            fresh_until[customer_id] = lapse
    return PreferenceViewResult(values=values, fresh_until=fresh_until)


def _lapsed(state: ConsentState, purpose: ConsentPurpose, now) -> tuple[bool, bool]:
    """For a granted state: (past its validity, superseded by a version requiring re-consent)."""
    past_validity = state.valid_until is not None and state.valid_until <= now
    needs_renewal = (
        selectors.effective_versions(purpose, at=now)
        .filter(requires_reconsent=True, effective_at__gt=state.policy_version.effective_at)
        .exists()
    )
    return past_validity, needs_renewal


def on_preferences_updated(*, event, actor: Actor | None) -> None:
    """In the preference transaction: an opt-in switched on is a grant, switched off a withdrawal.

    Skips what already agrees — which is every field when the change came from consent itself.
    """
    fields = [name for name in event.data.get("changed_fields", ()) if name in PURPOSE_BY_PREFERENCE_FIELD]
    if not fields:
        return
    actor = actor or SYSTEM_ACTOR
    customer_id = UUID(event.subject)
    customer = customer_selectors.customers_visible_to(SYSTEM_ACTOR).select_related("preferences").get(pk=customer_id)
    prefs = customer.preferences
    now = timezone.now()
    for field in fields:
        purpose = ConsentPurpose.objects.filter(code=PURPOSE_BY_PREFERENCE_FIELD[field]).first()
        if purpose is None:
            logger.warning("no consent purpose for preference %s: not recorded", field)
            continue
        wanted = bool(getattr(prefs, field))
        state = locked_state(customer_id, purpose)
        current = state.status if state is not None else NOTHING
        trigger = ConsentTrigger.PREFERENCES
        if wanted and current == S.GRANTED:
            # Switched on while the opt-in read as off: the grant no longer counts. Past its validity,
            # it is first recorded as expired (as the expiry task would); superseded, it is renewed.
            past_validity, needs_renewal = _lapsed(state, purpose, now)
            if past_validity:
                state = expire_now(state=state, purpose=purpose, now=now)
            elif needs_renewal:
                trigger = ConsentTrigger.RENEWAL
            else:
                continue
            status, version = S.GRANTED, grant_version(purpose, None, now)
        elif wanted:
            status, version = S.GRANTED, grant_version(purpose, None, now)
        elif current == S.GRANTED:
            status, version = S.REVOKED, state.policy_version
        else:
            continue
        origin = _preference_origin(actor, field=field, wanted=wanted)
        append_change(
            actor=actor,
            customer_id=customer_id,
            purpose=purpose,
            state=state,
            status=status,
            version=version,
            origin=origin,
            trigger=trigger,
            now=now,
        )


def _preference_origin(actor: Actor, *, field: str, wanted: bool) -> Origin:
    ip_address, user_agent = current_origin_for(actor)
    reason = ""
    if actor.kind == "staff":
        reason = f"{field} switched {'on' if wanted else 'off'} by staff in the customer's preferences"
    return Origin(
        source=source_for(actor),
        ip_address=ip_address,
        user_agent=(user_agent or "")[:USER_AGENT_MAX],
        reason=reason,
    )


DROP_CHUNK = 5_000


def consent_drop_granted_representations(*, purpose_id) -> int:
    """The cached representations of the customers granted for a purpose, dropped (in chunks)."""
    ids = ConsentState.objects.filter(purpose_id=purpose_id, status=S.GRANTED).values_list("customer_id", flat=True)
    total = 0
    chunk: list[UUID] = []
    for customer_id in ids.iterator(chunk_size=DROP_CHUNK):
        chunk.append(customer_id)
        if len(chunk) >= DROP_CHUNK:
            customer_services.customers_representation_changed(customer_ids=chunk)
            total += len(chunk)
            chunk = []
    if chunk:
        customer_services.customers_representation_changed(customer_ids=chunk)
        total += len(chunk)
    return total
