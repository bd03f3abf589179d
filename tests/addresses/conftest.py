import pytest
from django.db import connection

from tests.factories import CustomerFactory


@pytest.fixture(scope="module")
def migrated_data_restored(django_db_setup, django_db_blocker):
    """For modules of transactional tests: leave the data the migrations wrote behind them.

    A transactional test ends with a flush, and `serialized_rollback` only puts the migrations'
    data (staff groups, consent purposes, built-in segments...) back at the start of the *next*
    serialized test. Tests that follow without it would find those tables empty, so once the module
    is done the snapshot taken at database setup is loaded again (rows already there are updated).
    """
    yield
    with django_db_blocker.unblock():
        snapshot = getattr(connection, "_test_serialized_contents", None)
        if snapshot is not None:
            connection.creation.deserialize_db_from_string(snapshot)


@pytest.fixture
def customer(db):
    return CustomerFactory(email="ann@example.com", first_name="Ann", last_name="Lee")


@pytest.fixture
def other_customer(db):
    return CustomerFactory(email="bob@example.com", first_name="Bob", last_name="Roe")
