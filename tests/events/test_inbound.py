"""What inbound events do, batch by batch, against the real database (no broker needed here)."""

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.db import IntegrityError

from customers import cache as customer_cache
from customers import events
from customers.messaging import effects, inbound
from customers.models import (
    Customer,
    CustomerActivity,
    CustomerOrder,
    CustomerStatus,
    DeadLetter,
    DeadLetterStatus,
    InboxMessage,
    OutboxEvent,
)
from tests.events.conftest import envelope
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def apply(*bodies):
    parsed = [
        inbound.parse(json.dumps(body) if isinstance(body, dict) else body, body.get("event_type", ""))
        if isinstance(body, dict)
        else inbound.parse(body)
        for body in bodies
    ]
    return inbound.apply_batch(parsed)


def order(kind, customer, order_id="o-1", total="10.00", currency="EUR", at=T0, placed_at=T0, **extra):
    data = {
        "order_id": order_id,
        "customer_id": str(getattr(customer, "pk", customer)),
        "total": total,
        "currency": currency,
        "status": {"created": "open"}.get(kind, kind),
        "placed_at": placed_at.isoformat(),
    }
    return envelope(f"order.{kind}.v1", data, occurred_at=at, **extra)


def metrics(customer):
    customer = Customer.objects.get(pk=customer.pk)
    return (
        customer.order_count,
        customer.open_order_count,
        customer.total_spent,
        customer.average_order_value,
        customer.last_order_at,
    )


def metrics_events(customer):
    return list(OutboxEvent.objects.filter(event_type="customer.metrics.updated.v1", subject=str(customer.pk)))


@pytest.fixture
def customer():
    return CustomerFactory(email="buyer@example.com")


class TestOrders:
    def test_created_and_completed_orders_count_and_the_metrics_event_says_so(self, customer):
        version = customer.version
        outcome = apply(
            order("created", customer, "o-1", "10.00", placed_at=T0),
            order("created", customer, "o-2", "25.00", placed_at=T0 + timedelta(days=1)),
        )
        assert (outcome.applied, outcome.duplicates, outcome.parked) == (2, 0, 0)
        assert metrics(customer) == (2, 2, Decimal("35.00"), Decimal("17.50"), T0 + timedelta(days=1))
        apply(order("completed", customer, "o-1", "10.00", at=T0 + timedelta(hours=1)))
        assert metrics(customer) == (2, 1, Decimal("35.00"), Decimal("17.50"), T0 + timedelta(days=1))

        refreshed = Customer.objects.get(pk=customer.pk)
        assert refreshed.version == version + 2  # one bump per batch that changed something
        (first, second) = sorted(metrics_events(customer), key=lambda e: e.data["version"])
        assert first.data["changed_fields"] == [
            "order_count",
            "open_order_count",
            "total_spent",
            "spent_currency",
            "average_order_value",
            "last_order_at",
        ]
        assert second.data == {
            "customer_id": str(customer.pk),
            "version": version + 2,
            "changed_fields": ["open_order_count"],
            "order_count": 2,
            "open_order_count": 1,
            "total_spent": "35.00",
            "currency": "EUR",
            "average_order_value": "17.50",
            "last_order_at": (T0 + timedelta(days=1)).isoformat(),
            "loyalty_points": 0,
            "satisfaction_score": None,
        }
        assert not Customer.history.filter(id=customer.pk, history_type="~").exists()  # metrics keep no history

    def test_the_metrics_event_writes_times_and_money_as_python_would(self, customer):
        placed = T0 + timedelta(microseconds=500)
        apply(order("created", customer, "o-1", "7.5", placed_at=placed))
        (event,) = metrics_events(customer)
        assert (event.data["last_order_at"], event.data["total_spent"]) == (placed.isoformat(), "7.50")
        assert event.data["average_order_value"] == "7.50" and event.data["satisfaction_score"] is None

    def test_cancelled_and_refunded_orders_stop_counting(self, customer):
        apply(order("created", customer, "o-1", "10.00"), order("created", customer, "o-2", "30.00"))
        apply(order("cancelled", customer, "o-1", "10.00", at=T0 + timedelta(hours=1)))
        assert metrics(customer) == (1, 1, Decimal("30.00"), Decimal("30.00"), T0)
        apply(order("refunded", customer, "o-2", "30.00", at=T0 + timedelta(hours=2)))
        assert metrics(customer) == (0, 0, Decimal("0.00"), Decimal("0.00"), None)

    @pytest.mark.parametrize("same_batch", [True, False], ids=["one-batch", "separate-batches"])
    def test_out_of_order_delivery_ends_in_the_latest_state(self, customer, same_batch):
        created = order("created", customer, "o-1", "10.00", at=T0)
        completed = order("completed", customer, "o-1", "10.00", at=T0 + timedelta(minutes=5))
        cancelled = order("cancelled", customer, "o-1", "10.00", at=T0 + timedelta(minutes=9))
        if same_batch:
            apply(cancelled, created, completed)
        else:
            for one in (cancelled, completed, created):
                apply(one)
        assert CustomerOrder.objects.get(order_id="o-1").status == "cancelled"
        assert metrics(customer) == (0, 0, Decimal("0.00"), Decimal("0.00"), None)

    def test_equal_timestamps_resolve_by_status_rank(self, customer):
        apply(order("completed", customer, at=T0), order("created", customer, at=T0))
        assert CustomerOrder.objects.get(order_id="o-1").status == "completed"

    def test_duplicates_change_nothing_in_a_batch_or_redelivered(self, customer):
        created = order("created", customer, "o-1", "10.00")
        outcome = apply(created, created)
        assert (outcome.applied, outcome.duplicates) == (1, 1)
        version, events_before = Customer.objects.get(pk=customer.pk).version, OutboxEvent.objects.count()
        outcome = apply(created)
        assert (outcome.applied, outcome.duplicates) == (0, 1)
        assert metrics(customer)[0] == 1
        assert Customer.objects.get(pk=customer.pk).version == version
        assert OutboxEvent.objects.count() == events_before
        assert InboxMessage.objects.filter(event_id=created["event_id"]).count() == 1
        assert CustomerActivity.objects.filter(type="order_created").count() == 1

    def test_totals_use_the_latest_orders_currency(self, customer):
        apply(
            order("created", customer, "o-1", "10.00", "EUR", placed_at=T0),
            order("created", customer, "o-2", "20.00", "EUR", placed_at=T0 + timedelta(days=1)),
            order("created", customer, "o-3", "7.00", "USD", placed_at=T0 + timedelta(days=2)),
        )
        refreshed = Customer.objects.get(pk=customer.pk)
        assert (refreshed.order_count, refreshed.spent_currency, refreshed.total_spent) == (3, "USD", Decimal("7.00"))
        apply(order("cancelled", customer, "o-3", "7.00", "USD", at=T0 + timedelta(days=3)))
        refreshed = Customer.objects.get(pk=customer.pk)
        assert (refreshed.order_count, refreshed.spent_currency, refreshed.total_spent) == (2, "EUR", Decimal("30.00"))

    def test_a_customer_can_be_named_by_external_id(self):
        customer = CustomerFactory(email="ext@example.com", external_id="shop-42")
        apply(order("created", "shop-42", "o-9", "5.00"))
        assert metrics(customer)[0] == 1

    def test_an_order_for_a_merged_customer_counts_for_the_survivor(self, customer):
        merged = CustomerFactory(email="old@example.com")
        Customer.objects.filter(pk=merged.pk).update(status="merged", merged_into=customer.pk)
        apply(order("created", merged, "o-5", "8.00"))
        assert metrics(customer)[0] == 1 and metrics(merged)[0] == 0

    def test_the_cache_entry_is_dropped_on_commit(self, customer, api, django_capture_on_commit_callbacks):
        api.get(f"/api/v1/customers/{customer.pk}")
        assert cache.get(customer_cache.customer_key(customer.pk)) is not None
        with django_capture_on_commit_callbacks(execute=True):
            apply(order("created", customer))
        assert cache.get(customer_cache.customer_key(customer.pk)) is None
        shown = api.get(f"/api/v1/customers/{customer.pk}").json()["metrics"]
        assert (shown["order_count"], shown["open_order_count"]) == (1, 1)

    def test_metrics_changes_reach_after_commit_subscribers_once_per_customer(
        self, customer, django_capture_on_commit_callbacks
    ):
        other = CustomerFactory(email="other@example.com")
        seen = []

        def handler(*, event, actor=None):
            seen.append(event.subject)

        events.subscribe(events.CUSTOMER_METRICS_UPDATED, handler, after_commit=True)
        try:
            with django_capture_on_commit_callbacks(execute=True):
                apply(
                    order("created", customer, "o-1"),
                    order("created", customer, "o-2"),
                    order("created", other, "o-3"),
                )
        finally:
            events._after_commit[events.CUSTOMER_METRICS_UPDATED].remove(handler)
        assert sorted(seen) == sorted([str(customer.pk), str(other.pk)])

    def test_batch_subscribers_hear_once_per_batch(self, customer, django_capture_on_commit_callbacks):
        other = CustomerFactory(email="other@example.com")
        calls = []

        def handler(*, events, actor=None):
            calls.append(sorted(event.subject for event in events))

        events.subscribe_batch(events.CUSTOMER_METRICS_UPDATED, handler)
        try:
            with django_capture_on_commit_callbacks(execute=True):
                apply(order("created", customer, "o-1"), order("created", other, "o-2"))
        finally:
            events._after_commit_batch[events.CUSTOMER_METRICS_UPDATED].remove(handler)
        assert calls == [sorted([str(customer.pk), str(other.pk)])]


class TestSupportAndLoyalty:
    def case(self, customer, case_id, rating, closed_at):
        data = {
            "case_id": case_id,
            "customer_id": str(customer.pk),
            "rating": rating,
            "closed_at": closed_at.isoformat(),
        }
        return envelope("support.case.closed.v1", data, source="support")

    def points(self, kind, customer, points, **extra):
        data = {"customer_id": str(customer.pk), "points": points, "reason": "order", "occurred_at": T0.isoformat()}
        return envelope(f"loyalty.points.{kind}.v1", data, source="loyalty", **extra)

    def test_satisfaction_is_the_average_of_the_latest_ratings(self, customer, settings):
        settings.SUPPORT_SATISFACTION_WINDOW = 2
        apply(self.case(customer, "c-1", 5, T0), self.case(customer, "c-2", 3, T0 + timedelta(days=1)))
        assert Customer.objects.get(pk=customer.pk).satisfaction_score == Decimal("4.00")
        (event,) = metrics_events(customer)  # one per batch that changed the score
        assert (event.data["changed_fields"], event.data["satisfaction_score"]) == (["satisfaction_score"], "4.00")
        assert event.data["version"] == Customer.objects.get(pk=customer.pk).version
        apply(self.case(customer, "c-3", 2, T0 + timedelta(days=2)))  # c-1 leaves the window
        assert Customer.objects.get(pk=customer.pk).satisfaction_score == Decimal("2.50")
        apply(self.case(customer, "c-3", 4, T0 + timedelta(days=3)))  # re-closed with a new rating
        assert Customer.objects.get(pk=customer.pk).satisfaction_score == Decimal("3.50")
        entries = CustomerActivity.objects.filter(customer=customer, type="support_case_closed")
        assert entries.count() == 4
        assert sorted(e.data["satisfaction_score"] for e in metrics_events(customer)) == ["2.50", "3.50", "4.00"]
        assert entries.filter(summary="Support case c-1 closed, rated 5/5", source="support").exists()

    def test_loyalty_points_add_up_once(self, customer):
        earned = self.points("earned", customer, 100)
        apply(earned, self.points("redeemed", customer, 30))
        apply(earned)
        assert Customer.objects.get(pk=customer.pk).loyalty_points == 70
        assert metrics_events(customer)[0].data["loyalty_points"] == 70
        assert CustomerActivity.objects.filter(customer=customer, type="loyalty_points_earned").count() == 1


class TestIdentity:
    def registered(self, user_id, email, **names):
        return envelope("identity.user.registered.v1", {"user_id": user_id, "email": email, **names}, source="identity")

    def deleted(self, user_id):
        return envelope("identity.user.deleted.v1", {"user_id": user_id}, source="identity")

    def test_registration_creates_the_customer_once(self):
        body = self.registered("u-1", "New.Person@Example.com", first_name="Ada", last_name="Lovelace")
        assert apply(body).applied == 1
        assert apply(self.registered("u-1", "new.person@example.com")).applied == 1  # same user, new event
        customer = Customer.objects.get(external_id="u-1")
        assert (customer.email, customer.first_name, customer.registration_source) == (
            "new.person@example.com",
            "Ada",
            "identity",
        )
        assert OutboxEvent.objects.filter(event_type="customer.created.v1", subject=str(customer.pk)).count() == 1
        assert CustomerActivity.objects.filter(customer=customer, type="registered").count() == 1

    def test_registration_links_an_existing_customer_by_email(self, customer):
        assert apply(self.registered("u-7", "BUYER@example.com")).applied == 1
        customer.refresh_from_db()
        assert customer.external_id == "u-7"
        updated = OutboxEvent.objects.get(event_type="customer.updated.v1", subject=str(customer.pk))
        assert updated.data["changed_fields"] == ["external_id"]

    def test_a_customer_linked_to_another_user_is_not_relinked(self):
        CustomerFactory(email="taken@example.com", external_id="u-1")
        outcome = apply(self.registered("u-2", "taken@example.com"))
        assert outcome.parked == 1
        assert DeadLetter.objects.get().reason == "EXTERNAL_ID_CONFLICT"
        assert not InboxMessage.objects.exists()  # parked messages can be replayed later

    def test_deletion_deactivates_and_requests_erasure_with_the_open_orders_fact(self, customer):
        Customer.objects.filter(pk=customer.pk).update(external_id="u-5")
        apply(order("created", customer))
        apply(self.deleted("u-5"))
        customer.refresh_from_db()
        assert customer.status == CustomerStatus.INACTIVE
        request = OutboxEvent.objects.get(event_type="customer.erasure_requested.v1")
        assert request.subject == str(customer.pk)
        assert request.data["has_open_orders"] is True and request.data["requested_by"] == "identity"
        assert CustomerActivity.objects.filter(customer=customer, type="erasure_requested").exists()

    def test_deleting_a_suspended_customer_keeps_it_suspended_and_files_the_erasure_request(self, customer):
        from customers import services
        from customers.actor import Actor
        from privacy.models import DataSubjectRequest, RequestKind

        Customer.objects.filter(pk=customer.pk).update(external_id="u-9")
        services.customer_change_status(
            actor=Actor.system("tests"), customer_id=customer.pk, status="suspended", reason="chargeback fraud"
        )
        assert apply(self.deleted("u-9")).applied == 1
        customer.refresh_from_db()
        assert customer.status == CustomerStatus.SUSPENDED  # not deactivated: only customers:admin lifts it
        assert not OutboxEvent.objects.filter(event_type="customer.deactivated.v1", subject=str(customer.pk)).exists()
        request = OutboxEvent.objects.get(event_type="customer.erasure_requested.v1", subject=str(customer.pk))
        assert request.data["requested_by"] == "identity" and request.data["has_open_orders"] is False
        filed = DataSubjectRequest.objects.get(customer_id=customer.pk, kind=RequestKind.ERASURE)
        assert str(request.data["source_event_id"]) in filed.notes

    def test_a_merged_users_events_reach_the_survivor(self, customer):
        """Merged into a customer with its own user id, the merged customer keeps its user id: its
        orders count for the survivor, and its deletion deactivates the survivor and requests its erasure."""
        from customers.actor import Actor
        from customers.merge import customer_merge

        Customer.objects.filter(pk=customer.pk).update(external_id="u-survivor")
        duplicate = CustomerFactory(email="buyer.old@example.com", external_id="u-duplicate")
        customer_merge(actor=Actor.system("tests"), survivor_id=customer.pk, merged_id=duplicate.pk)
        duplicate.refresh_from_db()
        assert duplicate.external_id == "u-duplicate" and duplicate.merged_into_id == customer.pk
        apply(order("created", "u-duplicate", "o-77", "12.00"))
        assert metrics(customer)[0] == 1
        assert apply(self.deleted("u-duplicate")).applied == 1
        customer.refresh_from_db()
        assert customer.status == CustomerStatus.INACTIVE
        request = OutboxEvent.objects.get(event_type="customer.erasure_requested.v1")
        assert request.subject == str(customer.pk)

    def test_deleting_an_unknown_user_waits_for_the_registration(self):
        assert apply(self.deleted("nobody")).parked == 1
        assert not OutboxEvent.objects.filter(event_type="customer.erasure_requested.v1").exists()
        assert DeadLetter.objects.get().reason == "WAITING_FOR_CUSTOMER"  # see tests/events/test_waiting.py


class TestPoisonMessages:
    @pytest.mark.parametrize(
        ("body", "reason"),
        [
            (b"\xff\xfe", "INVALID_ENCODING"),
            ("{not json", "INVALID_JSON"),
            ("\x00{not json either", "INVALID_JSON"),  # kept although PostgreSQL text cannot hold NUL
            ("[1, 2]", "INVALID_ENVELOPE"),
            (json.dumps({"event_type": "order.created.v1"}), "INVALID_ENVELOPE"),
            (json.dumps(envelope("order.created.v1", {"order_id": "x"}, event_id="not-a-uuid")), "INVALID_ENVELOPE"),
            (json.dumps(envelope("order.shipped.v1", {})), "UNKNOWN_EVENT_TYPE"),
            (json.dumps(envelope("order.created.v1", {"order_id": "x"})), "INVALID_PAYLOAD"),
            ("x" * (inbound.MAX_BODY_BYTES + 1), "TOO_LARGE"),
        ],
    )
    def test_is_parked_with_its_reason(self, body, reason):
        outcome = inbound.apply_batch([inbound.parse(body, "order.created.v1")])
        assert outcome.parked == 1
        assert DeadLetter.objects.get().reason == reason

    def test_is_logged_and_parked_without_personal_data(self, customer, caplog):
        poison = envelope(
            "identity.user.registered.v1", {"user_id": "u-1", "email": "jane.doe@example.com x"}, source="identity"
        )
        good = order("created", customer)
        with caplog.at_level(logging.INFO):
            outcome = apply(poison, good)
        assert (outcome.applied, outcome.parked) == (1, 1)
        parked = DeadLetter.objects.get()
        assert (parked.reason, parked.error, parked.event_id) == (
            "INVALID_PAYLOAD",
            "data.email: format",
            poison["event_id"],
        )
        assert "jane.doe" in parked.body  # staff may need the raw message; it is classified personal
        assert "jane.doe" not in caplog.text and poison["event_id"] in caplog.text

    def test_a_redelivered_poison_message_is_counted_not_duplicated(self):
        body = json.dumps(envelope("order.created.v1", {"order_id": "x"}))
        inbound.apply_batch([inbound.parse(body)])
        inbound.apply_batch([inbound.parse(body)])
        assert DeadLetter.objects.get().times_seen == 2

    def test_unknown_customer_is_parked_then_replayed_once_it_exists(self):
        customer_id = uuid.uuid4()
        body = order("created", customer_id)
        assert apply(body).parked == 1
        dead = DeadLetter.objects.get()
        assert (dead.reason, dead.status) == ("WAITING_FOR_CUSTOMER", DeadLetterStatus.PARKED)
        assert inbound.replay_dead_letter(dead, actor_label="staff:ops") == DeadLetterStatus.PARKED
        customer = CustomerFactory(email="late@example.com")
        Customer.objects.filter(pk=customer.pk).update(external_id=str(customer_id))
        assert inbound.replay_dead_letter(dead, actor_label="staff:ops") == DeadLetterStatus.REPLAYED
        dead.refresh_from_db()
        assert (dead.status, dead.resolved_by) == (DeadLetterStatus.REPLAYED, "staff:ops")
        assert metrics(customer)[0] == 1

    def test_an_unforeseen_database_error_parks_only_the_offending_message(self, customer, monkeypatch):
        original = effects.customer_loyalty_points_apply

        def failing(*, actor, batch, messages):
            if any(m.data["points"] == 13 for m in messages):
                raise IntegrityError("simulated")
            original(actor=actor, batch=batch, messages=messages)

        monkeypatch.setattr(
            inbound, "FAMILIES", {**inbound.FAMILIES, "loyalty": (failing, inbound.FAMILIES["loyalty"][1])}
        )
        data = {"customer_id": str(customer.pk), "reason": "x", "occurred_at": T0.isoformat()}
        good = envelope("loyalty.points.earned.v1", {**data, "points": 5})
        bad = envelope("loyalty.points.earned.v1", {**data, "points": 13})
        outcome = apply(order("created", customer), good, bad)
        assert (outcome.applied, outcome.parked) == (2, 1)
        assert DeadLetter.objects.get().error == "IntegrityError"
        assert Customer.objects.get(pk=customer.pk).loyalty_points == 5


def test_the_hourly_task_prunes_old_inbox_rows_and_dead_letters(customer, settings):
    from django.utils import timezone

    from customers import tasks

    settings.INBOX_RETENTION = timedelta(days=30)
    settings.DEAD_LETTER_RETENTION = timedelta(days=90)
    apply(order("created", customer, "o-1"), order("created", customer, "o-2"), "not json", "[1]", "[2]", "[3]")
    old_inbox = InboxMessage.objects.first()
    InboxMessage.objects.filter(pk=old_inbox.pk).update(received_at=timezone.now() - timedelta(days=31))
    long_ago, lately = timezone.now() - timedelta(days=91), timezone.now() - timedelta(days=1)
    parked, discarded, replayed, recent = DeadLetter.objects.order_by("id")
    DeadLetter.objects.update(last_seen_at=long_ago, received_at=long_ago)
    inbound.discard_dead_letters(ids=[discarded.pk], actor_label="staff:ops")
    DeadLetter.objects.filter(pk=discarded.pk).update(resolved_at=long_ago)
    DeadLetter.objects.filter(pk=replayed.pk).update(status=DeadLetterStatus.REPLAYED, resolved_at=long_ago)
    DeadLetter.objects.filter(pk=recent.pk).update(status=DeadLetterStatus.REPLAYED, resolved_at=lately)
    counts = tasks.prune_events.delay().get()
    assert (counts["inbox"], counts["dead_letters"]) == (1, 2)
    assert InboxMessage.objects.count() == 1
    # An unresolved one stays visible however old; a recently resolved one stays for the retention period.
    assert set(DeadLetter.objects.values_list("pk", flat=True)) == {parked.pk, recent.pk}
