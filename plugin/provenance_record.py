"""The provenance record of a labels layer made in the plugin: model, checkpoint, prompts per label.

Pure Python (no Qt, no napari): the export box gathers the facts (the
backend's ``info``, the newest prompts per label and slice kept by
:class:`plugin.jobs.slice_prompts.SlicePrompts`, the labels present) and
:func:`interactive_provenance` makes the record that every export writes
(:mod:`protocol.formats.provenance`). A label present without any recorded
prompt was made by hand (paint, fill, merge) or by an automatic run: it is
listed as not replayable.

A layer written by AUTO-SEGMENT, AUTO-SEGMENT STACK or Find all (``concept``) carries how it was
made in its metadata (:data:`AUTO_RUN_KEY`, set by the job: :func:`auto_run_metadata`); its record
(:func:`automatic_provenance`) holds the automatic-mask parameters
(:class:`protocol.wire.automask.AutoMaskParams` and the plugin's own: minimum area, linking) and
the tile grid (tile side, halo, rows, cols) instead of prompts per label.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from plugin.view.prompts import Prompt
from protocol.formats.provenance import PromptRecord, Provenance, tile_grid_record

AUTO_RUN_KEY = "sam2_auto_run"
"""Layer metadata of an automatic run: ``{"operation": "auto" | "tiled_auto" | "concept" |
"tiled_concept", "parameters": {...}, "tile_grid": {...} | None}``."""
AUTOMATIC_OPS = ("auto", "tiled_auto", "concept", "tiled_concept")


def auto_run_metadata(
    parameters: Mapping[str, Any],
    tiles: tuple[int, int, tuple[int, int], tuple[int, int]] | None = None,
    op: str = "auto",
) -> dict[str, Any]:
    """The metadata entry of an automatic run.

    Args:
        parameters: the request's params and the plugin's settings (JSON values).
        tiles: ``(tile_size, halo, (rows, cols), (H, W) of the slice)`` when the slice was tiled, else None.
        op: ``auto`` (AUTO-SEGMENT) or ``concept`` (Find all); a tiled run is ``tiled_<op>``.
    """
    grid = None if tiles is None else tile_grid_record(*tiles)
    return {
        "operation": op if grid is None else f"tiled_{op}",
        "parameters": dict(parameters),
        "tile_grid": grid,
    }


def auto_run_of(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The automatic run recorded in a layer's metadata (None: none, or malformed)."""
    found = (metadata or {}).get(AUTO_RUN_KEY)
    if not isinstance(found, Mapping) or found.get("operation") not in AUTOMATIC_OPS:
        return None
    parameters, grid = found.get("parameters"), found.get("tile_grid")
    if not isinstance(parameters, Mapping) or not (grid is None or isinstance(grid, Mapping)):
        return None
    return {"operation": found["operation"], "parameters": dict(parameters), "tile_grid": grid}


def automatic_provenance(
    label_ids: Iterable[int],
    run: Mapping[str, Any],
    *,
    model: str | None,
    info: Mapping[str, Any] | None = None,
    image_key: str | None = None,
    source_path: str | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> Provenance:
    """The record of a layer made by an automatic run (``run``: :func:`auto_run_of`): its parameters
    and tile grid, no prompts; every label is listed as not replayable from prompts."""
    facts = {**({"model": model} if model else {}), **dict(info or {})}
    return Provenance.from_info(
        str(run["operation"]),
        facts,
        image_key=image_key,
        source_path=source_path,
        parameters={**dict(parameters or {}), **dict(run["parameters"])},
        tile_grid=None if run.get("tile_grid") is None else dict(run["tile_grid"]),
        not_replayable=tuple(sorted({int(i) for i in label_ids} - {0})),
    )


def prompt_record(prompt: Prompt) -> PromptRecord:
    """A prompt (slice pixels, (row, col)) as it is recorded: the slice's layer index, points, box."""
    return PromptRecord(prompt.plane.index, prompt.points, prompt.point_labels, prompt.box)


def interactive_provenance(
    label_ids: Iterable[int],
    prompts: Mapping[int, Sequence[Prompt]],
    *,
    model: str | None,
    info: Mapping[str, Any] | None = None,
    image_key: str | None = None,
    source_path: str | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> Provenance:
    """The record of a labels layer.

    Args:
        label_ids: the labels present in the layer (0 ignored).
        prompts: ``{label_id: its newest prompt per slice, oldest first}``.
        model: the chosen model service (used when ``info`` does not name one).
        info: the backend's ``info`` result (checkpoint file name and SHA-256 when the worker says).
        image_key, source_path: the image the labels were made on, when known.
        parameters: the operation's settings (refine mode...).
    """
    present = sorted({int(i) for i in label_ids} - {0})
    records = {
        label_id: tuple(prompt_record(p) for p in prompts.get(label_id, ()) if not p.empty)
        for label_id in present
    }
    records = {label_id: found for label_id, found in records.items() if found}
    facts = {**({"model": model} if model else {}), **dict(info or {})}
    return Provenance.from_info(
        "interactive",
        facts,
        image_key=image_key,
        source_path=source_path,
        parameters=dict(parameters or {}),
        prompts=records,
        not_replayable=tuple(i for i in present if i not in records),
    )
