"""Compiling before the first request: with ``STUDIO_EDIT_COMPILE``, an interactive worker's pool process runs the
edit passes (``editor_core.editing.warm_up``) and an embedding of each active branch's generator before it takes
work (``celery_app`` connects it)."""
from __future__ import annotations

import logging
import os
import time

import torch
from torch._dynamo.utils import counters
from django.conf import settings

from editor_core.editing import render_image, warm_up
from editor_core.inversion import embed_image
from gpu_worker import engine_cache
from webapp.registry import selectors as checkpoints

log = logging.getLogger(__name__)
SEED = 0  # of the latent a warm-up edits and embeds the picture of: any of the generator's will do
EMBED_STEPS = 2  # an embedding compiles on its first step; the shapes do not depend on the count


def warm_up_active_branches() -> None:
    """Compile the edit passes of the active segmentation branches (the ``engine_cache.GENERATORS_KEPT`` newest, on
    their untuned generators) and an embedding with their generators' active encoders, when ``STUDIO_EDIT_COMPILE``
    asks for compiled passes: the first person's edit or upload then runs at compiled speed instead of waiting
    minutes. A branch that fails to warm up is logged and left to compile on first use."""
    if not settings.STUDIO_EDIT_COMPILE:
        return
    branches = checkpoints.active_segmentations(engine_cache.GENERATORS_KEPT)
    # Said before the minutes it takes, so that whoever reads the log knows why the worker takes no work yet. The
    # cache folder is always in the environment: importing torch._dynamo puts torch's default there if no one did.
    log.info("STUDIO_EDIT_COMPILE=%s: %s", settings.STUDIO_EDIT_COMPILE,
             f"compiling the edit passes of segmentation branches {', '.join(f'#{b.pk}' for b in branches)} before "
             f"taking work (compile cache: {os.environ['TORCHINDUCTOR_CACHE_DIR']})"
             if branches else "no active segmentation branch to compile before taking work")
    for branch in branches:
        start, graphs_before = time.perf_counter(), _graphs()
        try:
            _warm_up_branch(branch)
        except Exception:
            log.exception("warming up segmentation branch #%s failed: what it had not reached compiles on first use",
                          branch.pk)
            continue
        compiled, cached = (now - before for now, before in zip(_graphs(), graphs_before))
        log.info("warmed up the edit passes of segmentation branch #%s (generator #%s) and an embedding in %.1f s: "
                 "%d graphs compiled, %d loaded from the compile cache", branch.pk, branch.generator_id,
                 time.perf_counter() - start, compiled, cached)


def _graphs() -> tuple[int, int]:
    """Graphs this process's ``torch.compile`` has built so far: (compiled, loaded from the compile cache)."""
    inductor = counters["inductor"]
    return inductor["fxgraph_cache_miss"] + inductor["fxgraph_cache_bypass"], inductor["fxgraph_cache_hit"]


def _warm_up_branch(branch) -> None:
    models = engine_cache.editing_models(branch.generator, branch)
    z = torch.randn(1, models.generator.z_dim, generator=torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        ws = models.generator.mapping(z.to(engine_cache.device()), truncation_psi=0.7)
    warm_up(models, ws, engine_cache.mode1_mask_members(), **engine_cache.edit_speed_options())
    encoder_row = checkpoints.active_encoder(branch.generator)
    embed_image(models.generator, engine_cache.encoder(encoder_row) if encoder_row else None,
                render_image(models, ws).clamp(-1, 1), engine_cache.embed_config(EMBED_STEPS))
