"""Events that overtake their customer's registration wait for it, then apply as if in order."""

import threading
import time
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction

from customers.messaging import inbound
from customers.models import (
    Customer,
    CustomerActivity,
    CustomerStatus,
    DeadLetter,
    DeadLetterStatus,
    InboxMessage,
    OutboxEvent,
)
from tests.events.conftest import envelope
from tests.events.test_inbound import T0, apply, order
from tests.factories import CustomerFactory


def registered(user_id, email="late.person@example.com"):
    data = {"user_id": user_id, "email": email, "first_name": "Late", "last_name": "Person"}
    return envelope("identity.user.registered.v1", data, source="identity")


def deleted(user_id):
    return envelope("identity.user.deleted.v1", {"user_id": user_id}, source="identity")


def case(reference, case_id, rating, at):
    data = {"case_id": case_id, "customer_id": reference, "rating": rating, "closed_at": at.isoformat()}
    return envelope("support.case.closed.v1", data, source="support")


def points(kind, reference, amount):
    data = {"customer_id": reference, "points": amount, "reason": "order", "occurred_at": T0.isoformat()}
    return envelope(f"loyalty.points.{kind}.v1", data, source="loyalty")


def erasure_requests(customer):
    return OutboxEvent.objects.filter(event_type="customer.erasure_requested.v1", subject=str(customer.pk))


def snapshot(customer):
    c = Customer.objects.get(pk=customer.pk)
    return (
        c.order_count,
        c.open_order_count,
        c.total_spent,
        c.average_order_value,
        c.last_order_at,
        c.loyalty_points,
        c.satisfaction_score,
    )


@pytest.mark.django_db
class TestIdentityTombstone:
    def test_a_deletion_before_the_registration_makes_the_registered_customer_inactive_and_erased(self):
        deletion = deleted("u-late")
        outcome = apply(deletion)
        assert (outcome.applied, outcome.parked) == (0, 1)
        tombstone = DeadLetter.objects.get()
        assert (tombstone.reason, tombstone.status) == ("WAITING_FOR_CUSTOMER", DeadLetterStatus.PARKED)
        assert not InboxMessage.objects.exists()

        outcome = apply(registered("u-late"))
        assert (outcome.applied, outcome.revived, outcome.parked) == (1, 1, 0)
        customer = Customer.objects.get(external_id="u-late")
        assert customer.status == CustomerStatus.INACTIVE
        (request,) = erasure_requests(customer)
        assert request.data["source_event_id"] == deletion["event_id"]
        assert request.data["reason"] == "identity.user.deleted"
        tombstone.refresh_from_db()
        assert (tombstone.status, tombstone.resolved_by) == (DeadLetterStatus.REPLAYED, inbound.ARRIVAL_ACTOR_LABEL)
        assert InboxMessage.objects.filter(event_id=deletion["event_id"]).exists()

        # Redelivered, either message changes nothing more.
        assert apply(deletion).duplicates == 1
        assert apply(registered("u-late")).applied == 1
        assert erasure_requests(customer).count() == 1
        assert Customer.objects.get(pk=customer.pk).status == CustomerStatus.INACTIVE

    def test_the_late_registration_that_links_an_existing_customer_deactivates_it_too(self):
        existing = CustomerFactory(email="known@example.com")
        apply(deleted("u-linked"))
        apply(registered("u-linked", email="KNOWN@example.com"))
        existing.refresh_from_db()
        assert (existing.external_id, existing.status) == ("u-linked", CustomerStatus.INACTIVE)
        assert erasure_requests(existing).count() == 1

    def test_a_tombstone_waits_for_its_own_user_only(self):
        apply(deleted("u-gone"))
        apply(registered("u-other", email="other@example.com"))
        assert Customer.objects.get(external_id="u-other").status == CustomerStatus.ACTIVE
        assert DeadLetter.objects.get().status == DeadLetterStatus.PARKED


@pytest.mark.django_db
class TestEventsBeforeTheirCustomer:
    def family_events(self, reference):
        return [
            order("created", reference, f"{reference}-o1", "10.00", at=T0, placed_at=T0),
            order("created", reference, f"{reference}-o2", "30.00", at=T0, placed_at=T0 + timedelta(days=1)),
            order("completed", reference, f"{reference}-o1", "10.00", at=T0 + timedelta(hours=1), placed_at=T0),
            order(
                "cancelled",
                reference,
                f"{reference}-o2",
                "30.00",
                at=T0 + timedelta(hours=2),
                placed_at=T0 + timedelta(days=1),
            ),
            case(reference, f"{reference}-c1", 4, T0),
            case(reference, f"{reference}-c2", 2, T0 + timedelta(days=1)),
            points("earned", reference, 100),
            points("redeemed", reference, 40),
        ]

    def test_they_wait_then_apply_once_with_the_same_metrics_as_in_order(self):
        # Reference: the same events after the registration.
        apply(registered("u-ref", email="ref@example.com"))
        in_order = Customer.objects.get(external_id="u-ref")
        for body in self.family_events("u-ref"):
            apply(body)

        early = self.family_events("u-early")
        for body in early[:3]:
            apply(body)
        apply(*early[3:])  # several batches, all before the customer exists
        waiting = DeadLetter.objects.filter(reason="WAITING_FOR_CUSTOMER", status=DeadLetterStatus.PARKED)
        assert waiting.count() == len(early)
        assert not Customer.objects.filter(external_id="u-early").exists()

        outcome = apply(registered("u-early", email="early@example.com"))
        assert (outcome.applied, outcome.revived) == (1, len(early))
        customer = Customer.objects.get(external_id="u-early")
        assert snapshot(customer) == snapshot(in_order)
        assert snapshot(customer) == (1, 0, Decimal("10.00"), Decimal("10.00"), T0, 60, Decimal("3.00"))
        assert not waiting.exists()
        assert DeadLetter.objects.filter(status=DeadLetterStatus.REPLAYED).count() == len(early)
        kinds = sorted(CustomerActivity.objects.filter(customer=customer).values_list("type", flat=True))
        assert kinds.count("order_created") == 2 and kinds.count("support_case_closed") == 2
        assert OutboxEvent.objects.filter(event_type="customer.metrics.updated.v1", subject=str(customer.pk)).exists()

        # The broker redelivers everything: the inbox knows them all.
        outcome = apply(*early)
        assert (outcome.applied, outcome.duplicates, outcome.parked) == (0, len(early), 0)
        assert snapshot(customer) == snapshot(in_order)

    def test_a_registration_in_the_same_batch_after_its_events_needs_no_waiting(self):
        outcome = apply(order("created", "u-same", "o-9", "5.00"), registered("u-same", email="same@example.com"))
        assert (outcome.applied, outcome.parked, outcome.revived) == (2, 0, 0)
        assert Customer.objects.get(external_id="u-same").order_count == 1

    def test_a_waiting_event_redelivered_in_the_registration_batch_applies_once(self):
        body = order("created", "u-redo", "o-1", "7.00")
        apply(body)
        outcome = apply(registered("u-redo", email="redo@example.com"), body)
        assert outcome.parked == 0
        customer = Customer.objects.get(external_id="u-redo")
        assert snapshot(customer)[:3] == (1, 1, Decimal("7.00"))
        assert DeadLetter.objects.get().status == DeadLetterStatus.REPLAYED


def _in_thread(target):
    result = {}

    def run():
        try:
            result["value"] = target()
        except Exception as error:  # reported by the test
            result["error"] = error
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_an_event_parked_while_its_customer_is_being_created_is_not_left_waiting():
    """The registration's transaction holds the user's lock: the order waits for it, then sees the customer."""
    user_id = f"u-race-{uuid.uuid4().hex[:8]}"
    with transaction.atomic():
        apply(registered(user_id, email=f"{user_id}@example.com"))
        thread, result = _in_thread(lambda: apply(order("created", user_id, "o-race", "12.00")))
        time.sleep(0.5)
        assert thread.is_alive(), "the order must wait for the registration in flight, not park as waiting"
    thread.join(10)
    assert not thread.is_alive() and "error" not in result
    assert (result["value"].applied, result["value"].parked) == (1, 0)
    assert Customer.objects.get(external_id=user_id).order_count == 1
    assert not DeadLetter.objects.filter(status=DeadLetterStatus.PARKED).exists()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_registration_waits_for_an_event_being_parked_and_then_applies_it():
    user_id = f"u-race-{uuid.uuid4().hex[:8]}"
    with transaction.atomic():
        assert apply(order("created", user_id, "o-race", "12.00")).parked == 1
        thread, result = _in_thread(lambda: apply(registered(user_id, email=f"{user_id}@example.com")))
        time.sleep(0.5)
        assert thread.is_alive(), "the registration must wait until the waiting event is committed"
    thread.join(10)
    assert not thread.is_alive() and "error" not in result
    assert result["value"].revived == 1
    assert Customer.objects.get(external_id=user_id).order_count == 1
