"""A large label plane held compressed, rectangle by rectangle.

Used as a stitcher's output when the labels go somewhere else afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import blosc2
import numpy as np


class CompressedPlane:
    """An (H, W) uint32 label image held as blosc2-compressed rectangles; zero where never written.

    A stitcher's output when the labels go somewhere else afterwards (the
    plugin pastes them into a labels layer core by core): it is written and
    read by rectangles (``plane[r0:r1, c0:c1]``, the tiles' cores), so its
    memory is the compressed size of what was written (a few MB for a
    stitched 20,000² slice), never the slice's 1.6 GB.

    Args:
        shape: (H, W).

    A rectangle written must not partly overlap one written before (writing
    the same rectangle again replaces it); any rectangle can be read.
    """

    dtype = np.dtype(np.uint32)

    def __init__(self, shape: Sequence[int]) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self._parts: dict[tuple[int, int, int, int], bytes] = {}

    @property
    def rectangles(self) -> list[tuple[int, int, int, int]]:
        """The [r0, c0, r1, c1) rectangles written, row-major (nothing is outside them)."""
        return sorted(self._parts)

    @property
    def nbytes_stored(self) -> int:
        """Compressed bytes held."""
        return sum(len(b) for b in self._parts.values())

    def _box(self, key: Any) -> tuple[int, int, int, int]:
        if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, slice) for k in key)):
            raise TypeError(f"index a CompressedPlane with two slices, got {key!r}")
        (r0, r1, step_r), (c0, c1, step_c) = (k.indices(n) for k, n in zip(key, self.shape, strict=True))
        if step_r != 1 or step_c != 1:
            raise ValueError("a CompressedPlane is read and written by rectangles (step 1)")
        return r0, c0, max(r0, r1), max(c0, c1)

    def __setitem__(self, key: Any, value: Any) -> None:
        box = self._box(key)
        r0, c0, r1, c1 = box
        values = np.broadcast_to(np.asarray(value, dtype=np.uint32), (r1 - r0, c1 - c0))
        for other in self._parts:
            if other != box and other[0] < r1 and r0 < other[2] and other[1] < c1 and c0 < other[3]:
                raise ValueError(f"rectangle {box} partly overlaps {other}, written before")
        self._parts[box] = bytes(
            blosc2.compress2(
                np.ascontiguousarray(values),
                typesize=4,
                clevel=1,
                codec=blosc2.Codec.LZ4,
                filters=[blosc2.Filter.SHUFFLE],
            )
        )

    def __getitem__(self, key: Any) -> np.ndarray:
        r0, c0, r1, c1 = self._box(key)
        out = np.zeros((r1 - r0, c1 - c0), dtype=np.uint32)
        for (a0, b0, a1, b1), chunk in self._parts.items():
            i0, j0, i1, j1 = max(a0, r0), max(b0, c0), min(a1, r1), min(b1, c1)
            if i0 >= i1 or j0 >= j1:
                continue
            part = np.empty((a1 - a0, b1 - b0), dtype=np.uint32)
            blosc2.decompress2(chunk, dst=part)
            out[i0 - r0 : i1 - r0, j0 - c0 : j1 - c0] = part[i0 - a0 : i1 - a0, j0 - b0 : j1 - b0]
        return out
