"""Per-customer evaluation: every kind of change to a customer re-evaluates only that customer, after commit."""

from decimal import Decimal

import pytest
from django.db import transaction

from addresses import services as address_services
from consent import services as consent_services
from customers import events as customer_events
from customers import services as customer_services
from customers.models import Customer
from segments import events as segment_events
from segments import services
from segments.models import Segment, SegmentMembership
from segments.subscribers import CUSTOMER_METRICS_UPDATED, RE_EVALUATING_EVENTS
from tests.addresses.factories import make_address
from tests.segments.conftest import (
    SYSTEM,
    at_once,
    events_of,
    grant,
    make_customer,
    make_segment,
    members,
    recalculate,
    revoke,
    set_metrics,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def after_commit(django_capture_on_commit_callbacks):
    """`with after_commit():` runs what the block queued for after commit (the eager evaluation task)."""

    def run():
        return django_capture_on_commit_callbacks(execute=True)

    return run


def live(rules, **fields):
    segment = make_segment(rules, **fields)
    recalculate(segment)
    return segment


def test_every_change_event_is_subscribed():
    expected = {
        "customer.created.v1",
        "customer.updated.v1",
        "customer.status_changed.v1",
        "customer.preferences.updated.v1",
        "customer.restriction_changed.v1",
        "customer.address.added.v1",
        "customer.address.updated.v1",
        "customer.address.removed.v1",
        "customer.default_address.changed.v1",
        "customer.consent.granted.v1",
        "customer.consent.revoked.v1",
        "customer.consent.denied.v1",
        "customer.metrics.updated.v1",
    }
    assert set(RE_EVALUATING_EVENTS) == expected
    from segments.subscribers import queue_evaluations

    assert all(queue_evaluations in customer_events._after_commit_batch[name] for name in expected)
    assert not any(queue_evaluations in handlers for handlers in customer_events._in_transaction.values())


def test_a_new_customer_joins_new_customer_and_gets_a_tier(after_commit):
    builtin = Segment.objects.get(code="new_customer")
    with after_commit():
        customer = make_customer()
    assert customer.pk in members(builtin)
    [event] = events_of(segment_events.SEGMENT_ASSIGNED, customer_id=str(customer.pk))
    assert event.data["segment_code"] == "new_customer" and event.data["source"] == "rule"
    assert customer.segment_tier.tier == "regular"
    builtin.refresh_from_db()
    assert builtin.member_count == 1


def test_nothing_happens_before_commit():
    customer = make_customer()  # the test transaction never commits
    assert not SegmentMembership.objects.filter(customer=customer).exists()


def test_profile_update(after_commit):
    segment = live({"field": "tags", "op": "contains", "value": "vip"})
    customer = make_customer()
    with after_commit():
        customer_services.customer_update(actor=SYSTEM, customer_id=customer.pk, changes={"tags": ["vip"]})
    assert customer.pk in members(segment)
    with after_commit():
        customer_services.customer_update(actor=SYSTEM, customer_id=customer.pk, changes={"tags": []})
    assert customer.pk not in members(segment)
    [left] = events_of(segment_events.SEGMENT_REMOVED, customer_id=str(customer.pk), segment_id=str(segment.pk))
    assert left.data["reason"] == "rules"


def test_only_the_changed_customer_is_evaluated(after_commit):
    segment = live({"field": "total_spent", "op": "gte", "value": 100})
    changed, untouched = make_customer(), make_customer()
    set_metrics(untouched, total_spent=Decimal("500"))  # behind the platform's back: no event
    with after_commit():
        customer_services.customer_update(actor=SYSTEM, customer_id=changed.pk, changes={"first_name": "Zed"})
    assert members(segment) == set()
    set_metrics(changed, total_spent=Decimal("500"))
    with after_commit():
        customer_services.customer_update(actor=SYSTEM, customer_id=changed.pk, changes={"first_name": "Zoe"})
    assert members(segment) == {changed.pk}


def test_status_change(after_commit):
    segment = live({"field": "status", "op": "eq", "value": "active"})
    customer = make_customer()
    with after_commit():
        services.customer_segments_evaluate(actor=SYSTEM, customer_id=customer.pk)
    assert customer.pk in members(segment)
    with after_commit():
        customer_services.customer_change_status(
            actor=SYSTEM, customer_id=customer.pk, status="inactive", reason="asked"
        )
    assert customer.pk not in members(segment)


def test_preferences(after_commit):
    segment = live({"field": "language", "op": "starts_with", "value": "de"})
    customer = make_customer()
    with after_commit():
        customer_services.customer_preferences_update(
            actor=SYSTEM, customer_id=customer.pk, changes={"language": "de-CH"}
        )
    assert customer.pk in members(segment)


def test_restriction_takes_the_customer_out(after_commit):
    segment = live({"field": "order_count", "op": "gte", "value": 0})
    customer = make_customer()
    services.customer_segments_evaluate(actor=SYSTEM, customer_id=customer.pk)
    assert customer.pk in members(segment)
    with after_commit():
        customer_services.customer_set_processing_restriction(
            actor=SYSTEM, customer_id=customer.pk, restricted=True, reason="Art. 18"
        )
    assert customer.pk not in members(segment)


class TestAddresses:
    def test_added_updated_removed_and_default_changed(self, after_commit):
        segment = live({"field": "country", "op": "eq", "value": "FR"})
        customer = make_customer()
        with after_commit():
            home = make_address(customer, country="FR")  # added, becomes the default
        assert customer.pk in members(segment)
        with after_commit():
            address_services.address_update(
                actor=SYSTEM,
                customer_id=customer.pk,
                address_id=home.pk,
                changes={"country": "DE", "line1": "Unter den Linden 77", "city": "Berlin", "postal_code": "10117"},
            )
        assert customer.pk not in members(segment)
        with after_commit():
            paris = make_address(customer, country="FR")  # added, not the default
        assert customer.pk not in members(segment)
        with after_commit():
            address_services.address_set_default(actor=SYSTEM, customer_id=customer.pk, address_id=paris.pk)
        assert customer.pk in members(segment)
        with after_commit():
            address_services.address_delete(actor=SYSTEM, customer_id=customer.pk, address_id=paris.pk)
        assert customer.pk not in members(segment)  # the Berlin address took over as default


class TestConsent:
    def test_granted_revoked_and_denied(self, after_commit):
        by_rule = live({"field": "consent", "op": "contains", "value": "marketing_sms"})
        required = live({"field": "order_count", "op": "gte", "value": 0}, requires_consent="marketing_sms")
        customer = make_customer()
        with after_commit():
            grant(customer, "marketing_sms")
        assert customer.pk in members(by_rule) and customer.pk in members(required)
        with after_commit():
            revoke(customer, "marketing_sms")
        assert customer.pk not in members(by_rule) and customer.pk not in members(required)

    def test_denied(self, after_commit):
        segment = live({"field": "total_spent", "op": "gte", "value": 100})
        customer = make_customer()
        set_metrics(customer, total_spent=Decimal("500"))  # no event: not yet re-evaluated
        with after_commit():
            consent_services.consent_change(
                actor=SYSTEM, customer_id=customer.pk, purpose_code="marketing_push", status="denied", source="web"
            )
        assert customer.pk in members(segment)

    def test_static_segments_requiring_consent_drop_members_who_withdraw(self, after_commit):
        static = make_segment(code="newsletter_list", requires_consent="marketing_email")
        customer = make_customer()
        grant(customer)
        services.segment_members_add(actor=SYSTEM, segment_id=static.pk, customer_ids=[customer.pk])
        assert customer.pk in members(static)
        with after_commit():
            revoke(customer)
        assert customer.pk not in members(static)
        [left] = events_of(segment_events.SEGMENT_REMOVED, segment_id=str(static.pk))
        assert left.data["reason"] == "consent" and left.data["source"] == "manual"


def test_metrics_updated_by_event_ingestion(after_commit):
    segment = live({"field": "total_spent", "op": "gte", "value": 1000})
    with after_commit():
        customer = make_customer()
    with after_commit(), transaction.atomic():  # what ingestion does: metrics and event in one transaction
        Customer.objects.filter(pk=customer.pk).update(
            total_spent=Decimal("1500"), order_count=6, average_order_value=Decimal("250")
        )
        customer_events.record(
            event_type=CUSTOMER_METRICS_UPDATED,
            subject=customer.pk,
            data={"customer_id": str(customer.pk), "order_count": 6},
        )
    assert customer.pk in members(segment)
    assert customer.segment_tier.tier == "premium"
    [changed] = events_of(segment_events.TIER_CHANGED, customer_id=str(customer.pk))
    assert (changed.data["from_tier"], changed.data["to_tier"]) == ("regular", "premium")


def test_tracked_activity_re_evaluates_rules_on_last_activity(after_commit):
    from django.utils import timezone

    from customers.activity import activity_track

    recently_active = live({"field": "last_activity_at", "op": "within_last_days", "value": 7})
    with after_commit():
        customer = make_customer()
    assert customer.pk not in members(recently_active)
    with after_commit():
        activity_track(actor=SYSTEM, customer_id=customer.pk, activity_type="login", occurred_at=timezone.now())
    assert customer.pk in members(recently_active)


def test_a_batch_of_ingestion_is_one_evaluation_task_with_every_customer(after_commit):
    """The real batch path: orders recorded, metrics recomputed for the batch (one record_many of
    customer.metrics.updated.v1), then one task evaluates all its customers."""
    from celery.signals import task_prerun

    from customers.messaging.effects import INBOUND_ACTOR, customer_metrics_recompute
    from tests.segments.conftest import add_orders

    segment = live({"field": "total_spent", "op": "gte", "value": 1000})
    with after_commit():
        big, small, bigger = make_customer(), make_customer(), make_customer()
    add_orders(big, 5, total="250.00")
    add_orders(small, 1, total="20.00")
    add_orders(bigger, 10, total="300.00")
    started = []

    def seen(sender=None, args=None, kwargs=None, **extra):
        started.append((sender.name, list(args or ()) + list((kwargs or {}).values())))

    task_prerun.connect(seen, weak=False)
    try:
        with after_commit(), transaction.atomic():
            changed = customer_metrics_recompute(actor=INBOUND_ACTOR, customer_ids=[big.pk, small.pk, bigger.pk])
    finally:
        task_prerun.disconnect(seen)
    assert len(changed) == 3
    evaluations = [call for call in started if call[0].startswith("segments.tasks.evaluate")]
    assert len(evaluations) == 1, evaluations
    name, (ids,) = evaluations[0]
    assert name == "segments.tasks.evaluate_customers"
    assert sorted(ids) == sorted(str(c.pk) for c in (big, small, bigger))
    assert members(segment) == {big.pk, bigger.pk}
    assert {Customer.objects.get(pk=c.pk).segment_tier.tier for c in (big, small)} == {"premium", "regular"}


def test_dependent_segments_follow_within_one_evaluation():
    base = live({"field": "total_spent", "op": "gte", "value": 100}, code="spenders")
    derived = live({"field": "segments", "op": "contains", "value": "spenders"}, code="derived_spenders")
    customer = make_customer(metrics={"total_spent": Decimal("300")})
    result = services.customer_segments_evaluate(actor=SYSTEM, customer_id=customer.pk)
    assert {"spenders", "derived_spenders"} <= set(result.joined)
    assert customer.pk in members(base) and customer.pk in members(derived)


def test_dynamic_segments_follow_a_static_one_they_name(after_commit):
    listed = make_segment(code="hand_picked")  # static
    follower = live({"field": "segments", "op": "contains", "value": "hand_picked"}, code="hand_picked_follower")
    with after_commit():
        ann, bob = make_customer(), make_customer()
    with after_commit():
        services.segment_members_add(actor=SYSTEM, segment_id=listed.pk, customer_ids=[ann.pk, bob.pk])
    assert members(follower) == {ann.pk, bob.pk}
    with after_commit():
        services.segment_members_remove(actor=SYSTEM, segment_id=listed.pk, customer_ids=[bob.pk])
    assert members(follower) == {ann.pk}
    with after_commit():
        services.segment_members_import(
            actor=SYSTEM, segment_id=listed.pk, rows=[{"customer_id": str(bob.pk)}], replace=True
        )
    assert members(follower) == {bob.pk}


def test_evaluation_is_a_handful_of_queries(django_assert_max_num_queries):
    customer = make_customer(metrics={"order_count": 3})
    services.customer_segments_evaluate(actor=SYSTEM, customer_id=customer.pk)
    # locks (2), segments (2), memberships, purposes/segments lookups, one evaluation query, tier (3)
    with django_assert_max_num_queries(12):
        services.customer_segments_evaluate(actor=SYSTEM, customer_id=customer.pk)


def test_inactive_segments_are_left_alone():
    segment = live({"field": "order_count", "op": "gte", "value": 0})
    customer = make_customer()
    services.segment_update(actor=SYSTEM, segment_id=segment.pk, changes={"status": "inactive"})
    services.customer_segments_evaluate(actor=SYSTEM, customer_id=customer.pk)
    assert customer.pk not in members(segment)


def test_a_broken_broker_does_not_fail_the_change(after_commit, celery_broker_down):
    with after_commit():
        customer = make_customer()
    assert Customer.objects.filter(pk=customer.pk).exists()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_evaluations_of_one_customer_at_once_join_once():
    segment = live({"field": "total_spent", "op": "gte", "value": 100})
    customer = make_customer(metrics={"total_spent": Decimal("500")})
    at_once(3, lambda: services.customer_segments_evaluate(actor=SYSTEM, customer_id=customer.pk))
    assert SegmentMembership.objects.filter(segment=segment, customer=customer).count() == 1
    assert len(events_of(segment_events.SEGMENT_ASSIGNED, segment_id=str(segment.pk))) == 1
    segment.refresh_from_db()
    assert segment.member_count == 1
