"""The state machine and the building blocks every consent write shares: one record, one state, one event.

The state machine is the issue's, with one deliberate widening:

    issue:     not_requested → pending → granted / denied
               granted → revoked (withdrawn) / expired (validity ran out, the expiry job only)
               revoked, expired, denied → granted (re-consent)
    widening:  not_requested → granted / denied directly.

Why the widening: the storefront's sign-up form (and any checkbox shown beside its notice) asks and
is answered in one interaction; recording a `pending` that lasted zero seconds first would add a
record that proves nothing. `pending` stays for answers that come later (a double opt-in email).
"No record yet" (`NOTHING`, a purpose created after the customer) behaves like not_requested.

Staying in the same state is not a move: asking for the current state (denied → denied,
revoked → revoked, pending → pending, granted → granted on the same wording) is refused with
`CONSENT_ALREADY_IN_STATE` (409), never silently accepted. The one same-state change that is a
move is granted → granted on a newer policy version: the renewal a re-consent version asks for.
The objection to marketing (Art. 21(3)) is a separate use-case and is idempotent by design.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from dateutil.relativedelta import relativedelta
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_ipv46_address

from consent import events as consent_events
from consent import selectors
from consent.errors import PolicyVersionNotFound, PolicyVersionOutdated
from consent.models import (
    ConsentPurpose,
    ConsentRecord,
    ConsentSource,
    ConsentState,
    ConsentStatus,
    ConsentTrigger,
    PolicyVersion,
)
from customers import events as customer_events
from customers import selectors as customer_selectors
from customers import services as customer_services
from customers.actor import Actor
from customers.errors import InvalidStatusTransition, ValidationFailed

logger = logging.getLogger(__name__)


# The preference columns that are a view of consent (the marketing opt-ins, and the privacy
# toggles that have a purpose of their own). Purposes are data; these columns are code.
PREFERENCE_FIELD_BY_PURPOSE = {
    "marketing_email": "email_opt_in",
    "marketing_sms": "sms_opt_in",
    "marketing_push": "push_opt_in",
    "marketing_direct_mail": "direct_mail_opt_in",
    "analytics": "analytics_tracking",
    "personalization": "personalization",
    "third_party_sharing": "third_party_sharing",
}
PURPOSE_BY_PREFERENCE_FIELD = {field: code for code, field in PREFERENCE_FIELD_BY_PURPOSE.items()}

S = ConsentStatus
NOTHING = ""  # no record yet: behaves like not_requested, and may also start there

# The state machine (see the module docstring): the issue's moves plus the documented widening.
ISSUE_TRANSITIONS: dict[str, frozenset[str]] = {
    S.NOT_REQUESTED: frozenset({S.PENDING}),
    S.PENDING: frozenset({S.GRANTED, S.DENIED}),
    S.GRANTED: frozenset({S.REVOKED, S.EXPIRED}),
    S.DENIED: frozenset({S.GRANTED}),
    S.REVOKED: frozenset({S.GRANTED}),
    S.EXPIRED: frozenset({S.GRANTED}),
}
# Asked and answered in one interaction (the sign-up checkbox beside its notice).
WIDENED_TRANSITIONS: dict[str, frozenset[str]] = {S.NOT_REQUESTED: frozenset({S.GRANTED, S.DENIED})}
ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    NOTHING: frozenset({S.NOT_REQUESTED, S.PENDING, S.GRANTED, S.DENIED}),
    S.NOT_REQUESTED: frozenset({S.PENDING, S.GRANTED, S.DENIED}),
    S.PENDING: frozenset({S.GRANTED, S.DENIED}),
    S.GRANTED: frozenset({S.REVOKED, S.EXPIRED}),
    S.DENIED: frozenset({S.GRANTED}),
    S.REVOKED: frozenset({S.GRANTED}),
    S.EXPIRED: frozenset({S.GRANTED}),
}
# What a client may ask for; `expired` is reached only through the expiry task, `not_requested` only first.
REQUESTABLE_STATUSES = (S.GRANTED, S.DENIED, S.REVOKED, S.PENDING)
CLIENT_SOURCES = (
    ConsentSource.WEB,
    ConsentSource.MOBILE,
    ConsentSource.EMAIL_LINK,
    ConsentSource.CALL_CENTER,
    ConsentSource.IMPORT,
)
USER_AGENT_MAX = 1000
EXPIRY_BATCH_SIZE = 500

SYSTEM_ACTOR = Actor.system("consent")


def transition_allowed(previous: str, new: str) -> bool:
    return new in ALLOWED_TRANSITIONS.get(previous, frozenset())


@dataclass(frozen=True)
class Origin:
    """How a change reached us: the channel and, when the customer acted, their IP and user agent."""

    source: str
    ip_address: str | None = None
    user_agent: str = ""
    reason: str = ""


def clean_origin(*, actor: Actor, source: str, ip_address: str | None, user_agent: str, reason: str) -> Origin:
    if source not in ConsentSource.values:
        raise ValidationFailed(f"Unknown source {source!r}.", errors={"source": [f"Unknown source {source!r}."]})
    if actor.kind == "token" and source not in CLIENT_SOURCES:
        raise ValidationFailed(
            f"Source {source!r} is reserved for staff and scheduled jobs.",
            errors={"source": [f"Use one of: {', '.join(CLIENT_SOURCES)}."]},
        )
    if actor.kind == "staff" and source == ConsentSource.SYSTEM:
        raise ValidationFailed("Staff cannot record system changes.", errors={"source": ["Not for staff."]})
    reason = (reason or "").strip()
    if actor.kind == "staff" and not reason:
        raise ValidationFailed(
            "Staff must say why they record a consent change.", errors={"reason": ["This field is required."]}
        )
    if ip_address:
        try:
            validate_ipv46_address(ip_address)
        except DjangoValidationError:
            ip_address = None
    return Origin(
        source=source,
        ip_address=ip_address or None,
        user_agent=(user_agent or "").strip()[:USER_AGENT_MAX],
        reason=reason,
    )


def source_for(actor: Actor | None, *, registration_source: str | None = None) -> str:
    """The channel a change that came through preferences or registration is recorded with."""
    if actor is not None and actor.kind == "staff":
        return ConsentSource.ADMIN
    if registration_source in CLIENT_SOURCES:
        return registration_source
    if actor is not None and actor.kind == "token":
        return ConsentSource.WEB
    return ConsentSource.SYSTEM


def lock_customer(actor: Actor, customer_id: UUID | str):
    """The customer row, locked: every consent write for a customer is serialized on it (the same
    lock `customers.services` takes first, so the two apps never wait on each other in a cycle).
    """
    queryset = customer_selectors.customers_visible_to(actor).select_for_update()
    customer = customer_selectors.customer_get(actor=actor, customer_id=customer_id, queryset=queryset)
    if customer.status == selectors.ERASED:
        raise InvalidStatusTransition("An erased customer's consent cannot change.", code="CUSTOMER_ERASED")
    if customer.status == selectors.MERGED:
        raise InvalidStatusTransition(
            "This customer was merged into another: change the consent there.", code="CUSTOMER_MERGED"
        )
    return customer


def locked_state(customer_id: UUID, purpose: ConsentPurpose) -> ConsentState | None:
    return (
        ConsentState.objects.select_for_update(of=("self",))
        .select_related("policy_version")
        .filter(customer_id=customer_id, purpose=purpose)
        .first()
    )


def valid_until_for(purpose: ConsentPurpose, granted_at: datetime) -> datetime | None:
    if not purpose.default_validity_months:
        return None
    return granted_at + relativedelta(months=purpose.default_validity_months)


def named_version(purpose: ConsentPurpose, label: str, now: datetime) -> PolicyVersion:
    version = PolicyVersion.objects.filter(purpose=purpose, version=label).first()
    if version is None:
        raise PolicyVersionNotFound(f"Purpose {purpose.code} has no policy version {label!r}.")
    if version.effective_at > now:
        raise PolicyVersionNotFound(f"Policy version {label!r} of {purpose.code} is not in effect yet.")
    return version


def shown_version(purpose: ConsentPurpose, label: str | None, now: datetime) -> PolicyVersion:
    """The wording the customer saw: the one they name, or the one in effect now."""
    if label:
        return named_version(purpose, label, now)
    version = selectors.current_policy_version(purpose, at=now)
    if version is None:
        raise PolicyVersionNotFound(f"Purpose {purpose.code} has no policy version in effect.")
    return version


def grant_version(purpose: ConsentPurpose, label: str | None, now: datetime) -> PolicyVersion:
    """A grant must be on wording that no in-effect version requiring re-consent has superseded."""
    version = shown_version(purpose, label, now)
    newer = (
        selectors.effective_versions(purpose, at=now)
        .filter(requires_reconsent=True, effective_at__gt=version.effective_at)
        .first()
    )
    if newer is not None:
        raise PolicyVersionOutdated(
            f"Policy version {version.version} of {purpose.code} was superseded by {newer.version}, "
            "which requires new consent: show and grant that one."
        )
    return version


def append_change(
    *,
    actor: Actor,
    customer_id: UUID,
    purpose: ConsentPurpose,
    state: ConsentState | None,
    status: str,
    version: PolicyVersion,
    origin: Origin,
    trigger: str,
    now: datetime,
    implicit: bool = False,
    occurred_at: datetime | None = None,
) -> ConsentState:
    """Write one change: the record, the current state and the event, in the caller's transaction.

    `occurred_at` (default `now`) is when the change took effect, e.g. when a grant's validity ran out.
    """
    occurred_at = occurred_at or now
    valid_until = valid_until_for(purpose, now) if status == S.GRANTED else None
    record = ConsentRecord(
        customer_id=customer_id,
        purpose=purpose,
        status=status,
        previous_status=state.status if state is not None else NOTHING,
        policy_version=version,
        implicit=implicit,
        trigger=trigger,
        occurred_at=occurred_at,
        recorded_at=now,
        valid_until=valid_until,
        source=origin.source,
        actor=actor.label,
        ip_address=origin.ip_address,
        user_agent=origin.user_agent,
        reason=origin.reason,
    )
    record.save()
    if state is None:
        state = ConsentState(customer_id=customer_id, purpose=purpose)
    state.status = status
    state.policy_version = version
    state.source = origin.source
    state.granted_at = now if status == S.GRANTED else None
    state.valid_until = valid_until
    state.updated_at = occurred_at
    state.last_record = record
    state.save()
    record_event(record, actor)
    return state


def record_event(record: ConsentRecord, actor: Actor) -> None:
    event_type = consent_events.event_type_for(record.status)
    if event_type is not None:
        customer_events.record(
            event_type=event_type,
            subject=record.customer_id,
            data=consent_events.consent_payload(record),
            actor=actor,
        )


def write_preferences(*, actor: Actor, customer_id: UUID, changes: dict[str, bool]) -> None:
    """Make the preference columns show the consent just recorded (a no-op when they already do)."""
    if changes:
        customer_services.customer_preferences_update(actor=actor, customer_id=customer_id, changes=changes)


def expire_now(*, state: ConsentState, purpose: ConsentPurpose, now) -> ConsentState:
    """Record a grant past its validity as expired, as of when it ceased (what the expiry task writes)."""
    return append_change(
        actor=SYSTEM_ACTOR,
        customer_id=state.customer_id,
        purpose=purpose,
        state=state,
        status=S.EXPIRED,
        version=state.policy_version,
        origin=Origin(source=ConsentSource.SYSTEM),
        trigger=ConsentTrigger.EXPIRY,
        now=now,
        occurred_at=state.valid_until,
    )
