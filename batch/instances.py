"""The per-instance table of ``sam2-batch --concept``: ``<stem>_labels.instances.csv`` beside each label file.

One row per instance and slice, sorted by slice then id, with the columns
:data:`INSTANCE_COLUMNS`::

    id, slice, score, prompt, pixel_count, area, unit, bbox_min_row, bbox_min_col, bbox_max_row, bbox_max_col

``id`` is the instance's label id in the label file (after stitching tiles and
linking slices: a linked instance has one row per slice it is on);
``slice`` its slice's index in the flattened stack as in ``summary.csv``
("" for a single image); ``score`` the worker's score (an instance stitched
from pieces of several tiles keeps the highest, :class:`protocol.geometry.stitch.TileStitcher`);
``prompt`` the concept's text. The other columns mean what they mean in the
plugin's measurements (:mod:`protocol.formats.measure`): ``pixel_count`` in
pixels; ``area`` in ``unit``² (the input's pixel size; ``unit`` is ``pixel``
for an uncalibrated input, and then ``area`` equals ``pixel_count``); the
bounding box in level-0 pixel indices (row, col), its max exclusive.

The scores also go into the label file's metadata under ``concept_scores``
(``{label id: score}``, the key of the plugin's Find all layers; see
:func:`batch.outputs.write_output` for which formats hold it).

The table is computed from the labels as written (band by band: a label image
on disk is never read whole), written atomically after the label file, with
the run's provenance record in ``<stem>_labels.instances.provenance.json``
(operation, prompt, threshold, model, tile grid). An input counts as done
only when both its label file and its table exist, so a run stopped between
the two redoes that input: a table always describes the labels beside it.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from batch.outputs import OUTPUT_FORMATS
from protocol.formats.labels_file import SCORES_KEY
from protocol.formats.measure import BOX_2D
from protocol.formats.provenance import sidecar_path, write_sidecar
from protocol.runtime.atomic import atomic_file

if TYPE_CHECKING:
    from protocol.formats.geometry import Geometry
    from protocol.formats.provenance import Provenance

INSTANCES_SUFFIX = ".instances.csv"
INSTANCE_COLUMNS = ("id", "slice", "score", "prompt", "pixel_count", "area", "unit", *BOX_2D)
"""The table's header (see the module docstring)."""
BAND_PIXELS = 1 << 22
"""Pixels of labels read at once while measuring."""


def instances_path(label_path: Path) -> Path:
    """The table beside a label file: ``a_labels.tif`` (or ``.ome.zarr``, ``.geojson``) ->
    ``a_labels.instances.csv``."""
    name = label_path.name
    for suffix in OUTPUT_FORMATS.values():
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return label_path.with_name(name + INSTANCES_SUFFIX)


def plane_instances(plane: Any, band_pixels: int = BAND_PIXELS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every label of an (H, W) label plane: its pixel count and bounding box, read band by band.

    Args:
        plane: (H, W) integer labels (numpy, zarr or on-disk array-like), 0 = background.

    Returns:
        ``ids`` uint64 (m,) sorted; ``counts`` int64 (m,); ``boxes`` int64 (m, 4)
        ``(min_row, min_col, max_row, max_col)``, max exclusive.
    """
    height, width = int(plane.shape[0]), int(plane.shape[1])
    band_rows = max(1, band_pixels // max(1, width))
    parts: list[tuple[np.ndarray, ...]] = []
    for top in range(0, height, band_rows):
        flat = np.asarray(plane[top : top + band_rows]).ravel()
        where = np.flatnonzero(flat)
        if not where.size:
            continue
        values = flat[where].astype(np.uint64)
        order = np.argsort(values, kind="stable")  # within an id, pixels stay in raster order
        values, where = values[order], where[order]
        starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
        ends = np.r_[starts[1:], values.size]
        rows, cols = where // width + top, where % width
        parts.append(
            (
                values[starts],
                ends - starts,
                rows[starts],
                np.minimum.reduceat(cols, starts),
                rows[ends - 1] + 1,
                np.maximum.reduceat(cols, starts) + 1,
            )
        )
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return np.zeros(0, dtype=np.uint64), empty, np.zeros((0, 4), dtype=np.int64)
    ids, counts, r0, c0, r1, c1 = (np.concatenate(column) for column in zip(*parts, strict=True))
    unique, inverse = np.unique(ids, return_inverse=True)
    total = np.zeros(unique.size, dtype=np.int64)
    np.add.at(total, inverse, counts)
    boxes = np.empty((unique.size, 4), dtype=np.int64)
    boxes[:, 0], boxes[:, 1] = np.iinfo(np.int64).max, np.iinfo(np.int64).max
    boxes[:, 2], boxes[:, 3] = -1, -1
    for column, values, reduce in (
        (0, r0, np.minimum),
        (1, c0, np.minimum),
        (2, r1, np.maximum),
        (3, c1, np.maximum),
    ):
        reduce.at(boxes[:, column], inverse, values)
    return unique, total, boxes


def instance_rows(
    plane: Any,
    slice_name: str,
    scores: Mapping[int, float],
    prompt: str,
    geometry: Geometry | None = None,
) -> list[dict[str, Any]]:
    """The table's rows for one slice's labels (H, W), with each id's score from ``scores``
    (an id without one gets an empty cell); ``geometry``: the input's pixel size (None: pixels)."""
    unit = geometry.length_unit if geometry is not None else None
    pixel_area = geometry.size("y") * geometry.size("x") if geometry is not None and unit else 1.0
    ids, counts, boxes = plane_instances(plane)
    rows = []
    for label_id, count, box in zip(ids.tolist(), counts.tolist(), boxes.tolist(), strict=True):
        score = scores.get(int(label_id))
        rows.append(
            {
                "id": int(label_id),
                "slice": slice_name,
                "score": "" if score is None else f"{score:.6g}",
                "prompt": prompt,
                "pixel_count": count,
                "area": f"{count * pixel_area:.10g}",
                "unit": unit or "pixel",
                **dict(zip(BOX_2D, box, strict=True)),
            }
        )
    return rows


def stack_rows(
    stack: Any,
    slice_names: Sequence[str],
    scores: Sequence[Mapping[int, float]],
    prompt: str,
    geometry: Geometry | None = None,
) -> list[dict[str, Any]]:
    """The rows of every slice of an (N, H, W) label stack (``scores[n]``: slice ``n``'s ``{id: score}``)."""
    rows: list[dict[str, Any]] = []
    for index, name in enumerate(slice_names):
        plane_scores = scores[index] if index < len(scores) else {}
        rows += instance_rows(stack[index], name, plane_scores, prompt, geometry)
    return rows


def scores_metadata(scores: Iterable[Mapping[int, float]]) -> dict[str, Any]:
    """The label file's metadata of a concept run: ``{SCORES_KEY: {"label_id": score}}``, where the
    plugin's Find all keeps them (:data:`protocol.formats.labels_file.SCORES_KEY`); an id on several
    linked slices keeps its highest score."""
    best: dict[int, float] = {}
    for plane in scores:
        for label_id, score in plane.items():
            best[label_id] = max(score, best.get(label_id, score))
    return {SCORES_KEY: {str(label_id): round(score, 4) for label_id, score in sorted(best.items())}}


def write_instances(
    path: Path, rows: Iterable[Mapping[str, Any]], provenance: Provenance | None = None
) -> None:
    """Write the table atomically at ``path``, then its provenance sidecar (when given)."""
    with atomic_file(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(INSTANCE_COLUMNS), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    if provenance is not None:
        write_sidecar(sidecar_path(path), provenance)
