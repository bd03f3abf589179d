"""Precompiled queries answer exactly what their queryset answers, prepared on the real PostgreSQL."""

import uuid
from datetime import datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from customers.models import Customer
from customers.precompiled import PrecompiledQuery
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def _registered_since(customer_ids, since):
    return (
        Customer.objects.filter(pk__in=customer_ids, created_at__gte=since)
        .order_by("customer_number")
        .values_list("id", "email", "metadata")
    )


registered_since = PrecompiledQuery(_registered_since, customer_ids=[uuid.UUID], since=datetime)
with_preferences = PrecompiledQuery(
    lambda customer_id: Customer.objects.select_related("preferences").filter(pk=customer_id), customer_id=uuid.UUID
)


@pytest.fixture
def customers():
    return [CustomerFactory(metadata={"n": n, "nested": {"k": [n]}}) for n in range(4)]


def test_rows_are_the_querysets_for_every_list_length_and_value(customers):
    ids = [c.pk for c in customers]
    a_minute_ago = timezone.now() - timedelta(minutes=1)
    for chosen, since in [
        (ids[:1], a_minute_ago),
        (ids[:3], a_minute_ago),
        (ids, a_minute_ago),
        (ids, timezone.now() + timedelta(minutes=1)),
        ([uuid.uuid4()], a_minute_ago),
    ]:
        expected = list(_registered_since(chosen, since))
        assert registered_since.rows(customer_ids=chosen, since=since) == expected
    # JSON comes back decoded, as the queryset's converters give it
    assert registered_since.rows(customer_ids=ids[:1], since=a_minute_ago)[0][2] == {"n": 0, "nested": {"k": [0]}}


def test_instances_carry_what_select_related_joined(customers):
    customer = with_preferences.instances(customer_id=customers[2].pk)[0]
    expected = Customer.objects.select_related("preferences").get(pk=customers[2].pk)
    assert isinstance(customer, Customer)
    assert customer.pk == expected.pk and customer.email == expected.email and customer.metadata == expected.metadata
    assert customer._state.adding is False and customer._state.db == "default"
    with CaptureQueriesContext(connection) as queries:
        assert customer.preferences.language == expected.preferences.language
    assert len(queries) == 0  # joined, not read again
    assert with_preferences.instances(customer_id=uuid.uuid4()) == []


def test_a_statement_run_again_is_prepared_and_logged_like_any_query(customers):
    with CaptureQueriesContext(connection) as queries:
        for _ in range(3):
            with_preferences.instances(customer_id=customers[0].pk)
    assert len(queries) == 3
    assert customers[0].pk.hex in queries[0]["sql"] and "customers_customerpreferences" in queries[0]["sql"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE statement LIKE %s", ["%customers_customer%"])
        prepared = [row[0] for row in cursor.fetchall()]
        cursor.execute("SHOW plan_cache_mode")
        (plan_cache_mode,) = cursor.fetchone()
    assert any("customers_customerpreferences" in statement for statement in prepared)
    assert plan_cache_mode == "force_generic_plan"


def test_a_value_the_lookup_transforms_is_refused():
    containing = PrecompiledQuery(
        lambda term: Customer.objects.filter(email__icontains=term).values_list("id"), term=str
    )
    with pytest.raises(ValueError, match="did not reach the SQL parameters unchanged"):
        containing.rows(term="ann")


def test_past_the_kept_shapes_a_query_still_answers_compiling_each_time(customers, monkeypatch):
    monkeypatch.setattr("customers.precompiled._MAX_SHAPES", 2)
    query = PrecompiledQuery(_registered_since, customer_ids=[uuid.UUID], since=datetime)
    since = timezone.now() - timedelta(minutes=1)
    ids = [c.pk for c in customers]
    for length in (1, 2, 3, 4, 3):
        assert query.rows(customer_ids=ids[:length], since=since) == list(_registered_since(ids[:length], since))
    assert len(query._compiled) == 2


def test_a_list_passed_as_one_array_parameter_compiles_once_for_every_length(customers):
    from django.db.models.expressions import RawSQL

    from customers.precompiled import ArrayOf

    query = PrecompiledQuery(
        lambda ids: Customer.objects.filter(pk__in=RawSQL("SELECT unnest(%s::uuid[])", (ids,)))
        .order_by("customer_number")
        .values("id", "email"),
        ids=ArrayOf(str),
    )
    for chosen in (customers[:1], customers, customers[1:3], []):
        expected = [{"id": c.pk, "email": c.email} for c in sorted(chosen, key=lambda c: c.customer_number)]
        assert query.dicts(ids=[str(c.pk) for c in chosen]) == expected
    assert len(query._compiled) == 1
