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


def queue_evaluation(*, event, actor=None) -> None:
    """After commit: queue the re-evaluation of the customer the event is about."""
    from segments import tasks

    customer_id = (event.data or {}).get("customer_id") or event.subject
    try:
        tasks.evaluate_customer.delay(str(customer_id))
    except Exception:  # the change is committed: a broker outage must not fail the request
        logger.exception("could not queue the segment evaluation of customer %s (%s)", customer_id, event.event_type)


def subscribe_all() -> None:
    for event_type in RE_EVALUATING_EVENTS:
        customer_events.subscribe(event_type, queue_evaluation, after_commit=True)
