"""Compiling before the first request: with ``STUDIO_EDIT_COMPILE``, an interactive worker's pool process runs
``editor_core.editing.warm_up`` on the active branches before it takes work (``celery_app`` connects it)."""
from __future__ import annotations

import logging
import time

import torch
from django.conf import settings

from editor_core.editing import warm_up
from gpu_worker import engine_cache
from webapp.registry import selectors as checkpoints

log = logging.getLogger(__name__)
SEED = 0  # of the latent a warm-up edits: any of the generator's will do


def warm_up_active_branches() -> None:
    """Compile the edit passes of the active segmentation branches (the ``engine_cache.GENERATORS_KEPT`` newest, on
    their untuned generators) when ``STUDIO_EDIT_COMPILE`` asks for compiled passes, so that the first person's edit
    runs at compiled speed instead of waiting minutes. A branch that fails to warm up is logged and left to compile
    on first use."""
    if not settings.STUDIO_EDIT_COMPILE:
        return
    for branch in checkpoints.active_segmentations(engine_cache.GENERATORS_KEPT):
        start = time.perf_counter()
        try:
            models = engine_cache.editing_models(branch.generator, branch)
            z = torch.randn(1, models.generator.z_dim, generator=torch.Generator().manual_seed(SEED))
            with torch.no_grad():
                ws = models.generator.mapping(z.to(engine_cache.device()), truncation_psi=0.7)
            warm_up(models, ws, engine_cache.mode1_mask_members(), **engine_cache.edit_speed_options())
        except Exception:
            log.exception("warming up segmentation branch #%s failed: its edits compile on first use", branch.pk)
            continue
        log.info("warmed up the edit passes of segmentation branch #%s (generator #%s) in %.1f s", branch.pk,
                 branch.generator_id, time.perf_counter() - start)
