"""Merging two records of one person, across every app, and undoing it."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from addresses.models import Address
from consent import services as consent_services
from consent.models import ConsentRecord, ConsentState
from customers import services
from customers.actor import Actor
from customers.errors import Conflict, InvalidStatusTransition, ValidationFailed
from customers.models import (
    Customer,
    CustomerActivity,
    CustomerMerge,
    CustomerNote,
    CustomerOrder,
    CustomerStatusChange,
    DuplicateCandidate,
    OutboxEvent,
)
from customers.roles import CUSTOMER_SERVICE
from segments import services as segment_services
from segments.models import SegmentMembership
from tests.addresses.factories import make_address
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")


def _order(customer, order_id, total):
    now = timezone.now()
    CustomerOrder.objects.create(
        order_id=order_id, customer=customer, total=Decimal(total), currency="USD", status="completed",
        placed_at=now, status_changed_at=now,
    )


@pytest.fixture
def pair(staff):
    rep = Actor.for_staff(staff(CUSTOMER_SERVICE, "rep1"))
    survivor = CustomerFactory(
        email="ann.lee@example.com", first_name="Ann", last_name="Lee", phone="+14155552671", tags=["vip"]
    )
    merged = CustomerFactory(
        email="ann.lee@gmail.com", first_name="Anne", last_name="Lee", phone="+14155552671",
        external_id="legacy-7", tags=["newsletter"],
    )
    make_address(survivor, make_default=True, country="DE", label="Home")
    make_address(merged, make_default=True, country="FR", label="Paris")
    make_address(merged, country="GB", label="Office", type="billing", make_default=True)
    services.note_create(actor=rep, customer_id=merged.pk, text="Prefers phone calls", is_pinned=True)
    services.activity_track(actor=SYSTEM, customer_id=merged.pk, activity_type="login")
    _order(merged, "o-merged-1", "30.00")
    _order(survivor, "o-survivor-1", "10.00")
    Customer.objects.filter(pk=merged.pk).update(loyalty_points=40)
    consent_services.consent_change(
        actor=SYSTEM, customer_id=merged.pk, purpose_code="marketing_email", status="granted", source="web"
    )
    segment = segment_services.segment_create(actor=SYSTEM, code="hand_picked", name="Hand picked")
    segment_services.segment_members_add(actor=SYSTEM, segment_id=segment.pk, customer_ids=[merged.pk])
    return rep, survivor, merged, segment


def test_merge_moves_everything_to_the_survivor_in_one_transaction(pair):
    rep, survivor, merged, segment = pair
    assert DuplicateCandidate.objects.filter(status="open").count() == 1  # the same phone
    merge = services.customer_merge(
        actor=rep,
        survivor_id=survivor.pk,
        merged_id=merged.pk,
        choices={"email": "merged", "external_id": "merged", "tags": "both"},
        reason="Same person, two accounts",
    )
    survivor.refresh_from_db()
    merged.refresh_from_db()
    # field by field
    assert survivor.email == "ann.lee@gmail.com" and survivor.external_id == "legacy-7"
    assert survivor.first_name == "Ann" and survivor.tags == ["vip", "newsletter"]
    assert merged.status == "merged" and merged.merged_into_id == survivor.pk
    assert merged.email.endswith("@merged.invalid") and merged.external_id is None
    # the rows
    assert CustomerNote.objects.get().customer_id == survivor.pk
    assert CustomerActivity.objects.filter(customer=survivor, type="login").exists()
    # what stays on the merged customer is what happened to it in the merge (it left its segment, its
    # addresses and their defaults moved away)
    assert set(CustomerActivity.objects.filter(customer=merged).values_list("type", flat=True)) == {
        "segment_left",
        "address_removed",
        "default_address_changed",
    }
    assert CustomerOrder.objects.filter(customer=survivor).count() == 2
    assert survivor.order_count == 2 and survivor.total_spent == Decimal("40.00") and survivor.loyalty_points == 40
    assert merged.order_count == 0 and merged.loyalty_points == 0
    addresses = {a.label: a for a in Address.objects.filter(customer=survivor)}
    assert set(addresses) == {"Home", "Paris", "Office"}
    assert addresses["Home"].is_default_shipping and not addresses["Paris"].is_default_shipping
    assert addresses["Office"].is_default_billing  # the survivor had no billing default: the moved one stays
    # consent: the merged customer's newer grant is carried over, its own record stays as proof
    state = ConsentState.objects.get(customer=survivor, purpose__code="marketing_email")
    assert state.status == "granted"
    assert "Carried over from merged customer" in state.last_record.reason
    assert ConsentRecord.objects.filter(customer=merged, purpose__code="marketing_email", status="granted").exists()
    survivor.preferences.refresh_from_db()
    assert survivor.preferences.email_opt_in is True
    # static segment membership moved
    open_members = SegmentMembership.objects.filter(segment=segment, left_at__isnull=True)
    assert list(open_members.values_list("customer_id", flat=True)) == [survivor.pk]
    # the record of it
    assert set(merge.moved) >= {"customers.customernote", "addresses.address", "consent.consentrecord",
                                "segments.segmentmembership"}
    event = OutboxEvent.objects.get(event_type="customer.merged.v1")
    assert event.subject == str(survivor.pk)
    assert event.data["survivor_id"] == str(survivor.pk) and event.data["merged_id"] == str(merged.pk)
    assert event.metadata["actor"] == "staff:rep1"
    # The merge's own row and, after it, the carried-over opt-in's row: both by the rep.
    merge_row = Customer.history.get(id=survivor.pk, history_change_reason__contains="merged")
    assert merge_row.history_user == rep.user
    assert Customer.history.filter(id=survivor.pk).latest("history_date").history_user == rep.user
    assert CustomerStatusChange.objects.get(customer=merged).reason == "Same person, two accounts"
    assert DuplicateCandidate.objects.get().status == "merged"
    assert CustomerActivity.objects.filter(customer=survivor, type="merged").exists()


def test_the_status_machine_refuses_leaving_merged_except_by_undo(pair):
    rep, survivor, merged, _ = pair
    services.customer_merge(actor=rep, survivor_id=survivor.pk, merged_id=merged.pk)
    for status in ("active", "inactive", "suspended"):
        with pytest.raises(InvalidStatusTransition):
            services.customer_change_status(actor=SYSTEM, customer_id=merged.pk, status=status, reason="try")
    with pytest.raises(InvalidStatusTransition):
        services.customer_change_status(actor=SYSTEM, customer_id=survivor.pk, status="merged", reason="try")
    with pytest.raises(InvalidStatusTransition) as error:
        services.customer_update(actor=SYSTEM, customer_id=merged.pk, changes={"first_name": "X"})
    assert error.value.code == "CUSTOMER_MERGED"
    with pytest.raises(Conflict):  # merged customers are not merged again
        services.customer_merge(actor=rep, survivor_id=survivor.pk, merged_id=merged.pk)


def test_undo_restores_both_customers_and_moves_every_row_back(pair):
    rep, survivor, merged, segment = pair
    merge = services.customer_merge(
        actor=rep, survivor_id=survivor.pk, merged_id=merged.pk, choices={"email": "merged", "first_name": "merged"}
    )
    services.customer_update(actor=rep, customer_id=survivor.pk, changes={"first_name": "Annie"})  # edited since
    services.note_create(actor=rep, customer_id=survivor.pk, text="written after the merge")
    services.customer_merge_undo(actor=rep, merge_id=merge.pk)

    survivor.refresh_from_db()
    merged.refresh_from_db()
    assert merged.status == "active" and merged.merged_into_id is None
    assert merged.email == "ann.lee@gmail.com" and merged.external_id == "legacy-7"
    assert survivor.email == "ann.lee@example.com"  # restored
    assert survivor.first_name == "Annie"  # a later edit wins over the undo
    assert list(CustomerNote.objects.filter(customer=merged).values_list("text", flat=True)) == ["Prefers phone calls"]
    assert CustomerNote.objects.filter(customer=survivor).count() == 1
    assert CustomerOrder.objects.filter(customer=merged).count() == 1
    assert merged.loyalty_points == 40 and survivor.loyalty_points == 0 and merged.order_count == 1
    labels = set(Address.objects.filter(customer=merged).values_list("label", flat=True))
    assert labels == {"Paris", "Office"}
    paris = Address.objects.get(label="Paris")
    assert paris.is_default_shipping  # its default flag came back
    # the carried-over grant is withdrawn on the survivor; the merged customer's own grant is intact
    assert ConsentState.objects.get(customer=survivor, purpose__code="marketing_email").status == "revoked"
    assert ConsentState.objects.get(customer=merged, purpose__code="marketing_email").status == "granted"
    open_members = SegmentMembership.objects.filter(segment=segment, left_at__isnull=True)
    assert list(open_members.values_list("customer_id", flat=True)) == [merged.pk]
    merge.refresh_from_db()
    assert merge.undone_by == "staff:rep1"
    assert OutboxEvent.objects.filter(event_type="customer.merge_undone.v1").count() == 1
    with pytest.raises(Conflict):
        services.customer_merge_undo(actor=rep, merge_id=merge.pk)


def test_undo_only_within_the_window(pair, settings):
    rep, survivor, merged, _ = pair
    merge = services.customer_merge(actor=rep, survivor_id=survivor.pk, merged_id=merged.pk)
    CustomerMerge.objects.filter(pk=merge.pk).update(undo_until=timezone.now() - timedelta(seconds=1))
    with pytest.raises(Conflict) as error:
        services.customer_merge_undo(actor=rep, merge_id=merge.pk)
    assert error.value.code == "MERGE_UNDO_WINDOW_PASSED"


def test_a_merge_that_breaks_a_rule_changes_nothing(staff):
    rep = Actor.for_staff(staff(CUSTOMER_SERVICE))
    survivor, merged = CustomerFactory(), CustomerFactory()
    for index in range(6):
        make_address(survivor, label=f"s{index}")
        make_address(merged, label=f"m{index}")
    with pytest.raises(Exception) as error:  # 12 addresses: over the limit of 10
        services.customer_merge(actor=rep, survivor_id=survivor.pk, merged_id=merged.pk)
    assert getattr(error.value, "code", "") == "ADDRESS_LIMIT_EXCEEDED"
    merged.refresh_from_db()
    assert merged.status == "active" and not CustomerMerge.objects.exists()
    assert Address.objects.filter(customer=merged).count() == 6
    with pytest.raises(ValidationFailed):
        services.customer_merge(actor=rep, survivor_id=survivor.pk, merged_id=survivor.pk)
    with pytest.raises(ValidationFailed):
        services.customer_merge(actor=rep, survivor_id=survivor.pk, merged_id=merged.pk, choices={"status": "merged"})


def test_erasure_scrubs_the_merge_snapshots(pair):
    rep, survivor, merged, _ = pair
    merge = services.customer_merge(actor=rep, survivor_id=survivor.pk, merged_id=merged.pk)
    services.erase_customers_data([merged.pk])
    merge.refresh_from_db()
    assert merge.merged_before == {} and merge.survivor_before == {}
