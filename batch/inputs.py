"""Finding the images of a batch, naming their outputs, and reading them as slices.

Inputs are files or folders. A folder contributes its files with a
supported suffix and its OME-Zarr images (sub-folders named ``*.zarr`` /
``*.ome.zarr``), not recursively otherwise, sorted by name; other entries
are ignored. A folder named ``*.zarr`` / ``*.ome.zarr`` is one OME-Zarr image
instead (read lazily by :mod:`batch.large`).
Each input file is either a single image, (H, W) grey or (H, W, 3|4) colour,
or a stack whose every 2D slice is segmented: a multi-page TIFF, or any
TIFF series with more axes (Z, T, C ...). Colour is recognised by the TIFF
samples axis (``S``), or a last axis of 3 or 4 in PNG/JPEG files.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from protocol.wire.wire_image import to_wire_dtype

if TYPE_CHECKING:
    from protocol.formats.geometry import Geometry

log = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
ZARR_SUFFIXES = (".ome.zarr", ".zarr")
"""A folder named on the command line with one of these suffixes is one OME-Zarr input, read lazily."""
OUTPUT_SUFFIX = "_labels.tif"


class UsageError(Exception):
    """Inputs the batch cannot work with at all (missing, empty, ambiguous output names)."""


class ReadError(Exception):
    """One input file that cannot be read as an image; the batch records it and goes on."""


@dataclass(frozen=True)
class InputImage:
    """The pixels of one input file as 2D slices.

    Attributes:
        slices: (N, H, W) grey or (N, H, W, C) colour, C in {3, 4}, a wire dtype.
        stack_shape: the leading axes for a stack (e.g. ``(Z,)`` or ``(T, Z)``,
            their product is N), or None for a single image (N == 1).
    """

    slices: np.ndarray
    stack_shape: tuple[int, ...] | None

    @property
    def is_stack(self) -> bool:
        return self.stack_shape is not None

    @property
    def label_shape(self) -> tuple[int, ...]:
        """Shape of the label image: ``stack_shape + (H, W)``, or (H, W)."""
        height, width = self.slices.shape[1:3]
        return (*(self.stack_shape or ()), height, width)


def discover(paths: Sequence[Path]) -> list[Path]:
    """The files to process, in order: each argument's files (folders: sorted by name).

    Raises:
        UsageError: a path does not exist, a named file has an unsupported
            suffix, or nothing is left to process.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir() and is_zarr_input(path):
            files.append(path)
        elif path.is_dir():
            entries = sorted(path.iterdir(), key=lambda p: p.name)
            files += [p for p in entries if _folder_input(p)]
            ignored = [p.name + ("/" if p.is_dir() else "") for p in entries if not _folder_input(p)]
            if ignored:
                log.info(
                    "folder %s: %d entries are not inputs (images: %s; OME-Zarr: %s folders; sub-folders "
                    "are not searched): %s",
                    path,
                    len(ignored),
                    ", ".join(SUPPORTED_SUFFIXES),
                    ", ".join(ZARR_SUFFIXES),
                    ", ".join(ignored[:10]) + (" ..." if len(ignored) > 10 else ""),
                )
        elif path.is_file():
            if path.suffix.lower() not in SUPPORTED_SUFFIXES:
                raise UsageError(f"{path}: not a supported image file ({', '.join(SUPPORTED_SUFFIXES)})")
            files.append(path)
        else:
            raise UsageError(f"{path}: no such file or folder")
    unique = list(dict.fromkeys(files))
    if not unique:
        kinds = ", ".join(SUPPORTED_SUFFIXES + ZARR_SUFFIXES)
        raise UsageError(f"no images ({kinds}) in {', '.join(map(str, paths))}")
    return unique


def is_zarr_input(path: Path) -> bool:
    """An OME-Zarr image folder, by its name (``*.zarr``, ``*.ome.zarr``)."""
    return path.name.lower().endswith(ZARR_SUFFIXES)


def _folder_input(path: Path) -> bool:
    """Whether an entry of an input folder is an input: an image file or an OME-Zarr folder."""
    if path.is_dir():
        return is_zarr_input(path)
    return path.is_file() and path.suffix.lower() in SUPPORTED_SUFFIXES


def input_stem(path: Path) -> str:
    """The file name without its suffix (``a.ome.zarr`` -> ``a``)."""
    for suffix in ZARR_SUFFIXES:
        if path.name.lower().endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def output_names(files: Sequence[Path]) -> dict[Path, str]:
    """The label file name of each input: ``<stem>_labels.tif``.

    Inputs whose stems collide (``a.png`` and ``a.tif``) get their suffix in
    the name too (``a_png_labels.tif``), so the names depend only on the set
    of inputs and are stable from one run to the next.

    Raises:
        UsageError: two inputs would still write the same file (the same name
            in different folders): give them separate ``--out`` folders.
    """
    stems = Counter(input_stem(p) for p in files)
    names: dict[Path, str] = {}
    for path in files:
        stem = input_stem(path)
        if stems[stem] == 1:
            names[path] = stem + OUTPUT_SUFFIX
        else:
            names[path] = f"{stem}_{path.suffix.lstrip('.').lower()}{OUTPUT_SUFFIX}"
    writers = Counter(names.values())
    clashes = sorted(str(p) for p, name in names.items() if writers[name] > 1)
    if clashes:
        raise UsageError(
            f"these inputs would write the same label file: {', '.join(clashes)}; "
            "run them with separate --out folders"
        )
    return names


def _to_wire_dtype(array: np.ndarray) -> np.ndarray:
    """The pixels in a dtype the wire carries (:func:`protocol.wire.wire_image.to_wire_dtype`)."""
    try:
        return to_wire_dtype(array)
    except ValueError as e:
        raise ReadError(str(e)) from e


def read_image(path: Path) -> InputImage:
    """Read one input file as 2D slices.

    Raises:
        ReadError: unreadable, corrupt, or not an image (the message says why).
    """
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                data = np.asarray(series.asarray())
                colour = series.axes.endswith("S") and data.shape[-1] in (3, 4)
        else:
            import imageio.v3 as iio

            data = np.asarray(iio.imread(path))
            colour = data.ndim == 3 and data.shape[-1] in (3, 4)
    except Exception as e:  # each reader raises its own types for corrupt files
        raise ReadError(f"cannot read {path.name}: {type(e).__name__}: {e}") from e
    spatial = 3 if colour else 2
    if data.ndim < spatial or any(s == 0 for s in data.shape):
        raise ReadError(f"{path.name}: shape {list(data.shape)} is not an image or a stack of images")
    data = _to_wire_dtype(data)
    if data.ndim == spatial:
        return InputImage(np.ascontiguousarray(data[None]), None)
    stack_shape = tuple(int(s) for s in data.shape[:-spatial])
    slices = data.reshape(math.prod(stack_shape), *data.shape[-spatial:])
    return InputImage(np.ascontiguousarray(slices), stack_shape)


def input_geometry(path: Path, label_ndim: int) -> Geometry | None:
    """The pixel size an input TIFF carries, as the geometry of its ``label_ndim``-axis labels.

    ImageJ, OME or resolution-tag calibration (:mod:`protocol.formats.tiff_geometry`);
    None (pixel units) for other files, TIFFs without one, or labels of another shape.
    """
    if path.is_dir() or path.suffix.lower() not in (".tif", ".tiff"):
        return None
    import tifffile

    from protocol.formats.tiff_geometry import tiff_geometry

    try:
        with tifffile.TiffFile(path) as tif:
            geometry = tiff_geometry(tif)
    except (OSError, ValueError, KeyError, tifffile.TiffFileError):
        return None
    if geometry.ndim != label_ndim or all(unit is None for unit in geometry.units):
        return None
    return geometry
