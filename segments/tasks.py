"""Celery tasks: thin, idempotent, take ids, call services."""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import InterfaceError, OperationalError

from customers.actor import Actor
from segments import services

logger = logging.getLogger(__name__)
SYSTEM = Actor.system("segments")

# Connection trouble is worth retrying; a cancelled statement (timeout) or a bad rule is not, and
# the calculation service records those on the job itself.
TRANSIENT = (OperationalError, InterfaceError)


@shared_task(acks_late=True, ignore_result=True, autoretry_for=TRANSIENT, retry_backoff=True, max_retries=5)
def recalculate_segment(job_id: str) -> None:
    """Run a queued full recalculation (a finished or unknown job is a no-op). Connection trouble
    before the job is claimed is retried; a failure of the run itself is recorded on the job."""
    services.segment_calculation_run(job_id=job_id, actor=SYSTEM)


@shared_task(
    acks_late=True,
    ignore_result=True,
    autoretry_for=TRANSIENT,
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=5,
)
def evaluate_customer(customer_id: str) -> None:
    """Re-evaluate one customer's dynamic segments and tier after a change to them."""
    services.customer_segments_evaluate(actor=SYSTEM, customer_id=customer_id)


@shared_task(
    acks_late=True,
    ignore_result=True,
    autoretry_for=TRANSIENT,
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=5,
)
def evaluate_customers(customer_ids: list[str]) -> None:
    """Re-evaluate the dynamic segments and tier of the customers of a batch, set-based in one
    transaction; if that fails for a reason other than the connection, each customer in a
    transaction of its own, so one customer's bad data does not keep the others from being
    evaluated. A retry runs the whole batch again: an evaluation already applied changes nothing."""
    try:
        services.customers_segments_evaluate(actor=SYSTEM, customer_ids=customer_ids)
        return
    except TRANSIENT:
        raise
    except Exception:
        logger.exception("set-based segment evaluation of %d customer(s) failed: one by one", len(customer_ids))
    failed = 0
    for customer_id in customer_ids:
        try:
            services.customer_segments_evaluate(actor=SYSTEM, customer_id=customer_id)
        except TRANSIENT:
            raise
        except Exception:  # one customer's bad data must not keep the others from being evaluated
            failed += 1
            logger.exception("segment evaluation of customer %s failed", customer_id)
    if failed:
        logger.warning("segment evaluation: %d of %d customer(s) failed", failed, len(customer_ids))


@shared_task(acks_late=True, ignore_result=True)
def recalculate_all_dynamic_segments() -> None:
    """The nightly run (beat): every live dynamic segment, then every tier."""
    jobs = services.segments_recalculate_all(actor=SYSTEM)
    logger.info("nightly segment recalculation: %d segment(s) calculated", len(jobs))


@shared_task(acks_late=True, ignore_result=True, autoretry_for=TRANSIENT, retry_backoff=True, max_retries=3)
def recalculate_tiers() -> None:
    changed = services.tiers_recalculate(actor=SYSTEM)
    logger.info("tier recalculation: %d customer(s) changed tier", changed)
