"""Which labels an export writes chunk by chunk, and the clear refusal for the formats that cannot.

**The rule** (:func:`written_chunkwise`): labels are written chunk by chunk,
never read into one array, when they are a chunked array-like (not numpy: a
pyramid layer's level 0, a zarr or dask array) whose slices are larger than
:data:`plugin.labels.pyramid.PYRAMID_MIN_PIXELS` (every pyramid result layer),
or when any labels take more than the plugin's memory budget
(:func:`plugin.view.layers.memory_budget`). Such labels go to

* TIFF: a uint32 tiled BigTIFF written tile by tile
  (:func:`protocol.formats.tiled_tiff.write_tiled_tiff`, the file ``sam2-batch``
  writes for labels beyond its budget), with the names JSON and CSV beside it;
* OME-Zarr: the NGFF writer reading the array chunk by chunk (one thread).

GeoJSON, the measurements CSV, CTC and GEFF read the whole array: labels above
the memory budget are refused before any work (:func:`check_fits_memory`).
The ids present are counted block by block (:func:`plugin.labels.stats.pixel_counts`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from plugin.labels import pyramid
from plugin.labels.stats import pixel_counts
from plugin.view import layers
from protocol.formats.geometry import Geometry
from protocol.formats.ngff import write_ngff_labels
from protocol.formats.provenance import Provenance

GIB = 1024**3
MIB = 1024**2


def size_text(nbytes: int) -> str:
    """``1.6 GiB``, or ``18 MiB`` below a tenth of a GiB."""
    return f"{nbytes / GIB:.1f} GiB" if nbytes >= GIB // 10 else f"{nbytes / MIB:.0f} MiB"


def labels_nbytes(data: Any) -> int:
    """Bytes of ``data`` read into one numpy array (its shape times its dtype's size)."""
    return int(np.prod(data.shape, dtype=np.float64)) * np.dtype(data.dtype).itemsize


def above_budget(nbytes: int) -> bool:
    """Whether ``nbytes`` is more than the plugin holds in memory (``plugin.view.layers.memory_budget``)."""
    return nbytes > layers.memory_budget()


def written_chunkwise(data: Any) -> bool:
    """Whether an export writes ``data`` chunk by chunk (see the module's rule)."""
    if above_budget(labels_nbytes(data)):
        return True
    return not isinstance(data, np.ndarray) and pyramid.needs_pyramid(data.shape)


def read_lazily(tif: Any) -> bool:
    """Whether an open ``tifffile.TiffFile`` is a tiled BigTIFF larger than the memory budget: a reader
    opens it as a zarr array over its tiles (:func:`protocol.formats.tiled_tiff.open_tiled_tiff`)."""
    return bool(tif.is_bigtiff and tif.pages.first.is_tiled and above_budget(int(tif.series[0].nbytes)))


def check_fits_memory(data: Any, title: str) -> None:
    """Refuse, before any work, labels above the memory budget for a format that reads them whole.

    Raises:
        ValueError: says how large the labels are and which formats write them chunk by chunk.
    """
    nbytes, budget = labels_nbytes(data), layers.memory_budget()
    if nbytes > budget:
        raise ValueError(
            f"this layer's labels take {size_text(nbytes)}, more than the {size_text(budget)} the "
            f"plugin holds in memory, so they cannot be exported as {title}; export them as TIFF or "
            "OME-Zarr, which are written chunk by chunk"
        )


def checked_id_range(counts: Mapping[int, int], dtype: np.dtype, limit: int) -> np.dtype:
    """The unsigned dtype to write chunked labels in, from their counted ids.

    Args:
        counts: ``{label_id: pixels}`` of the non-zero ids (:func:`plugin.labels.stats.pixel_counts`).
        dtype: the labels' own dtype (kept when unsigned).
        limit: the largest id the format holds.

    Raises:
        ValueError: a negative id, or an id above ``limit``.
    """
    low, high = min(counts, default=0), max(counts, default=0)
    if low < 0:
        raise ValueError(f"labels must not be negative (found id {low})")
    if high > limit:
        raise ValueError(f"label id {high} is larger than {limit}, the largest this file holds")
    return (
        dtype if dtype.kind in "ub" else np.dtype(np.uint32 if high <= np.iinfo(np.uint32).max else np.uint64)
    )


class AsUnsigned:
    """A chunked array-like read as another (unsigned) dtype, one indexed block at a time.

    Args:
        source: (...) integer labels with numpy slicing (zarr, dask).
        dtype: the dtype each read block is cast to.
    """

    def __init__(self, source: Any, dtype: np.dtype) -> None:
        self.source = source
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(s) for s in source.shape)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self.source[key]).astype(self.dtype, copy=False)


def write_ngff_chunkwise(
    path: str | os.PathLike[str],
    data: Any,
    names: Mapping[int, str],
    geometry: Geometry,
    title: str,
    provenance: Provenance | None,
) -> Path:
    """OME-Zarr of labels too large for one array: read chunk by chunk (one thread), never whole.

    Unsigned labels keep their dtype (a pyramid's uint32); signed ones are counted first (block by
    block) and, without negative ids, read as an unsigned dtype.
    """
    dtype = np.dtype(data.dtype)
    if dtype.kind not in "ub":
        dtype = checked_id_range(pixel_counts(data), dtype, int(np.iinfo(np.uint64).max))
        data = AsUnsigned(data, dtype)
    return write_ngff_labels(path, data, names, geometry, name=title, provenance=provenance, stop=_go_on)


def _go_on() -> None:
    """A ``stop`` that never stops: given one, the NGFF writer reads chunk by chunk in one thread."""
