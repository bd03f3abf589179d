"""Full recalculation: exact joined/left sets, history, events, consent, the concurrency guard, failures."""

import dataclasses
import json
import threading
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from jsonschema import Draft202012Validator

from customers.models import OutboxEvent
from segments import calculation, services
from segments import events as segment_events
from segments.errors import SegmentInactive, SegmentNotDynamic
from segments.models import CalculationStatus, Segment, SegmentCalculation, SegmentMembership, SegmentStatus
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
SCHEMAS = Path(__file__).resolve().parents[2] / "segments" / "event_schemas"
SPENDERS = {"field": "total_spent", "op": "gte", "value": 100}


def assert_valid(event):
    schema = json.loads((SCHEMAS / f"{event.event_type}.json").read_text())
    errors = [error.message for error in Draft202012Validator(schema).iter_errors(event.data)]
    assert errors == [], errors


@pytest.fixture
def crowd():
    return [make_customer(metrics={"total_spent": Decimal(amount)}) for amount in (0, 50, 100, 150, 1000)]


class TestDiff:
    def test_first_run_joins_exactly_the_matching_customers(self, crowd):
        segment = make_segment(SPENDERS)
        assert segment.status == SegmentStatus.CALCULATING
        job = recalculate(segment)
        expected = {c.pk for c in crowd[2:]}
        assert members(segment) == expected
        assert (job.status, job.joined, job.left, job.member_count) == (CalculationStatus.SUCCEEDED, 3, 0, 3)
        assert segment.status == SegmentStatus.ACTIVE and segment.member_count == 3
        assert segment.last_calculated_at is not None
        assigned = events_of(segment_events.SEGMENT_ASSIGNED, segment_id=str(segment.pk))
        assert {event.subject for event in assigned} == {str(pk) for pk in expected}
        for event in assigned:
            assert event.data["source"] == "rule" and event.data["segment_code"] == segment.code
            assert event.metadata["actor"] == "system:tests" and event.metadata["correlation_id"]
            assert_valid(event)
        [recalculated] = events_of(segment_events.SEGMENT_RECALCULATED, segment_id=str(segment.pk))
        assert recalculated.subject == str(segment.pk)
        assert recalculated.data | {"calculated_at": None} == {
            "segment_id": str(segment.pk),
            "segment_code": segment.code,
            "job_id": str(job.pk),
            "trigger": "rules_changed",
            "joined": 3,
            "left": 0,
            "rescored": 0,
            "member_count": 3,
            "calculated_at": None,
        }
        assert_valid(recalculated)

    def test_rerun_applies_only_the_difference(self, crowd):
        segment = make_segment(SPENDERS)
        recalculate(segment)
        set_metrics(crowd[1], total_spent=Decimal("500"))  # joins
        set_metrics(crowd[3], total_spent=Decimal("10"))  # leaves
        before = OutboxEvent.objects.count()
        job = recalculate(segment)
        assert (job.joined, job.left, job.member_count) == (1, 1, 3)
        assert members(segment) == {crowd[1].pk, crowd[2].pk, crowd[4].pk}
        assert OutboxEvent.objects.count() == before + 3  # one join, one leave, one recalculated
        [left] = events_of(segment_events.SEGMENT_REMOVED, segment_id=str(segment.pk))
        assert left.subject == str(crowd[3].pk)
        assert left.data["reason"] == "rules" and left.data["source"] == "rule"
        assert_valid(left)
        closed = SegmentMembership.objects.get(segment=segment, customer=crowd[3])
        assert closed.left_at is not None and closed.left_at >= closed.joined_at

    def test_an_unchanged_rerun_changes_nothing(self, crowd):
        segment = make_segment(SPENDERS)
        recalculate(segment)
        rows = list(SegmentMembership.objects.filter(segment=segment).values_list("pk", "joined_at", "left_at"))
        job = recalculate(segment)
        assert (job.joined, job.left, job.rescored) == (0, 0, 0)
        assert list(SegmentMembership.objects.filter(segment=segment).values_list("pk", "joined_at", "left_at")) == rows

    def test_history_across_leave_and_rejoin(self, crowd):
        segment = make_segment(SPENDERS)
        customer = crowd[4]
        recalculate(segment)
        set_metrics(customer, total_spent=Decimal("0"))
        recalculate(segment)
        set_metrics(customer, total_spent=Decimal("2000"))
        recalculate(segment)
        rows = list(SegmentMembership.objects.filter(segment=segment, customer=customer).order_by("id"))
        assert len(rows) == 2
        assert rows[0].left_at is not None and rows[1].left_at is None
        assert rows[1].joined_at >= rows[0].left_at
        kinds = [e.event_type for e in OutboxEvent.objects.filter(subject=str(customer.pk)).order_by("occurred_at")]
        segment_kinds = [kind for kind in kinds if kind.startswith("customer.segment.")]
        assert segment_kinds == [
            segment_events.SEGMENT_ASSIGNED,
            segment_events.SEGMENT_REMOVED,
            segment_events.SEGMENT_ASSIGNED,
        ]

    def test_one_open_membership_per_customer_and_segment_in_the_database(self, crowd):
        segment = make_segment(SPENDERS)
        recalculate(segment)
        with pytest.raises(IntegrityError), transaction.atomic():
            SegmentMembership.objects.create(customer=crowd[4], segment=segment, source="manual")

    def test_scores_are_kept_current(self, crowd):
        rules = {
            "any": [
                {"field": "total_spent", "op": "gte", "value": 100, "weight": 1},
                {"field": "total_spent", "op": "gte", "value": 1000, "weight": 10},
            ]
        }
        segment = make_segment(rules)
        recalculate(segment)
        scores = dict(SegmentMembership.objects.filter(segment=segment).values_list("customer_id", "score"))
        assert scores[crowd[4].pk] == Decimal("11") and scores[crowd[2].pk] == Decimal("1")
        set_metrics(crowd[2], total_spent=Decimal("5000"))
        job = recalculate(segment)
        assert (job.joined, job.left, job.rescored) == (0, 0, 1)
        assert SegmentMembership.objects.get(segment=segment, customer=crowd[2], left_at=None).score == 11

    def test_members_lacking_the_required_consent_are_excluded(self, crowd):
        for customer in crowd[2:4]:
            grant(customer)
        segment = make_segment(SPENDERS, requires_consent="marketing_email")
        recalculate(segment)
        assert members(segment) == {crowd[2].pk, crowd[3].pk}
        revoke(crowd[2])
        job = recalculate(segment)
        assert members(segment) == {crowd[3].pk} and job.left == 1
        [left] = events_of(segment_events.SEGMENT_REMOVED, segment_id=str(segment.pk))
        assert left.subject == str(crowd[2].pk)

    def test_erased_and_restricted_members_leave(self, crowd):
        segment = make_segment(SPENDERS)
        recalculate(segment)
        from customers.models import Customer

        Customer.objects.filter(pk=crowd[2].pk).update(status="erased")
        Customer.objects.filter(pk=crowd[3].pk).update(processing_restricted=True)
        job = recalculate(segment)
        assert job.left == 2 and members(segment) == {crowd[4].pk}
        removed = {e.subject: e.data for e in events_of(segment_events.SEGMENT_REMOVED, segment_id=str(segment.pk))}
        assert removed[str(crowd[3].pk)] == {"customer_id": str(crowd[3].pk), "segment_id": str(segment.pk)}
        assert removed[str(crowd[2].pk)]["reason"] == "rules"  # erased: pseudonymous id, full payload


class TestGuard:
    def test_a_second_request_returns_the_calculation_under_way(self, crowd):
        segment = make_segment(SPENDERS)
        first = SegmentCalculation.objects.get(segment=segment)
        again = services.segment_request_calculation(actor=SYSTEM, segment_id=segment.pk)
        assert again.pk == first.pk
        services.segment_calculation_run(job_id=first.pk)
        third = services.segment_request_calculation(actor=SYSTEM, segment_id=segment.pk)
        assert third.pk != first.pk
        assert SegmentCalculation.objects.filter(segment=segment).count() == 2

    def test_the_database_refuses_two_open_calculations(self, crowd):
        segment = make_segment(SPENDERS)
        with pytest.raises(IntegrityError), transaction.atomic():
            SegmentCalculation.objects.create(segment=segment, requested_by="x")

    def test_a_finished_job_is_not_run_again(self, crowd):
        segment = make_segment(SPENDERS)
        job = recalculate(segment)
        assert services.segment_calculation_run(job_id=job.pk) is None
        assert SegmentCalculation.objects.get(pk=job.pk).status == CalculationStatus.SUCCEEDED

    def test_a_stale_calculation_is_given_up(self, crowd):
        segment = make_segment(SPENDERS)
        old = SegmentCalculation.objects.get(segment=segment)
        SegmentCalculation.objects.filter(pk=old.pk).update(requested_at=timezone.now() - timedelta(hours=2))
        new = services.segment_request_calculation(actor=SYSTEM, segment_id=segment.pk)
        assert new.pk != old.pk
        old.refresh_from_db()
        assert old.status == CalculationStatus.FAILED and "Abandoned" in old.error

    def test_only_active_dynamic_segments_are_calculated(self, crowd):
        static = make_segment(code="by_hand")
        with pytest.raises(SegmentNotDynamic):
            services.segment_request_calculation(actor=SYSTEM, segment_id=static.pk)
        inactive = make_segment(SPENDERS, status="inactive")
        assert not SegmentCalculation.objects.filter(segment=inactive).exists()
        with pytest.raises(SegmentInactive):
            services.segment_request_calculation(actor=SYSTEM, segment_id=inactive.pk)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_requests_start_one_calculation():
    segment = make_segment(SPENDERS, status="inactive")
    services.segment_update(actor=SYSTEM, segment_id=segment.pk, changes={"status": "active"})
    SegmentCalculation.objects.filter(segment=segment).update(status=CalculationStatus.SUCCEEDED)
    Segment.objects.filter(pk=segment.pk).update(status=SegmentStatus.ACTIVE)
    jobs = at_once(4, lambda: services.segment_request_calculation(actor=SYSTEM, segment_id=segment.pk, run=False).pk)
    assert len(set(jobs)) == 1
    assert SegmentCalculation.objects.filter(segment=segment, status=CalculationStatus.QUEUED).count() == 1


def _wait_for_a_blocked_backend(timeout: float = 10) -> None:
    """Until another connection waits for a lock we hold (the run is then mid-statement)."""
    deadline = timezone.now() + timedelta(seconds=timeout)
    while timezone.now() < deadline:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")  # else one snapshot for the whole transaction
            cursor.execute(  # this test run's own database: other runs share the server
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                return
        threading.Event().wait(0.02)
    raise AssertionError("the recalculation never reached the locked membership")


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_request_while_a_calculation_runs_gets_the_running_job_at_once(admin_api):
    """Two connections: the run is held mid-statement (a membership it must close is locked by the
    test); meanwhile POST /calculate answers 202 with the running job and PATCH does not wait."""
    stays = make_customer(metrics={"total_spent": Decimal("500")})
    goes = make_customer(metrics={"total_spent": Decimal("500")})
    segment = make_segment(SPENDERS)
    recalculate(segment)
    set_metrics(goes, total_spent=Decimal("0"))
    earlier = SegmentCalculation.objects.filter(segment=segment).count()
    running = services.segment_request_calculation(actor=SYSTEM, segment_id=segment.pk, run=False)
    outcome, answers = {}, {}

    def run():
        try:
            outcome["job"] = services.segment_calculation_run(job_id=running.pk, actor=SYSTEM)
        finally:
            connection.close()

    def ask(name, call):
        try:
            answers[name] = call()
        finally:
            connection.close()

    runner = threading.Thread(target=run)
    with transaction.atomic():
        held = SegmentMembership.objects.select_for_update().get(segment=segment, customer=goes, left_at=None)
        runner.start()
        _wait_for_a_blocked_backend()
        assert SegmentCalculation.objects.get(pk=running.pk).status == CalculationStatus.RUNNING
        url = f"/api/v1/segments/{segment.pk}"
        requests = {
            "calculate": lambda: admin_api.post(f"{url}/calculate"),
            "patch": lambda: admin_api.patch(url, {"name": "Renamed"}, format="json"),
            "delete": lambda: admin_api.delete(url),
        }
        askers = {name: threading.Thread(target=ask, args=(name, call)) for name, call in requests.items()}
        for asker in askers.values():
            asker.start()
        for asker in askers.values():
            asker.join(timeout=5)
        blocked = [name for name, asker in askers.items() if asker.is_alive()]
        assert held.left_at is None
    # The lock is released here (also when an assertion above failed): every thread can end.
    runner.join(timeout=30)
    for asker in askers.values():
        asker.join(timeout=30)
    assert blocked == [], f"waited for the running calculation: {blocked}"
    calculate = answers["calculate"]
    assert calculate.status_code == 202, calculate.content
    assert calculate.json()["job_id"] == str(running.pk) and calculate.json()["status"] == "running"
    assert answers["patch"].status_code == 200, answers["patch"].content
    assert answers["delete"].status_code == 409 and answers["delete"].json()["code"] == "SEGMENT_CALCULATING"
    done = outcome["job"]
    assert done.status == CalculationStatus.SUCCEEDED and (done.left, done.joined) == (1, 0)
    assert SegmentCalculation.objects.filter(segment=segment).count() == earlier + 1  # no second job was queued
    segment.refresh_from_db()
    assert segment.name == "Renamed" and segment.status == SegmentStatus.ACTIVE
    assert members(segment) == {stays.pk}


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_per_customer_evaluation_waits_for_a_running_recalculation():
    customer = make_customer(metrics={"total_spent": Decimal("500")})
    segment = make_segment(SPENDERS)
    recalculate(segment)
    started, finished = threading.Event(), []

    def evaluate():
        started.set()
        services.customer_segments_evaluate(actor=SYSTEM, customer_id=customer.pk)
        finished.append(timezone.now())
        connection.close()

    with transaction.atomic():
        services._lock_segment_exclusive(segment.pk)  # what a running recalculation holds
        thread = threading.Thread(target=evaluate)
        thread.start()
        started.wait()
        thread.join(timeout=0.5)
        assert thread.is_alive() and not finished
        released = timezone.now()
    thread.join(timeout=10)
    assert finished and finished[0] >= released


class TestFailure:
    def test_a_failure_keeps_the_old_membership_and_records_the_reason(self, crowd, monkeypatch):
        segment = make_segment(SPENDERS)
        recalculate(segment)
        before_rows = list(SegmentMembership.objects.filter(segment=segment).values_list("pk", "left_at"))
        before_events = OutboxEvent.objects.count()
        set_metrics(crowd[4], total_spent=Decimal("0"))
        set_metrics(crowd[0], total_spent=Decimal("999"))

        original = calculation._removed_events

        def broken(*args, **kwargs):  # the leave events fail for each row, after the joins and leaves
            spec = original(*args, **kwargs)
            return dataclasses.replace(spec, restricted="1 / (length(r.source) - length(r.source)) = 1")

        monkeypatch.setattr(calculation, "_removed_events", broken)
        job = recalculate(segment)
        assert job.status == CalculationStatus.FAILED and "division by zero" in job.error
        assert segment.status == SegmentStatus.ERROR and "division by zero" in segment.error
        assert list(SegmentMembership.objects.filter(segment=segment).values_list("pk", "left_at")) == before_rows
        assert OutboxEvent.objects.count() == before_events
        assert segment.member_count == 3

        monkeypatch.setattr(calculation, "_removed_events", original)
        job = recalculate(segment)
        assert job.status == CalculationStatus.SUCCEEDED and (job.joined, job.left) == (1, 1)
        assert segment.status == SegmentStatus.ACTIVE and segment.error == ""

    def test_a_statement_timeout_fails_the_calculation(self, crowd, settings):
        segment = make_segment({"field": "custom_attributes.slow", "op": "exists"})
        settings.SEGMENTS_CALCULATION_TIMEOUT_MS = 1
        original = calculation.apply_full_recalculation

        def slow(**kwargs):
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_sleep(0.05)")
            return original(**kwargs)

        calculation.apply_full_recalculation = slow
        try:
            job = recalculate(segment)
        finally:
            calculation.apply_full_recalculation = original
        assert job.status == CalculationStatus.FAILED and "statement timeout" in job.error
        assert segment.status == SegmentStatus.ERROR


class TestStatusStory:
    def test_each_status_change_leaves_a_history_row_with_actor_and_reason(self, crowd, monkeypatch):
        segment = make_segment(SPENDERS)
        recalculate(segment)
        original = calculation._removed_events

        def broken(*args, **kwargs):
            return dataclasses.replace(original(*args, **kwargs), restricted="1 / (length(r.source) * 0) = 1")

        set_metrics(crowd[4], total_spent=Decimal("0"))
        monkeypatch.setattr(calculation, "_removed_events", broken)
        recalculate(segment)
        story = [
            (row.status, row.history_actor, row.history_change_reason) for row in segment.history.order_by("history_id")
        ]
        statuses = [status for status, _, _ in story]
        assert statuses == ["active", "calculating", "active", "calculating", "error"]
        assert story[0][2] == "created"
        assert all(actor == SYSTEM.label for _, actor, _ in story)
        assert "queued" in story[1][2] and "3 joined, 0 left" in story[2][2] and "failed" in story[4][2]
        assert segment.history.order_by("history_id").last().error.startswith("division by zero")

    def test_a_task_that_cannot_be_queued_fails_the_job_at_once(
        self, crowd, request, django_capture_on_commit_callbacks
    ):
        segment = make_segment(SPENDERS)
        recalculate(segment)
        request.getfixturevalue("celery_broker_down")
        with django_capture_on_commit_callbacks(execute=True):
            job = services.segment_request_calculation(actor=SYSTEM, segment_id=segment.pk)
        job.refresh_from_db()
        segment.refresh_from_db()
        assert job.status == CalculationStatus.FAILED and "could not be queued" in job.error
        assert segment.status == SegmentStatus.ERROR and "Connection refused" in segment.error, segment.error
        assert members(segment) == {c.pk for c in crowd[2:]}  # the old membership stays
        again = services.segment_request_calculation(actor=SYSTEM, segment_id=segment.pk, run=False)
        assert again.pk != job.pk and again.status == CalculationStatus.QUEUED  # no hour-long wait


class TestDependencies:
    def test_segments_built_on_a_segment_follow_its_recalculation(self, crowd, django_capture_on_commit_callbacks):
        base = make_segment(SPENDERS, code="spenders")
        recalculate(base)
        with django_capture_on_commit_callbacks(execute=True):
            derived = make_segment({"field": "segments", "op": "contains", "value": "spenders"}, code="derived")
        derived.refresh_from_db()
        assert members(derived) == members(base)
        set_metrics(crowd[0], total_spent=Decimal("100"))
        with django_capture_on_commit_callbacks(execute=True):
            recalculate(base)
        assert members(derived) == members(base) == {c.pk for c in (crowd[0], *crowd[2:])}
        assert SegmentCalculation.objects.filter(segment=derived, trigger="dependency").exists()


class TestNightly:
    def test_every_live_dynamic_segment_is_recalculated_in_dependency_order(self, crowd):
        base = make_segment(SPENDERS, code="spenders")
        derived = make_segment({"field": "segments", "op": "contains", "value": "spenders"}, code="derived")
        inactive = make_segment(SPENDERS, code="sleeping", status="inactive")
        jobs = services.segments_recalculate_all(actor=SYSTEM)
        codes = [job.segment.code for job in jobs]
        assert codes.index("spenders") < codes.index("derived")
        assert "sleeping" not in codes and not members(inactive)
        assert members(derived) == members(base) == {c.pk for c in crowd[2:]}
        assert Segment.objects.filter(is_builtin=True, last_calculated_at__isnull=False).count() == 6

    def test_builtin_segments(self):
        now = timezone.now()
        newbie = make_customer(metrics={"order_count": 1, "last_order_at": now - timedelta(days=2)})
        regular = make_customer(
            registered_at=now - timedelta(days=100),
            metrics={"order_count": 4, "last_order_at": now - timedelta(days=10), "average_order_value": 250},
        )
        at_risk = make_customer(
            registered_at=now - timedelta(days=400),
            metrics={"order_count": 3, "last_order_at": now - timedelta(days=120)},
        )
        churned = make_customer(
            registered_at=now - timedelta(days=400),
            metrics={"order_count": 3, "last_order_at": now - timedelta(days=200)},
        )
        from tests.segments.conftest import add_orders

        add_orders(regular, 10, days_ago=30)
        services.segments_recalculate_all(actor=SYSTEM)
        builtin = {segment.code: members(segment) for segment in Segment.objects.filter(is_builtin=True)}
        assert builtin == {
            "new_customer": {newbie.pk},
            "regular_customer": {regular.pk},
            "high_value": {regular.pk},
            "frequent_buyer": {regular.pk},
            "at_risk": {at_risk.pk},
            "churned": {churned.pk},
        }


class TestDelete:
    def test_deleting_a_segment_removes_its_members_with_events(self, crowd):
        segment = make_segment(SPENDERS)
        recalculate(segment)
        services.segment_delete(actor=SYSTEM, segment_id=segment.pk)
        assert not Segment.objects.filter(pk=segment.pk).exists()
        assert not SegmentMembership.objects.filter(segment_id=segment.pk).exists()
        removed = events_of(segment_events.SEGMENT_REMOVED, segment_id=str(segment.pk))
        assert len(removed) == 3 and {event.data["reason"] for event in removed} == {"segment_deleted"}
        assert segment.history.filter(history_type="-").exists()

    def test_builtin_and_referenced_segments_stay(self, crowd):
        from segments.errors import SegmentBuiltin, SegmentInUse

        with pytest.raises(SegmentBuiltin):
            services.segment_delete(actor=SYSTEM, segment_id=Segment.objects.get(code="churned").pk)
        base = make_segment(SPENDERS, code="spenders")
        make_segment({"field": "segments", "op": "contains", "value": "spenders"}, code="derived")
        with pytest.raises(SegmentInUse):
            services.segment_delete(actor=SYSTEM, segment_id=base.pk)
        with pytest.raises(SegmentInUse):
            services.segment_update(actor=SYSTEM, segment_id=base.pk, changes={"code": "big_spenders"})
