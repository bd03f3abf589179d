"""Addresses created through the services, so tests see real defaults, events and history."""

from addresses import services
from customers.actor import Actor

ADDRESSES = {
    "US": {"line1": "1600 Amphitheatre Pkwy", "city": "Mountain View", "state": "CA", "postal_code": "94043"},
    "GB": {"line1": "10 Downing Street", "city": "London", "postal_code": "SW1A 2AA"},
    "DE": {"line1": "Unter den Linden 77", "city": "Berlin", "postal_code": "10117"},
    "FR": {"line1": "55 Rue du Faubourg Saint-Honoré", "city": "Paris", "postal_code": "75008"},
    "JP": {"line1": "1-1 Chiyoda", "state": "Tokyo", "postal_code": "100-8111"},
    "VN": {"line1": "1 Tràng Tiền", "city": "Hoàn Kiếm", "state": "Hà Nội", "postal_code": "100000"},
    "BR": {"line1": "Av. Paulista, 1578", "city": "São Paulo", "state": "SP", "postal_code": "01310-200"},
}


def address_data(country: str = "DE", **overrides) -> dict:
    """A valid address of `country` in the API's field names."""
    return {
        "type": "shipping",
        "label": "Home",
        "first_name": "Ann",
        "last_name": "Lee",
        "country": country,
        **ADDRESSES[country],
        **overrides,
    }


def make_address(customer, *, actor=None, make_default=False, country="DE", **overrides):
    return services.address_create(
        actor=actor or Actor.system("factory"),
        customer_id=customer.pk,
        make_default=make_default,
        **address_data(country, **overrides),
    )
