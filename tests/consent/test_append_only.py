"""The record is append-only: the model refuses, and so does the database, whatever code runs."""

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from consent import services
from consent.errors import PolicyVersionInUse
from consent.models import AppendOnlyViolation, ConsentRecord, PolicyVersion
from customers.actor import Actor
from tests.consent.conftest import change

pytestmark = pytest.mark.django_db


@pytest.fixture
def record(customer):
    return change(customer, "marketing_email", "granted", ip_address="203.0.113.7", user_agent="UA/1").last_record


def _sql(statement: str, params: list) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement, params)


def test_the_model_refuses_to_update_a_record(record):
    record.status = "revoked"
    with pytest.raises(AppendOnlyViolation):
        record.save()
    assert ConsentRecord.objects.get(pk=record.pk).status == "granted"


def test_the_model_and_queryset_refuse_to_delete_or_bulk_update(record):
    with pytest.raises(AppendOnlyViolation):
        record.delete()
    with pytest.raises(AppendOnlyViolation):
        ConsentRecord.objects.filter(pk=record.pk).delete()
    with pytest.raises(AppendOnlyViolation):
        ConsentRecord.objects.filter(pk=record.pk).update(status="revoked")
    assert ConsentRecord.objects.filter(pk=record.pk, status="granted").exists()


@pytest.mark.parametrize(
    ("statement", "params"),
    [
        ("UPDATE consent_consentrecord SET status = 'revoked' WHERE id = %s", []),
        ("UPDATE consent_consentrecord SET occurred_at = now() - interval '1 year' WHERE id = %s", []),
        ("UPDATE consent_consentrecord SET source = 'admin' WHERE id = %s", []),
        ("DELETE FROM consent_consentrecord WHERE id = %s", []),
    ],
    ids=["status", "occurred_at", "source", "delete"],
)
def test_the_database_refuses_updates_and_deletes(record, statement, params):
    with pytest.raises(IntegrityError, match="append-only"):
        _sql(statement, [record.pk])
    record_now = ConsentRecord.objects.get(pk=record.pk)
    assert (record_now.status, record_now.source, record_now.occurred_at) == (
        record.status,
        record.source,
        record.occurred_at,
    )


def test_the_database_lets_only_erasures_redaction_through(record):
    # Blanking the personal fields but also touching the proof: refused.
    with pytest.raises(IntegrityError, match="append-only"):
        _sql(
            "UPDATE consent_consentrecord SET ip_address = NULL, user_agent = '', reason = '', "
            "redacted_at = now(), status = 'revoked' WHERE id = %s",
            [record.pk],
        )
    # Blanking without marking it redacted: refused.
    with pytest.raises(IntegrityError, match="append-only"):
        _sql("UPDATE consent_consentrecord SET ip_address = NULL WHERE id = %s", [record.pk])

    assert services.consent_records_redact(actor=Actor.system("erasure"), customer_id=record.customer_id) >= 1
    redacted = ConsentRecord.objects.get(pk=record.pk)
    assert (redacted.ip_address, redacted.user_agent, redacted.reason) == (None, "", "")
    assert redacted.redacted_at is not None
    assert (redacted.status, redacted.policy_version_id, redacted.occurred_at, redacted.source) == (
        record.status,
        record.policy_version_id,
        record.occurred_at,
        record.source,
    )
    # Once redacted, not even a second "redaction" may change it.
    with pytest.raises(IntegrityError, match="append-only"):
        _sql("UPDATE consent_consentrecord SET redacted_at = now() WHERE id = %s", [record.pk])


def test_a_staff_record_needs_a_reason_in_the_database(customer, record):
    with pytest.raises(IntegrityError, match="consent_record_staff_reason"), transaction.atomic():
        ConsentRecord.objects.create(
            customer_id=customer.pk,
            purpose=record.purpose,
            status="revoked",
            previous_status="granted",
            policy_version=record.policy_version,
            trigger="choice",
            source="admin",
            actor="staff:someone",
        )


def test_the_wording_of_a_version_in_use_is_frozen(record):
    version = record.policy_version
    with pytest.raises(PolicyVersionInUse):
        services.policy_version_update(
            actor=Actor.system("tests"), policy_version_id=version.pk, changes={"notice_text": "Something else"}
        )
    with pytest.raises(IntegrityError, match="cannot change"):
        _sql("UPDATE consent_policyversion SET notice_text = 'Rewritten' WHERE id = %s", [version.pk])
    # What is not wording may still change.
    services.policy_version_update(
        actor=Actor.system("tests"), policy_version_id=version.pk, changes={"requires_reconsent": True}
    )
    assert PolicyVersion.objects.get(pk=version.pk).notice_text == version.notice_text


def test_a_version_not_yet_shown_can_be_corrected(customer):
    from consent.models import ConsentPurpose

    purpose = ConsentPurpose.objects.get(code="marketing_sms")
    draft = services.policy_version_create(
        actor=Actor.system("tests"),
        purpose_id=purpose.pk,
        version="2030-01",
        notice_text="Draft",
        effective_at=timezone.now() + timezone.timedelta(days=30),
    )
    fixed = services.policy_version_update(
        actor=Actor.system("tests"), policy_version_id=draft.pk, changes={"notice_text": "Final wording"}
    )
    assert fixed.notice_text == "Final wording"
    from consent.models import notice_text_hash

    assert fixed.text_hash == notice_text_hash("Final wording")
