"""The batch parameter of the inbound statements: what goes in comes back out of PostgreSQL's casts."""

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.db import connection

from customers.messaging.effects import json_rows

pytestmark = pytest.mark.django_db


def test_values_come_back_from_postgresql_as_they_went_in():
    moment = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=timezone(timedelta(hours=2)))
    rows = [
        (uuid.uuid4(), Decimal("1234.50"), moment, 'Zoë "quoted" \\ back', 7, None),
        (uuid.uuid4(), Decimal("0.01"), datetime(2026, 1, 1, tzinfo=UTC), "", -3, True),
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (e->>0)::uuid, (e->>1)::numeric, (e->>2)::timestamptz, e->>3, (e->>4)::int, (e->>5)::boolean"
            " FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS t(e, n) ORDER BY n",
            [json_rows(rows)],
        )
        back = cursor.fetchall()
    assert back == rows
