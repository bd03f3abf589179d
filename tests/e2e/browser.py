"""Driving chromium from a test: log in to the admin and run a scenario, in a thread of its own.

Playwright's sync API runs an event loop in the thread that drives the browser; in the test's own
thread it would swap the database connection and lose the serialized snapshot the next
transactional test restores. So the scenario runs in a thread, and the test checks the database in
its own thread once the browser is done.
"""

import threading
from pathlib import Path

import pytest
from django.db import connection

from tests.e2e.conftest import ARTIFACTS, CHROMIUM, LAUNCH_ARGS


def in_a_browser(live_server, username, scenario) -> dict:
    """Log in as `username`, run `scenario(page, url, found)` in chromium in its own thread; returns `found`."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed: apt-get install chromium (the CI script does)")
    failures, found = [], {}

    def run():
        try:
            with playwright_api.sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
                try:
                    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
                    page = context.new_page()
                    page.set_default_timeout(15000)
                    page.goto(f"{live_server.url}/admin/login/")
                    page.fill("#id_username", username)
                    page.fill("#id_password", "e2e-password")
                    page.click("input[type=submit]")
                    page.wait_for_selector("#user-tools")
                    scenario(page, live_server.url, found)
                finally:
                    browser.close()
        except BaseException as error:  # handed to the test's thread below
            failures.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=240)
    assert not thread.is_alive(), "the browser scenario did not finish"
    if failures:
        raise failures[0]
    return found


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
