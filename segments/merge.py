"""Segments' part of a customer merge (subscribers to customers' merge events, wired in `SegmentsConfig.ready`).

In the merge's transaction, the merged customer's static memberships (hand-picked or imported)
move to the survivor: the survivor joins those segments (unless already a member, or lacking the
consent a segment requires) and the merged customer leaves them. Rule-based memberships and the
tier are derived: after commit both customers are re-evaluated in a task (the merged one is no
longer eligible, so it leaves every dynamic segment). Undo reverses the static moves.
"""

from __future__ import annotations

import logging
from uuid import UUID

from django.utils import timezone

from customers import events
from customers import selectors as customer_selectors
from customers import services as customer_services
from customers.actor import Actor
from segments import events as segment_events
from segments import selectors
from segments.models import SegmentKind
from segments.services import _join, _leave

logger = logging.getLogger(__name__)
KEY = "segments.segmentmembership"
SYSTEM = Actor.system("segments")


def _consents(customer_id: UUID, segment) -> bool:
    if not segment.requires_consent:
        return True
    from consent import selectors as consent_selectors

    return consent_selectors.customer_consents_to(customer_id=customer_id, purpose=segment.requires_consent)


def _open_static(customer_id: UUID):
    return (
        selectors.current_memberships()
        .filter(customer_id=customer_id, segment__kind=SegmentKind.STATIC)
        .select_related("segment")
        .select_for_update(of=("self",))
    )


def on_customer_merged(*, event, actor: Actor | None = None) -> None:
    actor = actor or SYSTEM
    survivor, merged = UUID(event.data["survivor_id"]), UUID(event.data["merged_id"])
    already = set(_open_static(survivor).values_list("segment_id", flat=True))
    now = timezone.now()
    moved = {"joined": [], "left": []}
    for membership in _open_static(merged):
        segment = membership.segment
        _leave(membership, segment, segment_events.LEFT_MANUAL, now, actor)
        moved["left"].append({"segment_id": str(segment.pk), "source": membership.source})
        if segment.pk not in already and _consents(survivor, segment):
            _join(survivor, segment, 0, membership.source, now, actor)
            moved["joined"].append(str(segment.pk))
    customer_services.customer_merge_note_moved(merge_id=event.data["merge_id"], key=KEY, value=moved)


def on_merge_undone(*, event, actor: Actor | None = None) -> None:
    actor = actor or SYSTEM
    survivor, merged = UUID(event.data["survivor_id"]), UUID(event.data["merged_id"])
    moved = customer_selectors.merge_get(event.data["merge_id"]).moved.get(KEY, {})
    now = timezone.now()
    joined = set(moved.get("joined", []))
    for membership in _open_static(survivor).filter(segment_id__in=list(joined)):
        _leave(membership, membership.segment, segment_events.LEFT_MANUAL, now, actor)
    back = set(_open_static(merged).values_list("segment_id", flat=True))
    for item in moved.get("left", []):
        segment = selectors.segment_get(item["segment_id"])
        if segment.pk not in back and segment.kind == SegmentKind.STATIC and _consents(merged, segment):
            _join(merged, segment, 0, item["source"], now, actor)


def _evaluate_both(*, event, actor=None) -> None:
    """After commit: derived memberships and tiers of both customers, in tasks."""
    from segments import tasks

    for key in ("survivor_id", "merged_id"):
        try:
            tasks.evaluate_customer.delay(event.data[key])
        except Exception:  # committed already: a broker outage must not fail the merge
            logger.exception("could not queue the segment evaluation of customer %s after a merge", event.data[key])


def subscribe() -> None:
    for event_type, handler in (
        (events.CUSTOMER_MERGED, on_customer_merged),
        (events.CUSTOMER_MERGE_UNDONE, on_merge_undone),
    ):
        events.subscribe(event_type, handler)
        events.subscribe(event_type, _evaluate_both, after_commit=True)
