"""End-to-end stories of issue 7, each in real Chromium against the real studio running the demo bundle. Mask
coordinates are fractions of the bundle's resolution; optimisation step counts stay small (CI has two CPU cores)."""
from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from tests.e2e.conftest import STORY_TIMEOUT_S, started_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(STORY_TIMEOUT_S)]


def stored_mask(client, sample_id: int) -> np.ndarray:
    response = client.get(f"/api/samples/{sample_id}/annotation/mask.png")
    assert response.status_code == 200, response.content[:300]
    return np.asarray(Image.open(io.BytesIO(response.content)))


def canvas_box(page, view: str):
    canvas = page.locator(f".{view}-view .paint-canvas")
    canvas.wait_for()
    return canvas.bounding_box()


def drag(page, points):
    page.mouse.move(*points[0])
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*point, steps=8)
    page.mouse.up()


def canvas_pixel(page, view: str, x: float, y: float) -> list[int]:
    """RGBA of the painting canvas at page point (x, y)."""
    return page.evaluate("""([selector, x, y]) => {
        const canvas = document.querySelector(selector);
        const rect = canvas.getBoundingClientRect();
        const ratio = canvas.width / rect.width;
        const data = canvas.getContext('2d').getImageData(Math.round((x - rect.left) * ratio),
                                                          Math.round((y - rect.top) * ratio), 1, 1).data;
        return Array.from(data);
    }""", [f".{view}-view .paint-canvas", x, y])


def mask_point(box, mask_size: int, mx: float, my: float):
    """Page coordinates of mask point (mx, my) when the mask is fitted into the canvas box (16 px margin)."""
    scale = min((box["width"] - 32) / mask_size, (box["height"] - 32) / mask_size)
    left = box["x"] + (box["width"] - mask_size * scale) / 2
    top = box["y"] + (box["height"] - mask_size * scale) / 2
    return left + mx * scale, top + my * scale


def wait_ready(page, view: str = "annotate"):
    page.locator(f".{view}-view .save-state").filter(has_text="saved").wait_for(timeout=30_000)


def at(size: int, fraction: float) -> float:
    """A mask coordinate at ``fraction`` of the canvas, on a pixel centre."""
    return int(size * fraction) + 0.5


def test_two_annotators_paint_together_and_both_strokes_are_stored(open_as, live_studio, client_for, screenshot):
    sample = live_studio.unlabelled[0]
    size = sample.width
    first = open_as("ann", f"/annotate/{sample.pk}")
    second = open_as("ann2", f"/annotate/{sample.pk}")
    wait_ready(first)
    wait_ready(second)
    first.locator(".presence").filter(has_text="ann2").wait_for()

    box = canvas_box(first, "annotate")
    first.locator('.annotate-view .palette li[data-label="1"]').click()
    row_a = [mask_point(box, size, at(size, x), at(size, 0.27)) for x in (0.15, 0.4, 0.65)]
    before = canvas_pixel(second, "annotate", *row_a[1])
    drag(first, row_a)
    # The second annotator sees the first one's stroke appear without reloading.
    second.wait_for_function("""([x, y, before]) => {
        const canvas = document.querySelector('.annotate-view .paint-canvas');
        const rect = canvas.getBoundingClientRect();
        const d = canvas.getContext('2d').getImageData(Math.round(x - rect.left), Math.round(y - rect.top), 1, 1).data;
        return Math.abs(d[0] - before[0]) + Math.abs(d[1] - before[1]) + Math.abs(d[2] - before[2]) > 30;
    }""", arg=[*row_a[1], before], timeout=10_000)

    second.locator('.annotate-view .palette li[data-label="2"]').click()
    row_b = [mask_point(box, size, at(size, x), at(size, 0.7)) for x in (0.2, 0.5, 0.8)]
    drag(second, row_b)
    first.keyboard.press("Control+s")
    second.get_by_role("button", name="Save").click()
    first.locator(".toast-success").filter(has_text="Saved").first.wait_for()
    screenshot(second, "collaboration")

    admin = client_for(live_studio.users.admin)
    a, b, between = (int(size * 0.27), int(size * 0.4)), (int(size * 0.7), int(size * 0.5)), (size // 2, size // 2)
    for _ in range(50):
        mask = stored_mask(admin, sample.pk)
        if mask[a] == 1 and mask[b] == 2:
            break
        first.wait_for_timeout(200)
    assert mask[a] == 1, "the first annotator's stroke was not stored"
    assert mask[b] == 2, "the second annotator's stroke was not stored"
    assert mask[between] == 0, "paint leaked between the strokes"


def test_prelabel_fills_the_mask_from_the_model(open_as, live_studio, client_for, screenshot, finished_job):
    sample = live_studio.unlabelled[1]
    page = open_as("ann", f"/annotate/{sample.pk}")
    wait_ready(page)
    job_id = started_job(page, "/prelabel", page.get_by_role("button", name="Pre-label").click)
    # While the job waits for the worker (the studio's ranking may run first) the status bar says so.
    prelabel_state = re.compile("pre-label: (queued|prelabel|done|1)")
    page.locator(".annotate-view .job-state").filter(has_text=prelabel_state).wait_for()
    assert finished_job(job_id)["status"] == "succeeded"
    page.locator(".toast-success").filter(has_text="Pre-label ready").wait_for()
    wait_ready(page)
    screenshot(page, "prelabel")
    revisions = client_for(live_studio.users.admin).get(f"/api/samples/{sample.pk}/annotation/revisions").json()
    assert any(r["reason"] == "prelabel" for r in revisions), revisions


def test_artist_samples_edits_saves_applies_and_composes(open_as, live_studio, bundle_vectors, screenshot,
                                                          finished_job):
    shipped = next(iter(bundle_vectors.values()))  # a vector of the bundle, by the name the library shows
    page = open_as("art", "/edit")
    page.locator(".edit-view .sample-list li").first.wait_for()
    sampling = started_job(page, "/samples/generate", page.get_by_role("button", name="Random sample").click)
    assert finished_job(sampling)["status"] == "succeeded"
    page.wait_for_function("() => /#\\/edit\\/\\d+/.test(location.hash)")
    page.locator(".edit-view .loss-readout").filter(has_text="paint on the segmentation").wait_for()
    box = page.locator(".edit-view .paint-canvas").bounding_box()
    size = live_studio.size
    page.locator('.edit-view .palette li[data-label="2"]').click()
    drag(page, [mask_point(box, size, at(size, x), at(size, y))
                for x, y in ((0.2, 0.12), (0.8, 0.12), (0.8, 0.3), (0.2, 0.3))])
    page.locator(".edit-view input[aria-label='Optimisation steps']").fill("2")
    editing = started_job(page, "/edits", page.get_by_role("button", name="Edit", exact=True).click)
    assert finished_job(editing)["status"] == "succeeded"
    page.locator(".edit-view .loss-readout").filter(has_text="done").wait_for()
    screenshot(page, "edit")

    page.get_by_role("button", name="Save vector…").click()
    page.get_by_label("Name").fill("taller hair")
    page.get_by_label("Description").fill("painted in the e2e test")
    page.get_by_label("Tags (comma separated)").fill("hair, e2e")
    page.get_by_role("button", name="Save", exact=True).click()
    page.locator(".toast-success").filter(has_text="taller hair").wait_for()

    edit_posts, sockets = [], []  # the sliders below: one live-apply socket, no edit per position
    page.on("request", lambda r: edit_posts.append(r.url) if r.method == "POST" and "/api/edits" in r.url else None)
    page.on("websocket", lambda socket: sockets.append(socket.url))
    page.get_by_role("link", name="Library").click()
    card = page.locator(".card").filter(has_text="taller hair")
    card.wait_for()
    card.get_by_role("button", name="Apply").click()
    slider = page.get_by_label("Scale of taller hair")
    slider.wait_for()
    for value in ("1.5", "2", "2.5"):  # a drag: several positions quickly, the newest wins
        slider.fill(value)
    # The state line changes when the newest edit's job reports it finished (its websocket event), however long
    # the jobs wait for the worker: no clock of its own (the test's timeout bounds it).
    page.locator(".apply-state").filter(has_text="applied").wait_for(timeout=0)
    page.locator(".card").filter(has_text=shipped).get_by_role("button", name="Apply").click()
    page.get_by_label(f"Scale of {shipped}").fill("-1")
    page.locator(".apply-state").filter(has_text="applied (2 vectors)").wait_for(timeout=0)
    # The slider's picture came on its live-apply socket: a JPEG shown without another request.
    assert page.locator(".library-view .compare img.after").get_attribute("src").startswith("data:image/jpeg;base64,")
    assert edit_posts == [] and any("/ws/apply/" in url for url in sockets), (edit_posts, sockets)
    page.get_by_role("button", name="Save composition…").click()
    page.get_by_label("Name").fill("hair mix")
    page.get_by_role("button", name="Save", exact=True).click()
    page.locator(".toast-success").filter(has_text="hair mix").wait_for()
    screenshot(page, "library")


def test_bad_upload_shows_a_readable_error(open_as, live_studio, tmp_path, screenshot):
    page = open_as("art", "/edit")
    page.locator(".edit-view .sample-list li").first.wait_for()
    bad = tmp_path / "holiday.png"
    bad.write_text("this is not an image")
    page.locator(".edit-view input[type=file]").set_input_files(str(bad))
    error = page.locator(".toast-error").filter(has_text="Upload failed")
    error.wait_for()
    assert "could not use that input" in error.inner_text() or "not" in error.inner_text()
    screenshot(page, "bad_upload")


def test_help_panel_lists_the_keyboard_shortcuts(open_as, live_studio, screenshot):
    page = open_as("ann", f"/annotate/{live_studio.annotated[0].pk}")
    wait_ready(page)
    page.keyboard.press("?")
    help_panel = page.get_by_role("dialog", name="Keyboard shortcuts")
    help_panel.wait_for()
    for text in ("Undo my last change", "ctrl+shift+z", "Brush tool", "Pre-label with the model",
                 "Zoom around the cursor"):
        assert text in help_panel.inner_text(), text
    last = live_studio.schema.classes.count() - 1  # the number keys pick classes 1 … last of the active schema
    assert f"two digits quickly: 11–{last}" in help_panel.inner_text()
    assert "11–34" not in help_panel.inner_text() or last == 34
    screenshot(page, "help")
    page.keyboard.press("Escape")
    help_panel.wait_for(state="detached")


def test_a_dropped_connection_reconnects_and_loses_no_paint(open_as, live_studio, client_for, screenshot):
    sample = live_studio.unlabelled[2]
    size = sample.width
    page = open_as("ann", "/annotate")
    connections = []
    network = {"down": False}

    def through(route):  # the room's websocket, passed through while the "network" is up, refused while down
        if network["down"]:
            route.close(code=1006, reason="network down")
            return
        route.connect_to_server()
        connections.append(route)

    page.route_web_socket(re.compile(r"/ws/annotate/"), through)
    page.evaluate(f"location.hash = '#/annotate/{sample.pk}'")
    wait_ready(page)
    network["down"] = True
    connections[-1].close(code=1001, reason="the test drops the connection")
    page.locator("#connection").filter(has_text="reconnecting").wait_for()
    box = canvas_box(page, "annotate")
    page.locator('.annotate-view .palette li[data-label="2"]').click()
    drag(page, [mask_point(box, size, at(size, x), at(size, 0.5)) for x in (0.15, 0.5, 0.85)])
    page.locator(".annotate-view .save-state").filter(has_text="offline").wait_for()
    screenshot(page, "offline")
    network["down"] = False
    page.locator("#connection").filter(has_text="live").wait_for(timeout=30_000)
    assert len(connections) == 2, "the room did not reconnect"
    page.keyboard.press("Control+s")
    page.locator(".toast-success").filter(has_text="Saved").first.wait_for()
    admin = client_for(live_studio.users.admin)
    centre = (int(size * 0.5), int(size * 0.5))
    for _ in range(50):
        if stored_mask(admin, sample.pk)[centre] == 2:
            break
        page.wait_for_timeout(200)
    assert stored_mask(admin, sample.pk)[centre] == 2, "the stroke painted while offline was lost"
