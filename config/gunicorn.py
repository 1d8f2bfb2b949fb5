"""gunicorn settings: JSON logs like the application's; the access log is AccessLogMiddleware's.

Also HTTPS served directly (TLS_CERT_FILE and TLS_KEY_FILE), and no trust in forwarded headers
here: config/proxy.py alone decides which peers may set them (TRUSTED_PROXIES).
"""

import os
import ssl
import sys
from pathlib import Path

import gunicorn.sock

# The `gunicorn` script reads this file before it puts the working directory on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config.environment import tls_files

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
timeout = int(os.environ.get("WEB_TIMEOUT", "120"))

_tls = tls_files()
if _tls is not None:
    certfile, keyfile = _tls


def ssl_context(conf, default_ssl_context_factory):
    """TLS 1.2 and 1.3 only: 1.0 and 1.1 are deprecated (RFC 8996) and refused at the handshake."""
    context = default_ssl_context_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def on_starting(server):
    # Workers build the TLS context for each connection; building it once here first makes a key
    # that does not match its certificate stop the start, instead of failing every handshake.
    if server.cfg.is_ssl:
        gunicorn.sock.ssl_context(server.cfg)


# gunicorn's default trusts loopback peers to set the scheme (X-Forwarded-Proto, -Ssl, -Protocol)
# and SCRIPT_NAME/PATH_INFO headers. Trust none: Django decides the scheme and host, and only
# for TRUSTED_PROXIES, so that one setting governs them (config/proxy.py).
forwarded_allow_ips = ""

accesslog = None
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "config.logging.JsonFormatter"}},
    "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"handlers": ["stdout"], "level": "INFO"},
    "loggers": {
        "gunicorn.error": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
    },
}
