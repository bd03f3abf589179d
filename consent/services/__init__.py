"""Every write use-case of consent. The API, the admin, the preference subscribers and tasks call these.

Each change appends a `ConsentRecord`, updates the `ConsentState` row and records the domain
event, all in one transaction. Consent is the source of truth for the opt-ins in the customer's
preferences: a consent change writes the matching preference through
`customers.services.customer_preferences_update`, and a preference change records the matching
consent through the subscribers in `sync` (registered in `ConsentConfig.ready`). The loop ends
because each side compares before writing: consent is changed first, so when the preference event
arrives the subscriber finds nothing left to do.

Split by use-case (the module grew past ~400 lines); import from here, not from the parts.
"""

from consent.services._common import (
    ALLOWED_TRANSITIONS,
    CLIENT_SOURCES,
    EXPIRY_BATCH_SIZE,
    ISSUE_TRANSITIONS,
    NOTHING,
    PREFERENCE_FIELD_BY_PURPOSE,
    PURPOSE_BY_PREFERENCE_FIELD,
    REQUESTABLE_STATUSES,
    WIDENED_TRANSITIONS,
    transition_allowed,
)
from consent.services.backfill import (
    BACKFILL_ACTOR,
    BACKFILL_BATCH_CUSTOMERS,
    NEW_POLICY_ACTOR,
    consent_backfill_missing,
    consent_record_missing_for_purpose,
)
from consent.services.changes import consent_change, consent_object_to_marketing, consent_records_redact
from consent.services.data_rights import erase_customers_data, export_customer_data
from consent.services.expiry import consent_expire_due
from consent.services.policies import (
    POLICY_VERSION_FIELDS,
    PURPOSE_FIELDS,
    policy_version_create,
    policy_version_in_use,
    policy_version_update,
    policy_version_validate,
    purpose_create,
    purpose_update,
    purpose_validate,
)
from consent.services.sync import consent_drop_granted_representations, on_customer_created, on_preferences_updated

__all__ = [
    "ALLOWED_TRANSITIONS",
    "BACKFILL_ACTOR",
    "BACKFILL_BATCH_CUSTOMERS",
    "CLIENT_SOURCES",
    "EXPIRY_BATCH_SIZE",
    "ISSUE_TRANSITIONS",
    "NEW_POLICY_ACTOR",
    "NOTHING",
    "POLICY_VERSION_FIELDS",
    "PREFERENCE_FIELD_BY_PURPOSE",
    "PURPOSE_BY_PREFERENCE_FIELD",
    "PURPOSE_FIELDS",
    "REQUESTABLE_STATUSES",
    "WIDENED_TRANSITIONS",
    "consent_backfill_missing",
    "consent_change",
    "consent_drop_granted_representations",
    "consent_expire_due",
    "consent_object_to_marketing",
    "consent_record_missing_for_purpose",
    "consent_records_redact",
    "erase_customers_data",
    "export_customer_data",
    "on_customer_created",
    "on_preferences_updated",
    "policy_version_create",
    "policy_version_in_use",
    "policy_version_update",
    "policy_version_validate",
    "purpose_create",
    "purpose_update",
    "purpose_validate",
    "transition_allowed",
]
