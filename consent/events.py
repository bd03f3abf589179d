"""Consent's domain events and their payloads (schemas in `consent/event_schemas/`).

Recorded through `customers.events.record` inside the transaction of the record they describe.
Payloads carry the record's proof facts but no personal data: no IP address, no user agent and
no free-text staff reason (those stay in the record, which erasure can redact).
"""

from __future__ import annotations

from consent.models import ConsentRecord, ConsentStatus, ConsentTrigger

CONSENT_GRANTED = "customer.consent.granted.v1"
CONSENT_REVOKED = "customer.consent.revoked.v1"
CONSENT_DENIED = "customer.consent.denied.v1"

EVENT_BY_STATUS = {
    ConsentStatus.GRANTED: CONSENT_GRANTED,
    ConsentStatus.REVOKED: CONSENT_REVOKED,
    ConsentStatus.EXPIRED: CONSENT_REVOKED,
    ConsentStatus.DENIED: CONSENT_DENIED,
}
ALL_EVENTS = (CONSENT_GRANTED, CONSENT_REVOKED, CONSENT_DENIED)


def event_reason(record: ConsentRecord) -> str:
    """`data.reason`: why the consent changed, in the words downstream consumers act on."""
    if record.status in (ConsentStatus.REVOKED, ConsentStatus.EXPIRED):
        if record.trigger in (ConsentTrigger.EXPIRY, ConsentTrigger.OBJECTION):
            return record.trigger
        return "withdrawal"
    if record.status == ConsentStatus.DENIED:
        return "objection" if record.trigger == ConsentTrigger.OBJECTION else "refusal"
    return "renewal" if record.trigger == ConsentTrigger.RENEWAL else "consent"


def event_type_for(status: str) -> str | None:
    """The event a record with this status produces (none for not_requested and pending)."""
    return EVENT_BY_STATUS.get(status)


def consent_payload(record: ConsentRecord) -> dict:
    version = record.policy_version
    return {
        "record_id": str(record.id),
        "customer_id": str(record.customer_id),
        "purpose": record.purpose.code,
        "is_marketing": record.purpose.is_marketing,
        "status": record.status,
        "previous_status": record.previous_status or None,
        "reason": event_reason(record),
        "trigger": record.trigger,
        "policy_version": version.version,
        "policy_version_id": str(version.id),
        "policy_text_hash": version.text_hash,
        "occurred_at": record.occurred_at.isoformat(),
        "valid_until": record.valid_until.isoformat() if record.valid_until else None,
        "source": record.source,
        "implicit": record.implicit,
        "recorded_by": record.actor,
    }
