"""Measurements per label and slice, computed with ``skimage.measure.regionprops_table``.

One row per label on each 2D plane (``slice`` = the plane's index along the
leading axes, ``"3"`` or ``"0,3"``; empty for a 2D image) with its pixel
count, area in physical units, centroid, bounding box and mean intensity of
the image. A stack with a z axis also gets one ``volume`` row per label (per
time point): ``slice`` ``"all"`` (or ``"0,all"``), voxel count, volume,
3D centroid and z extent.

Coordinates: ``centroid_row``/``centroid_col`` and the bounding box are pixel
indices (the box's max is exclusive); ``centroid_y``/``centroid_x``/``centroid_z``
are physical, with the image's top-left corner at the layer's translate (the
ImageJ and QuPath convention, as in the TIFF and GeoJSON exports). ``unit``
names the length unit (``pixel`` when unknown); area is in unit², volume in unit³.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from protocol.formats.geometry import Geometry
from protocol.formats.provenance import Provenance, sidecar_path, write_sidecar
from protocol.runtime.atomic import atomic_file

MEASUREMENTS_SUFFIX = ".measurements.csv"
BASE_COLUMNS = [
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
]


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


def _intensity_columns(image: np.ndarray | None, labels_ndim: int) -> list[str]:
    if image is None:
        return []
    if image.ndim == labels_ndim:
        return ["mean_intensity"]
    return [f"mean_intensity_{c}" for c in range(image.shape[-1])]


def _table(labels: np.ndarray, image: np.ndarray | None) -> dict[str, np.ndarray]:
    from skimage.measure import regionprops_table

    properties = ["label", "area", "centroid", "bbox"] + (["intensity_mean"] if image is not None else [])
    return regionprops_table(labels, intensity_image=image, properties=properties)


def _means(table: Mapping[str, np.ndarray], columns: list[str], row: int) -> dict[str, float]:
    if columns == ["mean_intensity"]:
        return {"mean_intensity": float(table["intensity_mean"][row])}
    return {c: float(table[f"intensity_mean-{i}"][row]) for i, c in enumerate(columns)}


def measure(
    data: np.ndarray,
    names: Mapping[int, str],
    geometry: Geometry,
    image: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Rows of measurements (dicts keyed by :data:`BASE_COLUMNS` + mean intensity columns).

    Args:
        data: nD integer labels, axes as in ``geometry`` (last two: rows, cols).
        names: ``{label_id: name}``.
        geometry: pixel size, origin and unit.
        image: intensities of the same shape (or plus a trailing colour axis), None: no intensity.

    Raises:
        ValueError: the image does not match the labels.
    """
    labels = np.asarray(data)
    if labels.dtype.kind not in "iub":
        raise TypeError(f"labels must be integers, got {labels.dtype}")
    if labels.ndim < 2:
        raise ValueError(f"labels need at least 2 dimensions, got {labels.ndim}")
    intensity = _intensity(image, labels.shape)
    mean_columns = _intensity_columns(intensity, labels.ndim)
    unit = geometry.length_unit or "pixel"
    sy, sx = geometry.size("y"), geometry.size("x")
    oy, ox = geometry.origin("y"), geometry.origin("x")
    rows: list[dict[str, Any]] = []
    for index in np.ndindex(*labels.shape[:-2]):
        table = _table(labels[index], None if intensity is None else intensity[index])
        for r, label_id in enumerate(table["label"]):
            count = int(table["area"][r])
            crow, ccol = float(table["centroid-0"][r]), float(table["centroid-1"][r])
            row: dict[str, Any] = {
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
            row.update(_means(table, mean_columns, r))
            rows.append(row)
    rows += _volume_rows(labels, names, geometry, intensity, mean_columns, unit)
    return rows


def _volume_rows(
    labels: np.ndarray,
    names: Mapping[int, str],
    geometry: Geometry,
    intensity: np.ndarray | None,
    mean_columns: list[str],
    unit: str,
) -> list[dict[str, Any]]:
    """One row per label per (z, y, x) volume, when the labels have a z axis just before y, x."""
    if labels.ndim < 3 or geometry.axes[-3:] != "zyx":
        return []
    sz, sy, sx = geometry.size("z"), geometry.size("y"), geometry.size("x")
    oz, oy, ox = geometry.origin("z"), geometry.origin("y"), geometry.origin("x")
    rows = []
    for index in np.ndindex(*labels.shape[:-3]):
        table = _table(labels[index], None if intensity is None else intensity[index])
        for r, label_id in enumerate(table["label"]):
            count = int(table["area"][r])
            cz, crow, ccol = (float(table[f"centroid-{i}"][r]) for i in range(3))
            row: dict[str, Any] = {
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
            row.update(_means(table, mean_columns, r))
            rows.append(row)
    return rows


def measurements_csv_text(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV text: :data:`BASE_COLUMNS` then any mean intensity columns; empty cells for n/a."""
    extra = sorted({k for row in rows for k in row if k not in BASE_COLUMNS})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=BASE_COLUMNS + extra, lineterminator="\n", restval="")
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
) -> Path:
    """Write the measurements CSV atomically; return its path (see :func:`measure`).

    ``provenance`` goes to the sidecar ``NAME.measurements.provenance.json``
    (:func:`protocol.formats.provenance.sidecar_path`).
    """
    target = measurements_path(path)
    text = measurements_csv_text(measure(data, names, geometry, image))
    with atomic_file(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    if provenance is not None:
        write_sidecar(sidecar_path(target), provenance)
    return target
