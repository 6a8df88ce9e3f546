"""A synthetic slide for ``concept`` tests: bright and dim discs whose stand-in scores are known.

The stand-in worker scores a blob by its mean grey (workers/standin/service.py, ``concept``):
bright discs (grey 230) score 230/255 ~ 0.90, dim ones (grey 160) 160/255 ~ 0.63. A score
threshold of :data:`THRESHOLD` keeps exactly the bright ones.
"""

from __future__ import annotations

import numpy as np

from bench.discs import disc_image, scattered_discs

BRIGHT, DIM = 230, 160
BRIGHT_SCORE = BRIGHT / 255.0
THRESHOLD = 0.75
"""Between the dim discs' score (~0.63) and the bright ones' (~0.90)."""


def concept_discs(
    shape: tuple[int, int], spacing: int = 90, radius_range: tuple[float, float] = (6.0, 10.0), seed: int = 11
) -> tuple[np.ndarray, np.ndarray, int]:
    """Discs on a dark uint8 image, every other one dim.

    Returns:
        ``(image, bright, dim_count)``: uint8 (H, W) image; uint32 (H, W) labels of the bright
        discs only, numbered 1..n (what a ``concept`` with :data:`THRESHOLD` should find);
        the number of dim discs (what it should leave out).
    """
    centres, radii = scattered_discs(shape, spacing=spacing, radius_range=radius_range, seed=seed)
    image, truth = disc_image(shape, centres, radii, foreground=BRIGHT)
    dim = (truth % 2 == 1) & (truth > 0)
    image[dim] = DIM
    bright = np.where(dim, 0, truth // 2).astype(np.uint32)  # even ids 2, 4, ... -> 1, 2, ...
    return image, bright, int(truth.max()) - int(bright.max())
