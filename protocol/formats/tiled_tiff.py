"""Label images larger than memory as a tiled BigTIFF, written tile by tile (one home for both writers).

``sam2-batch`` (:class:`batch.large.LabelSink`, labels beyond its budget) and the
plugin's TIFF export of a very large layer (:func:`plugin.export.write_labels`)
write the same file: uint32, tiles of :data:`TIFF_TILE` ² pixels, zlib at
:data:`protocol.formats.imagej.TIFF_ZLIB_LEVEL`, one page per 2D slice, BigTIFF,
the pixel size in the X/Y resolution tags (pixels per cm).

The labels are read a band at a time (``TIFF_TILE`` rows by as many whole
tiles of columns as fit in :data:`BAND_BYTES`) from any array-like with numpy
slicing (numpy, zarr, dask, a file on disk: one ``pread`` per row of
:class:`batch.contiguous.ContiguousPixels`, not one per row of each tile),
optionally mapped through a lookup table on the way (``sam2-batch``'s
temporary labels hold the stitcher's node numbers until then), and deflated
on :data:`TIFF_WORKERS` threads (the lookup and zlib release the GIL) while
the next band is read; an all-background tile, most of a large slide, is deflated
once (:func:`zero_tile`). tifffile writes the deflated tiles as they are. At
most one band and ``2 x TIFF_WORKERS`` tiles are held at once, whatever the
image's size (tifffile, given arrays, would queue up to 512 MiB of tiles).

It is not the Fiji-ready TIFF of :mod:`protocol.formats.imagej`: tifffile
would add ImageJ metadata only as a "nonconformant BigTIFF ImageJ" file, and
ImageJ's own TIFF reader opens neither tiled nor BigTIFF files. Fiji opens it
through Bio-Formats (File > Import > Bio-Formats, which reads the resolution
tags). Read it back lazily with :func:`open_tiled_tiff`.

Arrays are (..., H, W), (row, col) last.
"""

from __future__ import annotations

import functools
import os
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from protocol.formats.imagej import TIFF_ZLIB_LEVEL
from protocol.runtime.atomic import atomic_file

if TYPE_CHECKING:
    from protocol.formats.geometry import Geometry

TIFF_TILE = 512
"""Side of the BigTIFF's tiles (pixels); half of the zarr chunks (1,024) of the same labels elsewhere."""
TIFF_LABEL_DTYPE = np.dtype(np.uint32)
BAND_BYTES = 4 << 20
"""Labels read at once: ``TIFF_TILE`` rows by as many whole tiles of columns as fit (at least one)."""
TIFF_WORKERS = max(1, min(8, os.cpu_count() or 1))
"""Threads deflating tiles; each holds one tile at a time."""


def tiff_resolution(geometry: Geometry | None) -> dict[str, Any]:
    """tifffile's ``resolution`` (pixels per cm, x then y) and ``resolutionunit``; {} in pixel units."""
    from protocol.formats.geometry import METRES_PER

    unit = geometry.length_unit if geometry is not None else None
    if geometry is None or unit is None:
        return {}
    cm = METRES_PER[unit] / METRES_PER["centimeter"]
    x, y = geometry.size("x") * cm, geometry.size("y") * cm
    return {"resolution": (1.0 / x, 1.0 / y), "resolutionunit": "CENTIMETER"}


def encoded_tiles(
    source: Any,
    lut: np.ndarray | None = None,
    stop: Callable[[], None] | None = None,
    workers: int = TIFF_WORKERS,
) -> Iterator[bytes]:
    """Deflated (TIFF_TILE, TIFF_TILE) uint32 tiles of ``source`` in TIFF order, edge tiles zero-padded.

    Args:
        source: (..., H, W) labels, any array-like with numpy slicing, read a band at a time.
        lut: uint32 (k,): write ``lut[source]`` (every value of ``source`` below k); None: as they are.
        stop: called before each band is read; it raises to abandon the write.
        workers: deflating threads.

    Yields:
        Each tile's zlib stream in the order (slice, tile row, tile column).
    """
    *stack, height, width = (int(s) for s in source.shape)
    run = max(TIFF_TILE, BAND_BYTES // (TIFF_TILE * TIFF_LABEL_DTYPE.itemsize) // TIFF_TILE * TIFF_TILE)
    ahead = 2 * max(1, workers)
    pending: deque[Future[bytes]] = deque()
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="tiff-tiles") as pool:
        for index in np.ndindex(*stack):
            for r in range(0, height, TIFF_TILE):
                for c0 in range(0, width, run):
                    if stop is not None:
                        stop()
                    band = np.asarray(source[(*index, slice(r, r + TIFF_TILE), slice(c0, c0 + run))])
                    for c in range(0, band.shape[1], TIFF_TILE):
                        pending.append(pool.submit(_deflate, band[:, c : c + TIFF_TILE], lut))
                    while len(pending) > ahead:
                        yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


@functools.cache
def zero_tile() -> bytes:
    """The deflated all-background tile, made once: most tiles of a large slide's labels."""
    return zlib.compress(bytes(TIFF_TILE * TIFF_TILE * TIFF_LABEL_DTYPE.itemsize), TIFF_ZLIB_LEVEL)


def _deflate(block: np.ndarray, lut: np.ndarray | None) -> bytes:
    """One (<= TIFF_TILE, <= TIFF_TILE) block, mapped through ``lut``, zero-padded, deflated.

    An all-background block is :func:`zero_tile` (the same bytes, deflated once; a scan for a
    label costs a tenth of deflating 1 MiB).
    """
    if (lut is None or int(lut[0]) == 0) and not block.any():
        return zero_tile()
    padded = np.zeros((TIFF_TILE, TIFF_TILE), TIFF_LABEL_DTYPE)
    padded[: block.shape[0], : block.shape[1]] = block if lut is None else lut[block]
    return zlib.compress(padded.data, TIFF_ZLIB_LEVEL)


def write_tiled_tiff(
    path: str | os.PathLike[str],
    source: Any,
    shape: Sequence[int] | None = None,
    geometry: Geometry | None = None,
    stop: Callable[[], None] | None = None,
    metadata: Mapping[str, Any] | None = None,
    lut: np.ndarray | None = None,
) -> None:
    """Write labels tile by tile as a uint32 tiled BigTIFF at ``path``, atomically.

    Args:
        path: the TIFF (replaced atomically: a stop or an error leaves the old file, or none).
        source: (..., H, W) non-negative integer labels, any array-like with numpy slicing; ids
            above 2**32 - 1 do not fit (the caller checks).
        shape: the file's shape, (..., H, W) with as many pixels as ``source`` (a flattened
            stack's own shape); default ``source.shape``.
        geometry: the pixel size for the resolution tags (None or no length unit: pixels).
        stop: called before each band is read; it raises to abandon the write.
        metadata: facts stored in the first page's description (tifffile's "shaped" JSON, beside
            the shape), read back with ``TiffFile.shaped_metadata``.
        lut: uint32 (k,): write ``lut[source]`` (every value of ``source`` below k); None: as it is.
    """
    import tifffile

    file_shape = tuple(int(s) for s in (source.shape if shape is None else shape))
    with atomic_file(path) as tmp:
        tifffile.imwrite(
            tmp,
            encoded_tiles(source, lut, stop),
            shape=file_shape,
            dtype=TIFF_LABEL_DTYPE,
            tile=(TIFF_TILE, TIFF_TILE),
            bigtiff=True,
            compression="zlib",  # the tiles come deflated: written as they are
            photometric="minisblack",
            metadata=dict(metadata or {}),
            **tiff_resolution(geometry),
        )


def open_tiled_tiff(path: str | os.PathLike[str]) -> Any:
    """The first series of a TIFF as a read-only zarr array (tiles read when indexed, nothing now)."""
    import tifffile
    import zarr

    return zarr.open_array(tifffile.imread(path, aszarr=True, level=0), mode="r")
