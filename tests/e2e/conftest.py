"""Browser tests: Debian's Chromium driven by Playwright against the real studio (Daphne + Celery worker + Redis,
from tests/conftest.py) running the demo model bundle (demo/, loaded as ``manage.py studio`` loads it; another
bundle folder with STUDIO_E2E_BUNDLE). The stories read the bundle's figures from the bundle, never from here.

Each story saves a screenshot to pytest's temporary folder (printed at the end of the run); ``--screenshots DIR``
or STUDIO_E2E_SCREENSHOTS=DIR saves them there instead: ``pytest tests/e2e --screenshots docs/img`` refreshes the
README's pictures."""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from editor_core.bundle import DEMO_BUNDLE
from tests.webapp.conftest import PASSWORD, client_for, tiny_models, users  # noqa: F401  (fixtures)

CHROMIUM = Path("/usr/bin/chromium")
BUNDLE = Path(os.environ.get("STUDIO_E2E_BUNDLE") or DEMO_BUNDLE)
VIEWPORT = {"width": 1280, "height": 800}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
_screenshot_folder: list[Path] = []
# A story's bound against hangs, not a speed target: its waits are job and websocket events, and on a busy 2-core
# machine the studio's own ranking job alone can take minutes before a story's job gets the worker.
STORY_TIMEOUT_S = 900
UNLABELLED_SAMPLES = 4  # the stories paint on three; every generated sample costs a render on the CPU per story


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


@pytest.fixture(scope="session")
def bundle_vectors() -> dict[str, str]:
    """File stem → library name of the bundle's edit vectors (the names the library shows)."""
    from editor_core.vectors import EditVector

    return {path.stem: EditVector.load(path).info.name for path in sorted((BUNDLE / "vectors").glob("*.safetensors"))}


@pytest.fixture
def live_studio(transactional_db, users, daphne_url, celery_worker):  # noqa: F811
    """The bundle loaded into the test database like ``manage.py studio`` loads it (the admin "boss" owns it),
    committed so that Daphne and the worker see it; with the server's URL."""
    from webapp.registry.models import Checkpoint
    from webapp.studio.services import load_bundle

    if not (BUNDLE / "generator.safetensors").is_file():
        pytest.fail(f"the browser stories run on the demo bundle, but {BUNDLE} has no generator.safetensors: build "
                    "or restore it (docs/demo-model.md), or point STUDIO_E2E_BUNDLE at a bundle folder")
    # In a thread of its own: the services it calls announce new annotation versions on the channel layer
    # (async_to_sync), which cannot run in this thread while Playwright's event loop does.
    with ThreadPoolExecutor(max_workers=1) as pool:
        dataset = pool.submit(load_bundle, BUNDLE, users.admin, say=lambda line: None,
                              unlabelled=UNLABELLED_SAMPLES).result()
    samples = list(dataset.samples.select_related("annotation").order_by("pk"))
    annotated = [s for s in samples if getattr(s, "annotation", None) is not None and s.annotation.version > 0]
    return SimpleNamespace(
        url=daphne_url, users=users, dataset=dataset, schema=dataset.schema, generator=dataset.generator,
        segmentation=Checkpoint.objects.get(kind=Checkpoint.Kind.SEGMENTATION, generator=dataset.generator,
                                            active=True),
        samples=samples, annotated=annotated, unlabelled=[s for s in samples if s not in annotated],
        size=dataset.generator.config["img_resolution"])


@pytest.fixture
def finished_job(live_studio, client_for):  # noqa: F811
    """``finished_job(job_id)`` → the job's last ``job.status`` message, waited for on its websocket
    (``ws/jobs/<id>/``): an event, however long the job waits behind others on a busy machine (the test's own
    timeout is the bound). ``started_job(page, path)`` gives the id of the job a click started."""
    from websockets.sync.client import connect

    cookie = client_for(live_studio.users.admin).cookies["sessionid"].value
    url = live_studio.url.replace("http://", "ws://")
    stop = threading.Event()

    def listen(job_id: int) -> dict:
        with connect(f"{url}/ws/jobs/{job_id}/", additional_headers={"Cookie": f"sessionid={cookie}"},
                     origin=live_studio.url) as socket:
            while not stop.is_set():  # the test ended (its timeout, a failure): stop listening
                try:
                    message = json.loads(socket.recv(timeout=1))
                except TimeoutError:
                    continue
                if message["type"] == "job.status" and message["status"] in ("succeeded", "failed", "cancelled"):
                    return message
        raise RuntimeError(f"stopped waiting for job #{job_id}")

    pool = ThreadPoolExecutor(max_workers=1)  # off Playwright's thread and its event loop
    try:
        yield lambda job_id: pool.submit(listen, job_id).result()
    finally:
        stop.set()
        pool.shutdown()


@pytest.fixture
def ranked(live_studio, finished_job):
    """The studio's ranking of the bundle's dataset (queued when the bundle was loaded) has finished, waited for on
    its job's websocket: every sample has its stored prediction (the edit studio starts from it)."""
    from webapp.jobs.models import Job

    ranking = Job.objects.filter(kind="rank", params__dataset_id=live_studio.dataset.pk).latest("pk")
    assert finished_job(ranking.pk)["status"] == "succeeded"
    return ranking


def started_job(page, path_end: str, click) -> int:
    """Runs ``click()`` and returns the id of the job that the POST to a path ending in ``path_end`` started (a job,
    or an edit session's ``job_id``)."""
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.split("?")[0].endswith(path_end)
                              and r.ok, timeout=60_000) as answer:
        click()
    body = answer.value.json()
    return body["job_id"] if "job_id" in body else body["id"]


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


def screenshot_folder(config, tmp_path_factory) -> Path:
    chosen = config.getoption("--screenshots") or os.environ.get("STUDIO_E2E_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.getbasetemp() / "e2e-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def screenshot(request, tmp_path_factory):
    """``screenshot(page, story)`` saves the page as e2e_<story>.png in the screenshot folder (see the module
    docstring), quantised to 256 colours so that the repository's copies stay small."""
    from PIL import Image

    folder = screenshot_folder(request.config, tmp_path_factory)
    if not _screenshot_folder:
        _screenshot_folder.append(folder)

    def save(page, story: str) -> Path:
        path = folder / f"e2e_{story}.png"
        with Image.open(io.BytesIO(page.screenshot())) as shot:
            shot.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        return path

    return save


def pytest_terminal_summary(terminalreporter):
    if _screenshot_folder:
        terminalreporter.write_line(f"e2e screenshots: {_screenshot_folder[0]} (refresh docs/img with "
                                    "`pytest tests/e2e --screenshots docs/img`)")
