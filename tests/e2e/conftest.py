"""Browser tests: Playwright driving Debian's chromium against the live test server."""

import os
import shutil
from pathlib import Path

# Playwright's sync API runs an event loop in the thread that drives the browser; ORM calls made in
# that thread are still plain synchronous calls, so Django's async-safety guard would be a false alarm.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "e2e"
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
