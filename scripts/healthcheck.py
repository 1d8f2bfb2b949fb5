"""The Docker image's health check: GET /healthz on this container's own server, over HTTPS when
TLS_CERT_FILE and TLS_KEY_FILE are set. Exit status 0 when it answers 200."""

import os
import ssl
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config.environment import tls_files


def main() -> int:
    port = os.environ.get("PORT", "8000")
    if tls_files():
        # This probes liveness over loopback, not the server's identity: its certificate names the
        # public host, and its CA need not be in this image's trust store.
        context = ssl._create_unverified_context()  # noqa: S323
        url = f"https://127.0.0.1:{port}/healthz"
    else:
        context, url = None, f"http://127.0.0.1:{port}/healthz"
    with urllib.request.urlopen(url, timeout=4, context=context) as response:  # noqa: S310
        return 0 if response.status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
