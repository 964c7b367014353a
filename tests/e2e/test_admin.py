"""Admin stories in real Chromium against the studio running the demo bundle: importing a checkpoint (a worker's job
converts it, or fails saying why); retraining the segmentation branch on picked annotated samples and reading its
held-out per-class IoU; training an encoder and activating it. Training
settings are tiny (CI has two CPU cores): the stories check what the panel shows, not how good the models are."""
from __future__ import annotations

import pytest

from tests.e2e.conftest import STORY_TIMEOUT_S, started_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(STORY_TIMEOUT_S)]


def test_admin_imports_a_pickle_and_sees_why_a_bad_one_failed(open_as, live_studio, screenshot, finished_job,
                                                              tiny_models, tmp_path):
    """The upload answers at once with its import job; the checkpoint is listed when the job has converted it, and a
    file the engine refuses ends the job with the loader's reason, shown to the admin."""
    from editor_core.checkpoints import generator_fingerprint, write_nvlabs_style_pickle
    from webapp.registry.models import Checkpoint

    write_nvlabs_style_pickle(tmp_path / "network-snapshot.pkl", tiny_models.generator)
    (tmp_path / "broken.pkl").write_bytes(b"\x80\x02}q\x00.")  # a pickle with no NVlabs network in it
    page = open_as("boss", "/admin")
    form = page.locator("form").filter(has=page.get_by_label("Checkpoint file"))
    for name, file in (("tiny from e2e", "network-snapshot.pkl"), ("broken from e2e", "broken.pkl")):
        page.get_by_label("Name", exact=True).fill(name)
        page.get_by_label("Checkpoint file").set_input_files(str(tmp_path / file))
        job = started_job(page, "/checkpoints/upload", form.get_by_role("button", name="Import").click)
        finished_job(job)
    page.locator(".toast-success").filter(has_text="Imported tiny from e2e").wait_for()
    page.locator(".models").filter(has_text="tiny from e2e").wait_for()
    imported = Checkpoint.objects.get(name="tiny from e2e")
    assert imported.source_format == "nvlabs" and imported.fingerprint == generator_fingerprint(tiny_models.generator)
    failure = page.locator(".toast-error").filter(has_text="Import failed: broken from e2e failed")
    failure.wait_for()
    assert "not a usable StyleGAN2 generator checkpoint" in failure.inner_text()
    assert not Checkpoint.objects.filter(name="broken from e2e").exists()
    screenshot(page, "admin_import")


def test_admin_retrains_on_picked_samples_and_sees_per_class_iou(open_as, live_studio, screenshot, finished_job):
    from webapp.registry.models import Checkpoint

    page = open_as("boss", "/admin")
    annotated = live_studio.annotated  # the bundle's annotations, reviewed: all picked by default
    for sample in annotated:
        page.get_by_label(f"Train on sample #{sample.pk}", exact=True).wait_for()
        assert page.get_by_label(f"Train on sample #{sample.pk}", exact=True).is_checked()
    left_out = annotated[-3:]
    for sample in left_out:
        page.get_by_label(f"Train on sample #{sample.pk}", exact=True).uncheck()
    summary = page.locator(".pick-summary")
    summary.filter(has_text=f"{len(annotated) - 3} picked").wait_for()
    assert "IoU on the 3 submitted/reviewed samples left out" in summary.inner_text()

    page.get_by_label("Training steps").fill("5")
    page.get_by_label("Ensemble size").fill("2")  # tiny settings: the test runs on a CPU
    page.get_by_label("Hidden widths").fill("16")
    page.get_by_label("Pixels per step").fill("256")
    page.get_by_label("Version name").fill("picked in e2e")
    page.get_by_label("Activate the branch when done").uncheck()  # no re-ranking of the dataset: faster
    training = started_job(page, "/train/segmentation", page.get_by_role("button", name="Start training").click)
    # The job may wait behind the studio's ranking of the dataset: its event, not a clock, says when it is done.
    assert finished_job(training)["status"] == "succeeded"
    page.locator(".toast-success").filter(has_text="Training finished").wait_for()

    table = page.get_by_role("table", name="Per-class IoU")
    table.wait_for()
    checkpoint = Checkpoint.objects.get(name="picked in e2e")
    metrics = checkpoint.metrics
    assert metrics["evaluated_on"] == "held-out"
    assert metrics["heldout_ids"] == sorted(s.pk for s in left_out)
    assert metrics["sample_ids"] == sorted(s.pk for s in annotated[:-3])
    classes = list(live_studio.schema.classes.order_by("index").values_list("name", "colour"))
    rows = table.locator("tr[data-class-index]")
    assert rows.count() == len(classes)
    for k, (name, colour) in enumerate(classes):
        row = rows.nth(k)
        assert row.locator("td").nth(1).inner_text() == name
        swatch = row.locator(".swatch").evaluate("e => getComputedStyle(e).backgroundColor")
        red, green, blue = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
        assert swatch == f"rgb({red}, {green}, {blue})", (name, swatch, colour)
        iou = metrics["per_class_iou"][k]["iou"]
        assert row.locator("td.num").first.inner_text() == ("—" if iou is None else f"{iou:.3f}")
    assert page.locator(".iou-mean strong").inner_text() == f"{metrics['mean_iou']:.3f}"
    assert page.locator(".loss-chart .tag").filter(has_text="loss").count() >= 1  # the live loss curve
    page.locator("table.data").filter(has_text="picked in e2e").wait_for()
    # The whole table, down to its last class, is in view when scrolled to (not cut off at the bottom).
    rows.last.scroll_into_view_if_needed()
    assert rows.last.evaluate("""row => {
        const box = row.getBoundingClientRect();
        return box.bottom <= window.innerHeight
            && row.contains(document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2));
    }""")
    screenshot(page, "admin_retrain")


def test_admin_trains_an_encoder_and_activates_it(open_as, live_studio, screenshot, finished_job):
    from webapp.registry.models import Checkpoint

    # The bundle's encoder, when it ships one: the new encoder is measured next to it.
    before = Checkpoint.objects.filter(kind="encoder", generator=live_studio.generator, active=True).first()
    page = open_as("boss", "/admin")
    page.get_by_label("Encoder generator").locator("option").first.wait_for(state="attached")
    page.get_by_label("Encoder steps").fill("2")  # a CPU: two steps of one sample, no LPIPS
    page.get_by_label("Encoder batch size").fill("1")
    page.get_by_label("LPIPS weight").fill("0")
    page.get_by_label("Time limit (minutes)").fill("10")
    page.get_by_label("Encoder name").fill("encoder from e2e")
    training = started_job(page, "/train/encoder", page.get_by_role("button", name="Train encoder").click)
    assert finished_job(training)["status"] == "succeeded"
    page.locator(".toast-success").filter(has_text="Encoder training finished").wait_for()
    page.locator(".encoder-status").filter(has_text="done").wait_for()

    trained = Checkpoint.objects.get(name="encoder from e2e")
    # Not activated when done (the panel's default) unless it is the generator's first encoder.
    assert trained.active == (before is None) and trained.metrics["steps"] == 2
    quality = page.get_by_role("table", name="Encoder quality")
    quality.wait_for()
    psnr_row = quality.locator("tr").filter(has_text="PSNR")
    assert psnr_row.locator("td").nth(1).inner_text() == f"{trained.metrics['eval_psnr']:.3f}"
    if before is not None:
        assert psnr_row.locator("td").nth(2).inner_text() == f"{trained.metrics['baseline_psnr']:.3f}"
        assert trained.metrics["baseline_checkpoint_id"] == before.pk
    else:
        assert psnr_row.locator("td").nth(2).inner_text() == "—" and "baseline_psnr" not in trained.metrics
    assert page.locator(".encoder-panel .loss-chart .tag").filter(has_text="latent").count() == 1

    if before is not None:
        page.locator(".encoder-result").get_by_role("button", name="Activate").click()
        page.locator(".toast-success").filter(has_text="encoder from e2e is active").wait_for()
    page.locator(".encoder-result .badge").filter(has_text="active").wait_for()
    trained.refresh_from_db()
    assert trained.active and Checkpoint.objects.filter(kind="encoder", active=True).count() == 1
    page.locator("table.data tr").filter(has_text="encoder from e2e").filter(has_text="active").wait_for()
    page.locator(".encoder-result").scroll_into_view_if_needed()
    screenshot(page, "admin_encoder")
