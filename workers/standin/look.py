"""What a stand-in "sees": the image prepared as the SAM2 worker prepares it, at <= 1024 px, and its
bright connected components."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from workers.prep import prepare_image

MODEL_INPUT = 1024
"""Longest side the stand-in looks at, like SAM2's input; larger images are block-averaged first."""
THRESHOLD = 128
"""Grey value (0..255, after preparation) from which a pixel is bright."""


@dataclass(frozen=True)
class Seen:
    """What the stand-in "encoded": the components it sees at <= 1024 px.

    Attributes:
        sent_hw: (H, W) of the sent image.
        factor: sent pixels per looked-at pixel along each axis.
        labels: int32 (ceil(H/f), ceil(W/f)) connected components, 0 = background.
        brightness: float32 (n,) mean grey of component ``i + 1`` at ``i``, in [0, 1]
            (what ``concept`` answers as its score).
    """

    sent_hw: tuple[int, int]
    factor: int
    labels: np.ndarray
    brightness: np.ndarray

    def to_sent(self, low: np.ndarray) -> np.ndarray:
        """A (h, w) array at the looked-at size -> (H, W) at the sent size (blocks)."""
        f = self.factor
        full = np.repeat(np.repeat(low, f, axis=0), f, axis=1) if f > 1 else low
        return np.ascontiguousarray(full[: self.sent_hw[0], : self.sent_hw[1]])


def look(image: np.ndarray, contrast_limits: Sequence[float] | None) -> Seen:
    """Prepare ``image`` like the real worker, view it at <= 1024 px and label bright components.

    Args:
        image: (H, W) grey or (H, W, 3|4) colour, any dtype the wire allows.
        contrast_limits: (low, high) as the client sent them, or None (the image's own range).

    Raises:
        ValueError: the image cannot be prepared (see ``workers.prep.prepare_image``).
    """
    rgb = prepare_image(image, contrast_limits)
    grey = rgb.mean(axis=2, dtype=np.float32)
    height, width = grey.shape
    factor = max(1, math.ceil(max(height, width) / MODEL_INPUT))
    if factor > 1:
        out_h, out_w = math.ceil(height / factor), math.ceil(width / factor)
        padded = np.zeros((out_h * factor, out_w * factor), dtype=np.float32)
        padded[:height, :width] = grey
        grey = padded.reshape(out_h, factor, out_w, factor).mean(axis=(1, 3))
    labels, count = ndimage.label(grey >= THRESHOLD)
    means = ndimage.mean(grey, labels, index=np.arange(1, count + 1)) if count else []
    brightness = np.clip(np.asarray(means, dtype=np.float32) / 255.0, 0.0, 1.0)
    return Seen((height, width), factor, labels.astype(np.int32), brightness)
