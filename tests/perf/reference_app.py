"""The reference the customers API is measured against: the least a server can do for the same GET.

A plain WSGI callable, run under the same gunicorn settings as the Django app: one psycopg
connection per worker thread (opened once, kept), one SELECT of the customer joined with its
preferences by primary key, `json.dumps`. No framework, no auth, no cache.

    gunicorn tests.perf.reference_app:application
"""

from __future__ import annotations

import json
import os
import re
import threading
import uuid

import psycopg
from psycopg.rows import dict_row

DATABASE_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/customer_service")
CUSTOMER_PATH = re.compile(r"^/api/v1/customers/([0-9a-fA-F-]{36})$")
QUERY = """
SELECT c.*, p.language, p.currency, p.timezone, p.email_opt_in, p.sms_opt_in, p.push_opt_in,
       p.direct_mail_opt_in, p.notify_order_updates, p.notify_promotions, p.notify_newsletters,
       p.notify_system_alerts, p.data_sharing, p.analytics_tracking, p.personalization,
       p.third_party_sharing, p.theme, p.custom, p.updated_at AS preferences_updated_at
FROM customers_customer c
JOIN customers_customerpreferences p ON p.customer_id = c.id
WHERE c.id = %s
"""

_local = threading.local()


def _connection() -> psycopg.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = psycopg.connect(DATABASE_URL, autocommit=True, row_factory=dict_row)
        _local.conn = conn
    return conn


def _respond(start_response, status: str, payload: dict) -> list[bytes]:
    body = json.dumps(payload, default=str).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/health/live":
        return _respond(start_response, "200 OK", {"status": "ok"})
    match = CUSTOMER_PATH.match(path)
    if match is None or environ.get("REQUEST_METHOD") != "GET":
        return _respond(start_response, "404 Not Found", {"code": "NOT_FOUND"})
    try:
        customer_id = uuid.UUID(match.group(1))
    except ValueError:
        return _respond(start_response, "404 Not Found", {"code": "CUSTOMER_NOT_FOUND"})
    row = _connection().execute(QUERY, (customer_id,)).fetchone()
    if row is None:
        return _respond(start_response, "404 Not Found", {"code": "CUSTOMER_NOT_FOUND"})
    return _respond(start_response, "200 OK", row)
