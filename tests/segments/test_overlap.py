"""The overlap of segments: current members of each segment and of each pair, counted in one pass."""

import itertools
import uuid

import pytest

from segments import selectors, services
from segments.models import SegmentMembership
from tests.segments.conftest import SYSTEM, make_customer, make_segment

pytestmark = pytest.mark.django_db


def test_every_combination_of_memberships_is_counted_and_left_ones_are_not():
    segments = [make_segment(code=f"hand_{n}") for n in range(4)]
    customers = [make_customer() for _ in range(12)]
    # customer n is in the segments whose bit is set in n (12 customers: many combinations, some in none)
    for n, customer in enumerate(customers):
        for bit, segment in enumerate(segments):
            if n >> bit & 1:
                services.segment_members_add(actor=SYSTEM, segment_id=segment.pk, customer_ids=[customer.pk])
    services.segment_members_remove(actor=SYSTEM, segment_id=segments[0].pk, customer_ids=[customers[3].pk])

    counts = selectors.segments_overlap([segment.pk for segment in segments])

    open_memberships = SegmentMembership.objects.filter(left_at__isnull=True)
    current = {
        segment.pk: set(open_memberships.filter(segment=segment).values_list("customer_id", flat=True))
        for segment in segments
    }
    assert counts["sizes"] == {pk: len(held) for pk, held in current.items()}
    assert counts["pairs"] == {(a, b): len(current[a] & current[b]) for a, b in itertools.combinations(current, 2)}
    assert counts["sizes"][segments[0].pk] == 5  # 1, 5, 7, 9, 11: customer 3 left
    assert counts["pairs"][(segments[0].pk, segments[1].pk)] == 2  # 7 and 11


def test_ten_segments_and_the_order_given():
    segments = [make_segment(code=f"many_{n}") for n in range(10)]
    customer = make_customer()
    for segment in segments[::3]:
        services.segment_members_add(actor=SYSTEM, segment_id=segment.pk, customer_ids=[customer.pk])
    ids = [segment.pk for segment in reversed(segments)]
    counts = selectors.segments_overlap(ids)
    assert list(counts["sizes"]) == ids
    assert sum(counts["sizes"].values()) == 4 and sum(counts["pairs"].values()) == 6
    assert counts["pairs"][(segments[9].pk, segments[0].pk)] == 1


def test_more_segments_than_the_limit_are_refused_not_cut():
    with pytest.raises(ValueError):
        selectors.segments_overlap([uuid.uuid4() for _ in range(selectors.MAX_OVERLAP_SEGMENTS + 1)])
