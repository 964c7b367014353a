"""Browser tests: Debian's Chromium driven by Playwright against the real studio (Daphne + Celery worker + Redis,
from tests/conftest.py) on the tiny models of tests/webapp/conftest.py. Each story saves a screenshot to
docs/img/e2e_<story>.png."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.webapp.conftest import (PASSWORD, client_for, studio,  # noqa: F401  (fixtures)
                                   tiny_models, users)

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "img"
VIEWPORT = {"width": 1280, "height": 800}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def pytest_collection_modifyitems(config, items):
    if CHROMIUM.exists() and shutil.which("node"):
        return
    skip = pytest.mark.skip(reason="the browser tests need Debian's Chromium at /usr/bin/chromium "
                                   "(apt-get install -y chromium)")
    for item in items:
        if "tests/e2e" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def live_studio(transactional_db, studio, daphne_url, celery_worker):  # noqa: F811
    """The studio fixture's data committed (so Daphne and the worker see it), with the server's URL."""
    studio.url = daphne_url
    return studio


@pytest.fixture
def open_as(browser, live_studio):
    """``open_as(username, hash)`` → a logged-in page of a fresh browser context at ``#<hash>``."""
    contexts = []

    def open_page(username: str, route: str = "/annotate"):
        context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
        contexts.append(context)
        page = context.new_page()
        page.on("console", lambda message: message.type == "error" and print(f"[{username} console] {message.text}"))
        page.goto(f"{live_studio.url}/static/index.html#{route}")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.locator("#user").filter(has_text=username).wait_for()
        return page

    yield open_page
    for context in contexts:
        context.close()


def screenshot(page, story: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"e2e_{story}.png"
    page.screenshot(path=str(path))
    return path
