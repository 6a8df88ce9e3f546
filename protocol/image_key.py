"""Content keys for images, shared by clients (who compute them) and workers
(who check them and key their embedding caches by them).

A key names exactly one prepared model input: the raw pixels (bytes, dtype,
shape), how they are turned into the model's uint8 RGB (contrast limits),
and the model. Two requests with the same key produce the same embedding.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np


def image_key(image: np.ndarray, contrast_limits: Sequence[float] | None, model: str) -> str:
    """Return a short hex key for ``image`` prepared with ``contrast_limits`` for ``model``.

    Args:
        image: (H, W) grey or (H, W, C) colour pixels, any allowed dtype.
        contrast_limits: (low, high) used to scale non-uint8 images, or None
            for the worker's default (1-99 percentiles).
        model: service/model name, e.g. ``"sam2.1_hiera_tiny"``.

    Returns:
        ``"img-"`` followed by 32 hex digits (BLAKE2b-128).
    """
    array = np.ascontiguousarray(image)
    digest = hashlib.blake2b(digest_size=16)
    prep = {
        "dtype": array.dtype.name,
        "shape": list(array.shape),
        "contrast_limits": None if contrast_limits is None else [float(v) for v in contrast_limits],
        "model": model,
    }
    digest.update(json.dumps(prep, sort_keys=True).encode())
    digest.update(array.reshape(-1).view(np.uint8).data)
    return "img-" + digest.hexdigest()
