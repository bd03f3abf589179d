import django.db.models.deletion
from django.db import migrations, models

# As 0014 for the timeline: only the index goes, the foreign key is not dropped and re-validated.
# The LIKE index Django adds to a character primary key goes too: nothing searches order ids by
# pattern, and it was one more random insert per order.
INDEXES = {
    "customers_customerorder_customer_id_7339c352": "(customer_id)",
    "customers_customerorder_order_id_0e6e70c9_like": "(order_id varchar_pattern_ops)",
}


class Migration(migrations.Migration):

    dependencies = [
        ('customers', '0015_outbox_one_subject_index'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='customerorder',
                    name='customer',
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name='orders',
                        to='customers.customer',
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    f'DROP INDEX IF EXISTS "{name}"',
                    reverse_sql=f'CREATE INDEX IF NOT EXISTS "{name}" ON customers_customerorder {columns}',
                )
                for name, columns in INDEXES.items()
            ],
        ),
    ]
