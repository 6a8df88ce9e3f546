"""What a batch leaves behind: label files and a CSV summary, all written atomically.

Label files by ``--format``: ``tiff`` (``<stem>_labels.tif``, one page per
slice; see below), ``ome-zarr`` (``<stem>_labels.ome.zarr``: the source image
as an NGFF 0.4 image pyramid at the root, so ome-zarr's Reader and
napari-ome-zarr show image and labels from the root, and the NGFF 0.4 label
image under ``labels/``; ``--no-image``: labels only) or ``geojson``
(``<stem>_labels.geojson``, one polygon per label and slice, QuPath
conventions); the last two are written by :mod:`protocol.formats` (no napari
involved).

The pixel size of an input TIFF (ImageJ, OME or resolution tags, read by
:mod:`protocol.formats.tiff_geometry`) goes with its labels: the TIFF its
ImageJ calibration, the OME-Zarr scale and units per axis, the GeoJSON the
pixel size and units in its properties and, with ``--coordinates physical``,
physical coordinates.
Without one (or for PNG/JPEG inputs) they are in pixel units.

The TIFF is the plugin's Fiji-ready TIFF (:mod:`protocol.formats.imagej`)
whenever ImageJ can hold it: uint16 labels (ids up to 65535; ImageJ
hyperstacks are 8-bit, 16-bit or 32-bit float, never uint32) with ``unit``
(``micron``: Fiji shows µm), X/Y resolution in pixels per unit, ``spacing``
(z step), axes, and the facts the plugin's reader restores the scale from.
Labels with larger ids (or over 4 GiB as uint16) stay uint32 with X/Y
resolution in pixels per centimetre (what Bio-Formats and QuPath read, not
ImageJ's calibration), and the log says so. Label files written tile by tile
(:mod:`batch.large`) are tiled BigTIFFs, which ImageJ's own reader does not
open: they stay uint32 with resolution tags too.

Every label file carries its provenance record (:mod:`batch.provenance`: model,
checkpoint, settings, tile grid; in the format's own place, a sidecar
``NAME.provenance.json`` beside a plain uint32 TIFF).

Every file is written to a temporary name in its folder and moved into place
with ``os.replace`` (a zarr store: a temporary directory swapped in), so a
crash or Ctrl-C never leaves a half-written label file that a later run
would take for a finished one. Resume rule: an input whose label file in the
chosen format exists is skipped (unless ``--overwrite``).

The summary describes the inputs of the latest run: one row per slice
(``slice`` empty for a single image) and one row per unreadable file. Its
``request_id`` names the request of a slice (for a slice sent as tiles the
count and the first and last tile's ids), ``retries`` how many requests
were sent again (after a broker restart or a silent request). An
input skipped because an earlier run made its labels keeps that run's rows.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from protocol.runtime.atomic import atomic_file

if TYPE_CHECKING:
    from protocol.formats.geometry import Geometry
    from protocol.formats.provenance import Provenance

SUMMARY_NAME = "summary.csv"
FORMAT_TIFF = "tiff"
FORMAT_OME_ZARR = "ome-zarr"
FORMAT_GEOJSON = "geojson"
OUTPUT_FORMATS = {FORMAT_TIFF: ".tif", FORMAT_OME_ZARR: ".ome.zarr", FORMAT_GEOJSON: ".geojson"}
"""``--format`` choices and the suffix of their label files."""
COORDINATES = ("pixel", "physical")
"""GeoJSON coordinates (``--coordinates``): pixels (QuPath) or pixel size x pixel index."""
STATUS_OK = "ok"
STATUS_ERROR = "error"
STATUS_SKIPPED = "skipped"
IMAGEJ_LABEL_DTYPE = np.dtype(np.uint16)
"""The pixel type of every Fiji-ready label TIFF of a batch (ids up to 65535)."""
IMAGEJ_MAX_BYTES = 2**32 - 2**25
"""Pixel bytes beyond which labels need a BigTIFF, which ImageJ's TIFF reader does not open."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Row:
    """One line of the summary.

    Attributes:
        file: the input file as given on the command line (or found in a folder).
        slice: index of the slice in the flattened stack, "" for a single image.
        objects: labels found (0..n), "" when the slice failed.
        seconds: wall time of the request, "" when not run.
        status: ``ok``, ``error`` or ``skipped`` (label file already there).
        error: what went wrong, "" when ok.
        request_id: the request's id, to find it in the broker and worker logs; for a
            slice segmented as tiles, ``N tiles: FIRST..LAST`` (:func:`request_ids_text`).
        retries: requests sent again (a broker lost or restarted, a silent request), "" when none.
    """

    file: str
    slice: str = ""
    objects: str = ""
    seconds: str = ""
    status: str = STATUS_OK
    error: str = ""
    request_id: str = ""
    retries: str = ""


COLUMNS = [f.name for f in fields(Row)]


def request_ids_text(request_ids: Sequence[str]) -> str:
    """The ``request_id`` cell of a slice sent as tiles: ``16 tiles: FIRST..LAST`` (ids in sending order).

    One id stands alone; none gives "". Every tile's id is in the batch log at ``--log-level DEBUG``.
    """
    if len(request_ids) <= 1:
        return "".join(request_ids)
    return f"{len(request_ids)} tiles: {request_ids[0]}..{request_ids[-1]}"


def pixel_size_text(geometry: Geometry | None) -> str:
    """The pixel size for the log: ``0.5x0.5 micrometer`` (x then y), or ``pixel`` when unknown."""
    unit = geometry.length_unit if geometry is not None else None
    if geometry is None or unit is None:
        return "pixel"
    return f"{geometry.size('x'):g}x{geometry.size('y'):g} {unit}"


def write_labels(
    path: Path,
    labels: np.ndarray,
    geometry: Geometry | None = None,
    provenance: Provenance | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write uint32 labels atomically as a TIFF: (H, W) one page, (..., H, W) one page per slice.

    Ids up to 65535 make the plugin's Fiji-ready TIFF (uint16, ImageJ calibration from
    ``geometry``, pixel units without one); larger ids, more than 5 axes, or more than
    :data:`IMAGEJ_MAX_BYTES` of uint16 pixels, a uint32 (Big)TIFF with ``geometry``'s pixel
    size in the X/Y resolution tags (logged). ``provenance``: the ImageJ property
    ``sam2.provenance``, or a sidecar ``NAME.provenance.json`` beside a plain TIFF.
    ``metadata``: JSON facts added to the Fiji-ready TIFF's ``napari-sam2-broker`` property
    (e.g. a concept run's scores, :data:`protocol.formats.labels_file.SCORES_KEY`).
    """
    import tifffile

    from protocol.formats.geometry import Geometry
    from protocol.formats.imagej import TIFF_ZLIB_LEVEL, geometry_facts, write_imagej
    from protocol.formats.tiled_tiff import tiff_resolution

    if labels.dtype != np.uint32:
        raise ValueError(f"labels must be uint32, got {labels.dtype}")
    if geometry is None or geometry.ndim != labels.ndim:
        geometry = Geometry.plain(labels.ndim) if 2 <= labels.ndim <= 5 else None
    classic = labels.size * IMAGEJ_LABEL_DTYPE.itemsize <= IMAGEJ_MAX_BYTES
    with atomic_file(path) as tmp:
        if (
            geometry is not None
            and classic
            and write_imagej(
                tmp,
                labels,
                {},
                geometry,
                {**geometry_facts(geometry), **(metadata or {})},
                IMAGEJ_LABEL_DTYPE,
                provenance,
            )
        ):
            return
        log.warning(
            "uint32 TIFF file=%s (max id %d, %d axes): an ImageJ hyperstack holds ids up to 65535, "
            "5 axes and 4 GiB, so Fiji opens it without ImageJ calibration (pixel size in resolution "
            "tags only)",
            path,
            int(labels.max()) if labels.size else 0,
            labels.ndim,
        )
        tifffile.imwrite(
            tmp,
            labels,
            bigtiff=not classic,
            compression="zlib",
            compressionargs={"level": TIFF_ZLIB_LEVEL},
            photometric="minisblack",
            **tiff_resolution(geometry),
        )
    write_provenance_sidecar(path, provenance)


def write_provenance_sidecar(path: Path, provenance: Provenance | None) -> None:
    """``NAME.provenance.json`` beside a label file whose format has no place for it (none: nothing)."""
    from protocol.formats.provenance import sidecar_path, write_sidecar

    if provenance is not None:
        write_sidecar(sidecar_path(path), provenance)


def output_path(tiff_path: Path, output_format: str) -> Path:
    """The label file for ``output_format`` from its TIFF name (``a_labels.tif`` -> ``a_labels.geojson``)."""
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(
            f"unknown output format {output_format!r}; choose one of {', '.join(OUTPUT_FORMATS)}"
        )
    stem = tiff_path.name[: -len(tiff_path.suffix)] if tiff_path.suffix.lower() == ".tif" else tiff_path.name
    return tiff_path.with_name(stem + OUTPUT_FORMATS[output_format])


def write_output(
    path: Path,
    labels: np.ndarray,
    output_format: str = FORMAT_TIFF,
    geometry: Geometry | None = None,
    coordinates: str = "pixel",
    image: Any = None,
    provenance: Provenance | None = None,
    stop: Callable[[], None] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write uint32 labels (H, W) or (..., H, W) atomically in ``output_format``.

    Args:
        path: the label file.
        labels: uint32 labels, 0 = background.
        output_format: a key of :data:`OUTPUT_FORMATS`.
        geometry: the input's axes and pixel size (one entry per label axis); None: pixel units.
        coordinates: GeoJSON ``pixel`` or ``physical`` coordinates (:data:`COORDINATES`).
        image: OME-Zarr only: the source slices, (N, H, W[, C]) array-like, written into the
            store's root as an NGFF image pyramid (:func:`ngff_root_image`); None: labels only.
        provenance: how the labels were made, in the format's own place (:mod:`protocol.formats.provenance`).
        stop: OME-Zarr only: called before each chunk of labels and image is read; raising there
            (a deferred Ctrl-C) abandons the write between chunks and leaves no store behind.
        metadata: JSON facts about the labels (a concept run's ``{label_id: score}`` under
            :data:`protocol.formats.labels_file.SCORES_KEY`): the Fiji-ready TIFF's ``napari-sam2-broker``
            property, the OME-Zarr root's attributes; GeoJSON and uint32 TIFFs have no place for them.

    Raises:
        ValueError: labels that are not uint32, or that the format cannot hold (NGFF: 2 to 5 axes).
        OSError: the file system refused.
    """
    if output_format == FORMAT_TIFF:
        write_labels(path, labels, geometry, provenance, metadata)
        return
    from protocol.formats.geojson import write_geojson
    from protocol.formats.geometry import Geometry
    from protocol.formats.ngff import write_ngff_labels

    if labels.dtype != np.uint32:
        raise ValueError(f"labels must be uint32, got {labels.dtype}")
    if geometry is None or geometry.ndim != labels.ndim:
        geometry = Geometry.plain(labels.ndim)
    if output_format == FORMAT_OME_ZARR:
        root_image = None if image is None else ngff_root_image(image, labels.shape, geometry, path, stop)
        name = path.name.split(".")[0]
        root = with_root_attrs(root_image, metadata)
        write_ngff_labels(path, labels, {}, geometry, name=name, image=root, provenance=provenance, stop=stop)
    elif output_format == FORMAT_GEOJSON:
        write_geojson(path, labels, {}, geometry, coordinates, provenance)
    else:
        raise ValueError(f"unknown output format {output_format!r}")


def with_root_attrs(
    write: Callable[[Any], None] | None, metadata: Mapping[str, Any] | None
) -> Callable[[Any], None] | None:
    """What fills an OME-Zarr store's root group: ``write`` (the image, or None) plus ``metadata``
    as root attributes (None when there is neither)."""
    if not metadata:
        return write

    def fill(root: Any) -> None:
        if write is not None:
            write(root)
        root.attrs.update(dict(metadata))

    return fill


def ngff_root_image(
    image: Any,
    label_shape: tuple[int, ...],
    geometry: Geometry,
    path: Path,
    stop: Callable[[], None] | None = None,
) -> Callable[[Any], None]:
    """What writes the source ``image`` (N, H, W[, C]) into the root group of the OME-Zarr ``path``.

    The image pyramid has the label levels' factors and the labels' ``geometry``
    (:func:`protocol.formats.ngff_image.write_image_pyramid`, chunk by chunk; ``stop``
    is called before each chunk).
    """
    from protocol.formats.ngff import scale_factors
    from protocol.formats.ngff_image import write_image_pyramid

    def write(root: Any) -> None:
        write_image_pyramid(
            root,
            image,
            label_shape[:-2],
            geometry,
            scale_factors((label_shape[-2], label_shape[-1])),
            name=path.name.split(".")[0],
            **({"stop": stop} if stop is not None else {}),
        )

    return write


def read_summary(path: Path) -> list[Row]:
    """Rows of an existing summary (none if it is missing or unreadable)."""
    try:
        with path.open(newline="") as handle:
            return [Row(**{c: record.get(c) or "" for c in COLUMNS}) for record in csv.DictReader(handle)]
    except (OSError, csv.Error, TypeError):
        return []


def merge_rows(previous: Iterable[Row], current: Iterable[Row], skipped_files: set[str]) -> list[Row]:
    """This run's rows plus the earlier rows of the files it skipped, sorted by file and slice.

    Args:
        previous: rows of the summary found in the output folder.
        current: rows made by this run.
        skipped_files: inputs of this run whose labels an earlier run made.
    """
    kept = [row for row in previous if row.file in skipped_files]
    return sort_rows(kept + list(current))


def sort_rows(rows: Iterable[Row]) -> list[Row]:
    """Rows in summary order: by file, then slice (a single image's row first)."""
    return sorted(rows, key=lambda r: (r.file, int(r.slice) if r.slice.isdigit() else -1))


def write_summary(path: Path, rows: Iterable[Row]) -> None:
    """Write the CSV summary atomically."""
    with atomic_file(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(asdict(row))
