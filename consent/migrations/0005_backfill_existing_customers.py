"""Every existing customer gets an explicit consent state per purpose (frozen copy of
`consent.services.consent_backfill_missing` as of this migration; the management command
`consent_backfill` runs the current one).

Granted where the matching preference column was on (the opt-in the customer gave before consent
was recorded, carried over on the first policy version, trigger `backfill`, source `import`),
else not_requested. Set-based: one INSERT … SELECT for records and states per batch of 20,000
customers (by id), each batch its own transaction — a million customers must not make one giant
transaction (8 million records and their deferred foreign-key checks). No events.
"""

from django.db import migrations, transaction

BATCH_CUSTOMERS = 20_000

BACKFILL_SQL_TEMPLATE = """
WITH current_version AS (
    SELECT DISTINCT ON (v.purpose_id) v.purpose_id, v.id
    FROM consent_policyversion v
    WHERE v.effective_at <= now()
    ORDER BY v.purpose_id, v.effective_at DESC
),
missing AS (
    SELECT c.id AS customer_id, p.id AS purpose_id, p.default_validity_months, cv.id AS version_id,
           CASE p.code
               WHEN 'marketing_email' THEN COALESCE(pref.email_opt_in, false)
               WHEN 'marketing_sms' THEN COALESCE(pref.sms_opt_in, false)
               WHEN 'marketing_push' THEN COALESCE(pref.push_opt_in, false)
               WHEN 'marketing_direct_mail' THEN COALESCE(pref.direct_mail_opt_in, false)
               WHEN 'analytics' THEN COALESCE(pref.analytics_tracking, false)
               WHEN 'personalization' THEN COALESCE(pref.personalization, false)
               WHEN 'third_party_sharing' THEN COALESCE(pref.third_party_sharing, false)
               ELSE false
           END AS granted
    FROM customers_customer c
    CROSS JOIN consent_consentpurpose p
    JOIN current_version cv ON cv.purpose_id = p.id
    LEFT JOIN customers_customerpreferences pref ON pref.customer_id = c.id {pref_in_batch}
    WHERE c.status <> 'erased' {in_batch}
      AND NOT EXISTS (
          SELECT 1 FROM consent_consentstate s
          WHERE s.customer_id = c.id AND s.purpose_id = p.id {state_in_batch}
      )
),
inserted AS (
    INSERT INTO consent_consentrecord (
        id, customer_id, purpose_id, status, previous_status, policy_version_id, implicit, trigger,
        occurred_at, recorded_at, valid_until, source, actor, ip_address, user_agent, reason
    )
    SELECT gen_random_uuid(), m.customer_id, m.purpose_id,
           CASE WHEN m.granted THEN 'granted' ELSE 'not_requested' END, '', m.version_id, false,
           'backfill', now(), now(),
           CASE WHEN m.granted AND m.default_validity_months IS NOT NULL
                THEN now() + make_interval(months => m.default_validity_months) END,
           'import', 'system:consent_backfill', NULL, '', ''
    FROM missing m
    RETURNING id, customer_id, purpose_id, status, policy_version_id, source, occurred_at, valid_until
)
INSERT INTO consent_consentstate (
    customer_id, purpose_id, status, policy_version_id, source, granted_at, valid_until, updated_at, last_record_id
)
SELECT i.customer_id, i.purpose_id, i.status, i.policy_version_id, i.source,
       CASE WHEN i.status = 'granted' THEN i.occurred_at END, i.valid_until, i.occurred_at, i.id
FROM inserted i
"""
BACKFILL_SQL = BACKFILL_SQL_TEMPLATE.format(in_batch="", pref_in_batch="", state_in_batch="")  # everything at once (small tables, tests)


def backfill(apps, schema_editor):
    alias = schema_editor.connection.alias
    lower = None
    while True:
        with transaction.atomic(using=alias), schema_editor.connection.cursor() as cursor:
            after = "WHERE id > %(lower)s" if lower is not None else ""
            cursor.execute(
                f"SELECT id FROM customers_customer {after} ORDER BY id OFFSET %(offset)s LIMIT 1",
                {"lower": lower, "offset": BATCH_CUSTOMERS - 1},
            )
            row = cursor.fetchone()
            upper = row[0] if row else None

            def in_batch(column):  # every table limited to the batch's id range
                return (f" AND {column} > %(lower)s" if lower is not None else "") + (
                    f" AND {column} <= %(upper)s" if upper is not None else ""
                )

            sql = BACKFILL_SQL_TEMPLATE.format(
                in_batch=in_batch("c.id"),
                pref_in_batch=in_batch("pref.customer_id"),
                state_in_batch=in_batch("s.customer_id"),
            )
            cursor.execute(sql, {"lower": lower, "upper": upper})
        if upper is None:
            return
        lower = upper


class Migration(migrations.Migration):
    atomic = False  # one transaction per batch

    dependencies = [
        ("consent", "0004_staff_groups"),
        ("customers", "0002_staff_groups"),
    ]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]
