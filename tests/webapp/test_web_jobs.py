"""Jobs whose worker is gone: the sweep queues them again or fails them, cancel ends them at once, and they stop
holding the user's place under the job limit; with a real SIGKILLed worker, the restarted worker's sweep (no broker
redelivery) runs the job again."""
from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest

from test_web_workers import post, wait_for_job


def go_stale(job, seconds: float = 213) -> None:
    """What a SIGKILLed worker leaves: the row still running, its heartbeat as old as ``seconds``."""
    from django.utils import timezone

    from webapp.jobs.models import Job

    Job.objects.filter(pk=job.pk).update(heartbeat=timezone.now() - dt.timedelta(seconds=seconds))


class JobEvents:
    """The ``job.status`` events of one job, read from the channel layer like its websocket does."""

    def __init__(self, job_id: int):
        from asgiref.sync import async_to_sync
        from channels.layers import get_channel_layer

        from webapp.realtime.groups import job_group

        self.layer, self.sync = get_channel_layer(), async_to_sync
        self.channel = self.sync(self.layer.new_channel)()
        self.sync(self.layer.group_add)(job_group(job_id), self.channel)

    def until(self, status: str, timeout: float = 10) -> dict:
        """The next event that reports ``status`` (earlier ones, e.g. a claim's ``running``, are skipped)."""
        async def receive():
            while (event := await self.layer.receive(self.channel))["status"] != status:
                pass
            return event

        return self.sync(asyncio.wait_for)(receive(), timeout)


@pytest.mark.django_db
def test_a_lost_job_is_queued_again_then_failed_after_its_attempts(studio, client_for, settings,
                                                                  django_capture_on_commit_callbacks):
    from webapp.jobs import services as jobs
    from webapp.jobs.models import Job

    settings.STUDIO_JOB_MAX_ATTEMPTS, settings.STUDIO_MAX_QUEUED_JOBS_PER_USER = 2, 1
    admin = client_for(studio.users.admin)
    generate = f"/api/datasets/{studio.dataset.pk}/samples/generate"
    with django_capture_on_commit_callbacks():
        job = Job.objects.get(pk=post(admin, generate, {"count": 2}).json()["id"])
    assert post(admin, generate, {"count": 2}).status_code == 429  # its one place is taken

    jobs.claim(job.pk, "gpu-host:111")
    go_stale(job)
    events = JobEvents(job.pk)
    with django_capture_on_commit_callbacks() as sent:
        listed = {row["id"]: row for row in admin.get("/api/jobs").json()}[job.pk]
    assert (listed["status"], listed["attempts"]) == ("queued", 1)
    assert "worker gpu-host:111 was lost: queued again for attempt 2 of 2" in listed["message"]
    assert len(sent) == 1  # handed to the broker again
    assert events.until("queued")["attempts"] == 1
    assert post(admin, generate, {"count": 2}).status_code == 429  # queued again: it still holds the place

    assert jobs.claim(job.pk, "gpu-host:222").attempts == 2
    go_stale(job, seconds=60)
    with django_capture_on_commit_callbacks() as sent:
        failed = admin.get(f"/api/jobs/{job.pk}").json()
    assert failed["status"] == "failed" and not sent
    assert "worker gpu-host:222 was lost during attempt 2 of 2" in failed["error"]
    assert "attempt 2 of 2" in events.until("failed")["error"]
    with django_capture_on_commit_callbacks():
        assert post(admin, generate, {"count": 2}).status_code == 202  # the place is free again


@pytest.mark.django_db
def test_cancel_ends_a_job_whose_worker_is_gone_at_once(studio, client_for, settings,
                                                        django_capture_on_commit_callbacks):
    from webapp.jobs import services as jobs
    from webapp.jobs.models import Job

    settings.STUDIO_MAX_QUEUED_JOBS_PER_USER = 1
    admin = client_for(studio.users.admin)
    generate = f"/api/datasets/{studio.dataset.pk}/samples/generate"
    with django_capture_on_commit_callbacks():
        job = Job.objects.get(pk=post(admin, generate, {"count": 2}).json()["id"])
    jobs.claim(job.pk, "gpu-host:111")
    alive = admin.post(f"/api/jobs/{job.pk}/cancel").json()  # a live worker stops within its next heartbeat
    assert alive["status"] == "running" and alive["cancel_requested"]

    Job.objects.filter(pk=job.pk).update(cancel_requested=False)
    go_stale(job)
    events = JobEvents(job.pk)
    with django_capture_on_commit_callbacks() as sent:
        cancelled = admin.post(f"/api/jobs/{job.pk}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["finished"] and not sent
    assert "worker gpu-host:111 was lost" in cancelled["message"]
    assert "was lost" in events.until("cancelled")["message"]
    with django_capture_on_commit_callbacks():
        assert post(admin, generate, {"count": 2}).status_code == 202  # it no longer counts

    # The worker was not gone after all: whatever it reports now changes nothing.
    assert jobs.beat(job.pk, 1) is True  # its heartbeat tells it to stop
    jobs.finish(Job.objects.get(pk=job.pk), Job.Status.SUCCEEDED, result={"sample_ids": [1]})
    assert Job.objects.get(pk=job.pk).status == "cancelled"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["sample", "prelabel", "train_segmentation", "train_encoder", "import_checkpoint"])
def test_a_job_run_again_after_its_worker_was_lost_stores_nothing_twice(studio, tiny_models, tmp_path, kind):
    """The task runs to its last store and its worker dies before recording the end (the row stays running, the
    heartbeat goes stale); the task runs a second time, as the message the broker hands out again would (its claim,
    or a worker's sweep, takes the job from the lost worker): the samples of a generation, the checkpoint of a
    training or an import exist once, a pre-label is one revision. The job's queue is one no worker of the session
    consumes: only this test runs it."""
    import torch

    from editor_core.checkpoints import write_nvlabs_style_pickle
    from editor_core.networks import Generator
    from gpu_worker import tasks
    from webapp.datasets.models import AnnotationRevision
    from webapp.jobs.models import Job
    from webapp.registry.models import Checkpoint
    from webapp.storage import save_bytes, stored_names

    params = {"sample": {"dataset_id": studio.dataset.pk, "count": 5, "truncation_psi": 0.7},
              "train_segmentation": {"dataset_id": studio.dataset.pk, "steps": 3, "name": "retrained",
                                     "activate": True, "architecture": {"hidden": [8], "ensemble_size": 1},
                                     "pixels_per_step": 64, "early_stopping": False, "evaluated_on": "training set",
                                     "sample_ids": [s.pk for s in studio.samples[:2]], "heldout_ids": []},
              "train_encoder": {"generator_id": studio.generator.pk, "steps": 2, "batch_size": 2, "lpips_weight": 0,
                                "name": "encoder", "activate": True},
              "prelabel": {"sample_id": studio.samples[3].pk, "segmentation_id": studio.segmentation.pk,
                           "base_version": 0},
              "import_checkpoint": {"kind": "generator", "name": "imported", "generator_id": None,
                                    "filename": "network-snapshot.pkl", "server_path": "", "upload": ""}}[kind]
    if kind == "import_checkpoint":
        torch.manual_seed(13)
        pickle = tmp_path / "network-snapshot.pkl"
        write_nvlabs_style_pickle(pickle, Generator(tiny_models.generator.config))
        params["upload"] = save_bytes("imports/network-snapshot.pkl", pickle.read_bytes())
    job = Job.objects.create(kind=kind, queue="consumed-by-nobody", params=params, requested_by=studio.users.admin)
    samples_before, checkpoints_before = studio.dataset.samples.count(), Checkpoint.objects.count()
    revisions = AnnotationRevision.objects.filter(annotation__sample=studio.samples[3])
    assert getattr(tasks, kind)(job.pk) == "succeeded"
    first = Job.objects.get(pk=job.pk)
    Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING, finished=None)  # as if killed before finish
    go_stale(job)
    assert getattr(tasks, kind)(job.pk) == "succeeded"
    again = Job.objects.get(pk=job.pk)
    assert again.attempts == 2
    if kind == "sample":
        assert again.result == first.result and len(again.result["sample_ids"]) == 5
        assert studio.dataset.samples.count() == samples_before + 5
        seeds = list(studio.dataset.samples.filter(pk__in=again.result["sample_ids"]).values_list("seed", flat=True))
        assert sorted(seeds) == list(range(first.result["first_seed"], first.result["first_seed"] + 5))
    elif kind == "prelabel":
        assert again.result["version"] == first.result["version"] == 1 and revisions.count() == 1
    else:
        assert again.result["checkpoint_id"] == first.result["checkpoint_id"]
        assert Checkpoint.objects.count() == checkpoints_before + 1
        if kind == "import_checkpoint":
            assert list(stored_names("imports")) == []  # the upload went when the job ended
        else:
            assert Checkpoint.objects.get(pk=again.result["checkpoint_id"]).active


@pytest.mark.django_db(transaction=True)
def test_a_killed_workers_job_is_recovered_by_the_restarted_workers_sweep(studio, celery_worker, client_for):
    """SIGKILL of the worker (main process and pool child) mid-generation. The broker would hand the message out
    again only after its visibility timeout (an hour in the tests, 4 h in production); the restarted worker's sweep
    finds the stale heartbeat and queues the job again, which goes on from the samples the killed run stored."""
    admin = client_for(studio.users.admin)
    job = post(admin, f"/api/datasets/{studio.dataset.pk}/samples/generate", {"count": 16, "seed": 1000}).json()
    running = wait_for_job(job["id"], statuses=("running",), worker=celery_worker)
    while studio.dataset.samples.filter(seed__gte=1000).count() < 2:  # some of its samples are stored
        time.sleep(0.05)
    celery_worker.kill()
    stored_before_the_kill = studio.dataset.samples.filter(seed__gte=1000).count()
    celery_worker.start()
    finished = wait_for_job(job["id"], timeout=300, worker=celery_worker)
    assert finished.status == "succeeded", finished.error
    assert finished.attempts == 2 and finished.worker != running.worker
    assert 2 <= stored_before_the_kill < 16
    seeds = sorted(studio.dataset.samples.filter(seed__gte=1000).values_list("seed", flat=True))
    assert seeds == list(range(1000, 1016))  # the samples stored before the kill are not made twice
    assert sorted(finished.result["sample_ids"]) == sorted(
        studio.dataset.samples.filter(seed__gte=1000).values_list("pk", flat=True))
