from __future__ import annotations

from django.conf import settings
from django.db import models


class EditSession(models.Model):
    """One edit of one sample: mode 1 (apply vectors), 2 (apply + refine) or 3 (optimise from a painted mask)."""

    class Mode(models.IntegerChoices):
        APPLY = 1, "apply vectors"
        REFINE = 2, "apply and refine"
        OPTIMIZE = 3, "optimise from scratch"

    sample = models.ForeignKey("datasets.Sample", on_delete=models.CASCADE, related_name="edit_sessions")
    generator = models.ForeignKey("registry.Checkpoint", on_delete=models.PROTECT, related_name="+")
    segmentation = models.ForeignKey("registry.Checkpoint", on_delete=models.PROTECT, related_name="+")
    mode = models.PositiveSmallIntegerField(choices=Mode.choices)
    params = models.JSONField(default=dict, blank=True, help_text="vectors and scales, steps, edited classes")
    target_mask = models.FileField(upload_to="edits/masks/%Y/%m/", blank=True, max_length=300,
                                   help_text="mode 3: the repainted mask")
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]
        permissions = [("run_edit", "Can upload images and run edits (modes 1–3)")]

    def __str__(self) -> str:
        return f"edit #{self.pk} (mode {self.mode}) of sample #{self.sample_id}"


class EditResult(models.Model):
    session = models.OneToOneField(EditSession, on_delete=models.CASCADE, related_name="result")
    image = models.FileField(upload_to="edits/images/%Y/%m/", max_length=300)
    mask = models.FileField(upload_to="edits/masks/%Y/%m/", blank=True, max_length=300,
                            help_text="empty for a mode-1 edit asked for without its mask")
    latent = models.FileField(upload_to="edits/latents/%Y/%m/", max_length=300, help_text="edited W+")
    delta = models.FileField(upload_to="edits/deltas/%Y/%m/", blank=True, max_length=300,
                             help_text="modes 2 and 3: the learned edit vector file (project format)")
    edited_classes = models.JSONField(default=list, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"result of {self.session}"


class EditVector(models.Model):
    """A shared, named edit vector δW+ for one generator (file: editor_core.vectors project format)."""

    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    tags = models.JSONField(default=list, blank=True)
    edited_classes = models.JSONField(default=list, blank=True)
    generator = models.ForeignKey("registry.Checkpoint", on_delete=models.PROTECT, related_name="vectors")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    file = models.FileField(upload_to="vectors/%Y/%m/", max_length=300)
    thumb_before = models.FileField(upload_to="vectors/thumbs/%Y/%m/", blank=True, max_length=300)
    thumb_after = models.FileField(upload_to="vectors/thumbs/%Y/%m/", blank=True, max_length=300)
    thumbnails_job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL,
                                       related_name="+", help_text="the job rendering the thumbnails of a vector "
                                                                   "that came without pictures (an uploaded file)")
    scale_min = models.FloatField(default=-4.0)
    scale_max = models.FloatField(default=4.0)
    source = models.ForeignKey(EditResult, null=True, blank=True, on_delete=models.SET_NULL, related_name="vectors")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["generator", "name"], name="vector_name_unique_per_generator"),
            models.CheckConstraint(condition=models.Q(scale_min__lt=models.F("scale_max")),
                                   name="vector_scale_range_ordered"),
        ]

    def __str__(self) -> str:
        return self.name


class Composition(models.Model):
    """A saved set of vectors with scales, applied together (edits compose by addition)."""

    name = models.CharField(max_length=100)
    generator = models.ForeignKey("registry.Checkpoint", on_delete=models.PROTECT, related_name="compositions")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class CompositionItem(models.Model):
    composition = models.ForeignKey(Composition, on_delete=models.CASCADE, related_name="items")
    vector = models.ForeignKey(EditVector, on_delete=models.PROTECT, related_name="composition_items")
    scale = models.FloatField()
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["composition", "position"]
