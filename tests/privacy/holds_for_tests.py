"""Hold checks the retention tests configure (settings.PRIVACY_ERASURE_HOLD_CHECKS)."""

from customers.models import Customer

LEGAL_HOLD_TAG = "legal-hold"


def legal_hold(customer_id) -> str | None:
    """Per-customer only (no set-based form): retention must ask it batch by batch."""
    if Customer.objects.filter(pk=customer_id, tags__contains=[LEGAL_HOLD_TAG]).exists():
        return "Under legal hold."
    return None


def vip_hold(customer_id) -> str | None:
    if Customer.objects.filter(pk=customer_id, tags__contains=["vip-hold"]).exists():
        return "VIP hold."
    return None


vip_hold.exclude_held = lambda customers: customers.exclude(tags__contains=["vip-hold"])
