"""Stories of issue 18 (what a new user trips over), in real Chromium against the studio running the demo bundle:
the annotation history, one version everywhere, a user without a role, deep links a role cannot open, the library
picking its image in place, the edit panes' scale, a sample segmented for the edit studio and the shipped branch's
evaluation."""
from __future__ import annotations

import json
import re

import pytest

from tests.e2e.conftest import BUNDLE, STORY_TIMEOUT_S
from tests.e2e.test_studio import at, canvas_box, canvas_pixel, drag, mask_point, stored_mask, wait_ready

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(STORY_TIMEOUT_S)]


def version_shown(page) -> tuple[str, str]:
    """The version in the status bar and in the Review panel."""
    status_bar = page.locator(".annotate-view .save-state").inner_text()
    review = page.locator(".annotate-view .review p").first.inner_text()
    return status_bar, review


def test_annotator_reads_the_history_sees_the_differences_and_restores(open_as, live_studio, client_for, screenshot):
    sample = live_studio.annotated[1]  # the bundle's mask: saved, submitted and reviewed by the admin
    size = sample.width
    admin = client_for(live_studio.users.admin)
    first_mask = stored_mask(admin, sample.pk)
    page = open_as("ann", f"/annotate/{sample.pk}")
    wait_ready(page)
    history = page.locator(".annotate-view .history")
    history.locator("li[data-version='3']").filter(has_text="v3 · review: reviewed · boss").wait_for()
    assert history.locator("li[data-version]").count() == 3

    # A stroke, then Save at once. The server records what the annotator did: "save" for what the Save stored (on a
    # slow machine the 1 s autosave may store the stroke's first chunks before; tests/webapp checks the reasons).
    box = canvas_box(page, "annotate")
    page.locator('.annotate-view .palette li[data-label="2"]').click()
    stroke = [mask_point(box, size, at(size, x), at(size, 0.5)) for x in (0.1, 0.5, 0.9)]
    drag(page, stroke)
    page.get_by_role("button", name="Save", exact=True).click()
    saved = page.locator(".toast-success").filter(has_text="Saved version")
    saved.first.wait_for()
    painted = int(saved.first.inner_text().split("Saved version ")[1].split()[0])
    assert painted >= 4
    history.locator(f"li[data-version='{painted}']").filter(has_text=re.compile(r"(save|autosave) · ann")).wait_for()
    assert history.locator("li[data-version]").first.get_attribute("data-version") == str(painted)

    # Version 1 against the canvas: a preview, how many pixels differ, and those pixels marked on the canvas.
    history.locator("li[data-version='1']").click()
    history.locator(".revision-preview").wait_for()
    history.locator(".diff-count").filter(has_text="pixels differ").wait_for()
    red, green, blue, _ = canvas_pixel(page, "annotate", *stroke[1])
    assert red > 200 and green < 90 and blue > 200, "the changed pixels are not marked on the canvas"
    history.get_by_role("button", name="Restore v1").scroll_into_view_if_needed()
    screenshot(page, "history")

    restored = painted + 1
    history.get_by_role("button", name="Restore v1").click()
    page.locator(".toast-success").filter(has_text="Restored version 1").wait_for()
    history.locator(f"li[data-version='{restored}']").filter(has_text=f"v{restored} · restore · ann").wait_for()
    page.locator(".annotate-view .save-state").filter(has_text=f"version {restored}").wait_for()
    assert f"version {restored}" in version_shown(page)[1]
    assert (stored_mask(admin, sample.pk) == first_mask).all()
    kept = admin.get(f"/api/samples/{sample.pk}/annotation/mask.png?version={painted}")
    assert kept.status_code == 200  # the undone stroke is still in the history

    # Submit: the status bar and the Review panel show the one version the submit made.
    page.get_by_role("button", name="Submit for review").click()
    page.locator(".annotate-view .review .badge").filter(has_text="submitted").wait_for()
    page.locator(".annotate-view .save-state").filter(has_text=f"version {restored + 1}").wait_for()
    status_bar, review = version_shown(page)
    assert f"version {restored + 1}" in status_bar and f"version {restored + 1}" in review, (status_bar, review)
    reasons = [r["reason"] for r in admin.get(f"/api/samples/{sample.pk}/annotation/revisions").json()]
    assert reasons[:2] == ["submit", "restore"] and reasons[-3:] == ["review", "submit", "save"]
    assert set(reasons[2:-3]) <= {"save", "autosave"} and reasons[2] in ("save", "autosave")


def test_a_user_without_a_role_sees_who_they_are_and_can_sign_out(open_as, live_studio, screenshot):
    nobody = live_studio.users.nobody
    page = open_as(nobody.username)
    card = page.locator(".no-role")
    card.filter(has_text="no studio role yet").wait_for()
    assert nobody.username in card.inner_text() and "Django admin" in card.inner_text()
    link = card.get_by_role("link", name=f"/admin/auth/user/{nobody.pk}/change/")
    assert link.get_attribute("href") == f"/admin/auth/user/{nobody.pk}/change/"
    assert page.locator(".tabs a:visible").count() == 0
    assert page.locator("#logout").is_visible()
    screenshot(page, "no_role")
    page.reload()
    card.filter(has_text="no studio role yet").wait_for()
    assert page.locator(".toast-error").count() == 0 and "could not start" not in page.content()
    card.get_by_role("button", name="Sign out").click()
    page.get_by_role("button", name="Sign in").wait_for()


def test_a_deep_link_to_a_workspace_the_role_cannot_open_says_why(open_as, live_studio):
    page = open_as("ann", "/admin")
    notice = page.locator(".route-notice")
    notice.filter(has_text="Admin is for admins").wait_for()
    assert "annotator" in notice.inner_text()
    page.locator(".annotate-view").wait_for()
    assert [a.inner_text() for a in page.locator(".tabs a:visible").all()] == ["Annotate", "Account"]
    page.get_by_role("link", name="Annotate").click()
    notice.wait_for(state="hidden")


def test_the_library_picks_its_image_in_place(open_as, live_studio, bundle_vectors):
    shipped = next(iter(bundle_vectors.values()))
    sample = live_studio.unlabelled[3]
    page = open_as("art", "/library")  # straight to the library: nothing was opened in Edit
    page.locator(f".image-picker li[data-sample-id='{sample.pk}']").click()
    page.locator(".apply-panel .who").filter(has_text=f"Sample #{sample.pk}").first.wait_for()
    page.locator(".card").filter(has_text=shipped).get_by_role("button", name="Apply").click()
    page.locator(".apply-state").filter(has_text="applied (1 vectors)").wait_for(timeout=0)  # the edit job's event
    assert page.evaluate("location.hash") == "#/library"


def test_the_edit_panes_draw_image_and_segmentation_at_one_scale(open_as, live_studio, ranked):
    sample = live_studio.unlabelled[3]
    page = open_as("art", f"/edit/{sample.pk}")
    page.locator(".edit-view .loss-readout").filter(has_text="paint on the segmentation").wait_for()
    scales = page.evaluate("""() => {
        const image = document.querySelector('.edit-view .image-pane .compare .before');
        const rect = image.getBoundingClientRect();
        const imageScale = Math.min(rect.width / image.naturalWidth, rect.height / image.naturalHeight);
        const view = document.querySelector('.edit-view .mask-pane .canvas-view');
        const margin = 16;  // fitView's padding
        const maskScale = Math.min((view.clientWidth - 2 * margin) / image.naturalWidth,
                                   (view.clientHeight - 2 * margin) / image.naturalHeight);
        return [imageScale, maskScale];
    }""")
    assert abs(scales[0] - scales[1]) < 0.01 * scales[1], scales


def test_a_sample_without_a_stored_prediction_is_segmented_by_a_job(open_as, live_studio, ranked):
    """The edit studio starts from the active branch's prediction; where none is stored (a branch activated since,
    its ranking not run yet) a segment job stores it: no edit session is made for it."""
    from webapp.datasets.models import SamplePrediction
    from webapp.editing.models import EditSession
    from webapp.jobs.models import Job

    sample = live_studio.unlabelled[2]
    SamplePrediction.objects.filter(sample=sample).delete()
    sessions = EditSession.objects.count()
    page = open_as("art", f"/edit/{sample.pk}")
    page.locator(".edit-view .loss-readout").filter(has_text="paint on the segmentation").wait_for()
    assert page.locator(".toast-error").count() == 0
    assert Job.objects.get(kind="segment", params__sample_id=sample.pk).status == "succeeded"
    assert SamplePrediction.objects.filter(sample=sample, segmentation__active=True).exists()
    assert EditSession.objects.count() == sessions


def test_admin_sees_the_shipped_branchs_evaluation_and_the_whole_iou_table(open_as, live_studio):
    branch = live_studio.segmentation
    evaluation = json.loads((BUNDLE / "evaluation.json").read_text())["segmentation"]["optimised"]
    page = open_as("boss", "/admin")
    row = page.locator("tr").filter(has_text=f"{branch.name} #{branch.pk}")
    shown = float(f"{evaluation['miou']:.4g}")  # the table's rounding
    row.filter(has_text=f"mean iou {shown:g}").wait_for()
    row.get_by_role("button", name="IoU").click()
    table = page.get_by_role("table", name="Per-class IoU")
    table.wait_for()
    assert table.locator("tr[data-class-index]").count() == live_studio.schema.classes.count()
    assert "fresh renders" in page.locator(".iou-mean").inner_text()
    last = table.locator("tr[data-class-index]").last
    last.scroll_into_view_if_needed()
    visible = last.evaluate("""row => {
        const box = row.getBoundingClientRect();
        const hit = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
        return box.bottom <= window.innerHeight && row.contains(hit);
    }""")
    assert visible, "the IoU table's last row cannot be scrolled into view"
