"""Reactions to lower apps' events: re-evaluate the customer after commit, in a task.

Registered in `SegmentsConfig.ready`; the lower apps never know about segments.
"""

from __future__ import annotations

import logging

from addresses import events as address_events
from consent import events as consent_events
from customers import events as customer_events

logger = logging.getLogger(__name__)

# Recorded by event ingestion when order, support or loyalty events change a customer's metrics.
CUSTOMER_METRICS_UPDATED = getattr(customer_events, "CUSTOMER_METRICS_UPDATED", "customer.metrics.updated.v1")

RE_EVALUATING_EVENTS = (
    customer_events.CUSTOMER_CREATED,
    customer_events.CUSTOMER_UPDATED,
    customer_events.CUSTOMER_PREFERENCES_UPDATED,
    customer_events.CUSTOMER_STATUS_CHANGED,
    customer_events.CUSTOMER_RESTRICTION_CHANGED,
    address_events.ADDRESS_ADDED,
    address_events.ADDRESS_UPDATED,
    address_events.ADDRESS_REMOVED,
    address_events.DEFAULT_ADDRESS_CHANGED,
    consent_events.CONSENT_GRANTED,
    consent_events.CONSENT_REVOKED,
    consent_events.CONSENT_DENIED,
    CUSTOMER_METRICS_UPDATED,
)


# Ids per queued task: a batch of ingestion is hundreds of customers; a bigger one is split.
EVALUATION_BATCH = 500


def queue_evaluations(*, events, actor=None) -> None:
    """After commit, once per `record_many` call: queue one task with the ids of every customer the
    events are about (a batch of ingestion is one task, not one per event)."""
    customer_ids = list(dict.fromkeys(str((event.data or {}).get("customer_id") or event.subject) for event in events))
    queue_customer_evaluations(customer_ids, cause=events[0].event_type)


def queue_customer_evaluations(customer_ids: list[str], *, cause: str) -> None:
    """Queue the evaluation of these customers, `EVALUATION_BATCH` per task (call it after commit)."""
    from segments import tasks

    for start in range(0, len(customer_ids), EVALUATION_BATCH):
        chunk = customer_ids[start : start + EVALUATION_BATCH]
        try:
            tasks.evaluate_customers.delay(chunk)
        except Exception:  # the change is committed: a broker outage must not fail the request
            logger.exception("could not queue the segment evaluation of %d customer(s) (%s)", len(chunk), cause)


def subscribe_all() -> None:
    # `record` goes through `record_many` too: a single event is a batch of one.
    for event_type in RE_EVALUATING_EVENTS:
        customer_events.subscribe_batch(event_type, queue_evaluations)
