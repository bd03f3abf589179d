"""The addresses app's errors: the customers app's error kinds with address codes."""

from __future__ import annotations

from addresses.models import MAX_ACTIVE_ADDRESSES
from customers.errors import ApplicationError, NotFound


class AddressNotFound(NotFound):
    code = "ADDRESS_NOT_FOUND"

    def __init__(self, address_id: object = None) -> None:
        super().__init__("No address with this id." if address_id is None else f"Address {address_id} not found.")


class AddressLimitExceeded(ApplicationError):
    code = "ADDRESS_LIMIT_EXCEEDED"
    kind = "invalid"

    def __init__(self) -> None:
        super().__init__(f"A customer can have at most {MAX_ACTIVE_ADDRESSES} addresses; remove one first.")
