"""Browser tests: Debian's Chromium driven by Playwright against the real studio (Daphne + Celery worker + Redis,
from tests/conftest.py) on the tiny models of tests/webapp/conftest.py. Each story saves a screenshot to
docs/img/e2e_<story>.png."""
from __future__ import annotations

import io
import os
import shutil
import tempfile
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
def browser(daphne_url, celery_worker):
    """One headless Chromium for the session, started after the studio's processes (they must not inherit the
    flag below)."""
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread; the test's own ORM calls are synchronous
    # and safe, but Django would refuse them in what looks like an async context.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if call.when == "call":
        item.call_failed = outcome.get_result().failed


@pytest.fixture
def open_as(request, browser, live_studio):
    """``open_as(username, hash)`` → a logged-in page of a fresh browser context at ``#<hash>``. When the test fails,
    every page's screenshot is kept (the path is printed) to show what the browser showed."""
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
    if getattr(request.node, "call_failed", False):
        folder = Path(tempfile.gettempdir()) / "editgan-e2e-failures" / request.node.name
        folder.mkdir(parents=True, exist_ok=True)
        for k, context in enumerate(contexts):
            for page in context.pages:
                page.screenshot(path=str(folder / f"page{k}.png"))
        print(f"screenshots of the failed test's pages: {folder}")
    for context in contexts:
        context.close()


def screenshot(page, story: str) -> Path:
    """Saves the page as docs/img/e2e_<story>.png, quantised to 256 colours so the repository stays small."""
    from PIL import Image

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"e2e_{story}.png"
    with Image.open(io.BytesIO(page.screenshot())) as shot:
        shot.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path
