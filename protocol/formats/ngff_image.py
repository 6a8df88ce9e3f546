"""The source image of an OME-Zarr label store: an NGFF 0.4 image pyramid at the store's root.

With the image at the root and the labels under ``labels/`` (:mod:`protocol.formats.ngff`),
opening the root in ome-zarr's ``Reader`` or napari-ome-zarr shows both::

    cells_labels.ome.zarr/        multiscales: the image (s0, s1, ...)
    ├── s0 ...
    └── labels/cells/s0 ...       the labels, the same levels

:func:`write_image_pyramid` writes level 0 chunk by chunk from any array-like
(numpy, zarr, a lazy TIFF), then each lower level from the one above, halving
y and x by taking every other pixel (as the label levels do, so a lower image
level lines up with the same label level). Memory holds one chunk, never the image.
Scale and translation per level follow the labels: level k's pixel i covers
level-0 pixels ``f*i .. f*i+f-1`` (f = 2**k), its centre ``(f-1)/2`` level-0 pixels on.

Axes: the labels' axes (``geometry``, e.g. ``zyx``); a colour image gets a
``c`` axis before the space axes (after ``t``), one chunk per channel.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from protocol.formats.geometry import Geometry

AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
CHUNK_YX = 1024
NGFF_VERSION = "0.4"


def _never() -> None:
    """A ``stop`` that never stops."""


Axes = tuple[str, list[float], list[float], list["str | None"]]


def image_geometry(geometry: Geometry, channels: int | None) -> Axes:
    """Axes, scale, translation and units of the image: the labels' plus a ``c`` axis for colour.

    Raises:
        ValueError: a colour image whose labels already have a ``c`` axis.
    """
    axes, scale, shift = geometry.axes, list(geometry.scale), list(geometry.translate)
    units: list[str | None] = list(geometry.units)
    if channels is None:
        return axes, scale, shift, units
    if "c" in axes:
        raise ValueError(f"a colour image with a channel axis already in {axes!r} cannot be written as NGFF")
    at = 1 if axes.startswith("t") else 0
    return (
        axes[:at] + "c" + axes[at:],
        scale[:at] + [1.0] + scale[at:],
        shift[:at] + [0.0] + shift[at:],
        units[:at] + [None] + units[at:],
    )


def write_image_pyramid(
    group: Any,
    source: Any,
    stack_shape: Sequence[int],
    geometry: Geometry,
    factors: Sequence[int],
    *,
    name: str = "image",
    stop: Callable[[], None] = _never,
) -> None:
    """Write ``source`` into ``group`` (a zarr v2 group) as an NGFF image with levels ``s0, s1, ...``.

    Args:
        group: the store's root group (open for writing).
        source: (N, H, W) grey or (N, H, W, C) colour slices, array-like read by ``[n, rows, cols]``;
            N is the product of ``stack_shape``.
        stack_shape: the leading axes of the labels (``()`` for one image).
        geometry: the labels' axes, pixel size, origin and units (``stack_shape + (H, W)``).
        factors: the labels' downsampling factors (2, 4, ...; :func:`protocol.formats.ngff.scale_factors`):
            one lower level each.
        name: the multiscale's name.
        stop: called before each chunk; it raises to abandon the write.
    """
    writer = _PyramidWriter(group, source, tuple(int(s) for s in stack_shape), geometry, stop)
    level = writer.level(0, writer.height, writer.width, writer.read_source)
    for k in range(1, len(factors) + 1):
        previous = level

        def read_previous(_n: int, index: Any, rows: slice, cols: slice, above: Any = previous) -> Any:
            doubled = slice(2 * rows.start, 2 * rows.stop, 2), slice(2 * cols.start, 2 * cols.stop, 2)
            return np.asarray(above[(*index, *doubled)])

        level = writer.level(k, math.ceil(level.shape[-2] / 2), math.ceil(level.shape[-1] / 2), read_previous)
    axes, scale, shift, units = writer.axes
    group.attrs["multiscales"] = [multiscale(name, axes, scale, shift, units, len(factors))]


class _PyramidWriter:
    """The levels of one image pyramid, each written chunk by chunk."""

    def __init__(
        self, group: Any, source: Any, stack: tuple[int, ...], geometry: Geometry, stop: Callable[[], None]
    ) -> None:
        self.group, self.source, self.stack, self.stop = group, source, stack, stop
        self.colour = len(source.shape) == 4
        self.channels = int(source.shape[3]) if self.colour else None
        self.height, self.width = int(source.shape[1]), int(source.shape[2])
        self.axes = image_geometry(geometry, self.channels)
        self.channel_at = self.axes[0].index("c") if self.colour else -1
        self.count = math.prod(stack) if stack else 1

    def plane_index(self, n: int) -> tuple[Any, ...]:
        """The index of slice ``n`` in an image level, before (rows, cols)."""
        index: list[Any] = [int(i) for i in np.unravel_index(n, self.stack)] if self.stack else []
        if self.colour:
            index.insert(self.channel_at, slice(None))
        return tuple(index)

    def read_source(self, n: int, index: tuple[Any, ...], rows: slice, cols: slice) -> np.ndarray:
        """Rows and cols of slice ``n`` of the source, channels first."""
        block = np.asarray(self.source[n, rows, cols])
        return np.moveaxis(block, -1, 0) if self.colour else block

    def level(self, k: int, height: int, width: int, read: Callable[..., np.ndarray]) -> Any:
        """Create level ``s{k}`` of (rows, cols) = (height, width); fill it chunk by chunk from
        ``read(n, index, rows, cols)``."""
        lead = list(self.stack)
        if self.channels is not None:
            lead.insert(self.channel_at, self.channels)
        chunks = (*(1 for _ in lead), min(CHUNK_YX, height), min(CHUNK_YX, width))
        array = self.group.create_array(
            f"s{k}", shape=(*lead, height, width), chunks=chunks, dtype=np.dtype(self.source.dtype)
        )
        for n in range(self.count):
            index = self.plane_index(n)
            for r in range(0, height, CHUNK_YX):
                for c in range(0, width, CHUNK_YX):
                    self.stop()
                    rows, cols = slice(r, min(r + CHUNK_YX, height)), slice(c, min(c + CHUNK_YX, width))
                    array[(*index, rows, cols)] = read(n, index, rows, cols)
        return array


def multiscale(
    name: str, axes: str, scale: list[float], shift: list[float], units: list[str | None], lower_levels: int
) -> dict[str, Any]:
    """NGFF 0.4 ``multiscales`` entry: levels ``s0..sK``, y and x halved per level, pixel centres kept."""
    datasets = []
    for k in range(lower_levels + 1):
        f = 2**k
        level_scale = [s * f if a in "yx" else s for a, s in zip(axes, scale, strict=True)]
        level_shift = [
            t + (f - 1) / 2 * s if a in "yx" else t for a, s, t in zip(axes, scale, shift, strict=True)
        ]
        transforms = [
            {"type": "scale", "scale": level_scale},
            {"type": "translation", "translation": level_shift},
        ]
        datasets.append({"path": f"s{k}", "coordinateTransformations": transforms})
    return {
        "version": NGFF_VERSION,
        "name": name,
        "axes": [
            {"name": a, "type": AXIS_TYPES.get(a, "space"), **({"unit": u} if u else {})}
            for a, u in zip(axes, units, strict=True)
        ],
        "datasets": datasets,
        "type": "stride",
        "metadata": {"description": "every other pixel in y and x per level, as the label levels"},
    }
