"""The export document (Art. 15 / 20): built from every app's data, validated, stored outside the web root."""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import jsonschema
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from customers.services import export_rows, scrub_personal_fields
from privacy.models import DataSubjectRequest

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "export.v1.json"
FORMAT = "customer-data-export"
SCHEMA_VERSION = 1


@lru_cache(maxsize=1)
def export_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def _is_datetime(value: object) -> bool:
    """RFC 3339 date-time with a time zone (jsonschema checks it only with an optional extra installed)."""
    if not isinstance(value, str):
        return True
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return False
    return "T" in value.upper() and parsed.tzinfo is not None


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    checker = jsonschema.FormatChecker()
    checker.checks("date-time")(_is_datetime)
    schema = export_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=checker)


def validate_document(document: dict) -> None:
    """Validate against export.v1.json, formats included (uuid, date, date-time, ip addresses)."""
    error = jsonschema.exceptions.best_match(_validator().iter_errors(document))
    if error is not None:
        raise error


def build_document(request: DataSubjectRequest) -> dict:
    from privacy.services import DATA_PROVIDERS, providers

    customer_id = request.customer_id
    data = {
        app: provider.export_customer_data(customer_id)
        for app, provider in zip(DATA_PROVIDERS, providers(), strict=True)
    }
    data["privacy"] = {
        "requests": export_rows(DataSubjectRequest.objects.filter(customer_id=customer_id).order_by("received_at")),
        "requests_history": export_rows(
            DataSubjectRequest.history.filter(customer_id=customer_id).order_by("history_date")
        ),
    }
    document = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "generated_at": timezone.now().isoformat(),
        "customer_id": str(customer_id),
        "request": {"id": str(request.id), "kind": request.kind, "received_at": request.received_at.isoformat()},
        "processing": settings.PRIVACY_PROCESSING_STATEMENT,
        "data": data,
    }
    validate_document(document)
    return document


def export_directory() -> Path:
    directory = Path(settings.PRIVACY_EXPORT_DIR)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return directory


def write_temporary_file(request: DataSubjectRequest, document: dict) -> tuple[Path, Path]:
    """Write the document beside its final name (owner-only); the caller moves it in place on commit.

    Returns (temporary, final). The temporary name is unique, so a retried or concurrent run never
    writes into another's file.
    """
    path = export_directory() / f"{request.customer_id}-{request.id}.json"
    temporary = path.with_name(f"{path.stem}.{uuid.uuid4().hex}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(document, handle, ensure_ascii=False, indent=1, default=str)
    return temporary, path


def _remove_files_on_commit(paths: list[str]) -> None:
    def remove():
        for name in paths:
            Path(name).unlink(missing_ok=True)

    transaction.on_commit(remove)


def erase_privacy_records(customer_ids: list) -> dict[str, int]:
    """Erasure of privacy's own records: staff notes about the person, and their export files."""
    requests = DataSubjectRequest.objects.filter(customer_id__in=customer_ids)
    files = [name for name in requests.exclude(result_file="").values_list("result_file", flat=True)]
    _remove_files_on_commit(files)
    return {
        "privacy_datasubjectrequest": scrub_personal_fields(requests, result_file=""),
        "privacy_historicaldatasubjectrequest": scrub_personal_fields(
            DataSubjectRequest.history.filter(customer_id__in=customer_ids), result_file=""
        ),
        "export_files": len(files),
    }


def purge_expired_exports(*, dry_run: bool) -> int:
    expired = DataSubjectRequest.objects.exclude(result_file="").filter(result_expires_at__lt=timezone.now())
    if dry_run:
        return expired.count()
    files = list(expired.values_list("result_file", flat=True))
    _remove_files_on_commit(files)
    expired.update(result_file="")
    return len(files)
