"""Segments' part of data-subject rights (see customers.data_rights)."""

from __future__ import annotations

from django.db.models import Count, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from customers import events
from customers.actor import Actor
from customers.services import export_rows
from segments import events as segment_events
from segments.models import CustomerTier, Segment, SegmentMembership


def export_customer_data(customer_id) -> dict:
    memberships = SegmentMembership.objects.filter(customer_id=customer_id).select_related("segment")
    rows = export_rows(memberships.order_by("joined_at"))
    codes = {membership.pk: membership.segment.code for membership in memberships}
    for row in rows:
        row["segment_code"] = codes[row["id"]]
    return {"memberships": rows, "tier": export_rows(CustomerTier.objects.filter(customer_id=customer_id))}


def erase_customers_data(customer_ids: list) -> dict[str, int]:
    """Memberships and tier go (set-based); each open membership ends with a removed event."""
    now = timezone.now()
    open_memberships = list(
        SegmentMembership.objects.filter(customer_id__in=customer_ids, left_at__isnull=True).values_list(
            "customer_id", "segment_id", "segment__code", "source"
        )
    )
    if open_memberships:
        events.record_many(
            event_type=segment_events.SEGMENT_REMOVED,
            items=[
                (
                    customer_id,
                    segment_events.removed_payload(
                        customer_id=customer_id,
                        segment_id=segment_id,
                        segment_code=code,
                        source=source,
                        reason=segment_events.LEFT_ERASED,
                        left_at=now,
                    ),
                )
                for customer_id, segment_id, code, source in open_memberships
            ],
            actor=Actor.system("privacy-erasure"),
        )
    memberships = SegmentMembership.objects.filter(customer_id__in=customer_ids).delete()[0]
    tiers = CustomerTier.objects.filter(customer_id__in=customer_ids).delete()[0]
    touched = {segment_id for _, segment_id, _, _ in open_memberships}
    if touched:
        open_count = (
            SegmentMembership.objects.filter(segment=OuterRef("pk"), left_at__isnull=True)
            .values("segment")
            .annotate(n=Count("pk"))
            .values("n")
        )
        Segment.objects.filter(Q(pk__in=touched)).update(member_count=Coalesce(Subquery(open_count), 0), updated_at=now)
    return {"segments_segmentmembership": memberships, "segments_customertier": tiers}
