from django.db import migrations

from customers.roles import COMPLIANCE, CUSTOMER_SERVICE, MARKETING, grant

ADDRESS_PERMISSIONS = {
    CUSTOMER_SERVICE: [
        "addresses.view_address",
        "addresses.add_address",
        "addresses.change_address",
        "addresses.delete_address",
        "addresses.view_historicaladdress",
    ],
    COMPLIANCE: ["addresses.view_address", "addresses.view_historicaladdress"],
    MARKETING: ["addresses.view_address"],
}


def grant_address_permissions(apps, schema_editor):
    grant(apps, ADDRESS_PERMISSIONS)


class Migration(migrations.Migration):
    dependencies = [
        ("addresses", "0001_initial"),
        ("customers", "0002_staff_groups"),
    ]

    operations = [migrations.RunPython(grant_address_permissions, migrations.RunPython.noop)]
