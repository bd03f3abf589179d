from django.db import migrations

from customers.roles import GROUP_PERMISSIONS, grant


def create_groups(apps, schema_editor):
    grant(apps, GROUP_PERMISSIONS)


class Migration(migrations.Migration):
    dependencies = [
        ("customers", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_groups, migrations.RunPython.noop)]
