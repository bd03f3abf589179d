"""Evaluating a batch of customers at once (what one batch of event ingestion queues): the same
verdicts, events and tiers as evaluating each customer, in a few statements."""

from decimal import Decimal

import pytest

from customers.models import Customer
from segments import events as segment_events
from segments import services, tasks
from segments.models import Segment
from tests.segments.conftest import (
    SYSTEM,
    add_orders,
    at_once,
    events_of,
    grant,
    make_customer,
    make_segment,
    matching,
    members,
    recalculate,
    revoke,
    set_metrics,
)

pytestmark = pytest.mark.django_db

SPENDERS = {"field": "total_spent", "op": "gte", "value": 1000}
FREQUENT = {"field": "orders_last_30_days", "op": "gte", "value": 2}
CONSENTING_FEMALE = {"field": "gender", "op": "eq", "value": "female"}


def live(rules, **fields):
    segment = make_segment(rules, **fields)
    recalculate(segment)
    return segment


def evaluate(*customers):
    return services.customers_segments_evaluate(actor=SYSTEM, customer_ids=[c.pk for c in customers])


def test_joins_and_leaves_match_the_rules_with_their_events_and_counts():
    stays, leaves, joins, outside = (make_customer() for _ in range(4))
    set_metrics(stays, total_spent=Decimal("2000"))
    set_metrics(leaves, total_spent=Decimal("1500"))
    spenders = live(SPENDERS, code="spenders")
    assert members(spenders) == {stays.pk, leaves.pk}

    set_metrics(leaves, total_spent=Decimal("10"))
    set_metrics(joins, total_spent=Decimal("1200"))
    result = evaluate(stays, leaves, joins, outside)

    assert members(spenders) == matching(SPENDERS) == {stays.pk, joins.pk}
    assert (result.joined["spenders"], result.left) == (1, {"spenders": 1})  # (and the built-in new_customer)
    assert [e.subject for e in events_of(segment_events.SEGMENT_ASSIGNED, segment_code="spenders")][-1] == str(joins.pk)
    [removed] = events_of(segment_events.SEGMENT_REMOVED, segment_code="spenders")
    assert (removed.subject, removed.data["reason"]) == (str(leaves.pk), "rules")
    spenders.refresh_from_db()
    assert spenders.member_count == 2


def test_only_the_batch_is_evaluated():
    inside, elsewhere = make_customer(), make_customer()
    spenders = live(SPENDERS)
    set_metrics(inside, total_spent=Decimal("5000"))
    set_metrics(elsewhere, total_spent=Decimal("5000"))
    evaluate(inside)
    assert members(spenders) == {inside.pk}


def test_a_second_run_changes_and_announces_nothing():
    customer = make_customer()
    spenders = live(SPENDERS)
    set_metrics(customer, total_spent=Decimal("5000"))
    evaluate(customer)
    assert evaluate(customer).joined == {} and evaluate(customer).left == {}
    assert len(events_of(segment_events.SEGMENT_ASSIGNED, segment_id=str(spenders.pk))) == 1


def test_agrees_with_evaluating_each_customer():
    """Order-based, consent-based and membership-based rules, and the tier: the batch leaves the same
    memberships and tiers as the per-customer evaluation of the same changes."""
    people = [make_customer(gender="female" if n % 2 else "male") for n in range(6)]
    for n, customer in enumerate(people):
        set_metrics(customer, total_spent=Decimal(400 * n), order_count=2 * n, average_order_value=Decimal("150"))
        add_orders(customer, n % 3, days_ago=3)
        if n % 3 == 0:
            grant(customer)
    spenders = live(SPENDERS, code="spenders")
    frequent = live(FREQUENT, code="frequent_recently")
    women = live(CONSENTING_FEMALE, code="consenting_women", requires_consent="marketing_email")
    loyal = live({"all": [{"field": "segments", "op": "contains", "value": "spenders"}, FREQUENT]}, code="loyal")
    segments = (spenders, frequent, women, loyal)

    def changed_world():
        for n, customer in enumerate(people):
            set_metrics(customer, total_spent=Decimal(2500 - 400 * n), order_count=5 + n)
            add_orders(customer, 1, days_ago=1)
            if n in (1, 4):
                grant(customer)
            if n == 0:
                revoke(customer)

    def outcome():
        tiers = {c.pk: Customer.objects.get(pk=c.pk).segment_tier.tier for c in people}
        return [members(segment) for segment in segments], tiers

    changed_world()
    evaluate(*people)
    batch = outcome()
    for segment in segments:  # the per-customer evaluation, from the same starting point
        recalculate(segment)
    assert outcome()[0] == batch[0]
    assert batch[0][0] == matching(SPENDERS) and batch[0][3] <= batch[0][0]
    for customer in people:
        services.customer_segments_evaluate(actor=SYSTEM, customer_id=customer.pk)
    assert outcome() == batch
    assert set(batch[1].values()) >= {"premium"}


def test_customers_no_longer_eligible_leave():
    customer = make_customer(metrics={"total_spent": Decimal("5000")})
    spenders = live(SPENDERS)
    Customer.objects.filter(pk=customer.pk).update(processing_restricted=True)
    evaluate(customer)
    assert members(spenders) == set()


def test_static_segments_requiring_consent_drop_those_who_withdrew():
    static = make_segment(code="newsletter", requires_consent="marketing_email")
    keeps, withdraws = make_customer(), make_customer()
    grant(keeps), grant(withdraws)
    services.segment_members_add(actor=SYSTEM, segment_id=static.pk, customer_ids=[keeps.pk, withdraws.pk])
    revoke(withdraws)
    result = evaluate(keeps, withdraws)
    assert members(static) == {keeps.pk}
    assert result.left == {"newsletter": 1}
    [left] = events_of(segment_events.SEGMENT_REMOVED, segment_id=str(static.pk))
    assert (left.subject, left.data["reason"]) == (str(withdraws.pk), "consent")
    assert Segment.objects.get(pk=static.pk).member_count == 1


def test_tiers_change_with_their_events():
    customer = make_customer()
    evaluate(customer)  # its first tier: regular
    set_metrics(customer, total_spent=Decimal("1500"), order_count=6, average_order_value=Decimal("250"))
    assert evaluate(customer).tier_changed == 1
    assert Customer.objects.get(pk=customer.pk).segment_tier.tier == "premium"
    [changed] = events_of(segment_events.TIER_CHANGED, customer_id=str(customer.pk))
    assert (changed.data["from_tier"], changed.data["to_tier"]) == ("regular", "premium")


def test_the_statements_do_not_grow_with_the_batch():
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    live(SPENDERS), live(FREQUENT)
    few = [make_customer() for _ in range(2)]
    many = [make_customer() for _ in range(40)]
    for customer in few + many:
        set_metrics(customer, total_spent=Decimal("3000"))
    with CaptureQueriesContext(connection) as for_few:
        evaluate(*few)
    with CaptureQueriesContext(connection) as for_many:
        evaluate(*many)
    # segments (locked), memberships, lookups for the rules, the evaluation, a statement and a member
    # count per segment with changes (here spenders and the built-in new_customer), static segments, tiers
    assert len(for_many) == len(for_few) <= 14


def test_the_task_evaluates_the_batch_set_based():
    customers = [make_customer(metrics={"total_spent": Decimal("3000")}) for _ in range(3)]
    spenders = live({"field": "order_count", "op": "gte", "value": 1})
    for customer in customers:
        set_metrics(customer, order_count=1)
    tasks.evaluate_customers([str(c.pk) for c in customers])
    assert members(spenders) == {c.pk for c in customers}


def test_the_task_falls_back_to_one_customer_at_a_time(monkeypatch):
    customers = [make_customer() for _ in range(2)]
    spenders = live({"field": "order_count", "op": "gte", "value": 1})
    for customer in customers:
        set_metrics(customer, order_count=3)

    def broken(**kwargs):
        raise ValueError("unexpected data")

    monkeypatch.setattr(services, "customers_segments_evaluate", broken)
    tasks.evaluate_customers([str(c.pk) for c in customers])
    assert members(spenders) == {c.pk for c in customers}


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_batches_of_the_same_customers_at_once_join_once():
    spenders = live(SPENDERS)
    customers = [make_customer(metrics={"total_spent": Decimal("5000")}) for _ in range(5)]
    at_once(3, lambda: evaluate(*customers))
    assert members(spenders) == {c.pk for c in customers}
    assert len(events_of(segment_events.SEGMENT_ASSIGNED, segment_id=str(spenders.pk))) == 5
    spenders.refresh_from_db()
    assert spenders.member_count == 5
