"""Re-import a portability export (Art. 20) as a new customer, through each app's own services."""

from __future__ import annotations

from datetime import date

from django.db import transaction

from addresses import services as address_services
from addresses.validation import ADDRESS_FIELDS
from consent import selectors as consent_selectors
from consent import services as consent_services
from customers import services as customer_services
from customers.actor import Actor
from customers.models import Customer
from privacy.exports import validate_document

PROFILE_FIELDS = (
    "email",
    "first_name",
    "last_name",
    "phone",
    "date_of_birth",
    "gender",
    "customer_type",
    "company_name",
    "external_id",
    "tags",
    "metadata",
    "custom_attributes",
)
# Consent is the source of truth for the opt-ins: they come back through the consent grants.
OPT_IN_FIELDS = ("email_opt_in", "sms_opt_in", "push_opt_in", "direct_mail_opt_in")


@transaction.atomic
def privacy_import_portable(*, actor: Actor, document: dict) -> Customer:
    validate_document(document)
    data = document["data"]
    profile = data["customers"]["profile"]
    fields = {name: profile[name] for name in PROFILE_FIELDS if profile.get(name) not in (None, "")}
    if "date_of_birth" in fields:
        fields["date_of_birth"] = date.fromisoformat(fields["date_of_birth"])
    preferences_rows = data["customers"]["preferences"]
    preferences = {
        name: value
        for name, value in (preferences_rows[0] if preferences_rows else {}).items()
        if name in customer_services.PREFERENCE_FIELDS and name not in OPT_IN_FIELDS
    }
    customer = customer_services.customer_create(
        actor=actor, registration_source="import", preferences=preferences, **fields
    )
    for address in data["addresses"].get("addresses", []):
        if address.get("deleted_at"):
            continue
        address_services.address_create(
            actor=actor,
            customer_id=customer.pk,
            make_default=bool(address.get("is_default_shipping") or address.get("is_default_billing")),
            **{name: address[name] for name in ADDRESS_FIELDS if address.get(name) not in (None, "")},
        )
    for state in data["consent"].get("current_state", []):
        # A preference (analytics tracking, marketing opt-in) may already have granted it in customer_create.
        already = consent_selectors.customer_consents_to(customer_id=customer.pk, purpose=state["purpose_code"])
        if state["status"] == "granted" and not already:
            consent_services.consent_change(
                actor=actor,
                customer_id=customer.pk,
                purpose_code=state["purpose_code"],
                status="granted",
                source="import",
                policy_version=state["policy_version_label"],
                reason="re-imported from the customer's portability export",
            )
    return customer
