"""Celery tasks of the customers app: thin, idempotent, safe to run next to the relay process."""

from __future__ import annotations

from celery import shared_task
from dateutil.relativedelta import relativedelta
from django.conf import settings
from django.utils import timezone

from customers import activity
from customers.messaging import inbound, relay


@shared_task(ignore_result=True)
def relay_outbox() -> dict:
    """Beat's relay: publish for up to EVENTS_RELAY_TASK_SECONDS. SKIP LOCKED lets it run beside `relay_events`."""
    result = relay.drain(max_seconds=settings.EVENTS_RELAY_TASK_SECONDS)
    return {"published": result.published, "failed": result.failed, "held": result.held}


@shared_task(ignore_result=True)
def prune_events() -> dict:
    """Published outbox rows after OUTBOX_RETENTION, inbox rows after INBOX_RETENTION, old resolved dead letters."""
    return {
        "outbox": relay.prune_published(),
        "inbox": inbound.prune_inbox(),
        "dead_letters": inbound.prune_dead_letters(),
    }


@shared_task(ignore_result=True)
def prune_activity() -> int:
    before = timezone.now() - relativedelta(months=settings.ACTIVITY_RETENTION_MONTHS)
    return activity.activity_prune(before=before)


@shared_task(acks_late=True, ignore_result=True)
def run_customer_export(job_id: str) -> None:
    """Write a queued customer export (a running or finished job is left alone)."""
    from customers import bulk_export

    bulk_export.export_job_run(job_id=job_id)


@shared_task(ignore_result=True)
def sweep_customer_exports() -> dict:
    """Requeue export jobs whose task was lost; delete expired export files."""
    from customers import bulk_export

    return {"requeued": bulk_export.queued_jobs_requeue(), "purged": bulk_export.export_jobs_purge()}
