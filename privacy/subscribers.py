"""Privacy's reactions to lower apps' events (registered in PrivacyConfig.ready)."""

from __future__ import annotations

from customers import events
from customers.actor import Actor

IDENTITY_ACTOR = Actor.system("privacy:erasure-requested")


def on_erasure_requested(*, event, actor: Actor | None = None) -> None:
    """In the transaction of the inbound change: the erasure request is filed with it or not at all."""
    from privacy import services

    services.privacy_erasure_requested(
        actor=IDENTITY_ACTOR,
        customer_id=event.data.get("customer_id") or event.subject,
        source_event_id=str(event.data.get("source_event_id", "")),
        reason=str(event.data.get("reason", "")),
    )


def subscribe_all() -> None:
    events.subscribe(events.CUSTOMER_ERASURE_REQUESTED, on_erasure_requested)
