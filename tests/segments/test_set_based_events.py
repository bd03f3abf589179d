"""Events written set-based (full recalculation, bulk membership, every tier) go through
customers.events.record_from_rows: the envelope record_many writes, redaction for restricted
customers, the activity timeline entries, and the schema contract."""

from decimal import Decimal

import pytest
from django.db import connection, transaction

from customers import activity
from customers import events as customer_events
from customers.actor import Actor
from customers.context import correlation_id
from customers.messaging import schemas
from customers.models import Customer, CustomerActivity, OutboxEvent
from segments import calculation, services
from segments import events as segment_events
from tests.segments.conftest import SYSTEM, make_customer, make_segment, members, recalculate, set_metrics

pytestmark = pytest.mark.django_db
SPENDERS = {"field": "total_spent", "op": "gte", "value": 100}


def contract_problems(found) -> list[str]:
    problems = []
    for event in found:
        problems += schemas.envelope_errors(customer_events.envelope(event))
        problems += schemas.validation_errors(event.event_type, event.data)
    return problems


def timeline(customer, type_):
    return list(CustomerActivity.objects.filter(customer=customer, type=type_).order_by("occurred_at", "id"))


def test_a_full_recalculation_puts_joins_and_leaves_on_the_timeline():
    ann = make_customer(metrics={"total_spent": Decimal("500")})
    bob = make_customer(metrics={"total_spent": Decimal("500")})
    segment = make_segment(SPENDERS, code="spenders")
    token = correlation_id.set("corr-recalc")
    try:
        recalculate(segment)
    finally:
        correlation_id.reset(token)
    [joined] = timeline(ann, "segment_joined")
    assert joined.summary == "Joined segment spenders"
    event = OutboxEvent.objects.get(event_id=joined.event_id)
    assert (event.event_type, event.subject) == (segment_events.SEGMENT_ASSIGNED, str(ann.pk))
    assert joined.data == event.data and joined.occurred_at == event.occurred_at and joined.source == event.source
    assert event.metadata == {"correlation_id": "corr-recalc", "actor": SYSTEM.label}
    assert event.event_id.version == 7  # time-ordered ids, as before

    set_metrics(bob, total_spent=Decimal("0"))
    recalculate(segment)
    [left] = timeline(bob, "segment_left")
    assert left.summary == "Left segment spenders" and left.data["reason"] == "rules"
    assert timeline(ann, "segment_left") == []
    everything = OutboxEvent.objects.filter(data__segment_id=str(segment.pk))
    per_member = everything.exclude(event_type=segment_events.SEGMENT_RECALCULATED)
    assert per_member.count() == 3 and contract_problems(everything) == []


def test_a_restricted_customer_leaving_is_announced_with_identifiers_only_on_the_timeline_too():
    kept = make_customer(metrics={"total_spent": Decimal("500")})
    restricted = make_customer(metrics={"total_spent": Decimal("500")})
    segment = make_segment(SPENDERS, code="spenders")
    recalculate(segment)
    Customer.objects.filter(pk=restricted.pk).update(processing_restricted=True)
    recalculate(segment)
    assert members(segment) == {kept.pk}
    [left] = timeline(restricted, "segment_left")
    assert left.data == {"customer_id": str(restricted.pk), "segment_id": str(segment.pk)}
    assert left.summary == "Left segment ?"  # what record_many's timeline entry says for them too


def test_static_adds_and_removals_are_on_the_timeline():
    ann = make_customer()
    segment = make_segment(code="by_hand")
    services.segment_members_add(actor=SYSTEM, segment_id=segment.pk, customer_ids=[ann.pk])
    services.segment_members_remove(actor=SYSTEM, segment_id=segment.pk, customer_ids=[ann.pk])
    assert [entry.summary for entry in timeline(ann, "segment_joined")] == ["Joined segment by_hand"]
    [left] = timeline(ann, "segment_left")
    assert left.data["reason"] == "manual" and left.data["source"] == "manual"


def test_tiers_recalculated_for_everyone_are_on_the_timeline():
    rich = make_customer()
    set_metrics(rich, total_spent=Decimal("2000"), order_count=8, average_order_value=Decimal("250"))
    assert services.tiers_recalculate(actor=SYSTEM) >= 1
    [entry] = timeline(rich, "tier_changed")
    assert entry.summary == "Tier none → premium"
    event = OutboxEvent.objects.get(event_id=entry.event_id)
    assert event.data["to_tier"] == "premium" and contract_problems([event]) == []


@pytest.mark.parametrize(
    "event_type, data",
    [
        (segment_events.SEGMENT_ASSIGNED, {"segment_code": "spenders"}),
        (segment_events.SEGMENT_ASSIGNED, {}),
        (segment_events.SEGMENT_REMOVED, {"segment_code": "vip_list"}),
        (segment_events.TIER_CHANGED, {"from_tier": None, "to_tier": "vip"}),
        (segment_events.TIER_CHANGED, {"from_tier": "premium", "to_tier": "vip"}),
        (segment_events.TIER_CHANGED, {}),
    ],
)
def test_each_sql_summary_says_what_the_timeline_says(event_type, data):
    import json

    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {customer_events.ACTIVITY_SUMMARY_SQL[event_type]} FROM (SELECT %s::jsonb AS d) AS x",
            [json.dumps(data)],
        )
        (in_sql,) = cursor.fetchone()
    assert in_sql == activity.EVENT_ACTIVITY[event_type][1](data)


def test_events_that_break_their_schema_roll_the_statement_back():
    ann = make_customer()
    segment = make_segment(code="by_hand")
    bad = customer_events.RowEvents(
        event_type=segment_events.SEGMENT_ASSIGNED,
        rows="opened",
        subject="r.customer_id",
        data="jsonb_build_object('customer_id', r.customer_id::text, 'segment_id', 'not-a-uuid')",
    )
    ctes = """opened AS (
        INSERT INTO segments_segmentmembership (customer_id, segment_id, joined_at, score, source, added_by)
        VALUES (%s, %s, now(), 0, 'manual', '') RETURNING customer_id)"""
    with pytest.raises(customer_events.EventContractError, match="segment_id"), transaction.atomic():
        customer_events.record_from_rows(
            ctes=ctes, params=[ann.pk, segment.pk], events=[bad], select="SELECT 1", actor=SYSTEM
        )
    assert members(segment) == set()
    assert not OutboxEvent.objects.filter(subject=str(ann.pk), event_type=segment_events.SEGMENT_ASSIGNED).exists()


def test_a_python_subscriber_cannot_be_skipped_silently():
    heard = []

    def handler(*, event, actor=None):
        heard.append(event)

    customer_events.subscribe(segment_events.SEGMENT_ASSIGNED, handler, after_commit=True)
    try:
        segment = make_segment(code="by_hand")
        with pytest.raises(RuntimeError, match="subscribers"):
            calculation.open_memberships(
                segment=segment,
                customer_ids=[make_customer().pk],
                source="manual",
                now=segment.created_at,
                actor=Actor.system("tests"),
            )
    finally:
        customer_events._after_commit[segment_events.SEGMENT_ASSIGNED].remove(handler)
