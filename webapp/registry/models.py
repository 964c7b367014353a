from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class Checkpoint(models.Model):
    """A generator, encoder or segmentation-branch checkpoint stored in the project format, with its metrics."""

    class Kind(models.TextChoices):
        GENERATOR = "generator"
        ENCODER = "encoder"
        SEGMENTATION = "segmentation"

    class SourceFormat(models.TextChoices):
        PROJECT = "project", "project .safetensors"
        NVLABS = "nvlabs", "NVlabs .pkl"
        ROSINALITY = "rosinality", "rosinality .pt"
        TRAINED = "trained", "trained in the studio"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    name = models.CharField(max_length=200)
    file = models.FileField(upload_to="checkpoints/%Y/%m/", max_length=300)
    sha256 = models.CharField(max_length=64, db_index=True, help_text="of the stored file: the engine cache key")
    fingerprint = models.CharField(max_length=64, db_index=True,
                                   help_text="generator id (editor_core.checkpoints.generator_fingerprint)")
    generator = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="dependants",
                                  limit_choices_to={"kind": "generator"},
                                  help_text="for encoders and segmentation branches: the generator they belong to")
    schema = models.ForeignKey("datasets.LabelSchema", null=True, blank=True, on_delete=models.PROTECT,
                               related_name="checkpoints", help_text="segmentation branches: the classes they predict")
    source_format = models.CharField(max_length=16, choices=SourceFormat.choices, default=SourceFormat.PROJECT)
    config = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    active = models.BooleanField(default=False, help_text="the version workers use for its generator and kind")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]
        permissions = [("manage_models", "Can import, activate, retrain and delete model checkpoints")]
        constraints = [
            models.UniqueConstraint(fields=["generator", "kind", "schema"], condition=Q(active=True),
                                    name="one_active_checkpoint_per_generator_kind_schema"),
            models.CheckConstraint(condition=Q(kind="generator") | Q(generator__isnull=False),
                                   name="encoder_and_segmentation_name_their_generator"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} '{self.name}' #{self.pk}"
