"""The deflated tiles of a label image too large for memory, read band by band, encoded over all cores.

:func:`encoded_tiles` reads the (N, H, W) uint32 labels a row of TIFF tiles
at a time (``tile`` rows, a bounded run of columns: one ``pread`` per row
of :class:`batch.contiguous.ContiguousPixels`, not one per row of each
tile), maps them through the stitcher's lookup table on the way (the
temporary labels hold node numbers until then:
:meth:`protocol.geometry.stitch.TileStitcher.finish` with ``relabel=False``),
and deflates the tiles on a thread pool (the lookup and zlib release the
GIL) while the next band is read. It yields each tile's bytes in the TIFF's order (slice,
tile row, tile column, each tile zero-padded to ``tile`` x ``tile``), which
``tifffile.imwrite`` writes as they are. At most ``BAND_BYTES`` of labels
and ``2 x workers`` tiles are held at once, whatever the image's size
(tifffile, given arrays, would queue up to 512 MiB of tiles before encoding).
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

BAND_BYTES = 4 << 20
"""Labels read at once: ``tile`` rows by as many whole tiles of columns as fit (at least one)."""


def encoded_tiles(
    labels: Any,
    tile: int,
    level: int,
    workers: int,
    lut: np.ndarray | None = None,
    stop: Callable[[], None] | None = None,
) -> Iterator[bytes]:
    """Deflated uint32 tiles of ``labels`` in TIFF order.

    Args:
        labels: (N, H, W) uint32 array-like (numpy slicing), read in bands.
        tile: TIFF tile side in pixels (a multiple of 16).
        level: zlib level.
        workers: encoding threads.
        lut: uint32 (k,): write ``lut[labels]`` (every value of ``labels`` below k); None: as they are.
        stop: called before each band is read; it raises to abandon the write.
    """
    count, height, width = (int(s) for s in labels.shape)
    run = max(tile, (BAND_BYTES // (tile * 4)) // tile * tile)
    pending: deque[Future[bytes]] = deque()
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="tiff-tiles") as pool:
        for n in range(count):
            for r in range(0, height, tile):
                for c0 in range(0, width, run):
                    if stop is not None:
                        stop()
                    band = np.asarray(labels[n, r : r + tile, c0 : c0 + run], dtype=np.uint32)
                    for c in range(0, band.shape[1], tile):
                        pending.append(pool.submit(_deflate, band[:, c : c + tile], tile, level, lut))
                    while len(pending) > 2 * max(1, workers):
                        yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _deflate(block: np.ndarray, tile: int, level: int, lut: np.ndarray | None) -> bytes:
    """One (<= tile, <= tile) block, mapped through ``lut``, zero-padded to (tile, tile), deflated."""
    padded = np.zeros((tile, tile), np.uint32)
    padded[: block.shape[0], : block.shape[1]] = block if lut is None else lut[block]
    return zlib.compress(padded.data, level)
