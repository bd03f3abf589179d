"""The built-in dynamic segments, and what each staff group may do with segments.

Marketing sees every segment and may create new ones; changing one (rules, members, recalculation)
takes an object permission granted per segment with django-guardian. The Administrator group gets
every permission through customers.roles.
"""

import uuid

from django.db import migrations
from django.utils import timezone

from customers.roles import COMPLIANCE, CUSTOMER_SERVICE, MARKETING, grant

CREATED_BY = "system:migration"

BUILTIN_SEGMENTS = [
    (
        "new_customer",
        "New customers",
        "Registered in the last 30 days with fewer than 2 orders.",
        {
            "all": [
                {"field": "registered_at", "op": "within_last_days", "value": 30},
                {"field": "order_count", "op": "lt", "value": 2},
            ]
        },
    ),
    (
        "regular_customer",
        "Regular customers",
        "Past the new-customer stage (registered 30+ days ago or 2+ orders) and ordered in the last 90 days.",
        {
            "all": [
                {
                    "any": [
                        {"field": "registered_at", "op": "more_than_days_ago", "value": 30},
                        {"field": "order_count", "op": "gte", "value": 2},
                    ]
                },
                {"field": "last_order_at", "op": "within_last_days", "value": 90},
            ]
        },
    ),
    (
        "high_value",
        "High-value customers",
        "Average order value of 200 or more.",
        {"field": "average_order_value", "op": "gte", "value": 200},
    ),
    (
        "frequent_buyer",
        "Frequent buyers",
        "10 or more orders (open or completed) placed in the last 6 months (180 days).",
        {"field": "orders_last_180_days", "op": "gte", "value": 10},
    ),
    (
        "at_risk",
        "At-risk customers",
        "Ordered before, but not in the last 90 days (and not yet churned: last order within 180 days).",
        {
            "all": [
                {"field": "last_order_at", "op": "more_than_days_ago", "value": 90},
                {"field": "last_order_at", "op": "within_last_days", "value": 180},
            ]
        },
    ),
    (
        "churned",
        "Churned customers",
        "Ordered before, but not in the last 180 days.",
        {"field": "last_order_at", "op": "more_than_days_ago", "value": 180},
    ),
]

READ = [
    "segments.view_segment",
    "segments.view_segmentmembership",
    "segments.view_customertier",
]
GROUP_PERMISSIONS = {
    MARKETING: [
        *READ,
        "segments.add_segment",
        "segments.view_segmentcalculation",
        "segments.view_historicalsegment",
        "segments.export_segment_members",
    ],
    CUSTOMER_SERVICE: READ,
    COMPLIANCE: READ,
}


def create_builtin_segments(apps, schema_editor):
    Segment = apps.get_model("segments", "Segment")
    HistoricalSegment = apps.get_model("segments", "HistoricalSegment")
    now = timezone.now()
    for code, name, description, rules in BUILTIN_SEGMENTS:
        if Segment.objects.filter(code=code).exists():
            continue
        segment = Segment.objects.create(
            id=uuid.uuid4(),
            code=code,
            name=name,
            description=description,
            kind="dynamic",
            status="active",
            rules=rules,
            is_builtin=True,
            created_by=CREATED_BY,
            created_at=now,
            updated_at=now,
        )
        HistoricalSegment.objects.create(
            id=segment.id,
            code=code,
            name=name,
            description=description,
            kind="dynamic",
            status="active",
            error="",
            rules=rules,
            requires_consent="",
            is_builtin=True,
            created_by=CREATED_BY,
            created_at=now,
            updated_at=now,
            history_date=now,
            history_type="+",
            history_change_reason="built-in segment",
            history_actor=CREATED_BY,
        )


def remove_builtin_segments(apps, schema_editor):
    apps.get_model("segments", "Segment").objects.filter(is_builtin=True).delete()


def create_groups(apps, schema_editor):
    grant(apps, GROUP_PERMISSIONS)


class Migration(migrations.Migration):
    dependencies = [
        ("segments", "0001_initial"),
        ("customers", "0002_staff_groups"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RunPython(create_builtin_segments, remove_builtin_segments),
        migrations.RunPython(create_groups, migrations.RunPython.noop),
    ]
