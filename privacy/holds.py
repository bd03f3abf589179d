"""Reasons to keep a customer's data for now; listed in settings.PRIVACY_ERASURE_HOLD_CHECKS.

A hold check is a function `check(customer_id) -> reason | None` (an erasure request asks it for one
customer). For sweeps over many customers (retention) a check may also offer the set-based form as an
attribute, `check.exclude_held(customers: QuerySet) -> QuerySet`, returning the queryset without the
customers it holds; a check without it is asked customer by customer, batch by batch.
"""

from customers import selectors


def open_orders(customer_id) -> str | None:
    if selectors.customer_has_open_orders(customer_id):
        return "The customer has open orders; their data is needed until the orders are closed."
    return None


open_orders.exclude_held = selectors.without_open_orders
