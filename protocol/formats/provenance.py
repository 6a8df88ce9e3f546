"""How a result was made: one provenance record, written in every output format's own place.

A reviewer's first question about a segmentation is which model, weights and
prompts made it. :class:`Provenance` holds the answer once:

* the model service (``sam2.1_hiera_tiny``...), its checkpoint file name and
  SHA-256 as the worker reports them in ``info`` (:func:`model_facts`; a field
  the worker does not report is ``null``);
* this project's version, the time (UTC, ISO 8601), the image's content key
  and source path;
* the operation (:data:`OPERATIONS`) and its parameters (automatic-mask
  settings, tile size and halo, refine mode...), and for automatic results the
  tile grid;
* for interactive results, per label, the prompts that made it
  (:class:`PromptRecord`: points ``(row, col)`` with polarity 1 = positive,
  0 = negative, a box ``(row_min, col_min, row_max, col_max)``, all in pixels of
  the slice, and the slice's index in the layer), and the labels made by hand
  edits (paint, merge, delete), which a replay cannot make again.

Where each format keeps it (:data:`PROVENANCE_KEY` everywhere):

======================  =====================================================
Fiji TIFF               ImageJ property ``sam2.provenance`` (JSON text)
OME-Zarr                root group attribute ``sam2.provenance``
GeoJSON                 collection member ``napari-sam2-broker.provenance``
measurements CSV        sidecar ``NAME.provenance.json``
GEFF                    ``geff.extra["sam2.provenance"]``
Cell Tracking Challenge ``provenance.json`` in the folder
======================  =====================================================

JSON only (no pickle); :func:`Provenance.from_json` validates and says what is wrong.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.runtime.atomic import atomic_file

PROVENANCE_KEY = "sam2.provenance"
"""The key (ImageJ property, zarr attribute, GEFF extra) under which the record is stored."""
FORMAT = "napari-sam2-broker provenance v1"
PACKAGE = "napari-sam2-broker"
SIDECAR_SUFFIX = ".provenance.json"
OPERATIONS = ("interactive", "auto", "tiled_auto", "concept", "tiled_concept", "propagate", "replay")
"""``interactive``: prompts per label; ``auto``/``tiled_auto``: automatic masks (parameters and tile
grid); ``concept``/``tiled_concept``: every instance of a text concept (SAM 3; the prompt, exemplar
boxes, score threshold and tile grid); ``propagate``: objects carried through a stack; ``replay``:
prompts of an earlier record re-run."""
INFO_FIELDS = {
    "model": ("model", "service"),
    "checkpoint": ("checkpoint", "checkpoint_file", "checkpoint_name"),
    "checkpoint_sha256": ("checkpoint_sha256", "sha256"),
}
"""Our field -> the ``info`` keys it may come from (first present wins)."""


class ProvenanceError(ValueError):
    """A provenance record that is not valid JSON of the expected shape."""


def project_version() -> str:
    """This project's installed version (``unknown`` when run from a tree that is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        return "unknown"


def utc_now() -> str:
    """The time now, UTC, ISO 8601 to the second (``2026-12-06T21:40:00Z``)."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def model_facts(info: Mapping[str, Any] | None) -> dict[str, str | None]:
    """``model``, ``checkpoint`` (file name only) and ``checkpoint_sha256`` from a worker's ``info``.

    A field the worker does not report is None.
    """
    facts: dict[str, str | None] = {}
    for ours, keys in INFO_FIELDS.items():
        value = next((info[k] for k in keys if info and isinstance(info.get(k), str) and info[k]), None)
        facts[ours] = value
    if facts["checkpoint"]:
        facts["checkpoint"] = Path(str(facts["checkpoint"])).name
    return facts


def tile_grid_record(
    tile_size: int, halo: int, grid_shape: tuple[int, int], slice_shape: tuple[int, int]
) -> dict[str, Any]:
    """The ``tile_grid`` of an automatic result: tile side and halo (pixels), the grid's rows and
    cols, and the (H, W) of the slice it covers."""
    rows, cols = grid_shape
    return {
        "tile": int(tile_size),
        "halo": int(halo),
        "rows": int(rows),
        "cols": int(cols),
        "slice_shape": [int(n) for n in slice_shape],
    }


@dataclass(frozen=True)
class PromptRecord:
    """One prompt that made or refined a label on one slice (wire coordinates, slice pixels).

    Attributes:
        slice: the layer index of the slice (None on the two displayed axes), e.g. ``(3, None, None)``.
        points: ``(row, col)`` per point.
        point_labels: 1 (positive) or 0 (negative) per point.
        box: ``(row_min, col_min, row_max, col_max)`` or None.
    """

    slice: tuple[int | None, ...]
    points: tuple[tuple[float, float], ...] = ()
    point_labels: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "slice": list(self.slice),
            "points": [list(p) for p in self.points],
            "point_labels": list(self.point_labels),
            "box": None if self.box is None else list(self.box),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> PromptRecord:
        if not isinstance(data, Mapping):
            raise ProvenanceError(f"{where}: a prompt must be an object")
        index = data.get("slice")
        if not isinstance(index, list) or not all(i is None or _is_int(i) for i in index):
            raise ProvenanceError(f"{where}.slice: a list of integers or null")
        points = data.get("points", [])
        if not isinstance(points, list) or not all(_numbers(p, 2) for p in points):
            raise ProvenanceError(f"{where}.points: a list of [row, col]")
        labels = data.get("point_labels", [])
        if not isinstance(labels, list) or len(labels) != len(points) or any(v not in (0, 1) for v in labels):
            raise ProvenanceError(f"{where}.point_labels: one 0 or 1 per point")
        box = data.get("box")
        if box is not None and not _numbers(box, 4):
            raise ProvenanceError(f"{where}.box: [row_min, col_min, row_max, col_max] or null")
        if not points and box is None:
            raise ProvenanceError(f"{where}: a prompt needs points or a box")
        return cls(
            tuple(None if i is None else int(i) for i in index),
            tuple((float(r), float(c)) for r, c in points),
            tuple(int(v) for v in labels),
            None if box is None else (float(box[0]), float(box[1]), float(box[2]), float(box[3])),
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _numbers(value: Any, n: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == n
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    )


@dataclass(frozen=True)
class Provenance:
    """How one result was made (see the module docstring for where each format keeps it).

    Attributes:
        operation: one of :data:`OPERATIONS`.
        model: the model service name; None when unknown.
        checkpoint: the checkpoint's file name as the worker reports it; None when not reported.
        checkpoint_sha256: its SHA-256 (hex) as the worker reports it; None when not reported.
        project_version: this project's version when the result was made.
        created: UTC time, ISO 8601.
        image_key: the content key of the image (:mod:`protocol.wire.image_key`); None when unknown.
        source_path: the image's file, None when it came from memory.
        parameters: the operation's parameters (JSON values).
        tile_grid: automatic results: ``{"tile": .., "halo": .., "rows": .., "cols": ..}``; else None.
        prompts: interactive results: ``{label_id: prompts that made it, oldest first}``.
        not_replayable: label ids made or changed by hand edits (paint, merge, delete).
    """

    operation: str
    model: str | None = None
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    project_version: str = field(default_factory=project_version)
    created: str = field(default_factory=utc_now)
    image_key: str | None = None
    source_path: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    tile_grid: Mapping[str, Any] | None = None
    prompts: Mapping[int, tuple[PromptRecord, ...]] = field(default_factory=dict)
    not_replayable: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise ProvenanceError(f"operation {self.operation!r}: one of {', '.join(OPERATIONS)}")
        try:
            json.dumps(dict(self.parameters), allow_nan=False)
            json.dumps(self.tile_grid, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ProvenanceError(f"parameters and tile grid must be JSON values: {e}") from e

    @classmethod
    def from_info(cls, operation: str, info: Mapping[str, Any] | None, **kwargs: Any) -> Provenance:
        """A record with the model facts of a worker's ``info`` (:func:`model_facts`) and ``kwargs``."""
        facts = model_facts(info)
        return cls(
            operation,
            facts["model"],
            facts["checkpoint"],
            facts["checkpoint_sha256"],
            **kwargs,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "operation": self.operation,
            "model": self.model,
            "checkpoint": self.checkpoint,
            "checkpoint_sha256": self.checkpoint_sha256,
            "project_version": self.project_version,
            "created": self.created,
            "image_key": self.image_key,
            "source_path": self.source_path,
            "parameters": dict(self.parameters),
            "tile_grid": None if self.tile_grid is None else dict(self.tile_grid),
            "prompts": {str(k): [p.to_dict() for p in v] for k, v in sorted(self.prompts.items())},
            "not_replayable": sorted(int(i) for i in self.not_replayable),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Any) -> Provenance:
        """Validate and build a record; :class:`ProvenanceError` says which field is wrong."""
        if not isinstance(data, Mapping):
            raise ProvenanceError("provenance must be a JSON object")
        if data.get("format") != FORMAT:
            raise ProvenanceError(f"format {data.get('format')!r}: expected {FORMAT!r}")
        text = {
            k: data.get(k) for k in ("model", "checkpoint", "checkpoint_sha256", "image_key", "source_path")
        }
        for key, value in text.items():
            if value is not None and not isinstance(value, str):
                raise ProvenanceError(f"{key}: text or null")
        for key in ("operation", "project_version", "created"):
            if not isinstance(data.get(key), str):
                raise ProvenanceError(f"{key}: text")
        parameters, grid = data.get("parameters", {}), data.get("tile_grid")
        if not isinstance(parameters, Mapping) or (grid is not None and not isinstance(grid, Mapping)):
            raise ProvenanceError("parameters and tile_grid: objects")
        prompts_in = data.get("prompts", {})
        if not isinstance(prompts_in, Mapping):
            raise ProvenanceError("prompts: an object {label id: [prompt, ...]}")
        prompts: dict[int, tuple[PromptRecord, ...]] = {}
        for key, records in prompts_in.items():
            if not str(key).isdigit() or int(key) == 0 or not isinstance(records, list):
                raise ProvenanceError(f"prompts.{key}: a positive label id with a list of prompts")
            prompts[int(key)] = tuple(
                PromptRecord.from_dict(r, f"prompts.{key}[{i}]") for i, r in enumerate(records)
            )
        hand = data.get("not_replayable", [])
        if not isinstance(hand, list) or not all(_is_int(i) for i in hand):
            raise ProvenanceError("not_replayable: a list of label ids")
        return cls(
            operation=data["operation"],
            project_version=data["project_version"],
            created=data["created"],
            parameters=dict(parameters),
            tile_grid=None if grid is None else dict(grid),
            prompts=prompts,
            not_replayable=tuple(int(i) for i in hand),
            **text,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Provenance:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ProvenanceError(f"provenance is not JSON: {e}") from e
        return cls.from_dict(data)


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """``NAME.provenance.json`` beside ``NAME.ext``.

    ``cells.measurements.csv`` -> ``cells.measurements.provenance.json``.
    """
    p = Path(path)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return p.with_name(stem + SIDECAR_SUFFIX)


def write_sidecar(path: str | os.PathLike[str], provenance: Provenance) -> Path:
    """Write ``provenance`` as JSON at ``path`` atomically; return ``path``."""
    target = Path(path)
    with atomic_file(target) as tmp:
        tmp.write_text(json.dumps(provenance.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return target


def read_sidecar(path: str | os.PathLike[str]) -> Provenance:
    """The record in a JSON file written by :func:`write_sidecar`."""
    return Provenance.from_json(Path(path).read_text(encoding="utf-8"))


def prompt_records(
    entries: Sequence[
        tuple[Sequence[int | None], Sequence[Sequence[float]], Sequence[int], Sequence[float] | None]
    ],
) -> tuple[PromptRecord, ...]:
    """Records from ``(slice, points (row, col), point_labels, box)`` tuples."""
    return tuple(
        PromptRecord(
            tuple(None if i is None else int(i) for i in index),
            tuple((float(p[0]), float(p[1])) for p in points),
            tuple(int(v) for v in labels),
            None if box is None else (float(box[0]), float(box[1]), float(box[2]), float(box[3])),
        )
        for index, points, labels, box in entries
    )
