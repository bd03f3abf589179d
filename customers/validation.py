"""Normalizers and checks for customer input; each raises ValidationFailed with field errors."""

from __future__ import annotations

import json
import re
from datetime import date
from functools import lru_cache
from zoneinfo import available_timezones

import langcodes
import phonenumbers
import pycountry
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from customers.errors import ValidationFailed

MAX_AGE_YEARS = 150
MAX_TAGS = 50
_TAG = re.compile(r"^[\w][\w .:/-]{0,49}$")


def fail(field: str, message: str, code: str = "VALIDATION_ERROR") -> ValidationFailed:
    return ValidationFailed(message, code=code, errors={field: [message]})


def normalize_email(value: str) -> str:
    email = (value or "").strip()
    try:
        validate_email(email)
    except ValidationError:
        raise fail("email", "Enter a valid email address.", "INVALID_EMAIL_FORMAT") from None
    # Mailbox parts are case-insensitive at every provider we deal with: one customer per address.
    return email.lower()


def normalize_phone(value: str | None, field: str = "phone") -> str:
    """Any written form with a country code (`+1 415-555-2671`) becomes E.164 (`+14155552671`)."""
    if not value:
        return ""
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        raise fail(field, "Enter a phone number with its country code, e.g. +14155552671.", "INVALID_PHONE") from None
    if not phonenumbers.is_valid_number(parsed):
        raise fail(field, "This phone number is not valid.", "INVALID_PHONE")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def validate_date_of_birth(value: date | None, today: date | None = None) -> date | None:
    if value is None:
        return None
    today = today or date.today()
    if value > today:
        raise fail("date_of_birth", "Date of birth cannot be in the future.")
    age = today.year - value.year - ((today.month, today.day) < (value.month, value.day))
    if age > MAX_AGE_YEARS:
        raise fail("date_of_birth", f"Age cannot be over {MAX_AGE_YEARS} years.")
    return value


def normalize_tags(values: list[str]) -> list[str]:
    tags: list[str] = []
    for raw in values:
        tag = str(raw).strip()
        if not _TAG.match(tag):
            raise fail("tags", f"Invalid tag {tag[:60]!r}: letters, digits and ' .:/-_', up to 50 characters.")
        if tag not in tags:
            tags.append(tag)
    if len(tags) > MAX_TAGS:
        raise fail("tags", f"At most {MAX_TAGS} tags.")
    return tags


def validate_json_object(value: object, field: str) -> dict:
    if not isinstance(value, dict):
        raise fail(field, "Must be a JSON object.")
    size = len(json.dumps(value, separators=(",", ":"), default=str).encode())
    if size > settings.CUSTOMER_JSON_MAX_BYTES:
        raise fail(field, f"Must be at most {settings.CUSTOMER_JSON_MAX_BYTES} bytes as JSON (got {size}).")
    return value


def normalize_language(value: str) -> str:
    if not value or not langcodes.tag_is_valid(value):
        raise fail("language", f"{value!r} is not a BCP 47 language tag (e.g. en, en-US, pt-BR).")
    return langcodes.standardize_tag(value)


@lru_cache(maxsize=1)
def _currency_codes() -> frozenset[str]:
    return frozenset(currency.alpha_3 for currency in pycountry.currencies)


def normalize_currency(value: str, field: str = "currency") -> str:
    code = (value or "").strip().upper()
    if code not in _currency_codes():
        raise fail(field, f"{value!r} is not an ISO 4217 currency code.")
    return code


@lru_cache(maxsize=1)
def _timezones() -> frozenset[str]:
    return frozenset(available_timezones())


def validate_timezone(value: str) -> str:
    if value not in _timezones():
        raise fail("timezone", f"{value!r} is not an IANA time zone (e.g. Europe/Berlin).")
    return value
