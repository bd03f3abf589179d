"""The purposes every customer is asked about, each with its first policy version."""

import hashlib
import uuid
from datetime import UTC, datetime

from django.db import migrations

EFFECTIVE = datetime(2025, 1, 1, tzinfo=UTC)
VERSION = "2025-01"
NOTICE_URL = "https://shop.example.com/legal/consent/{code}/2025-01"

# code, name, is_marketing, default validity (months), may be implicit, the notice shown
PURPOSES = [
    (
        "marketing_email",
        "Marketing emails",
        True,
        24,
        False,
        "Yes, send me offers, news and personalised recommendations by email. "
        "You can unsubscribe at any time through the link in every email or in your account.",
    ),
    (
        "marketing_sms",
        "Marketing text messages",
        True,
        24,
        False,
        "Yes, send me offers and news by text message (SMS). Reply STOP or change your "
        "account settings to unsubscribe at any time.",
    ),
    (
        "marketing_push",
        "Marketing push notifications",
        True,
        24,
        False,
        "Yes, send me offers and news as push notifications in the app. You can switch them "
        "off at any time in your account or your device settings.",
    ),
    (
        "marketing_direct_mail",
        "Marketing by post",
        True,
        24,
        False,
        "Yes, send me catalogues and offers by post. You can stop them at any time in your account.",
    ),
    (
        "analytics",
        "Analytics",
        False,
        12,
        True,
        "We measure how our shop is used, in aggregate, to improve it. You can switch this off "
        "at any time in your privacy settings.",
    ),
    (
        "personalization",
        "Personalisation",
        False,
        12,
        False,
        "Use my purchases and browsing to personalise what the shop shows me. You can switch "
        "this off at any time in your privacy settings.",
    ),
    (
        "third_party_sharing",
        "Sharing with partners",
        False,
        12,
        False,
        "Share my contact details with carefully selected partners so they can send me their "
        "offers. You can withdraw this at any time in your privacy settings.",
    ),
    (
        "profiling",
        "Profiling",
        False,
        12,
        False,
        "Build a profile of my interests from my orders to decide which offers to make me. "
        "You can withdraw this at any time in your privacy settings.",
    ),
]


def seed(apps, schema_editor):
    ConsentPurpose = apps.get_model("consent", "ConsentPurpose")
    PolicyVersion = apps.get_model("consent", "PolicyVersion")
    for order, (code, name, marketing, months, implicit, notice) in enumerate(PURPOSES, start=1):
        purpose, _ = ConsentPurpose.objects.get_or_create(
            code=code,
            defaults={
                "id": uuid.uuid4(),
                "name": name,
                "is_marketing": marketing,
                "default_validity_months": months,
                "allows_implicit": implicit,
                "display_order": order * 10,
            },
        )
        PolicyVersion.objects.get_or_create(
            purpose=purpose,
            version=VERSION,
            defaults={
                "id": uuid.uuid4(),
                "notice_text": notice,
                "notice_url": NOTICE_URL.format(code=code),
                "text_hash": hashlib.sha256(notice.encode("utf-8")).hexdigest(),
                "effective_at": EFFECTIVE,
            },
        )


class Migration(migrations.Migration):
    dependencies = [("consent", "0002_append_only_triggers")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
