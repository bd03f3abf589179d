"""The nightly recalculation: beat schedules it at the configured hour and minute, and the task brings every
live dynamic segment up to date while static segments are left as they are."""

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from celery.schedules import crontab
from django.utils import timezone

from segments import selectors, services, tasks
from segments.models import CalculationStatus, Segment, SegmentCalculation, SegmentMembership, SegmentStatus
from tests.segments.conftest import (
    SYSTEM,
    grant,
    make_customer,
    make_segment,
    matching,
    members,
    recalculate,
    set_metrics,
)

ENTRY = "segments-nightly-recalculation"
TASK = "segments.tasks.recalculate_all_dynamic_segments"
SPENDERS = {"field": "total_spent", "op": "gte", "value": 100}


class TestSchedule:
    def test_beat_runs_the_registered_task_at_the_configured_time(self):
        from config.celery_app import app

        entry = app.conf.beat_schedule[ENTRY]
        assert entry["task"] == TASK
        assert app.tasks[TASK] is tasks.recalculate_all_dynamic_segments._get_current_object()  # shared_task: a proxy
        expected = crontab(
            hour=int(os.environ.get("SEGMENTS_RECALCULATION_HOUR", 2)),
            minute=int(os.environ.get("SEGMENTS_RECALCULATION_MINUTE", 30)),
        )
        assert entry["schedule"] == expected
        assert (entry["schedule"].hour, entry["schedule"].minute) == (expected.hour, expected.minute)

    def test_the_hour_and_minute_come_from_the_environment(self):
        """A fresh process (as beat and the worker start) with other values: the crontab follows them, and the
        worker's autodiscovery registers the task without anything importing segments.tasks first."""
        code = (
            "import json, sys; from config.celery_app import app; "
            "before = 'segments.tasks' in sys.modules; app.loader.import_default_modules(); "
            f"entry = app.conf.beat_schedule[{ENTRY!r}]; "
            "print(json.dumps([entry['task'], sorted(entry['schedule'].hour), sorted(entry['schedule'].minute), "
            f"before, {TASK!r} in app.tasks]))"
        )
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "SEGMENTS_RECALCULATION_HOUR": "4",
            "SEGMENTS_RECALCULATION_MINUTE": "5",
        }
        root = Path(__file__).resolve().parents[2]
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120, check=True
        )
        task, hour, minute, imported_before, registered = json.loads(done.stdout.strip().splitlines()[-1])
        assert (task, hour, minute) == (TASK, [4], [5])
        assert not imported_before and registered


def _state_of_static(segment) -> tuple:
    segment.refresh_from_db()
    rows = list(
        SegmentMembership.objects.filter(segment=segment).order_by("id").values_list("pk", "joined_at", "left_at")
    )
    return rows, segment.status, segment.last_calculated_at, segment.member_count, segment.history.count()


@pytest.mark.django_db
def test_the_task_recalculates_every_live_dynamic_segment_and_leaves_static_ones_alone():
    crowd = [make_customer(metrics={"total_spent": Decimal(amount)}) for amount in (0, 50, 100, 150, 1000)]
    spenders = make_segment(SPENDERS, code="spenders")
    recalculate(spenders)
    calculated_before = spenders.last_calculated_at
    set_metrics(crowd[1], total_spent=Decimal("500"))  # should join
    set_metrics(crowd[3], total_spent=Decimal("10"))  # should leave
    small = make_segment({"field": "total_spent", "op": "lt", "value": 60}, code="small")  # queued, never run
    mailing = make_segment(SPENDERS, code="mailing", requires_consent="marketing_email")
    grant(crowd[4])
    sleeping = make_segment(SPENDERS, code="sleeping", status="inactive")
    hand = make_segment(code="hand")
    services.segment_members_add(actor=SYSTEM, segment_id=hand.pk, customer_ids=[crowd[0].pk, crowd[3].pk])
    static_before = _state_of_static(hand)
    assert members(spenders) == {crowd[2].pk, crowd[3].pk, crowd[4].pk}  # stale until the run
    started = timezone.now()

    tasks.recalculate_all_dynamic_segments.delay()  # eager in tests: through Celery, in this process

    assert members(spenders) == {crowd[1].pk, crowd[2].pk, crowd[4].pk}
    assert members(small) == {crowd[0].pk, crowd[3].pk}
    assert members(mailing) == {crowd[4].pk}
    live = list(selectors.live_dynamic_segments())
    assert {spenders.pk, small.pk, mailing.pk} <= {segment.pk for segment in live}
    assert sum(segment.is_builtin for segment in live) == 6
    for segment in live:
        assert segment.status == SegmentStatus.ACTIVE, segment.code
        assert segment.last_calculated_at is not None and segment.last_calculated_at >= started, segment.code
        assert members(segment) == matching(segment.rules, requires_consent=segment.requires_consent), segment.code
        assert segment.member_count == len(members(segment)), segment.code
        assert SegmentCalculation.objects.filter(
            segment=segment, status=CalculationStatus.SUCCEEDED, finished_at__gte=started
        ).exists(), segment.code
    assert Segment.objects.get(pk=spenders.pk).last_calculated_at > calculated_before
    assert Segment.objects.get(code="new_customer").member_count == 5  # all registered today, no orders
    sleeping.refresh_from_db()
    assert sleeping.last_calculated_at is None and not members(sleeping)
    assert _state_of_static(hand) == static_before
    assert members(hand) == {crowd[0].pk, crowd[3].pk}
    assert not SegmentCalculation.objects.filter(segment__in=[hand, sleeping]).exists()
