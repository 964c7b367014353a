"""Dataset reads that hand a worker's task its inputs."""
from __future__ import annotations

from django.core.exceptions import ValidationError

from webapp.datasets.models import Sample
from webapp.registry.models import Checkpoint


def sample_to_segment(params: dict) -> tuple[Sample, Checkpoint]:
    """The sample (with its dataset's generator and schema) and the segmentation branch of a ``segment`` job."""
    sample = Sample.objects.select_related("dataset__generator", "dataset__schema").filter(
        pk=params["sample_id"]).first()
    if sample is None:
        raise ValidationError(f"sample #{params['sample_id']} was deleted before it was segmented")
    segmentation = Checkpoint.objects.filter(pk=params["segmentation_id"], kind=Checkpoint.Kind.SEGMENTATION).first()
    if segmentation is None:
        raise ValidationError(f"segmentation branch #{params['segmentation_id']} was deleted before it ran")
    return sample, segmentation
