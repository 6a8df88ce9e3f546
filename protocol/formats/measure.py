"""Measurements per label and slice, computed with ``skimage.measure.regionprops_table``.

The columns are fixed by the labels' *schema* (:data:`SCHEMAS`, chosen by
their axes, never by what they hold), so CSVs of one kind of data
concatenate without shifting columns. Each schema's columns, in order,
then the image's columns (:func:`intensity_columns`):

``2d`` (one plane: axes ``yx``), one row per label::

    id, name, pixel_count, area, unit, centroid_row, centroid_col, centroid_y, centroid_x,
    bbox_min_row, bbox_min_col, bbox_max_row, bbox_max_col

``3d`` (a z axis before y, x: ``zyx``, ``tzyx``, ``czyx``...), one row per
label on each plane (``slice`` = the plane's index along the leading axes,
``"3"`` or ``"0,3"``) and one per label per volume (``slice`` ``"all"`` or
``"0,all"``)::

    id, name, slice, pixel_count, area, volume, unit, centroid_row, centroid_col, centroid_z,
    centroid_y, centroid_x, bbox_min_z, bbox_min_row, bbox_min_col, bbox_max_z, bbox_max_row,
    bbox_max_col

``timelapse`` (a time-lapse of planes: axes ``tyx``, axis 0 is time), one row
per label on each frame: the ``2d`` columns with ``frame`` and ``track_id``
after ``name``::

    id, name, frame, track_id, pixel_count, area, unit, centroid_row, centroid_col, ...

``frame`` is the time index; ``track_id`` is the row's track as the Cell
Tracking Challenge and GEFF exports number it (:func:`protocol.formats.tracks.build_tracks`:
the label's id, or a new id for a later run of a label with a gap in time).
The labels' axes say time: napari ``axis_labels`` ``t``/``time``/``frame`` or
a time unit on axis 0 (:class:`protocol.formats.geometry.Geometry`), as the
plugin's Tracks layer decides.

``planes`` (a stack of planes without a z axis and not a ``tyx`` time-lapse:
``cyx``, ``tcyx``...), one row per label on each plane: the ``2d`` columns with
``slice`` after ``name``.

Meaning: ``pixel_count`` counts pixels (voxels on an ``all`` row); ``area``
is in unit² (the plane's area; empty on ``all`` rows, the one cell a row kind
leaves empty); ``volume`` is in unit³ (a plane row's volume is its slab:
pixels x pixel area x z spacing, so the plane rows of a label sum to its
``all`` row). ``centroid_row``/``centroid_col`` and the bounding boxes are
pixel indices (the box's max is exclusive; a plane row's z box is its plane,
``z`` to ``z + 1``); ``centroid_z``/``centroid_y``/``centroid_x`` are
physical, with the image's top-left corner at the layer's translate (the
ImageJ and QuPath convention, as in the TIFF and GeoJSON exports). ``unit``
names the length unit (``pixel`` when unknown). The image's columns come
last: ``mean_intensity`` (always there: empty without an image; with a
colour image the mean of its channels), then ``mean_intensity_0`` … one per
channel of a colour image.

A new schema is one
more :class:`Schema` entry in :data:`SCHEMAS`, placed before the entries
it narrows.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from protocol.formats.geometry import Geometry
from protocol.formats.provenance import Provenance, sidecar_path, write_sidecar
from protocol.formats.tracks import build_tracks
from protocol.runtime.atomic import atomic_file

MEASUREMENTS_SUFFIX = ".measurements.csv"
_CENTROIDS_2D = ("centroid_row", "centroid_col", "centroid_y", "centroid_x")
BOX_2D = ("bbox_min_row", "bbox_min_col", "bbox_max_row", "bbox_max_col")
COLUMNS_2D = ("id", "name", "pixel_count", "area", "unit", *_CENTROIDS_2D, *BOX_2D)
COLUMNS_PLANES = ("id", "name", "slice", *COLUMNS_2D[2:])
COLUMNS_TIMELAPSE = ("id", "name", "frame", "track_id", *COLUMNS_2D[2:])
COLUMNS_3D = (
    "id",
    "name",
    "slice",
    "pixel_count",
    "area",
    "volume",
    "unit",
    "centroid_row",
    "centroid_col",
    "centroid_z",
    "centroid_y",
    "centroid_x",
    "bbox_min_z",
    "bbox_min_row",
    "bbox_min_col",
    "bbox_max_z",
    "bbox_max_row",
    "bbox_max_col",
)
MEAN_INTENSITY = "mean_intensity"


@dataclass(frozen=True)
class Schema:
    """One kind of measurements table.

    Attributes:
        key: its name (``2d``, ``3d``, ``planes``).
        columns: the table's columns before the image's (:func:`intensity_columns`).
        applies: ``applies(axes)``: whether labels with these NGFF axes (``"zyx"``) use it.
        volumes: whether each (z, y, x) volume also gets one ``all`` row per label.
        frames: whether axis 0 is time (rows carry ``frame`` and ``track_id``).
    """

    key: str
    columns: tuple[str, ...]
    applies: Callable[[str], bool]
    volumes: bool = False
    frames: bool = False


SCHEMAS = (
    Schema("2d", COLUMNS_2D, lambda axes: len(axes) == 2),
    Schema("timelapse", COLUMNS_TIMELAPSE, lambda axes: axes == "tyx", frames=True),
    Schema("3d", COLUMNS_3D, lambda axes: axes[-3:] == "zyx", volumes=True),
    Schema("planes", COLUMNS_PLANES, lambda axes: len(axes) > 2),
)
"""First match wins."""


def schema_for(axes: str) -> Schema:
    """The :data:`SCHEMAS` entry for labels with NGFF ``axes`` (``"yx"``, ``"zyx"``, ``"tyx"``...)."""
    return next(schema for schema in SCHEMAS if schema.applies(axes))


def measurements_path(path: str | os.PathLike[str]) -> Path:
    """The CSV path for a requested path (``.measurements.csv`` added unless it ends in ``.csv``)."""
    p = Path(path)
    return p if p.suffix.lower() == ".csv" else p.with_name(p.name + MEASUREMENTS_SUFFIX)


def _intensity(image: np.ndarray | None, labels_shape: tuple[int, ...]) -> np.ndarray | None:
    if image is None:
        return None
    array = np.asarray(image)
    if array.shape[: len(labels_shape)] != labels_shape or array.ndim > len(labels_shape) + 1:
        raise ValueError(
            f"the image {array.shape} does not match the labels {labels_shape} "
            "(same shape, or the same plus a colour axis)"
        )
    return array


def intensity_columns(channels: int) -> list[str]:
    """The image's columns: ``mean_intensity``, then one per channel of a colour image (``channels`` > 1)."""
    return [MEAN_INTENSITY, *(f"{MEAN_INTENSITY}_{c}" for c in range(channels if channels > 1 else 0))]


def _channels(image: np.ndarray | None, labels_ndim: int) -> int:
    return 0 if image is None else 1 if image.ndim == labels_ndim else int(image.shape[-1])


def _table(labels: np.ndarray, image: np.ndarray | None) -> dict[str, np.ndarray]:
    from skimage.measure import regionprops_table

    properties = ["label", "area", "centroid", "bbox"] + (["intensity_mean"] if image is not None else [])
    return regionprops_table(labels, intensity_image=image, properties=properties)


def _means(table: Mapping[str, np.ndarray], channels: int, row: int) -> dict[str, float]:
    if channels == 0:
        return {}
    if channels == 1:
        return {MEAN_INTENSITY: float(table["intensity_mean"][row])}
    means = [float(table[f"intensity_mean-{c}"][row]) for c in range(channels)]
    return {MEAN_INTENSITY: float(np.mean(means))} | {f"{MEAN_INTENSITY}_{c}": m for c, m in enumerate(means)}


def measure(
    data: np.ndarray,
    names: Mapping[int, str],
    geometry: Geometry,
    image: np.ndarray | None = None,
    lineage: Mapping[int, int] | None = None,
) -> list[dict[str, Any]]:
    """Rows of measurements, each a dict with exactly the columns of the labels' schema
    (:func:`schema_for` ``(geometry.axes)``) and the image's (:func:`intensity_columns`).

    Args:
        data: nD integer labels, axes as in ``geometry`` (last two: rows, cols).
        names: ``{label_id: name}``.
        geometry: axes, pixel size, origin and unit.
        image: intensities of the same shape (or plus a trailing colour axis), None: no intensity.
        lineage: a time-lapse's divisions ``{daughter label: parent label}`` (numbers ``track_id``
            exactly as the tracking exports do).

    Raises:
        ValueError: the image does not match the labels.
    """
    labels = np.asarray(data)
    if labels.dtype.kind not in "iub":
        raise TypeError(f"labels must be integers, got {labels.dtype}")
    if labels.ndim < 2:
        raise ValueError(f"labels need at least 2 dimensions, got {labels.ndim}")
    schema = schema_for(geometry.axes)
    intensity = _intensity(image, labels.shape)
    channels = _channels(intensity, labels.ndim)
    blank = dict.fromkeys([*schema.columns, *intensity_columns(channels)], "")
    unit = geometry.length_unit or "pixel"
    sy, sx = geometry.size("y"), geometry.size("x")
    oy, ox = geometry.origin("y"), geometry.origin("x")
    z_axis = geometry.index("z") if schema.volumes else None
    tracks = build_tracks(labels, lineage) if schema.frames else None
    rows: list[dict[str, Any]] = []
    for index in np.ndindex(*labels.shape[:-2]):
        table = _table(labels[index], None if intensity is None else intensity[index])
        for r, label_id in enumerate(table["label"]):
            count = int(table["area"][r])
            crow, ccol = float(table["centroid-0"][r]), float(table["centroid-1"][r])
            row: dict[str, Any] = blank | {
                "id": int(label_id),
                "name": names.get(int(label_id), ""),
                "slice": ",".join(str(i) for i in index),
                "pixel_count": count,
                "area": count * sy * sx,
                "unit": unit,
                "centroid_row": crow,
                "centroid_col": ccol,
                "centroid_y": (crow + 0.5) * sy + oy,
                "centroid_x": (ccol + 0.5) * sx + ox,
                "bbox_min_row": int(table["bbox-0"][r]),
                "bbox_min_col": int(table["bbox-1"][r]),
                "bbox_max_row": int(table["bbox-2"][r]),
                "bbox_max_col": int(table["bbox-3"][r]),
            }
            if z_axis is not None:  # the plane's place in z: its slab
                z, sz = index[z_axis], geometry.size("z")
                row |= {
                    "volume": count * sz * sy * sx,
                    "centroid_z": (z + 0.5) * sz + geometry.origin("z"),
                    "bbox_min_z": z,
                    "bbox_max_z": z + 1,
                }
            if tracks is not None:
                frame = index[0]
                row |= {"frame": frame, "track_id": tracks.frame_ids(frame).get(int(label_id), int(label_id))}
            rows.append(row | _means(table, channels, r))
    if schema.volumes:
        rows += _volume_rows(labels, names, geometry, intensity, channels, unit, blank)
    return [{k: row[k] for k in blank} for row in rows]


def _volume_rows(
    labels: np.ndarray,
    names: Mapping[int, str],
    geometry: Geometry,
    intensity: np.ndarray | None,
    channels: int,
    unit: str,
    blank: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """One row per label per (z, y, x) volume (labels whose axes end in ``zyx``)."""
    sz, sy, sx = geometry.size("z"), geometry.size("y"), geometry.size("x")
    oz, oy, ox = geometry.origin("z"), geometry.origin("y"), geometry.origin("x")
    rows = []
    for index in np.ndindex(*labels.shape[:-3]):
        table = _table(labels[index], None if intensity is None else intensity[index])
        for r, label_id in enumerate(table["label"]):
            count = int(table["area"][r])
            cz, crow, ccol = (float(table[f"centroid-{i}"][r]) for i in range(3))
            row: dict[str, Any] = dict(blank) | {
                "id": int(label_id),
                "name": names.get(int(label_id), ""),
                "slice": ",".join([*(str(i) for i in index), "all"]),
                "pixel_count": count,
                "volume": count * sz * sy * sx,
                "unit": unit,
                "centroid_row": crow,
                "centroid_col": ccol,
                "centroid_z": (cz + 0.5) * sz + oz,
                "centroid_y": (crow + 0.5) * sy + oy,
                "centroid_x": (ccol + 0.5) * sx + ox,
                "bbox_min_z": int(table["bbox-0"][r]),
                "bbox_min_row": int(table["bbox-1"][r]),
                "bbox_min_col": int(table["bbox-2"][r]),
                "bbox_max_z": int(table["bbox-3"][r]),
                "bbox_max_row": int(table["bbox-4"][r]),
                "bbox_max_col": int(table["bbox-5"][r]),
            }
            rows.append(row | _means(table, channels, r))
    return rows


def columns_for(geometry: Geometry, channels: int = 0) -> list[str]:
    """The CSV header for labels of ``geometry`` and an image of ``channels`` (0: none, 1: grey)."""
    return [*schema_for(geometry.axes).columns, *intensity_columns(channels)]


def measurements_csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """The rows as CSV text with ``columns`` (:func:`columns_for`); empty cells for n/a."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n", restval="")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.10g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def write_measurements(
    path: str | os.PathLike[str],
    data: np.ndarray,
    names: Mapping[int, str],
    geometry: Geometry,
    image: np.ndarray | None = None,
    provenance: Provenance | None = None,
    lineage: Mapping[int, int] | None = None,
) -> Path:
    """Write the measurements CSV atomically; return its path (see :func:`measure`).

    ``provenance`` goes to the sidecar ``NAME.measurements.provenance.json``
    (:func:`protocol.formats.provenance.sidecar_path`).
    """
    target = measurements_path(path)
    rows = measure(data, names, geometry, image, lineage)
    channels = _channels(_intensity(image, np.shape(data)), np.ndim(data))
    text = measurements_csv_text(rows, columns_for(geometry, channels))
    with atomic_file(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    if provenance is not None:
        write_sidecar(sidecar_path(target), provenance)
    return target
