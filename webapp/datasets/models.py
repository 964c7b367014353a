from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models


class LabelSchema(models.Model):
    """The part classes a dataset is labelled with, in order: class index i is the mask value i."""

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name

    @property
    def num_classes(self) -> int:
        return self.classes.count()

    def class_rows(self) -> list[tuple[str, str]]:
        """``(name, "#rrggbb")`` of each class, in index order."""
        return list(self.classes.order_by("index").values_list("name", "colour"))


class LabelClass(models.Model):
    schema = models.ForeignKey(LabelSchema, on_delete=models.CASCADE, related_name="classes")
    index = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=60)
    colour = models.CharField(max_length=7, validators=[RegexValidator(r"^#[0-9a-fA-F]{6}$", "use #rrggbb")])

    class Meta:
        ordering = ["schema", "index"]
        constraints = [models.UniqueConstraint(fields=["schema", "index"], name="label_class_index_unique"),
                       models.UniqueConstraint(fields=["schema", "name"], name="label_class_name_unique")]

    def __str__(self) -> str:
        return f"{self.index}: {self.name}"


class Dataset(models.Model):
    """Samples of one generator labelled with one schema."""

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    schema = models.ForeignKey(LabelSchema, on_delete=models.PROTECT, related_name="datasets")
    generator = models.ForeignKey("registry.Checkpoint", on_delete=models.PROTECT, related_name="datasets",
                                  limit_choices_to={"kind": "generator"})
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        permissions = [("manage_dataset", "Can create and delete datasets and label schemas")]

    def __str__(self) -> str:
        return self.name


class Sample(models.Model):
    """One image of a dataset: a generator sample (its latent) or an uploaded image (and its embedding)."""

    class Source(models.TextChoices):
        GENERATED = "generated"
        UPLOADED = "uploaded"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="samples")
    source = models.CharField(max_length=16, choices=Source.choices)
    seed = models.BigIntegerField(null=True, blank=True)
    latent = models.FileField(upload_to="latents/%Y/%m/", blank=True, max_length=300,
                              help_text="W+ latent [num_ws, w_dim] (.safetensors); empty until an upload is embedded")
    image = models.FileField(upload_to="images/%Y/%m/", max_length=300, help_text="PNG at generator resolution")
    original = models.FileField(upload_to="uploads/%Y/%m/", blank=True, max_length=300,
                                help_text="the uploaded file as it came")
    tuning = models.FileField(upload_to="tunings/%Y/%m/", blank=True, max_length=300,
                              help_text="pivotal-tuning weight delta of the generator around the latent (.safetensors); "
                                        "empty until tuned, emptied when the sample is embedded again")
    tuning_sha256 = models.CharField(max_length=64, blank=True, help_text="the tuning file's sha256 (worker cache key)")
    tuning_metrics = models.JSONField(default=dict, blank=True,
                                      help_text="psnr/lpips before and after the tuning, steps, seconds")
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    uncertainty = models.FloatField(null=True, blank=True, db_index=True,
                                    help_text="segmentation-ensemble disagreement; high = label next")
    ranked_with = models.ForeignKey("registry.Checkpoint", null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+", help_text="the segmentation checkpoint that gave uncertainty")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"sample #{self.pk} of {self.dataset}"


class Annotation(models.Model):
    """The current part mask of a sample. ``version`` grows with every change; each change is a revision."""

    class Status(models.TextChoices):
        DRAFT = "draft"
        SUBMITTED = "submitted"
        REVIEWED = "reviewed"
        REJECTED = "rejected"

    sample = models.OneToOneField(Sample, on_delete=models.CASCADE, related_name="annotation")
    version = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="+", help_text="who made the latest change")
    mask = models.FileField(upload_to="masks/%Y/%m/", max_length=300, help_text="palette PNG of class indices")
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        permissions = [("annotate", "Can paint, save and submit annotations and ask for pre-labels"),
                       ("review_annotation", "Can mark submitted annotations reviewed or rejected")]

    def __str__(self) -> str:
        return f"annotation of sample #{self.sample_id} v{self.version} ({self.status})"


class AnnotationRevision(models.Model):
    """One state of an annotation; revisions are only ever added, never changed."""

    class Reason(models.TextChoices):
        SAVE = "save"
        AUTOSAVE = "autosave"
        SUBMIT = "submit"
        REVIEW = "review"
        PRELABEL = "prelabel"
        RESTORE = "restore"

    annotation = models.ForeignKey(Annotation, on_delete=models.CASCADE, related_name="revisions")
    version = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Annotation.Status.choices)
    reason = models.CharField(max_length=16, choices=Reason.choices)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="+")
    mask = models.FileField(max_length=300)
    note = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["annotation", "-version"]
        constraints = [models.UniqueConstraint(fields=["annotation", "version"], name="revision_version_unique")]

    def __str__(self) -> str:
        return f"v{self.version} {self.reason} of sample #{self.annotation.sample_id}"


class SamplePrediction(models.Model):
    """What one segmentation branch predicts for a sample: the labels and the per-pixel ensemble disagreement, both
    at the sample's size. Workers compute it whenever they run the branch on the sample anyway (generation,
    embedding, pre-label, ranking — which follows every retraining); the web process only serves the files."""

    sample = models.ForeignKey(Sample, on_delete=models.CASCADE, related_name="predictions")
    segmentation = models.ForeignKey("registry.Checkpoint", on_delete=models.CASCADE, related_name="+",
                                     limit_choices_to={"kind": "segmentation"})
    mask = models.FileField(max_length=300, help_text="palette PNG of the predicted class indices")
    uncertainty = models.FileField(max_length=300, help_text="greyscale PNG: 0 = the members agree … 255 = "
                                                             "uncertainty_peak, this image's largest disagreement")
    uncertainty_peak = models.FloatField(help_text="the largest pixel uncertainty (Jensen-Shannon divergence of the "
                                                   "members, nats): the value of 255 in the map")
    score = models.FloatField(help_text="the image's active-learning score (mean of its top 10 % pixel "
                                        "uncertainties, in nats)")
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["sample", "segmentation"]
        constraints = [models.UniqueConstraint(fields=["sample", "segmentation"], name="prediction_unique")]

    def __str__(self) -> str:
        return f"prediction of checkpoint #{self.segmentation_id} for sample #{self.sample_id}"
