import pytest
from django.conf import settings
from django_redis import get_redis_connection
from rest_framework.test import APIClient

from customers.actor import SCOPE_ADMIN, SCOPE_READ, SCOPE_WRITE, Actor
from customers.auth import issue_token
from tests.events.contract import _recorded_events_match_their_schemas  # noqa: F401  (autouse: every event)

READ_WRITE = [SCOPE_READ, SCOPE_WRITE]
ALL = [SCOPE_READ, SCOPE_WRITE, SCOPE_ADMIN]


def _delete_own_keys():
    redis = get_redis_connection("default")
    keys = list(redis.scan_iter(f"{settings.TEST_REDIS_PREFIX}:*", count=1000))
    if keys:
        redis.delete(*keys)


@pytest.fixture(autouse=True)
def _clean_redis():
    """Each test starts without this run's Redis keys (the test settings prefix them per run)."""
    _delete_own_keys()
    yield
    _delete_own_keys()


@pytest.fixture
def system_actor() -> Actor:
    return Actor.system("tests")


@pytest.fixture
def api_client():
    """`api_client(scopes, customer=None, subject="tests")` → an APIClient with a bearer token."""

    def make(scopes=READ_WRITE, customer=None, subject="tests"):
        client = APIClient()
        token = issue_token(scopes=list(scopes), subject=subject, customer_id=getattr(customer, "pk", customer))
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        return client

    return make


@pytest.fixture
def api(api_client):
    return api_client(READ_WRITE)


@pytest.fixture
def admin_api(api_client):
    return api_client(ALL, subject="ops")


@pytest.fixture
def celery_broker_down():
    """Celery not eager and pointed at a port where no broker listens: queueing a task fails the way it
    does in production when the broker is down (connection refused)."""
    from config.celery_app import app

    def switch(settings: dict) -> None:
        app.conf.update(settings)
        # The connection pools are bound to the broker URL they were made for. (Not app.close():
        # it also deregisters the app, and shared tasks then resolve against a default app.)
        app._pool = None
        app.amqp._producer_pool = None

    down = {"task_always_eager": False, "broker_url": "redis://127.0.0.1:1/0"}
    saved = {key: app.conf[key] for key in down}
    switch(down)
    yield
    switch(saved)
