from django.db import migrations

from customers.roles import COMPLIANCE, CUSTOMER_SERVICE, MARKETING, grant

# What the back-office screens need (issue 8). Administrators hold every permission anyway;
# the access log and imports stay with them.
BACKOFFICE_PERMISSIONS = {
    CUSTOMER_SERVICE: [
        "customers.view_customernote",
        "customers.add_customernote",
        "customers.change_customernote",
        "customers.view_historicalcustomernote",
        "customers.view_duplicatecandidate",
        "customers.change_duplicatecandidate",
        "customers.merge_customer",
        "customers.view_customermerge",
        "customers.export_customer",
        "customers.view_customerexportjob",
    ],
    COMPLIANCE: [
        "customers.view_customernote",
        "customers.add_customernote",
        "customers.change_customernote",
        "customers.view_compliance_note",
        "customers.view_historicalcustomernote",
        "customers.view_duplicatecandidate",
        "customers.view_customermerge",
        "customers.export_customer",
        "customers.export_customer_personal_data",
        "customers.view_customerexportjob",
    ],
    MARKETING: [
        "customers.export_customer",
        "customers.view_customerexportjob",
    ],
}


def grant_backoffice_permissions(apps, schema_editor):
    grant(apps, BACKOFFICE_PERMISSIONS)


class Migration(migrations.Migration):
    dependencies = [("customers", "0007_backoffice")]

    operations = [migrations.RunPython(grant_backoffice_permissions, migrations.RunPython.noop)]
