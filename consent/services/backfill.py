"""An explicit consent state for customers that have none, set-based and in batches."""

from __future__ import annotations

import logging
from uuid import UUID

from django.db import connections, transaction
from django.utils import timezone

from consent import selectors
from consent.models import ConsentSource, ConsentTrigger
from consent.services._common import PREFERENCE_FIELD_BY_PURPOSE

logger = logging.getLogger(__name__)

BACKFILL_ACTOR = "system:consent_backfill"
BACKFILL_BATCH_CUSTOMERS = 20_000


def _backfill_sql(*, bounded_below: bool, bounded_above: bool, one_purpose: bool = False) -> str:
    when_granted = " ".join(
        f"WHEN '{code}' THEN COALESCE(pref.{field}, false)" for code, field in PREFERENCE_FIELD_BY_PURPOSE.items()
    )

    def in_batch(column: str) -> str:
        # Every table is limited to the batch's id range, so each batch reads only its own rows.
        return (f" AND {column} > %(lower)s" if bounded_below else "") + (
            f" AND {column} <= %(upper)s" if bounded_above else ""
        )

    # Only constants of this module are formatted into the statement; values are parameters.
    return f"""
        WITH current_version AS (
            SELECT DISTINCT ON (v.purpose_id) v.purpose_id, v.id
            FROM consent_policyversion v
            WHERE v.effective_at <= %(now)s
            ORDER BY v.purpose_id, v.effective_at DESC
        ),
        missing AS (
            SELECT c.id AS customer_id, p.id AS purpose_id, p.default_validity_months, cv.id AS version_id,
                   CASE p.code {when_granted} ELSE false END AS granted
            FROM customers_customer c
            CROSS JOIN consent_consentpurpose p
            JOIN current_version cv ON cv.purpose_id = p.id
            LEFT JOIN customers_customerpreferences pref
                   ON pref.customer_id = c.id {in_batch("pref.customer_id")}
            WHERE c.status NOT IN (%(erased)s, %(merged)s) {in_batch("c.id")}
              {"AND p.id = %(purpose_id)s" if one_purpose else ""}
              AND NOT EXISTS (
                  SELECT 1 FROM consent_consentstate s
                  WHERE s.customer_id = c.id AND s.purpose_id = p.id {in_batch("s.customer_id")}
              )
        ),
        inserted AS (
            INSERT INTO consent_consentrecord (
                id, customer_id, purpose_id, status, previous_status, policy_version_id, implicit, trigger,
                occurred_at, recorded_at, valid_until, source, actor, ip_address, user_agent, reason
            )
            SELECT gen_random_uuid(), m.customer_id, m.purpose_id,
                   CASE WHEN m.granted THEN 'granted' ELSE 'not_requested' END, '', m.version_id, false,
                   %(trigger)s, %(now)s, %(now)s,
                   CASE WHEN m.granted AND m.default_validity_months IS NOT NULL
                        THEN %(now)s::timestamptz + make_interval(months => m.default_validity_months) END,
                   %(source)s, %(actor)s, NULL, '', ''
            FROM missing m
            RETURNING id, customer_id, purpose_id, status, policy_version_id, source, occurred_at, valid_until
        )
        INSERT INTO consent_consentstate (
            customer_id, purpose_id, status, policy_version_id, source, granted_at, valid_until, updated_at,
            last_record_id
        )
        SELECT i.customer_id, i.purpose_id, i.status, i.policy_version_id, i.source,
               CASE WHEN i.status = 'granted' THEN i.occurred_at END, i.valid_until, i.occurred_at, i.id
        FROM inserted i
    """  # noqa: S608


def consent_backfill_missing(
    *,
    batch_size: int = BACKFILL_BATCH_CUSTOMERS,
    using: str = "default",
    purpose_id: UUID | str | None = None,
    actor: str = BACKFILL_ACTOR,
    source: str = ConsentSource.IMPORT.value,
) -> int:
    """An explicit state for every (customer, purpose) that has none: granted where the matching
    preference column is on, else not_requested. Set-based: per batch of customers (by id), one
    INSERT … SELECT writes the records and the states, in its own transaction — so a million
    customers never make one giant transaction. No events: nothing changed for the customer, the
    state is only written down.

    Skips erased and merged customers and purposes without a policy version in effect. Returns the number of
    records written. Safe to run any number of times, and to stop and run again. `purpose_id` limits
    it to one purpose (a purpose whose first policy version just took effect, see
    `consent_record_missing_for_purpose`).
    """
    params = {
        "erased": selectors.ERASED,
        "merged": selectors.MERGED,
        "trigger": ConsentTrigger.BACKFILL.value,
        "source": source,
        "actor": actor,
        "purpose_id": str(purpose_id) if purpose_id is not None else None,
        # The application's clock, not the transaction's start: a version that took effect a moment
        # ago (the one that queued this) is in effect.
        "now": timezone.now(),
    }
    total = 0
    lower = None
    while True:
        with transaction.atomic(using=using), connections[using].cursor() as cursor:
            after = "WHERE id > %(lower)s" if lower is not None else ""
            cursor.execute(
                f"SELECT id FROM customers_customer {after} ORDER BY id OFFSET %(offset)s LIMIT 1",  # noqa: S608
                {"lower": lower, "offset": batch_size - 1},
            )
            row = cursor.fetchone()
            upper = row[0] if row else None
            cursor.execute(
                _backfill_sql(
                    bounded_below=lower is not None, bounded_above=upper is not None, one_purpose=purpose_id is not None
                ),
                {**params, "lower": lower, "upper": upper},
            )
            total += cursor.rowcount
        if upper is None:
            break
        lower = upper
    if total:
        logger.info("consent backfill: %s state(s) recorded", total)
    return total


NEW_POLICY_ACTOR = "system:consent_new_policy"


def consent_record_missing_for_purpose(*, purpose_id: UUID | str, batch_size: int = BACKFILL_BATCH_CUSTOMERS) -> int:
    """Every customer gets an explicit `not_requested` for a purpose that had no wording in effect
    until now (a new purpose's first policy version took effect), set-based and in batches. Customers
    who registered while the purpose had no version got no state for it (a record needs the wording
    in force); this writes it down. Idempotent: customers that already have a state are left alone.
    """
    written = consent_backfill_missing(
        batch_size=batch_size, purpose_id=purpose_id, actor=NEW_POLICY_ACTOR, source=ConsentSource.SYSTEM.value
    )
    if written:
        logger.info("consent: %s not_requested state(s) recorded for purpose %s", written, purpose_id)
    return written
