"""Reasons to keep a customer's data for now; listed in settings.PRIVACY_ERASURE_HOLD_CHECKS."""

from customers import selectors


def open_orders(customer_id) -> str | None:
    if selectors.customer_has_open_orders(customer_id):
        return "The customer has open orders; their data is needed until the orders are closed."
    return None
