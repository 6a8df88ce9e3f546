"""A synthetic object larger than the model's input, for box prompts (issue 23, item 2)."""

from __future__ import annotations

import numpy as np

from bench.discs import disc_image

BOX = [150.0, 170.0, 2850.0, 2830.0]
"""[r0, c0, r1, c1] around :func:`large_object`'s disc (2,700 x 2,660 px: seen at 1/3 in one request)."""


def large_object() -> tuple[np.ndarray, np.ndarray]:
    """A 3000² slice: one big disc pierced by 2 x 2 px holes every 40 px (lost at 1/3 resolution), and a
    small disc outside the box; truth is the big disc's pixels."""
    image, truth = disc_image(
        (3000, 3000), np.array([[1500.0, 1500.0], [60.0, 60.0]]), np.array([1100.0, 30.0])
    )
    holes = np.zeros(image.shape, dtype=bool)
    holes[420:2580:40, 420:2580:40] = True
    holes |= np.roll(holes, 1, 0) | np.roll(holes, 1, 1) | np.roll(np.roll(holes, 1, 0), 1, 1)
    holes &= truth == 1
    image[holes] = 20
    return image, (truth == 1) & ~holes
