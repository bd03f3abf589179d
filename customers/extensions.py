"""Extension points through which higher apps add to the customer without customers importing them.

`register_representation_field` lets e.g. addresses add `default_shipping_address` or segments
add `tier` to `GET /customers/{id}`: a DRF field (for the schema) and a bulk loader (one query
for a whole page of customers, never one per customer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID


@dataclass(frozen=True)
class RepresentationField:
    """`load` maps customer ids to this field's values (missing ids get `default`). Fields whose
    values come from one query share a `load` that returns them all, {field name: {id: value}}, and
    say so with `load_returns_all_fields`: it is then called once for all of them."""

    name: str
    make_field: Callable[[], Any]  # returns a read-only DRF serializer field, used for the schema
    load: Callable[[list[UUID]], dict]
    default: Any = None
    load_returns_all_fields: bool = False


def load_representation_fields(customer_ids: list[UUID]) -> list[tuple[RepresentationField, dict[UUID, Any]]]:
    """Each registered field with its values for these customers: one call per distinct loader."""
    shared: dict[Callable, dict[str, dict[UUID, Any]]] = {}
    loaded = []
    for field in _representation_fields.values():
        if not field.load_returns_all_fields:
            loaded.append((field, field.load(customer_ids)))
            continue
        if field.load not in shared:
            shared[field.load] = field.load(customer_ids)
        loaded.append((field, shared[field.load].get(field.name, {})))
    return loaded


_representation_fields: dict[str, RepresentationField] = {}


def register_representation_field(field: RepresentationField) -> None:
    _representation_fields[field.name] = field


def representation_fields() -> Iterable[RepresentationField]:
    return _representation_fields.values()


# ---------------------------------------------------------------- addresses, as the back-office needs them


@dataclass(frozen=True)
class AddressLookup:
    """What customers' search, duplicate detection and exports need from the address book.

    - `search(term)`: a values queryset of customer ids whose addresses match the term (e.g. a
      postal code), or None when the term cannot be one;
    - `postal_codes_of(customer_id)`: the customer's active postal codes;
    - `customers_at(postal_codes)`: a values queryset of ids of customers with an active address there;
    - `export_join` / `export_columns`: SQL joining one row per customer (alias `a`) and the
      columns it adds to a customer export, `(name, sql expression, personal)`.
    """

    search: Callable[[str], Any]
    postal_codes_of: Callable[[UUID], list[str]]
    customers_at: Callable[[list[str]], Any]
    export_join: str = ""
    export_columns: tuple[tuple[str, str, bool], ...] = ()


_address_lookup: AddressLookup | None = None


def register_address_lookup(lookup: AddressLookup) -> None:
    global _address_lookup
    _address_lookup = lookup


def address_lookup() -> AddressLookup | None:
    return _address_lookup


# ---------------------------------------------------------------- the customer page's recent changes


@dataclass(frozen=True)
class HistoryEntry:
    at: Any  # datetime
    what: str  # e.g. "Address", "Profile"
    change: str  # the reason or "created" / "changed" / "deleted"
    who: str  # the actor label


HistorySource = Callable[[UUID, int], list[HistoryEntry]]  # (customer id, limit) -> newest first, one query
_history_sources: list[HistorySource] = []


def register_history_source(source: HistorySource) -> None:
    if source not in _history_sources:
        _history_sources.append(source)


def history_sources() -> Iterable[HistorySource]:
    return tuple(_history_sources)


# ---------------------------------------------------------------- preference columns that are another app's view


@dataclass(frozen=True)
class PreferenceViewResult:
    """What a preference view shows for a batch of customers: customer id -> {field: value}, and for
    a view that changes with time alone (a grant runs past its validity), customer id -> the next
    such moment (absent: none to come)."""

    values: dict[UUID, dict[str, Any]]
    fresh_until: dict[UUID, Any]


PreferenceView = Callable[[list[UUID]], PreferenceViewResult]
_preference_views: list[PreferenceView] = []


def register_preference_view(view: PreferenceView) -> None:
    """Let a higher app own what some preference columns read as (consent: the marketing opt-ins are
    true exactly while the customer's consent for the purpose counts). One call per batch of customers;
    the moments it names bound how long a cached representation lives."""
    if view not in _preference_views:
        _preference_views.append(view)


def apply_preference_views(preferences: Iterable[Any]) -> dict[UUID, Any]:
    """Set the registered views' values on these `CustomerPreferences` instances (in memory): what the
    API and the admin show, and what a preference change is compared against. Returns, per customer,
    the earliest moment a view may show something else by itself (absent: none).
    """
    prefs = [p for p in preferences if p is not None]
    if not prefs or not _preference_views:
        return {}
    values, fresh_until = _view_results([p.customer_id for p in prefs])
    for p in prefs:
        for field, value in values.get(p.customer_id, {}).items():
            setattr(p, field, value)
    return fresh_until


def preference_view_values(customer_ids: list[UUID]) -> dict[UUID, dict[str, Any]]:
    """customer id -> {field: value as the registered views show it} (empty without views)."""
    return _view_results(customer_ids)[0]


def _view_results(customer_ids: list[UUID]) -> tuple[dict[UUID, dict[str, Any]], dict[UUID, Any]]:
    values: dict[UUID, dict[str, Any]] = {}
    fresh_until: dict[UUID, Any] = {}
    for view in _preference_views:
        result = view(list(customer_ids))
        for customer_id, shown in result.values.items():
            values.setdefault(customer_id, {}).update(shown)
        for customer_id, moment in result.fresh_until.items():
            if customer_id not in fresh_until or moment < fresh_until[customer_id]:
                fresh_until[customer_id] = moment
    return values, fresh_until
