"""Celery tasks of the privacy app: thin, idempotent, ids in, services do the work."""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from customers.actor import Actor
from privacy import retention, services

SYSTEM = Actor.system("privacy-worker")
# Named transient errors only (the database went away, a deadlock or serialization failure):
# retried with exponential backoff; anything else (a broken document, a rule) fails at once.
TRANSIENT_ERRORS = (OperationalError, InterfaceError)
RETRY = {
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": 5,
    "retry_backoff_max": 600,
    "retry_jitter": True,
    "max_retries": 6,
}


@shared_task(acks_late=True, **RETRY)
def run_export(request_id: str) -> None:
    services.privacy_run_export(actor=SYSTEM, request_id=request_id)


@shared_task(acks_late=True, **RETRY)
def run_erasure(request_id: str, approved_by: str = "") -> None:
    actor = Actor.system(f"privacy-worker (approved by {approved_by})") if approved_by else SYSTEM
    services.privacy_run_erasure(actor=actor, request_id=request_id)


@shared_task
def report_overdue_requests() -> int:
    return services.report_overdue()


@shared_task(acks_late=True)
def apply_retention(dry_run: bool = False) -> dict:
    return retention.apply_retention(actor=SYSTEM, dry_run=dry_run)
