"""The one place that says which stored text is personal data.

Every app registers each of its models here, right beside the model. Export, erasure and log
redaction read this registry; a test fails when a text or JSON field of any model is left
unclassified, so a new field cannot slip past erasure unnoticed.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import models

PERSONAL = "personal"
NOT_PERSONAL = "not_personal"

_TEXTUAL_FIELD_TYPES = (models.CharField, models.TextField, models.JSONField, models.GenericIPAddressField)


@dataclass(frozen=True)
class Classification:
    personal: frozenset[str]
    not_personal: frozenset[str]


_registry: dict[str, Classification] = {}


def classify(model_label: str, *, personal: list[str] | tuple = (), not_personal: list[str] | tuple = ()) -> None:
    overlap = set(personal) & set(not_personal)
    if overlap:
        raise ValueError(f"{model_label}: fields classified both ways: {sorted(overlap)}")
    _registry[model_label.lower()] = Classification(frozenset(personal), frozenset(not_personal))


# Columns simple-history adds to every historical table.
_HISTORY_COLUMNS = Classification(
    personal=frozenset({"history_change_reason"}),  # free text typed by staff may name the customer
    not_personal=frozenset({"history_type", "history_actor"}),
)


def classification_of(model: type[models.Model]) -> Classification | None:
    tracked = getattr(model, "instance_type", None)  # set by simple-history on historical models
    if tracked is not None:
        base = _registry.get(tracked._meta.label_lower)
        if base is None:
            return None
        return Classification(
            base.personal | _HISTORY_COLUMNS.personal, base.not_personal | _HISTORY_COLUMNS.not_personal
        )
    return _registry.get(model._meta.label_lower)


def personal_fields(model: type[models.Model]) -> frozenset[str]:
    found = classification_of(model)
    return found.personal if found else frozenset()


def textual_fields(model: type[models.Model]) -> list[str]:
    """Fields that can hold free text or structured personal data (arrays of text included)."""
    names = []
    for field in model._meta.concrete_fields:
        base = getattr(field, "base_field", None)
        if isinstance(field, _TEXTUAL_FIELD_TYPES) or isinstance(base, _TEXTUAL_FIELD_TYPES):
            names.append(field.name)
    return names


def unclassified_fields(model: type[models.Model]) -> list[str]:
    found = classification_of(model)
    known = (found.personal | found.not_personal) if found else frozenset()
    return [name for name in textual_fields(model) if name not in known]
