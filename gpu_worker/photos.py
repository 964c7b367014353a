"""A dataset's uploaded photos for the encoder trainer: decoded at the generator's size when drawn."""
from __future__ import annotations

import functools
from typing import Callable, Protocol

import torch

from editor_core.images import load_image


class PhotoFiles(Protocol):
    """File contents by index (``webapp.datasets.selectors.PhotoFiles``)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> bytes: ...


class Photos:
    """Photos by index, ``[1, 3, R, R]`` in ``[-1, 1]`` at resolution ``R``; the last 256 drawn are kept decoded,
    so a large photo set costs no memory up front."""

    def __init__(self, files: PhotoFiles, resolution: int):
        self.files, self.resolution = files, resolution
        self._cached = functools.lru_cache(maxsize=256)(self._load)

    def __len__(self) -> int:
        return len(self.files)

    def __call__(self, index: int) -> torch.Tensor:
        return self._cached(index)

    def _load(self, index: int) -> torch.Tensor:
        return load_image(self.files[index], size=self.resolution)

    def first(self, count: int) -> torch.Tensor:
        """The first ``count`` photos (all when fewer), ``[min(count, len), 3, R, R]``."""
        return torch.cat([self(index) for index in range(min(len(self), count))])

    def batches(self, batch_size: int, seed: int = 0) -> Callable[[], torch.Tensor]:
        """A callable returning ``[batch_size, 3, R, R]`` of photos drawn at random (the trainer's ``real_images``)."""
        rng = torch.Generator().manual_seed(seed)

        def batch() -> torch.Tensor:
            drawn = torch.randint(len(self), (batch_size,), generator=rng).tolist()
            return torch.cat([self(index) for index in drawn])

        return batch
