from __future__ import annotations

from django.conf import settings
from django.db import models


class Job(models.Model):
    """One unit of GPU work, run by a Celery worker; its row is the source of truth for status and progress."""

    class Kind(models.TextChoices):
        SAMPLE = "sample", "generate samples"
        PRELABEL = "prelabel", "pre-label a sample"
        RANK = "rank", "rank samples by uncertainty"
        EMBED = "embed", "embed an uploaded image"
        APPLY = "apply", "apply vectors (mode 1)"
        REFINE = "refine", "apply and refine (mode 2)"
        OPTIMIZE = "optimize", "optimise an edit (mode 3)"
        TRAIN_SEGMENTATION = "train_segmentation", "train the segmentation branch"
        TRAIN_ENCODER = "train_encoder", "train the encoder"
        VECTOR_THUMBNAILS = "vector_thumbnails", "render a library vector's thumbnails"
        IMPORT_CHECKPOINT = "import_checkpoint", "convert and register an imported checkpoint"
        SEGMENT = "segment", "segment a sample with the active branch"
        TUNE = "tune", "pivotal-tune the generator to a sample"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    kind = models.CharField(max_length=32, choices=Kind.choices)
    queue = models.CharField(max_length=32)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    progress = models.FloatField(default=0.0)
    stage = models.CharField(max_length=64, blank=True)
    message = models.CharField(max_length=500, blank=True)
    metrics = models.JSONField(default=dict, blank=True, help_text="loss name → [[step, value], …]")
    log = models.TextField(blank=True)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL,
                                     related_name="jobs")
    retry_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries")
    batch_key = models.CharField(max_length=64, blank=True, db_index=True,
                                 help_text="jobs with the same key may run in one batched forward pass")
    cancel_requested = models.BooleanField(default=False)
    attempts = models.PositiveIntegerField(default=0, help_text="how many times a worker started it")
    worker = models.CharField(max_length=200, blank=True)
    heartbeat = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        permissions = [("view_all_jobs", "Can see and cancel everybody's jobs")]

    def __str__(self) -> str:
        return f"job #{self.pk} {self.kind} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED
