"""Static membership in bulk: id lists deduplicated in linear time, a replacing import of any size."""

from uuid import UUID, uuid4

import pytest
from django.db import connection

from customers.models import OutboxEvent
from segments import events as segment_events
from segments import services
from segments.models import Segment
from tests.segments.conftest import SYSTEM, make_customer, make_segment, members

pytestmark = pytest.mark.django_db


class CountingUUID(UUID):
    """A UUID that counts how often it is compared for equality."""

    comparisons = 0

    def __eq__(self, other):
        CountingUUID.comparisons += 1
        return super().__eq__(other)

    __hash__ = UUID.__hash__


def test_unique_ids_keeps_the_first_of_each_in_order_without_comparing_every_pair():
    ids = [CountingUUID(int=uuid4().int) for _ in range(2000)]
    given = [*ids, *ids[:10], "not-a-uuid", str(ids[0])]
    CountingUUID.comparisons = 0
    valid, invalid = services._unique_ids(given)
    assert valid == ids and invalid == ["not-a-uuid"]
    # Scanning the list of ids kept so far compares ~n²/2 pairs (2 million here); a hash lookup,
    # a handful per duplicate.
    assert CountingUUID.comparisons < 1000, CountingUUID.comparisons


def clone_customers(template, count: int) -> list[UUID]:
    """`count` eligible customers copied from `template` in one statement (distinct id, email, number)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO customers_customer
            SELECT (jsonb_populate_record(NULL::customers_customer, to_jsonb(c) || jsonb_build_object(
                'id', gen_random_uuid(),
                'email', 'clone' || n || '@example.com',
                'customer_number', 'K' || lpad(n::text, 9, '0'),
                'external_id', NULL))).*
            FROM customers_customer c CROSS JOIN generate_series(1, %s) AS n
            WHERE c.id = %s
            RETURNING id
            """,
            [count, template.pk],
        )
        return [row[0] for row in cursor.fetchall()]


def test_a_replacing_import_closes_any_number_of_members_in_one_go():
    keep = make_customer()
    others = clone_customers(keep, services.MAX_BULK_MEMBERS + 1)
    segment = make_segment(code="big_list")
    half = len(others) // 2
    for chunk in (others[:half], others[half:], [keep.pk]):
        services.segment_members_add(actor=SYSTEM, segment_id=segment.pk, customer_ids=chunk)
    assert len(members(segment)) == len(others) + 1

    result = services.segment_members_import(
        actor=SYSTEM, segment_id=segment.pk, rows=[{"customer_id": str(keep.pk)}], replace=True
    )

    assert result.unchanged == [keep.pk] and set(result.removed) == set(others)
    assert members(segment) == {keep.pk}
    assert Segment.objects.get(pk=segment.pk).member_count == 1
    removed = OutboxEvent.objects.filter(
        event_type=segment_events.SEGMENT_REMOVED, data__segment_id=str(segment.pk), data__reason="manual"
    )
    assert removed.count() == len(others)
    assert set(removed.values_list("subject", flat=True)) == {str(pk) for pk in others}


def test_requiring_consent_drops_the_members_without_it(admin_api):
    from tests.segments.conftest import grant

    willing, unwilling, silent = make_customer(), make_customer(), make_customer()
    grant(willing)
    segment = make_segment(code="newsletter_list")
    services.segment_members_add(
        actor=SYSTEM, segment_id=segment.pk, customer_ids=[willing.pk, unwilling.pk, silent.pk]
    )
    response = admin_api.patch(
        f"/api/v1/segments/{segment.pk}", {"requires_consent": "marketing_email"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["member_count"] == 1
    assert members(segment) == {willing.pk}
    assert Segment.objects.get(pk=segment.pk).member_count == 1
    removed = OutboxEvent.objects.filter(event_type=segment_events.SEGMENT_REMOVED, data__segment_id=str(segment.pk))
    assert {event.subject: event.data["reason"] for event in removed} == {
        str(unwilling.pk): "consent",
        str(silent.pk): "consent",
    }
