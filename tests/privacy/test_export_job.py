"""The export job: queued on commit from the admin, regenerable, file in place only on commit, retries."""

from pathlib import Path

import pytest
from django.db import OperationalError

from customers.actor import Actor
from privacy import exports, services, tasks
from privacy.models import DataSubjectRequest, RequestStatus
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")
QUEUE = "/admin/privacy/datasubjectrequest/"


def files(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.glob("*")) if directory.exists() else []


def test_admin_start_export_queues_the_job_on_commit(client, officer, export_dir, django_capture_on_commit_callbacks):
    customer = CustomerFactory(email="a@example.com")
    request = DataSubjectRequest.objects.create(
        customer=customer, kind="access", due_at=services.due_date(customer.registered_at), filed_by="test"
    )
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(QUEUE, {"action": "start_export", "_selected_action": [str(request.pk)]})
    assert response.status_code == 302
    request.refresh_from_db()
    assert request.status == RequestStatus.IN_PROGRESS and not request.result_file  # not run in the request
    assert files(export_dir) == [] and len(callbacks) >= 1
    with django_capture_on_commit_callbacks(execute=True):
        for callback in callbacks:
            callback()  # the commit: the (eager) Celery job runs, and its own commit puts the file in place
    request.refresh_from_db()
    assert request.status == RequestStatus.COMPLETED and Path(request.result_file).exists()


def test_a_completed_export_can_be_regenerated(client, officer, export_dir, django_capture_on_commit_callbacks):
    customer = CustomerFactory(email="a@example.com", first_name="Old")
    with django_capture_on_commit_callbacks(execute=True):
        request, _ = services.privacy_request_file(actor=SYSTEM, customer_id=customer.pk, kind="access")
    request.refresh_from_db()
    first = exports.json.loads(Path(request.result_file).read_text())
    assert first["data"]["customers"]["profile"]["first_name"] == "Old"
    customer.__class__.objects.filter(pk=customer.pk).update(first_name="New")
    with django_capture_on_commit_callbacks(execute=True):
        client.post(QUEUE, {"action": "start_export", "_selected_action": [str(request.pk)]})
    request.refresh_from_db()
    again = exports.json.loads(Path(request.result_file).read_text())
    assert request.status == RequestStatus.COMPLETED
    assert again["data"]["customers"]["profile"]["first_name"] == "New"
    assert files(export_dir) == [Path(request.result_file).name]
    reasons = list(request.history.order_by("history_date").values_list("history_change_reason", flat=True))
    assert "export regenerated" in reasons


def test_a_rolled_back_export_leaves_no_file(export_dir, monkeypatch, django_capture_on_commit_callbacks):
    customer = CustomerFactory(email="a@example.com")
    request, _ = services.privacy_request_file(actor=SYSTEM, customer_id=customer.pk, kind="access")
    original_move = services._move

    def fail_on_completion(req, *, actor, to, reason=""):
        if to == RequestStatus.COMPLETED:
            raise RuntimeError("the database refused the final update")
        return original_move(req, actor=actor, to=to, reason=reason)

    monkeypatch.setattr(services, "_move", fail_on_completion)
    with pytest.raises(RuntimeError), django_capture_on_commit_callbacks(execute=True):
        services.privacy_run_export(actor=SYSTEM, request_id=request.pk)
    assert files(export_dir) == []  # neither the final file nor the temporary one
    request.refresh_from_db()
    assert request.status == RequestStatus.IN_PROGRESS and not request.result_file


def test_the_file_appears_only_on_commit(export_dir, django_capture_on_commit_callbacks):
    customer = CustomerFactory(email="a@example.com")
    request, _ = services.privacy_request_file(actor=SYSTEM, customer_id=customer.pk, kind="access")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.privacy_run_export(actor=SYSTEM, request_id=request.pk)
    request.refresh_from_db()
    assert not Path(request.result_file).exists() and [name.endswith(".tmp") for name in files(export_dir)] == [True]
    for callback in callbacks:
        callback()
    assert files(export_dir) == [Path(request.result_file).name]


def test_transient_errors_are_retried_and_others_are_not(export_dir, monkeypatch, django_capture_on_commit_callbacks):
    customer = CustomerFactory(email="a@example.com")
    request, _ = services.privacy_request_file(actor=SYSTEM, customer_id=customer.pk, kind="access")
    calls = []
    build = exports.build_document

    def flaky(req):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return build(req)

    monkeypatch.setattr(exports, "build_document", flaky)
    # apply(throw=False) runs Celery's retries eagerly (a worker would wait the backoff first).
    with django_capture_on_commit_callbacks(execute=True):
        result = tasks.run_export.apply(args=[str(request.pk)], throw=False)
    request.refresh_from_db()
    assert result.state == "SUCCESS" and len(calls) == 2 and request.status == RequestStatus.COMPLETED
    assert Path(request.result_file).exists()

    other = CustomerFactory(email="b@example.com")
    second, _ = services.privacy_request_file(actor=SYSTEM, customer_id=other.pk, kind="access")
    calls.clear()

    def broken(req):
        calls.append(1)
        raise ValueError("a bug, not a hiccup")

    monkeypatch.setattr(exports, "build_document", broken)
    result = tasks.run_export.apply(args=[str(second.pk)], throw=False)
    assert result.state == "FAILURE" and isinstance(result.result, ValueError)
    assert len(calls) == 1
    assert tasks.run_export.max_retries and OperationalError in tasks.TRANSIENT_ERRORS
