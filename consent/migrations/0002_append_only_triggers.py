"""The database refuses to change the proof, whatever code runs against it.

- `consent_consentrecord`: no UPDATE and no DELETE. One narrow exception, for erasure: an UPDATE
  that only blanks the personal fields (ip_address → NULL, user_agent → '', reason → '') and sets
  `redacted_at`, with every proof column unchanged. A data migration that truly must rewrite
  records has to disable the trigger explicitly (and say why).
- `consent_policyversion`: the wording columns of a version that a record points at are frozen
  (publish a new version instead).

TRUNCATE is not a row operation and is not covered (Django's test flush relies on it); the
production database role should not own the tables.
"""

from django.db import migrations

RECORD_FUNCTION = """
CREATE OR REPLACE FUNCTION consent_record_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND OLD.redacted_at IS NULL AND NEW.redacted_at IS NOT NULL
       AND NEW.ip_address IS NULL AND NEW.user_agent = '' AND NEW.reason = ''
       AND (NEW.id, NEW.customer_id, NEW.purpose_id, NEW.status, NEW.previous_status, NEW.policy_version_id,
            NEW.implicit, NEW.trigger, NEW.occurred_at, NEW.recorded_at, NEW.valid_until, NEW.source, NEW.actor)
           IS NOT DISTINCT FROM
           (OLD.id, OLD.customer_id, OLD.purpose_id, OLD.status, OLD.previous_status, OLD.policy_version_id,
            OLD.implicit, OLD.trigger, OLD.occurred_at, OLD.recorded_at, OLD.valid_until, OLD.source, OLD.actor)
    THEN
        RETURN NEW;  -- erasure: personal fields blanked, the proof untouched
    END IF;
    RAISE EXCEPTION 'consent records are append-only: % of record % refused', TG_OP, OLD.id
        USING ERRCODE = 'integrity_constraint_violation',
              HINT = 'Record a new change instead.';
END;
$$;
CREATE TRIGGER consent_record_append_only
    BEFORE UPDATE OR DELETE ON consent_consentrecord
    FOR EACH ROW EXECUTE FUNCTION consent_record_append_only();
"""

POLICY_FUNCTION = """
CREATE OR REPLACE FUNCTION consent_policy_version_wording_frozen() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.purpose_id, NEW.version, NEW.notice_text, NEW.notice_url, NEW.text_hash, NEW.effective_at)
           IS DISTINCT FROM
       (OLD.purpose_id, OLD.version, OLD.notice_text, OLD.notice_url, OLD.text_hash, OLD.effective_at)
       AND EXISTS (SELECT 1 FROM consent_consentrecord r WHERE r.policy_version_id = OLD.id)
    THEN
        RAISE EXCEPTION 'policy version % is the wording of recorded consent and cannot change', OLD.id
            USING ERRCODE = 'integrity_constraint_violation',
                  HINT = 'Publish a new version instead.';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER consent_policy_version_wording_frozen
    BEFORE UPDATE ON consent_policyversion
    FOR EACH ROW EXECUTE FUNCTION consent_policy_version_wording_frozen();
"""


class Migration(migrations.Migration):
    dependencies = [("consent", "0001_initial")]

    operations = [
        migrations.RunSQL(
            RECORD_FUNCTION,
            reverse_sql="""
                DROP TRIGGER IF EXISTS consent_record_append_only ON consent_consentrecord;
                DROP FUNCTION IF EXISTS consent_record_append_only();
            """,
        ),
        migrations.RunSQL(
            POLICY_FUNCTION,
            reverse_sql="""
                DROP TRIGGER IF EXISTS consent_policy_version_wording_frozen ON consent_policyversion;
                DROP FUNCTION IF EXISTS consent_policy_version_wording_frozen();
            """,
        ),
    ]
