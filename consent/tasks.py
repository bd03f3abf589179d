"""Consent's scheduled work: thin, idempotent, in batches; the rules live in `consent.services`."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.db import OperationalError

from consent import services
from customers.actor import Actor

EXPIRE_CONSENTS = "consent.tasks.expire_consents"
RECORD_MISSING_STATES = "consent.tasks.record_missing_states"
DROP_GRANTED_REPRESENTATIONS = "consent.tasks.drop_granted_representations"

# Merged into the Celery app's beat schedule by `ConsentConfig.ready` (equivalently, put this entry
# into `CELERY_BEAT_SCHEDULE` in the settings). Hourly: revoked or expired consent already stops
# counting the moment it lapses (`selectors.customers_consenting_to` checks `valid_until`); the
# task writes the record down and turns the opt-in columns off.
BEAT_SCHEDULE = {
    "consent-expire-due": {
        "task": EXPIRE_CONSENTS,
        "schedule": timedelta(hours=1),
        "options": {"expires": 50 * 60},  # a run queued behind an outage is skipped, the next catches up
    },
    # The safety net behind the task queued when a purpose's first policy version takes effect: every
    # customer has an explicit state for every purpose with wording in force. Idempotent, batched.
    "consent-record-missing-states": {
        "task": RECORD_MISSING_STATES,
        "schedule": timedelta(days=1),
        "options": {"expires": 12 * 60 * 60},
    },
}


# The sweeps: acknowledged once done, retried with backoff while PostgreSQL is unreachable.
RETRIED_WHILE_THE_DATABASE_IS_DOWN = {
    "acks_late": True,
    "autoretry_for": (OperationalError,),
    "retry_backoff": True,
    "retry_backoff_max": 600,
    "max_retries": 5,
}


@shared_task(
    name=EXPIRE_CONSENTS,
    **RETRIED_WHILE_THE_DATABASE_IS_DOWN,
)
def expire_consents(batch_size: int = services.EXPIRY_BATCH_SIZE) -> int:
    """Expire every grant past its validity; running it twice changes nothing the second time."""
    return services.consent_expire_due(actor=Actor.system("consent_expiry"), batch_size=batch_size)


@shared_task(
    name=RECORD_MISSING_STATES,
    **RETRIED_WHILE_THE_DATABASE_IS_DOWN,
)
def record_missing_states(purpose_id: str | None = None) -> int:
    """An explicit state (not_requested) for every customer without one, for one purpose or all."""
    if purpose_id is None:
        return services.consent_backfill_missing()
    return services.consent_record_missing_for_purpose(purpose_id=purpose_id)


@shared_task(name=DROP_GRANTED_REPRESENTATIONS, acks_late=True)
def drop_granted_representations(purpose_id: str) -> int:
    """Drop the cached representation of every customer granted for the purpose (their opt-in reads anew)."""
    return services.consent_drop_granted_representations(purpose_id=purpose_id)
