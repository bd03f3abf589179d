"""Load realistic demo customers once, and make sure a demo admin login exists (printed each run)."""

import random
import re
import secrets
import unicodedata
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone
from faker import Faker

from customers import services
from customers.actor import Actor
from customers.errors import ApplicationError
from customers.models import Customer
from customers.roles import ADMINISTRATOR, COMPLIANCE, CUSTOMER_SERVICE, MARKETING

LOCALES = {
    "en_US": ("en-US", "USD", "America/New_York"),
    "en_GB": ("en-GB", "GBP", "Europe/London"),
    "de_DE": ("de-DE", "EUR", "Europe/Berlin"),
    "fr_FR": ("fr-FR", "EUR", "Europe/Paris"),
    "ja_JP": ("ja-JP", "JPY", "Asia/Tokyo"),
    "pt_BR": ("pt-BR", "BRL", "America/Sao_Paulo"),
}
TAGS = ["newsletter", "wholesale", "vip-event", "returns-heavy", "gift-buyer", "b2b-lead", "beta-tester"]
DEMO_STAFF = {"rep": CUSTOMER_SERVICE, "compliance": COMPLIANCE, "marketing": MARKETING}


def _ascii(name: str) -> str:
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z]", "", folded.lower()) or "customer"


class Command(BaseCommand):
    help = "Create demo customers (only when there are none) and demo staff logins."

    def add_arguments(self, parser):
        parser.add_argument("--customers", type=int, default=3000)
        parser.add_argument("--seed", type=int, default=2026)

    def handle(self, *args, customers: int, seed: int, **options):
        password = self._password()
        self._staff(password)
        if Customer.objects.exists():
            self.stdout.write("Demo customers already loaded.")
        else:
            self._customers(customers, seed)
        self.stdout.write(
            self.style.SUCCESS(
                f"Admin: http://localhost:8000/admin/  login 'admin' (or rep / compliance / marketing), "
                f"password '{password}'"
            )
        )

    def _password(self) -> str:
        path = Path(settings.BASE_DIR) / ".local" / "demo-password"
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(exist_ok=True)
        password = secrets.token_urlsafe(12)
        path.write_text(password)
        path.chmod(0o600)
        return password

    def _staff(self, password: str) -> None:
        User = get_user_model()
        for username, group in {"admin": ADMINISTRATOR, **DEMO_STAFF}.items():
            user, created = User.objects.get_or_create(
                username=username, defaults={"is_staff": True, "is_superuser": username == "admin"}
            )
            if created:
                user.set_password(password)
                user.save()
            user.groups.add(Group.objects.get(name=group))

    def _customers(self, count: int, seed: int) -> None:
        rng = random.Random(seed)
        fakers = {locale: Faker(locale) for locale in LOCALES}
        for faker in fakers.values():
            faker.seed_instance(seed)
        actor = Actor.system("seed_demo")
        now = timezone.now()
        created = 0
        for start in range(0, count, 500):
            with transaction.atomic():
                for index in range(start, min(start + 500, count)):
                    locale = rng.choice(list(LOCALES))
                    faker = fakers[locale]
                    language, currency, tz = LOCALES[locale]
                    business = rng.random() < 0.12
                    first, last = faker.first_name(), faker.last_name()
                    try:
                        services.customer_create(
                            actor=actor,
                            email=f"{_ascii(first)}.{_ascii(last)}.{index}@{faker.free_email_domain()}",
                            first_name=first,
                            last_name=last,
                            phone=rng.choice(
                                ["", f"+1415555{index % 10000:04d}", f"+4930{rng.randint(1000000, 9999999)}"]
                            ),
                            date_of_birth=faker.date_of_birth(minimum_age=18, maximum_age=85)
                            if rng.random() < 0.7
                            else None,
                            gender=rng.choice(["male", "female", "other", "unknown"]),
                            customer_type="business" if business else "individual",
                            company_name=faker.company() if business else "",
                            registration_source=rng.choice(["web", "web", "mobile", "pos", "call_center", "import"]),
                            tags=rng.sample(TAGS, rng.randint(0, 2)),
                            email_verified=rng.random() < 0.8,
                            registered_at=now - timedelta(days=rng.randint(0, 1500)),
                            preferences={
                                "language": language,
                                "currency": currency,
                                "timezone": tz,
                                "email_opt_in": rng.random() < 0.4,
                                "sms_opt_in": rng.random() < 0.15,
                            },
                        )
                        created += 1
                    except ApplicationError as error:
                        self.stderr.write(f"skipped a demo customer: {error.code}")
            self.stdout.write(f"  {created} demo customers…")
        self.stdout.write(self.style.SUCCESS(f"Loaded {created} demo customers."))
