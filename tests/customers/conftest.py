import pytest
from django.contrib.auth.models import Group

from customers.actor import Actor


@pytest.fixture
def staff(django_user_model):
    """`staff(group_name, username=None)` → a staff user in that group."""

    def make(group_name, username=None):
        user = django_user_model.objects.create_user(
            username or group_name.lower().replace(" ", "_"), password="x", is_staff=True
        )
        user.groups.add(Group.objects.get(name=group_name))
        return user

    return make


@pytest.fixture
def as_staff():
    """`as_staff(user)` → the Actor services get from the admin."""
    return Actor.for_staff
