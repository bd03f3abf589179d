"""Read queries shared by the API, the admin and tasks."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from uuid import UUID

import phonenumbers
from django.conf import settings
from django.db.models import Case, Exists, IntegerField, OuterRef, Q, QuerySet, Value, When
from django.db.models.functions import Lower

from customers.actor import Actor
from customers.errors import CustomerNotFound
from customers.extensions import address_lookup
from customers.models import Customer

_PHONE_LIKE = re.compile(r"^\+?[\d\s().-]{4,}$")
# Regions a phone number written without its country code is read in (`020 7946 0123` in GB is
# +442079460123); the first that makes it a valid number wins for ranking, all are searched.
DEFAULT_PHONE_REGIONS = ("US", "GB", "DE", "FR")


def _phone_regions() -> tuple[str, ...]:
    return tuple(getattr(settings, "CUSTOMER_PHONE_SEARCH_REGIONS", DEFAULT_PHONE_REGIONS))


def _phone_forms(term: str) -> tuple[set[str], set[str]]:
    """What a phone-like term may be: (digit runs to find inside stored numbers, whole E.164 numbers).

    Stored numbers are E.164 (`+442079460123`). `4155552671` and `555-2671` are digit runs inside one;
    a national form with a trunk prefix (`020 7946 0123`) is not, so it is also read without the
    prefix (`2079460123`) and as a full number of each default region.
    """
    digits = re.sub(r"\D", "", term)
    runs, numbers = set(), set()
    if len(digits) >= 4:
        runs.add(digits)
    if not term.lstrip().startswith("+") and digits.startswith("0"):
        national = digits.lstrip("0")  # 0 (most of Europe), 00 before a country code
        if len(national) >= 4:
            runs.add(national)
    if len(digits) >= 7:
        for region in ((None,) if term.lstrip().startswith("+") else _phone_regions()):
            try:
                parsed = phonenumbers.parse(term, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(parsed):
                numbers.add(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))
    return runs, numbers


def customers_visible_to(actor: Actor) -> QuerySet[Customer]:
    """A customer's own token sees only that customer; everyone else sees all."""
    customers = Customer.objects.all()
    if actor.customer_id is not None:
        customers = customers.filter(pk=actor.customer_id)
    return customers


# The customer `customer_create` is registering, while the subscribers to its `customer.created.v1`
# run in its transaction: they are handed the instance it has just saved instead of reading it back.
_registering: ContextVar[Customer | None] = ContextVar("customer_registering", default=None)


@contextmanager
def registering(customer: Customer) -> Iterator[None]:
    """For `customer_create` only: while its created event is recorded, `registered_customer` is this
    instance, as saved (with its `preferences`)."""
    token = _registering.set(customer)
    try:
        yield
    finally:
        _registering.reset(token)


def registered_customer(customer_id: UUID | str) -> Customer:
    """For subscribers to `customer.created.v1`: the new customer with its preferences, as the
    registration saved them a moment ago in this transaction (read from the database outside it)."""
    customer = _registering.get()
    if customer is not None and str(customer.pk) == str(customer_id):
        return customer
    return Customer.objects.select_related("preferences").get(pk=customer_id)


def customer_get(*, actor: Actor, customer_id: UUID | str, queryset: QuerySet[Customer] | None = None) -> Customer:
    """The customer, or CUSTOMER_NOT_FOUND — also when it exists but the actor may not see it."""
    customers = queryset if queryset is not None else customers_visible_to(actor)
    if actor.customer_id is not None:
        customers = customers.filter(pk=actor.customer_id)
    try:
        return customers.get(pk=customer_id)
    except (Customer.DoesNotExist, ValueError, TypeError):
        raise CustomerNotFound(customer_id) from None


_CUSTOMER_NUMBER = re.compile(r"^[Cc](\d{1,9})$")


# Digits of a customer number, past its leading zeros, that a partial number must give: fewer match
# hundreds of numbers out of a million.
PARTIAL_NUMBER_DIGITS = 5


def _customer_number_filter(term: str) -> Q | None:
    """`C001550425` exactly, `C00155` as a prefix, `1550425` as the number without its C and zeros,
    and at least `PARTIAL_NUMBER_DIGITS` digits as part of one (`55042`).

    The part is matched without its leading zeros: every number holds `C00` and the trigrams of
    zeros, so a part starting with them would read much of the trigram index on a million customers.
    """
    found = _CUSTOMER_NUMBER.match(term)
    if found:
        number = term.upper()
        return Q(customer_number=number) if len(number) == 10 else Q(customer_number__startswith=number)
    if term.isdigit() and len(term) <= 9:
        match = Q(customer_number="C" + term.zfill(9))
        significant = term.lstrip("0")
        if len(significant) >= PARTIAL_NUMBER_DIGITS:
            match |= Q(customer_number__icontains=significant)
        return match
    return None


def _term_filter(term: str, *, one_of_several: bool = False) -> Q:
    """What one word of the query may match. A word among several is part of a name: emails, numbers
    and phones hold no spaces, so those are looked up only for a query of one word."""
    names = Q(first_name__icontains=term) | Q(last_name__icontains=term)
    if one_of_several:
        return names
    match = Q(email__icontains=term) | Q(external_id=term)
    if not _PHONE_LIKE.match(term):  # names hold no digits
        match |= names
    number = _customer_number_filter(term)
    if number is not None:
        match |= number
    if _PHONE_LIKE.match(term):
        runs, numbers = _phone_forms(term)
        for run in runs:
            match |= Q(phone__icontains=run)
        if numbers:
            match |= Q(phone__in=numbers)
    return match


def _matching(customers: QuerySet[Customer], term: str, *, one_of_several: bool = False) -> QuerySet[Customer]:
    match = _term_filter(term, one_of_several=one_of_several)
    lookup = address_lookup()
    by_address = lookup.search(term) if lookup is not None and not one_of_several else None
    if by_address is None:
        return customers.filter(match)
    # A UNION keeps every branch on its own index (an OR across two tables would scan every customer).
    ids = Customer.objects.filter(match).order_by().values("pk").union(by_address.order_by())
    return customers.filter(pk__in=ids)


def search_rank(query: str) -> Case:
    """0 exact (email, customer number, external id, phone), 1 the exact name, 2 a prefix, 3 anything else."""
    query = (query or "").strip()
    words = query.split()
    exact = Q(email__iexact=query) | Q(customer_number__iexact=query) | Q(external_id=query)
    digits = re.sub(r"\D", "", query)
    if _PHONE_LIKE.match(query) and len(digits) >= 7:
        exact |= Q(phone="+" + digits) | Q(phone__endswith=digits)
        numbers = _phone_forms(query)[1]
        if numbers:
            exact |= Q(phone__in=numbers)
    if len(words) == 2:
        name = Q(first_name__iexact=words[0], last_name__iexact=words[1]) | Q(
            first_name__iexact=words[1], last_name__iexact=words[0]
        )
    else:
        name = Q(first_name__iexact=query) | Q(last_name__iexact=query)
    first = words[0] if words else query
    prefix = (
        Q(email__istartswith=query)
        | Q(customer_number__istartswith=query)
        | Q(first_name__istartswith=first)
        | Q(last_name__istartswith=first)
    )
    return Case(When(exact, then=0), When(name, then=1), When(prefix, then=2), default=3, output_field=IntegerField())


def customer_identified_by(customers: QuerySet[Customer], query: str) -> QuerySet[Customer]:
    """The customers the query names exactly by an identifier (search rank 0): email (any case),
    customer number, external id, or phone (any written form, as E.164). A few rows at most, each
    found through a unique or b-tree index; annotated with `search_rank` like `customer_search`."""
    query = (query or "").strip()
    if not query or (len(query.split()) > 1 and not _PHONE_LIKE.match(query)):  # words: a name
        return customers.none().annotate(search_rank=search_rank(query))
    exact = Q(email_lower=Lower(Value(query))) | Q(customer_number=query.upper()) | Q(external_id=query)
    if _PHONE_LIKE.match(query):
        digits = re.sub(r"\D", "", query)
        exact |= Q(phone__in={*_phone_forms(query)[1], "+" + digits})
    return _with_email_lower(customers).filter(exact).annotate(search_rank=search_rank(query))


def customer_search(customers: QuerySet[Customer], query: str) -> QuerySet[Customer]:
    """Partial name, email, phone (any written form), customer number, external id or postal code;
    every word must match. Annotated with `search_rank` (order by it to see the exact match first)."""
    query = (query or "").strip()
    if not query:
        return customers
    terms = [query] if _PHONE_LIKE.match(query) else query.split()[:5]
    for term in terms:
        customers = _matching(customers, term, one_of_several=len(terms) > 1)
    return customers.annotate(search_rank=search_rank(query))


def with_email(customers: QuerySet[Customer], email: str) -> QuerySet[Customer]:
    """Customers whose email is `email` in any letter case, through the unique lower(email) index
    (`email__iexact` compiles to UPPER(), which only the trigram index serves: 7 ms instead of 0.1)."""
    return _with_email_lower(customers).filter(email_lower=Lower(Value(email)))


def with_customer_number(customers: QuerySet[Customer], number: str) -> QuerySet[Customer]:
    """Customers with exactly this customer number, written in any letter case (numbers are stored as `C…`)."""
    return customers.filter(customer_number=number.strip().upper())


def _with_email_lower(customers: QuerySet[Customer]) -> QuerySet[Customer]:
    """`email_lower` to filter on: the expression of the unique customer_email_ci_unique index."""
    return customers.alias(email_lower=Lower("email"))


def _open_orders():
    from customers.models import CustomerOrder, OrderStatus

    return CustomerOrder.objects.filter(status=OrderStatus.OPEN)


def customer_has_open_orders(customer_id: UUID | str) -> bool:
    return _open_orders().filter(customer_id=customer_id).exists()


def without_open_orders(customers: QuerySet[Customer]) -> QuerySet[Customer]:
    """`customers` less those with an open order (set-based, for sweeps over many customers)."""
    return customers.exclude(Exists(_open_orders().filter(customer=OuterRef("pk"))))


def merge_get(merge_id):
    """A merge with what it moved (for the apps' subscribers to `customer.merge_undone.v1`)."""
    from customers.merge import merge_get as get

    return get(merge_id)
