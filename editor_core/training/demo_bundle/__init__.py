"""Build the demo bundle (``demo/``) around the trained toon-face generator, and measure it.

The demo domain has exact ground truth: every "real" image is a render of ``editor_core.domains.toonface`` with known
parameters and a true part mask. The pipeline uses it everywhere the paper needed people:

* ``encoder``: ``train_encoder`` with renders as the real images (rendered on the device, one fresh batch a step).
* ``regressor``: the render-parameter regressor whose features replace Inception's for the Fréchet distance
  (``editor_core.training.param_regressor``).
* ``annotate``: 16 renders are inverted (encoder + optimisation); each render's true mask becomes the annotation of
  its inverted latent. These seed the studio's demo data set, where annotators correct them and add more.
* ``segmentation``: ``train_segmentation`` on those 16 annotated latents.
* ``vectors``: one edit vector per ``GroundTruthEdit``, learned with mode 3: a render with one parameter at its
  ``before`` value is inverted, and the true mask of the same render with the parameter at ``after`` is the edited
  mask. The vector is the mean latent change over ``vector_sources`` such edits.
* ``calibrate``: each vector scaled so that scale 1 makes its renderer edit on ``calibration_faces`` fresh inverted
  faces (``unit_scale_factor``; the mean of the sources' changes is shorter than each).
* ``evaluate``: inversion PSNR/LPIPS and per-class IoU of the segmentation on held-out renders, the Fréchet distance
  of samples vs renders, and the transfer of every vector (modes 1 and 2) to other held-out inversions, compared with
  the renderer's truth for the changed parameter; writes ``evaluation.json`` and a markdown table.
* ``figures``: sample and render grids, inversions and one before/after sheet per vector (PNG).

Every stage writes into the bundle folder and is idempotent (it skips when its output exists unless ``--force``);
the encoder's training state is checkpointed in ``--work`` so an interrupted run resumes. Command line::

    python -m editor_core.training.demo_bundle all --generator demo/generator.safetensors --out demo \\
        --encoder-minutes 3 --regressor-minutes 1 --figures docs/img

Render seeds: every purpose draws its faces from its own seed (``RENDER_SEEDS``), training streams from
``SEED_STREAMS`` onwards; held-out sets therefore never overlap the faces the models were trained or annotated on.

Modules: ``edits`` (the ground-truth edits and the mask statistics they are checked with), ``renders`` (render seeds,
faces, the Fréchet distance's features), ``stages`` (``PipelineConfig``, ``DemoPipeline``), ``report`` (headline
figures, the markdown tables, the PNG figures) and ``cli`` (the command line above).
"""
