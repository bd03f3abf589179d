"""Settings shared by every environment; secrets and hosts come from the environment."""

from datetime import timedelta
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()
env.read_env(str(BASE_DIR / ".env"), overwrite=False)

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env("DJANGO_SECRET_KEY")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "simple_history",
    "guardian",
    "import_export",
    "customers",
    "addresses",
    "consent",
    "segments",
    "privacy",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "customers.middleware.CorrelationIdMiddleware",
    "consent.context.RequestOriginMiddleware",
    "customers.middleware.BackOfficeSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "customers.middleware.BackOfficeAuthenticationMiddleware",
    "customers.middleware.BackOfficeMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/customer_service")}
# Persistent connections: opening one per request costs more than the query itself.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=300)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# The only statements prepared on a connection are the key lookups of `customers.precompiled`, whose
# generic plan is right: without this, PostgreSQL re-plans some of them on every run.
PREPARED_PLAN_OPTIONS = "-c plan_cache_mode=force_generic_plan"
DATABASES["default"].setdefault("OPTIONS", {}).setdefault("options", PREPARED_PLAN_OPTIONS)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {
            # A cache outage degrades to database reads instead of failing requests.
            "IGNORE_EXCEPTIONS": True,
            "SOCKET_CONNECT_TIMEOUT": 0.5,
            "SOCKET_TIMEOUT": 0.5,
        },
    }
}
DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["customers.auth.JWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["customers.auth.HasScope"],
    "DEFAULT_THROTTLE_CLASSES": ["customers.ratelimit.TokenSubjectRateThrottle"],
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "customers.api_errors.problem_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Customer service API",
    "DESCRIPTION": (
        "Customers, addresses, consent, segments and privacy requests. Every endpoint takes "
        "`Authorization: Bearer <JWT>`; errors are `application/problem+json` with a stable `code`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVE_AUTHENTICATION": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    # Operation ids and tags are named from the path after /api (`v1_customers_list`), as before the
    # health probes (outside /api) joined the schema.
    "SCHEMA_PATH_PREFIX": "/api",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "customers.schema.document_request_body_problems",
    ],
    "ENUM_NAME_OVERRIDES": {},
}

# JWT for the API: HS256 with a shared key; issuer and audience are checked on every request.
JWT_SIGNING_KEY = env("JWT_SIGNING_KEY")
JWT_ISSUER = env("JWT_ISSUER", default="https://auth.platform.local")
JWT_AUDIENCE = env("JWT_AUDIENCE", default="customer-service")
JWT_LEEWAY_SECONDS = 30

API_RATE_LIMIT_PER_MINUTE = env.int("API_RATE_LIMIT_PER_MINUTE", default=1000)
RATE_LIMIT_CACHE_ALIAS = "default"
RATE_LIMIT_KEY_PREFIX = "ratelimit"
CUSTOMER_CACHE_TTL_SECONDS = 300
EVENT_SOURCE = "customer-service"

CUSTOMER_JSON_MAX_BYTES = 16 * 1024

# Celery: Redis by default; a RabbitMQ URL works through the same setting.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE: dict = {}
CELERY_BEAT_SCHEDULE_FILENAME = env("CELERY_BEAT_SCHEDULE_FILENAME", default=str(BASE_DIR / ".celerybeat-schedule"))

# Events (customers.messaging): the relay publishes the outbox to EVENTS_EXCHANGE (topic, routing key
# = event type); the consumer reads other services' events from EVENTS_INBOUND_EXCHANGE through our
# durable EVENTS_INBOUND_QUEUE. Redis or RabbitMQ, by URL alone. `make run` starts both processes.
EVENTS_BROKER_URL = env("EVENTS_BROKER_URL", default=CELERY_BROKER_URL)
EVENTS_EXCHANGE = env("EVENTS_EXCHANGE", default="customer.events")
EVENTS_INBOUND_EXCHANGE = env("EVENTS_INBOUND_EXCHANGE", default="platform.events")
EVENTS_INBOUND_QUEUE = env("EVENTS_INBOUND_QUEUE", default="customer-service.inbound")
EVENTS_REDIS_VISIBILITY_TIMEOUT = env.int("EVENTS_REDIS_VISIBILITY_TIMEOUT", default=300)  # seconds
EVENTS_RELAY_BATCH_SIZE = env.int("EVENTS_RELAY_BATCH_SIZE", default=500)
EVENTS_RELAY_POLL_SECONDS = env.float("EVENTS_RELAY_POLL_SECONDS", default=0.25)
EVENTS_RELAY_MAX_BACKOFF_SECONDS = env.int("EVENTS_RELAY_MAX_BACKOFF_SECONDS", default=60)
EVENTS_RELAY_CONFIRM_TIMEOUT_SECONDS = 30
EVENTS_RELAY_PRUNE_INTERVAL_SECONDS = 300
EVENTS_RELAY_TASK_SECONDS = 20  # how long the beat task relays before it returns
EVENTS_INBOUND_BATCH_SIZE = env.int("EVENTS_INBOUND_BATCH_SIZE", default=500)
EVENTS_INBOUND_BATCH_WAIT_MS = env.int("EVENTS_INBOUND_BATCH_WAIT_MS", default=100)
# How long published outbox rows, inbox rows and resolved dead letters are kept (customers.tasks.prune_events).
OUTBOX_RETENTION = timedelta(days=env.int("OUTBOX_RETENTION_DAYS", default=7))
INBOX_RETENTION = timedelta(days=env.int("INBOX_RETENTION_DAYS", default=30))
DEAD_LETTER_RETENTION = timedelta(days=env.int("DEAD_LETTER_RETENTION_DAYS", default=90))
SUPPORT_SATISFACTION_WINDOW = 20  # the rolling average covers the latest N closed cases
ACTIVITY_RETENTION_MONTHS = env.int("RETENTION_ACTIVITY_MONTHS", default=24)  # privacy reads the same variable
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]["ActivityTypeEnum"] = "customers.activity.TRACKABLE_TYPES"
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"].update(
    {
        "CustomerStatusEnum": "customers.models.CustomerStatus",
        "NoteKindEnum": "customers.models.NoteKind",
        "WritableNoteKindEnum": "customers.notes_api.WRITABLE_NOTE_KINDS",
        "PrivacyRequestKindEnum": "privacy.models.RequestKind",
        "HealthDependencyEnum": "customers.health.DEPENDENCIES",
    }
)
CELERY_BEAT_SCHEDULE.update(
    {
        "customers-relay-outbox": {
            "task": "customers.tasks.relay_outbox",
            "schedule": timedelta(seconds=30),
            "options": {"expires": 25},
        },
        "customers-prune-events": {"task": "customers.tasks.prune_events", "schedule": timedelta(hours=1)},
        "customers-prune-activity": {"task": "customers.tasks.prune_activity", "schedule": timedelta(days=1)},
        "customers-sweep-exports": {
            "task": "customers.tasks.sweep_customer_exports",
            "schedule": timedelta(minutes=10),
        },
    }
)

# The back-office (issue 8): how long a merge can be undone; staff exports (files outside the web root).
CUSTOMER_MERGE_UNDO_DAYS = env.int("CUSTOMER_MERGE_UNDO_DAYS", default=30)
CUSTOMER_EXPORT_DIR = env("CUSTOMER_EXPORT_DIR", default=str(BASE_DIR / "var" / "customer-exports"))
CUSTOMER_EXPORT_RETENTION_DAYS = env.int("CUSTOMER_EXPORT_RETENTION_DAYS", default=7)
# django-import-export: importing customers takes customers.import_customer (Administrators).
IMPORT_EXPORT_IMPORT_PERMISSION_CODE = "import"
IMPORT_EXPORT_SKIP_ADMIN_LOG = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
SIMPLE_HISTORY_REVERT_DISABLED = True  # a revert would bypass the services (no event, no checks)

# Privacy: where exports are written (never under a served directory), how long things are kept.
PRIVACY_EXPORT_DIR = env("PRIVACY_EXPORT_DIR", default=str(BASE_DIR / "var" / "exports"))
PRIVACY_RETENTION = {
    "inactive_customer_years": env.int("RETENTION_INACTIVE_CUSTOMER_YEARS", default=3),
    "deleted_address_days": env.int("RETENTION_DELETED_ADDRESS_DAYS", default=90),
    "export_days": env.int("RETENTION_EXPORT_DAYS", default=30),
    "activity_months": env.int("RETENTION_ACTIVITY_MONTHS", default=24),
}
# Each returns a reason to keep a customer's data for now (erasure goes on hold), or None.
PRIVACY_ERASURE_HOLD_CHECKS = env.list("PRIVACY_ERASURE_HOLD_CHECKS", default=["privacy.holds.open_orders"])
PRIVACY_PROCESSING_STATEMENT = {
    "controller": "Example Shop GmbH, privacy@shop.example",
    "purposes": [
        {"purpose": "account and order fulfilment", "legal_basis": "contract (Art. 6(1)(b))"},
        {"purpose": "customer service", "legal_basis": "contract (Art. 6(1)(b))"},
        {"purpose": "marketing communication", "legal_basis": "consent (Art. 6(1)(a)), see the consent record"},
        {"purpose": "segmentation and loyalty tiers", "legal_basis": "legitimate interest (Art. 6(1)(f))"},
        {"purpose": "fraud prevention and legal obligations", "legal_basis": "legal obligation (Art. 6(1)(c))"},
    ],
    "recipients": [
        "order, payment and shipping services of the platform",
        "email and SMS delivery providers (only with marketing consent)",
        "analytics provider (only with analytics consent)",
    ],
    "retention": {
        "customer profile": "until erasure, or anonymized after the inactivity period",
        "inactivity period (years)": PRIVACY_RETENTION["inactive_customer_years"],
        "deleted addresses (days)": PRIVACY_RETENTION["deleted_address_days"],
        "data exports (days)": PRIVACY_RETENTION["export_days"],
        "activity (months)": PRIVACY_RETENTION["activity_months"],
        "consent record": "kept as proof, pseudonymized on erasure",
    },
    "source": "provided by the customer, and by the platform's order, support and loyalty services",
    "rights": (
        "access, rectification, erasure, restriction, portability, objection; complaint to a supervisory authority"
    ),
}

# Segments: every live dynamic segment fully recalculated nightly, then every tier (hour and minute UTC).
from celery.schedules import crontab  # noqa: E402

CELERY_BEAT_SCHEDULE["segments-nightly-recalculation"] = {
    "task": "segments.tasks.recalculate_all_dynamic_segments",
    "schedule": crontab(
        hour=env.int("SEGMENTS_RECALCULATION_HOUR", default=2),
        minute=env.int("SEGMENTS_RECALCULATION_MINUTE", default=30),
    ),
    "options": {"expires": 6 * 3600},
}
# Tier thresholds over the defaults in segments.tiers (tiers or criteria left out keep theirs), as JSON,
# e.g. SEGMENTS_TIER_THRESHOLDS='{"premium": {"total_spent": "500", "order_count": 3}}'.
SEGMENTS_TIER_THRESHOLDS = env.json("SEGMENTS_TIER_THRESHOLDS", default={})

# Privacy: the retention sweep nightly, the overdue-request report every morning (UTC).
CELERY_BEAT_SCHEDULE["privacy-retention-sweep"] = {
    "task": "privacy.tasks.apply_retention",
    "schedule": crontab(hour=3, minute=30),
    "options": {"expires": 6 * 3600},
}
CELERY_BEAT_SCHEDULE["privacy-report-overdue"] = {
    "task": "privacy.tasks.report_overdue_requests",
    "schedule": crontab(hour=7, minute=0),
}
