"""Content keys for images, shared by clients (who compute them) and workers
(who check them and key their embedding caches by them).

A key names exactly one prepared model input: the raw pixels (bytes, dtype,
shape), how they are turned into the model's uint8 RGB (contrast limits),
and the model. Two requests with the same key produce the same embedding.

The hash is BLAKE3 (cryptographic, so nobody can make another image's key
and poison a worker's cache; see protocol/README.md), truncated to 128
bits. The client hashes the slice on every prompt: BLAKE3 does a 1024²
RGB slice in about 0.3 ms where BLAKE2b took 2.2 ms (bench/RESULTS.md,
"Image key").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from blake3 import blake3


class _Digest(Protocol):
    """A hash object: hashlib's or blake3's."""

    def update(self, data: bytes | memoryview, /) -> object: ...


def hash_image_into(
    digest: _Digest, image: np.ndarray, contrast_limits: Sequence[float] | None, model: str
) -> None:
    """Feed ``digest`` the bytes a key names: the preparation as sorted JSON, then the pixels in C order."""
    array = np.ascontiguousarray(image)
    prep = {
        "dtype": array.dtype.name,
        "shape": list(array.shape),
        "contrast_limits": None if contrast_limits is None else [float(v) for v in contrast_limits],
        "model": model,
    }
    digest.update(json.dumps(prep, sort_keys=True).encode())
    digest.update(array.reshape(-1).view(np.uint8).data)


def image_key(image: np.ndarray, contrast_limits: Sequence[float] | None, model: str) -> str:
    """Return a short hex key for ``image`` prepared with ``contrast_limits`` for ``model``.

    Args:
        image: (H, W) grey or (H, W, C) colour pixels, any allowed dtype.
        contrast_limits: (low, high) used to scale non-uint8 images, or None
            for the worker's default (1-99 percentiles).
        model: service/model name, e.g. ``"sam2.1_hiera_tiny"``.

    Returns:
        ``"img-"`` followed by 32 hex digits (BLAKE3, 128 bits).
    """
    digest = blake3()
    hash_image_into(digest, image, contrast_limits, model)
    return "img-" + digest.hexdigest(length=16)
