"""Project-wide guarantees: schema, data classification, production settings, token command."""

import os
import re
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
import yaml
from django.apps import apps
from django.conf import settings
from django.core.management import call_command

from customers.data_classification import classification_of, unclassified_fields

ROOT = Path(__file__).resolve().parent.parent
OUR_APPS = ["customers", "addresses", "consent", "segments", "privacy"]


def test_every_text_field_of_every_model_is_classified():
    problems = {}
    for app_label in OUR_APPS:
        for model in apps.get_app_config(app_label).get_models():
            if classification_of(model) is None:
                problems[model._meta.label] = "model not classified"
            elif missing := unclassified_fields(model):
                problems[model._meta.label] = missing
    assert problems == {}


@pytest.mark.django_db
def test_openapi_schema_validates_without_warnings(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    text = out.read_text()
    for path in [
        "/api/v1/customers:",
        "/api/v1/customers/{id}:",
        "/api/v1/customers/{id}/preferences:",
        "/api/v1/customers/{id}/status:",
    ]:
        assert path in text
    assert "EMAIL_ALREADY_EXISTS" in text and "customers:write" in text

    paths = yaml.safe_load(text)["paths"]

    def codes(path, method, status):
        description = paths[path][method]["responses"][str(status)]["description"]
        return set(description.removeprefix("application/problem+json; code: ").split(", "))

    one, preferences = "/api/v1/customers/{id}", "/api/v1/customers/{id}/preferences"
    for path, method in [("/api/v1/customers", "post"), (one, "put"), (one, "patch")]:
        assert {"VALIDATION_ERROR", "EXTERNAL_ID_ALREADY_EXISTS", "INVALID_EMAIL_FORMAT"} <= codes(path, method, 400)
    for path, method in [(one, "put"), (one, "patch"), (preferences, "put"), (preferences, "patch")]:
        assert {"CUSTOMER_ERASED", "CUSTOMER_MERGED"} <= codes(path, method, 409), (path, method)

    # Every operation that reads a body documents DRF's refusals of an unreadable one, in every app.
    with_body = [(path, method) for path, item in paths.items() for method, op in item.items() if "requestBody" in op]
    assert len(with_body) > 20
    for path, method in with_body:
        assert "MALFORMED_REQUEST" in codes(path, method, 400), (path, method)
        assert codes(path, method, 415) == {"UNSUPPORTED_MEDIA_TYPE"}, (path, method)

    # The probes are documented, without a security requirement (no token needed).
    live, ready = paths["/health/live"]["get"], paths["/health/ready"]["get"]
    assert set(live["responses"]) == {"200"} and set(ready["responses"]) == {"200", "503"}
    assert "security" not in live and "security" not in ready
    unavailable = ready["responses"]["503"]["content"]["application/json"]["schema"]["$ref"]
    assert unavailable == ready["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    # Paths outside /api in the schema do not rename the API's operations (clients generate code from them).
    assert paths["/api/v1/customers"]["get"]["operationId"] == "v1_customers_list"


@pytest.mark.django_db
def test_schema_and_docs_are_served(client):
    assert client.get("/api/schema/").status_code == 200
    assert client.get("/api/docs/").status_code == 200


def _run_production_check(env_overrides):
    env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SECRET_KEY", "JWT_SIGNING_KEY", "DATABASE_URL"}}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings.production", "DJANGO_ALLOWED_HOSTS": "x.example"})
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("missing", ["DJANGO_SECRET_KEY", "DATABASE_URL", "JWT_SIGNING_KEY"])
def test_production_refuses_to_start_without_its_secrets(missing):
    complete = {"DJANGO_SECRET_KEY": "s" * 50, "DATABASE_URL": "postgres://u@db/x", "JWT_SIGNING_KEY": "k" * 40}
    del complete[missing]
    result = _run_production_check(complete)
    assert result.returncode != 0
    assert missing in result.stderr


def test_production_starts_with_them_and_is_locked_down():
    result = _run_production_check(
        {"DJANGO_SECRET_KEY": "s" * 50, "DATABASE_URL": "postgres://u@db/x", "JWT_SIGNING_KEY": "k" * 40}
    )
    assert result.returncode == 0, result.stderr
    code = (
        "from django.conf import settings as s; print(s.DEBUG, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
        "s.SECURE_HSTS_SECONDS > 0, s.SECURE_SSL_REDIRECT)"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "DJANGO_ALLOWED_HOSTS": "x",
        "DJANGO_SECRET_KEY": "s" * 50,
        "DATABASE_URL": "postgres://u@db/x",
        "JWT_SIGNING_KEY": "k" * 40,
    }
    assert _printed_by_a_fresh_process(code, env) == "False True True True True"


def _printed_by_a_fresh_process(code: str, env: dict) -> str:
    """The last line `code` prints in a `manage.py shell` started with `env` (settings read anew)."""
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = out.stdout.strip().splitlines()
    assert lines, out.stderr
    return lines[-1]


def test_the_outbox_retention_comes_from_the_environment():
    if "OUTBOX_RETENTION_DAYS" not in os.environ:
        assert settings.OUTBOX_RETENTION.days == 7  # the default
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "OUTBOX_RETENTION_DAYS": "3"}
    code = "from django.conf import settings; print(settings.OUTBOX_RETENTION.days)"
    assert _printed_by_a_fresh_process(code, env) == "3"


def test_issue_token_command(capsys):
    call_command(
        "issue_token",
        "--scope",
        "customers:read customers:write",
        "--customer",
        "6f1f7bb2-8f55-4e59-a1d8-8fd1d6a5f0a1",
        "--ttl",
        "60",
        "--subject",
        "svc",
    )
    token = capsys.readouterr().out.strip()
    claims = jwt.decode(token, settings.JWT_SIGNING_KEY, algorithms=["HS256"], audience=settings.JWT_AUDIENCE)
    assert claims["scope"] == "customers:read customers:write"
    assert claims["customer_id"] == "6f1f7bb2-8f55-4e59-a1d8-8fd1d6a5f0a1"
    assert claims["sub"] == "svc" and claims["exp"] - claims["iat"] == 60
    with pytest.raises(Exception, match="Unknown scope"):
        call_command("issue_token", "--scope", "root")


def test_every_transactional_test_restores_the_migrated_data():
    """A transactional test without serialized_rollback flushes the database, and the flush's post_migrate
    re-creates guardian's AnonymousUser and the Administrator group under new ids; the next test that
    restores the serialized data then collides with them (order-dependent failures)."""
    unserialized = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in (ROOT / "tests").rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(r"django_db\(.*transaction=True", line) and "serialized_rollback=True" not in line
    ]
    assert unserialized == []
