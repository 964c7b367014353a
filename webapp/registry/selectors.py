"""Registry reads that hand a worker's task its inputs."""
from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage

from webapp.registry.models import Checkpoint
from webapp.storage import read_bytes


def import_source(params: dict) -> dict:
    """The keyword arguments of ``services.import_and_rank`` for an ``import_checkpoint`` job's ``params``: kind,
    name, the generator row (segmentation branches) and the stored upload's bytes or the server path."""
    generator = None
    if params["generator_id"] is not None:
        generator = Checkpoint.objects.filter(pk=params["generator_id"], kind=Checkpoint.Kind.GENERATOR).first()
        if generator is None:
            raise ValidationError(f"generator #{params['generator_id']} was deleted before the import ran")
    source = {"kind": params["kind"], "name": params["name"], "generator": generator}
    if not params["upload"]:
        return {**source, "server_path": params["server_path"]}
    if not default_storage.exists(params["upload"]):  # a retry: the job that received the upload deleted it
        raise ValidationError("the uploaded file is gone (an import keeps it until its job ends): upload it again")
    return {**source, "data": read_bytes(params["upload"]), "filename": params["filename"]}
