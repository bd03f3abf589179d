"""Celery tasks of the privacy app: thin, idempotent, ids in, services do the work."""

from celery import shared_task

from customers.actor import Actor
from privacy import retention, services

SYSTEM = Actor.system("privacy-worker")


@shared_task(acks_late=True)
def run_export(request_id: str) -> None:
    services.privacy_run_export(actor=SYSTEM, request_id=request_id)


@shared_task(acks_late=True)
def run_erasure(request_id: str, approved_by: str = "") -> None:
    actor = Actor.system(f"privacy-worker (approved by {approved_by})") if approved_by else SYSTEM
    services.privacy_run_erasure(actor=actor, request_id=request_id)


@shared_task
def report_overdue_requests() -> int:
    return services.report_overdue()


@shared_task(acks_late=True)
def apply_retention(dry_run: bool = False) -> dict:
    return retention.apply_retention(actor=SYSTEM, dry_run=dry_run)
