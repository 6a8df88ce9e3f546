"""Images larger than memory in a batch: lazy inputs and label files written tile by tile.

**Inputs.** :func:`open_lazy` opens a TIFF (level 0 of a pyramid) through
``tifffile.imread(path, aszarr=True)`` (an uncompressed one stored in one
run through :mod:`batch.contiguous`, rows read straight from the file) and
an OME-Zarr image folder (its first multiscale level) with zarr, without
reading pixels. The result's
``slices`` is a :class:`StackSlices`: the file's leading axes (Z, T, C ...)
flattened into one slice index, each (H, W[, C]) slice read only where it
is indexed, so :func:`protocol.ops.tiled.tiled_auto_stack` reads one tile
at a time.

**Outputs.** :class:`LabelSink` holds the labels of one input: a numpy
array when they fit in the memory budget, else an uncompressed uint32 file
in a temporary folder next to the label file (:class:`batch.contiguous.ContiguousPixels`:
rows read and written with ``pread``/``pwrite``, nothing cached, so the
process's memory does not grow with the image; it takes the labels' size
on disk until the label file is written), written tile by tile by the
stitcher (on a writer thread, :mod:`batch.write_behind`). A single slice's stitcher
hands the sink its lookup table (:meth:`LabelSink.relabel`), applied as the file is
read (:attr:`LabelSink.labels`), so each core is written and read once.
:meth:`LabelSink.commit` writes the label file from it: a tiled BigTIFF
(band by band, relabelled and deflated over the cores while the next band is
read, one page per slice: :mod:`protocol.formats.tiled_tiff`, the same file as
the plugin's export of a very large layer) or an NGFF label image (chunk by
chunk through dask), never the whole image in memory.

The tiled BigTIFF is not the Fiji-ready TIFF of :mod:`batch.outputs`: it
stays uint32 with the pixel size in X/Y resolution tags; Fiji opens it
through Bio-Formats, without ImageJ calibration (no z spacing);
``--format ome-zarr`` keeps every axis' scale and unit.

All arrays are (..., H, W) with (row, col) last.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from batch.contiguous import ContiguousPixels, contiguous_tiff
from batch.outputs import (
    FORMAT_OME_ZARR,
    FORMAT_TIFF,
    ngff_root_image,
    write_output,
    write_provenance_sidecar,
)
from batch.write_behind import WriteBehind
from protocol.formats.provenance import PROVENANCE_KEY, Provenance
from protocol.formats.tiled_tiff import write_tiled_tiff
from protocol.wire.wire_image import stack_contrast_limits, to_wire_dtype

if TYPE_CHECKING:
    from protocol.formats.geometry import Geometry

DEFAULT_MAX_IN_MEMORY_BYTES = 1 << 30
"""Label images larger than this (uint32 bytes) are written tile by tile through a file on disk."""
CHUNK = 1024
"""Side of the zarr chunks of a chunk-by-chunk NGFF label file (the BigTIFF's tiles:
:data:`protocol.formats.tiled_tiff.TIFF_TILE`)."""
ZARR_SUFFIXES = (".zarr",)
CONTRAST_SAMPLE_PIXELS = 1 << 20
CONTRAST_SAMPLE_SLICES = 16


class StackSlices:
    """The 2D slices of an nD array-like, flattened: ``[n]``, ``[n, rows, cols]`` read lazily.

    Args:
        array: (..., H, W) grey or (..., H, W, C) colour array-like (zarr, memmap, numpy).
        colour: the last axis is colour samples.

    Attributes:
        shape: (N, H, W) or (N, H, W, C), N the product of the leading axes.
        stack_shape: the leading axes, ``()`` for a single image.
    """

    def __init__(self, array: Any, colour: bool) -> None:
        spatial = 3 if colour else 2
        self.array = array
        self.stack_shape = tuple(int(s) for s in array.shape[:-spatial])
        self.shape = (math.prod(self.stack_shape), *(int(s) for s in array.shape[-spatial:]))
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        index = np.unravel_index(int(key[0]), self.stack_shape) if self.stack_shape else ()
        return np.asarray(self.array[(*(int(i) for i in index), *key[1:])])


def open_lazy(path: Path) -> tuple[StackSlices, bool]:
    """Open ``path`` without reading its pixels; return (slices, is_stack).

    Raises:
        ValueError: not an image the batch can tile (the message says why).
        OSError: unreadable.
    """
    array: Any
    if path.is_dir():
        import zarr  # here, not above: an uncompressed TIFF is read without it (0.3 s of imports)

        group = zarr.open_group(str(path), mode="r")
        attrs: dict[str, Any] = dict(group.attrs)
        multiscales: Any = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
        if not multiscales:
            raise ValueError(f"{path.name}: a zarr folder without NGFF 'multiscales' metadata")
        array = group[multiscales[0]["datasets"][0]["path"]]
        colour = False
    else:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes
            shape = tuple(series.shape)
        colour = axes.endswith("S") and shape[-1] in (3, 4)
        array = contiguous_tiff(path, colour)  # uncompressed in one run: read rows, not the one huge chunk
        if array is None:
            import zarr

            store = tifffile.imread(path, aszarr=True, level=0)
            array = zarr.open_array(store, mode="r")
    spatial = 3 if colour else 2
    if array.ndim < spatial or any(int(s) == 0 for s in array.shape):
        raise ValueError(f"{path.name}: shape {list(array.shape)} is not an image or a stack of images")
    if np.dtype(array.dtype).kind == "c":
        raise ValueError(f"{path.name}: complex pixels cannot be segmented")
    slices = StackSlices(array, colour)
    return slices, bool(slices.stack_shape)


def input_bytes(path: Path) -> int:
    """Uncompressed bytes of a TIFF's first series or an OME-Zarr's level 0 (0 if unknown: read it whole)."""
    try:
        if path.is_dir():
            slices, _ = open_lazy(path)
            return math.prod(slices.shape) * slices.dtype.itemsize
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return int(tif.series[0].nbytes)
    except Exception:  # the regular reader reports unreadable files
        return 0


def sample_stack_limits(slices: StackSlices) -> tuple[float, float] | None:
    """A stack's 1st/99th percentiles from strided samples of up to 16 of its slices (None: uint8)."""
    count = slices.shape[0]
    picks = sorted(
        {round(k * (count - 1) / max(1, CONTRAST_SAMPLE_SLICES - 1)) for k in range(min(count, 16))}
    )
    height, width = slices.shape[1], slices.shape[2]
    step = max(1, math.ceil(math.sqrt(height * width * len(picks) / CONTRAST_SAMPLE_PIXELS)))
    sample = np.stack([slices[n, ::step, ::step] for n in picks])
    return stack_contrast_limits(to_wire_dtype(sample))


class LabelSink:
    """Where the labels of one input go while it is segmented, then its label file.

    Args:
        path: the label file to write (in ``output_format``).
        label_shape: ``stack_shape + (H, W)``.
        output_format: ``tiff`` or ``ome-zarr`` for labels beyond the budget; any for the rest.
        max_in_memory_bytes: uint32 labels larger than this go to a temporary file on disk.
        geometry: the input's axes and pixel size (:func:`batch.inputs.input_geometry`); None: pixels.
        coordinates: GeoJSON ``pixel`` or ``physical`` coordinates.
        image: OME-Zarr: the source slices (N, H, W[, C]) array-like, written into the store's
            root as an image pyramid chunk by chunk (:func:`batch.outputs.ngff_root_image`).
        stop: called between tiles and chunks of a tile-by-tile write and of an OME-Zarr write
            from memory; it raises (e.g.
            ``KeyboardInterrupt``, :mod:`batch.interrupt`) to abandon the write, which then
            leaves no file behind.

    Attributes:
        array: (N, H, W) uint32, zero-filled: numpy, or a file on disk (``on_disk``), where the
            labels are written (ids, or node numbers until mapped: :meth:`relabel`).
    """

    def __init__(
        self,
        path: Path,
        label_shape: tuple[int, ...],
        output_format: str,
        max_in_memory_bytes: int,
        geometry: Geometry | None = None,
        coordinates: str = "pixel",
        stop: Callable[[], None] | None = None,
        image: Any = None,
    ):
        self.path = path
        self.image = image
        self._stop = stop or _never
        self.label_shape = label_shape
        self.output_format = output_format
        self.geometry = geometry if geometry is not None and geometry.ndim == len(label_shape) else None
        self.coordinates = coordinates
        self.provenance: Provenance | None = None
        """How the labels were made: set before :meth:`commit`, written with them."""
        self.metadata: dict[str, Any] = {}
        """Facts about the labels (a concept run's scores): set before :meth:`commit`
        (:func:`batch.outputs.write_output`'s ``metadata``; a tiled BigTIFF has no place for them)."""
        flat = (math.prod(label_shape[:-2]), label_shape[-2], label_shape[-1])
        self.on_disk = math.prod(flat) * 4 > max_in_memory_bytes
        self._tmp: Path | None = None
        self._lut: np.ndarray | None = None
        if not self.on_disk:
            self.array: Any = np.zeros(flat, np.uint32)
            return
        if output_format not in (FORMAT_TIFF, FORMAT_OME_ZARR):
            raise ValueError(
                f"labels of {math.prod(flat) * 4 / 2**30:.1f} GiB do not fit in memory and cannot be written "
                f"as {output_format}; use --format tiff or --format ome-zarr"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tiles", dir=path.parent))
        try:
            self.array = WriteBehind(ContiguousPixels.create(self._tmp / "labels.u32", flat, np.uint32))
        except OSError:  # e.g. no space for it: leave no temporary folder behind
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise

    def relabel(self, lut: np.ndarray | None) -> None:
        """The labels are ``lut[array]`` (uint32 (k,), every value of :attr:`array` below k), from now on.

        Applied when the labels are read (:attr:`labels`, :meth:`commit`), never written back.
        """
        self._lut = lut

    @property
    def labels(self) -> Any:
        """(N, H, W) uint32: the labels as they will be written (numpy slicing, read on demand)."""
        return self.array if self._lut is None else Relabelled(self.array, self._lut)

    def commit(self) -> None:
        """Write the label file atomically (tile by tile when on disk), then drop the temporary store."""
        try:
            if not self.on_disk:
                labels = np.asarray(self.labels[:]).reshape(self.label_shape)
                write_output(
                    self.path,
                    labels,
                    self.output_format,
                    self.geometry,
                    self.coordinates,
                    self.image,
                    self.provenance,
                    self._stop,
                    self.metadata,
                )
            elif self.output_format == FORMAT_TIFF:
                self._write_tiled_tiff()
            else:
                self._write_ngff()
        finally:
            self.discard()

    def describe(self) -> str:
        """How :meth:`commit` writes, for the log."""
        if not self.on_disk:
            return f"{self.output_format}, from memory"
        return f"{self.output_format}, tile by tile from {self._tmp}"

    def discard(self) -> None:
        """Remove the temporary store (nothing is written)."""
        if isinstance(self.array, WriteBehind):
            with contextlib.suppress(OSError):  # a failed write was reported where it was read
                self.array.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def _write_tiled_tiff(self) -> None:
        write_tiled_tiff(self.path, self.array, self.label_shape, self.geometry, self._stop, lut=self._lut)
        write_provenance_sidecar(self.path, self.provenance)

    def _write_ngff(self) -> None:
        import dask
        import dask.array as da
        import zarr
        from ome_zarr.format import FormatV04
        from ome_zarr.writer import write_labels

        from protocol.formats.geometry import Geometry
        from protocol.formats.ngff import (
            StopBetweenChunks,
            label_group_name,
            link_to_root_image,
            scale_factors,
            zarr_path,
        )
        from protocol.runtime.atomic import atomic_dir

        if not 2 <= len(self.label_shape) <= 5:
            raise ValueError(f"NGFF labels hold 2 to 5 axes, got shape {self.label_shape}")
        geometry = self.geometry or Geometry.plain(len(self.label_shape))
        axes = list(geometry.axes)
        units = {a: u for a, u in zip(geometry.axes, geometry.units, strict=True) if u is not None}
        chunks = tuple(1 for _ in self.label_shape[:-2]) + tuple(min(CHUNK, n) for n in self.label_shape[-2:])
        checked = StopBetweenChunks(self.labels, self._stop)
        data = da.from_array(checked, chunks=(1, *chunks[-2:])).reshape(self.label_shape).rechunk(chunks)
        store = zarr_path(self.path)
        # One thread: a stop raised between chunks leaves no other thread writing into the
        # temporary store that atomic_dir then removes.
        group_name = label_group_name(self.path.name.split(".")[0])
        with atomic_dir(store) as tmp, dask.config.set(scheduler="synchronous"):
            root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
            write_labels(
                data,
                root,
                name=group_name,
                scaler=None,
                scale_factors=scale_factors((self.label_shape[-2], self.label_shape[-1])),
                fmt=FormatV04(),
                axes=axes,
                scale=dict(zip(geometry.axes, geometry.scale, strict=True)),
                axes_units=units or None,
                storage_options={"chunks": chunks},
            )
            if self.image is not None:
                ngff_root_image(self.image, self.label_shape, geometry, self.path, self._stop)(root)
                link_to_root_image(root, group_name)
            if self.provenance is not None:
                root.attrs[PROVENANCE_KEY] = self.provenance.to_dict()
            root.attrs.update(self.metadata)


class Relabelled:
    """``lut[array]``, read on demand: an (N, H, W) array-like with numpy slicing."""

    def __init__(self, array: Any, lut: np.ndarray) -> None:
        self.array = array
        self.lut = lut
        self.shape = tuple(int(s) for s in array.shape)
        self.dtype = lut.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.lut[np.asarray(self.array[key])]


def _never() -> None:
    """A ``stop`` that never stops."""
