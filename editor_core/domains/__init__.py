"""Procedural image domains with exact part masks.

Each module renders a batch of images together with the per-pixel part labels that produced them, on any torch
device, so it can feed a GAN trainer directly and serve as ground truth for segmentation and editing tests.

- ``toonface``: cartoon portraits with 18 part classes and continuous, separately controllable edit parameters.
"""
