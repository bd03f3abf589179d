import django.db.models.deletion
from django.db import migrations, models

# Only the index goes: Django's AlterField would also drop and re-add the foreign key, which
# re-validates every timeline row under a lock; the constraint itself does not change.
INDEX = "customers_customeractivity_customer_id_45f5c04d"


class Migration(migrations.Migration):

    dependencies = [
        ('customers', '0013_accesslog_user_index_redundant'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='customeractivity',
                    name='customer',
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name='activities',
                        to='customers.customer',
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    f'DROP INDEX IF EXISTS "{INDEX}"',
                    reverse_sql=f'CREATE INDEX IF NOT EXISTS "{INDEX}" ON customers_customeractivity (customer_id)',
                ),
            ],
        ),
    ]
