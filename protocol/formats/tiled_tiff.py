"""Label images larger than memory as a tiled BigTIFF, written tile by tile (one home for both writers).

``sam2-batch`` (:class:`batch.large.LabelSink`, labels beyond its budget) and the
plugin's TIFF export of a very large layer (:func:`plugin.export.write_labels`)
write the same file: uint32, tiles of :data:`TIFF_TILE` ² pixels, zlib at
:data:`protocol.formats.imagej.TIFF_ZLIB_LEVEL`, one page per 2D slice, BigTIFF,
the pixel size in the X/Y resolution tags (pixels per cm). The labels are read
tile by tile from any array-like with numpy slicing (numpy, zarr, dask, a file
on disk) and compressed by :data:`TIFF_WORKERS` threads, one tile each at a time, so the
writer's memory is a few tiles, never the image.

It is not the Fiji-ready TIFF of :mod:`protocol.formats.imagej`: tifffile
would add ImageJ metadata only as a "nonconformant BigTIFF ImageJ" file, and
ImageJ's own TIFF reader opens neither tiled nor BigTIFF files. Fiji opens it
through Bio-Formats (File > Import > Bio-Formats, which reads the resolution
tags). Read it back lazily with :func:`open_tiled_tiff`.

Arrays are (..., H, W), (row, col) last.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from protocol.formats.imagej import TIFF_ZLIB_LEVEL
from protocol.runtime.atomic import atomic_file

if TYPE_CHECKING:
    from protocol.formats.geometry import Geometry

TIFF_TILE = 512
"""Side of the BigTIFF's tiles (pixels); half of the zarr chunks (1,024) of the same labels elsewhere."""
TIFF_LABEL_DTYPE = np.dtype(np.uint32)
READ_TILES = 2
"""Tiles read from the source in one slice: (TIFF_TILE, 2 x TIFF_TILE) pixels, one 1,024² chunk wide."""
TIFF_WORKERS = max(1, min(4, os.cpu_count() or 1))
"""Threads compressing tiles; each holds one tile at a time (tifffile's default buffers 512 MiB of tiles)."""


def tiff_resolution(geometry: Geometry | None) -> dict[str, Any]:
    """tifffile's ``resolution`` (pixels per cm, x then y) and ``resolutionunit``; {} in pixel units."""
    from protocol.formats.geometry import METRES_PER

    unit = geometry.length_unit if geometry is not None else None
    if geometry is None or unit is None:
        return {}
    cm = METRES_PER[unit] / METRES_PER["centimeter"]
    x, y = geometry.size("x") * cm, geometry.size("y") * cm
    return {"resolution": (1.0 / x, 1.0 / y), "resolutionunit": "CENTIMETER"}


def _tiles(source: Any, stop: Callable[[], None]) -> Iterator[np.ndarray]:
    """(TIFF_TILE, TIFF_TILE) uint32 tiles of ``source`` (..., H, W) in TIFF order (slice, row, col);
    edge tiles zero-padded. Read :data:`READ_TILES` tiles side by side at a time (a source chunked
    more coarsely than a tile is then decoded fewer times); ``stop`` is called before each read."""
    *stack, height, width = (int(s) for s in source.shape)
    band = TIFF_TILE * READ_TILES
    for index in np.ndindex(*stack):
        for r in range(0, height, TIFF_TILE):
            for c0 in range(0, width, band):
                stop()
                block = np.asarray(source[(*index, slice(r, r + TIFF_TILE), slice(c0, c0 + band))])
                for c in range(0, block.shape[1], TIFF_TILE):
                    tile = np.zeros((TIFF_TILE, TIFF_TILE), TIFF_LABEL_DTYPE)
                    part = block[:, c : c + TIFF_TILE]
                    tile[: part.shape[0], : part.shape[1]] = part
                    yield tile


def write_tiled_tiff(
    path: str | os.PathLike[str],
    source: Any,
    shape: Sequence[int] | None = None,
    geometry: Geometry | None = None,
    stop: Callable[[], None] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write labels tile by tile as a uint32 tiled BigTIFF at ``path``, atomically.

    Args:
        path: the TIFF (replaced atomically: a stop or an error leaves the old file, or none).
        source: (..., H, W) non-negative integer labels, any array-like with numpy slicing; ids
            above 2**32 - 1 do not fit (the caller checks).
        shape: the file's shape, (..., H, W) with as many pixels as ``source`` (a flattened
            stack's own shape); default ``source.shape``.
        geometry: the pixel size for the resolution tags (None or no length unit: pixels).
        stop: called before each tile is read; it raises to abandon the write.
        metadata: facts stored in the first page's description (tifffile's "shaped" JSON, beside
            the shape), read back with ``TiffFile.shaped_metadata``.
    """
    import tifffile

    file_shape = tuple(int(s) for s in (source.shape if shape is None else shape))
    with atomic_file(path) as tmp:
        tifffile.imwrite(
            tmp,
            _tiles(source, stop or _never),
            shape=file_shape,
            dtype=TIFF_LABEL_DTYPE,
            tile=(TIFF_TILE, TIFF_TILE),
            bigtiff=True,
            compression="zlib",
            compressionargs={"level": TIFF_ZLIB_LEVEL},
            maxworkers=TIFF_WORKERS,
            buffersize=TIFF_WORKERS * TIFF_TILE * TIFF_TILE * TIFF_LABEL_DTYPE.itemsize,
            photometric="minisblack",
            metadata=dict(metadata or {}),
            **tiff_resolution(geometry),
        )


def open_tiled_tiff(path: str | os.PathLike[str]) -> Any:
    """The first series of a TIFF as a read-only zarr array (tiles read when indexed, nothing now)."""
    import tifffile
    import zarr

    return zarr.open_array(tifffile.imread(path, aszarr=True, level=0), mode="r")


def _never() -> None:
    """A ``stop`` that never stops."""
