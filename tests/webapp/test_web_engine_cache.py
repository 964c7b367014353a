"""Workers load each model once per process, keyed by the checkpoint file's hash."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_models_are_loaded_once_per_checkpoint(shared_studio):
    from gpu_worker import engine_cache
    from webapp.registry.models import Checkpoint

    generator = engine_cache.generator(shared_studio.generator)
    same_row_again = Checkpoint.objects.get(pk=shared_studio.generator.pk)
    assert engine_cache.generator(same_row_again) is generator
    assert generator.img_resolution == 32 and not generator.training

    ensemble, schema = engine_cache.segmenter(shared_studio.segmentation)
    assert engine_cache.segmenter(shared_studio.segmentation)[0] is ensemble
    assert schema.class_names == ("background", "skin", "hair")

    models = engine_cache.editing_models(shared_studio.generator, shared_studio.segmentation)
    assert models.generator is generator and models.generator_id == shared_studio.generator.fingerprint
    vector = engine_cache.vector(shared_studio.vector)
    assert engine_cache.vector(shared_studio.vector) is vector
    vector.check_generator(models.generator_id)  # the library's vector fits the cached generator


def test_cpu_workers_edit_with_the_interactive_defaults(shared_studio, settings):
    """On a CPU (the test workers' device) edits use LPIPS-AlexNet, a few members in the loss and a mode-1 mask, and
    the edit models (with their sub-ensembles) are built once; a setting brings the exact computation back."""
    from editor_core.inversion import EmbedConfig
    from gpu_worker import engine_cache

    models = engine_cache.editing_models(shared_studio.generator, shared_studio.segmentation)
    assert engine_cache.editing_models(shared_studio.generator, shared_studio.segmentation) is models
    assert models.perceptual.net == "alex" and engine_cache.lpips_net() == "alex"
    assert engine_cache.edit_speed_options() == {"loss_members": engine_cache.CPU_LOSS_MEMBERS,
                                                 "preview_image_every": 1}
    assert engine_cache.mode1_mask_members() == engine_cache.CPU_MODE1_MASK_MEMBERS
    assert engine_cache.embed_config(None).steps == engine_cache.CPU_EMBED_STEPS < EmbedConfig.steps
    assert engine_cache.embed_config(7).steps == 7 and engine_cache.embed_config(None).lpips_net == "alex"
    assert engine_cache.retrain_options(None) == engine_cache.CPU_RETRAIN
    assert engine_cache.retrain_options(4096) == {"pixels_per_step": 4096}
    settings.STUDIO_EDIT_LPIPS, settings.STUDIO_EDIT_LOSS_MEMBERS, settings.STUDIO_MODE1_MASK_MEMBERS = "vgg", 10, 10
    settings.STUDIO_EMBED_STEPS, settings.STUDIO_EDIT_COMPILE = EmbedConfig.steps, "default"
    assert engine_cache.embed_config(None).steps == EmbedConfig.steps
    assert engine_cache.embed_config(None).compile_mode == "default"
    exact = engine_cache.editing_models(shared_studio.generator, shared_studio.segmentation)
    assert exact.perceptual.net == "vgg" and exact.segmenter is models.segmenter
    assert engine_cache.edit_speed_options()["loss_members"] == 10 and engine_cache.mode1_mask_members() == 10
