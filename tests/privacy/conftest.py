import pytest
from django.contrib.auth.models import Group

from customers.roles import COMPLIANCE


@pytest.fixture
def export_dir(settings, tmp_path):
    settings.PRIVACY_EXPORT_DIR = str(tmp_path / "exports")
    return tmp_path / "exports"


@pytest.fixture
def officer(client, django_user_model):
    """A Compliance staff user, logged in to the admin with `client`."""
    user = django_user_model.objects.create_user("officer", is_staff=True)
    user.groups.add(Group.objects.get(name=COMPLIANCE))
    client.force_login(user)
    return user
