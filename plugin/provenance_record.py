"""The provenance record of a labels layer made in the plugin: model, checkpoint, prompts per label.

Pure Python (no Qt, no napari): the export box gathers the facts (the
backend's ``info``, the newest prompts per label and slice kept by
:class:`plugin.jobs.slice_prompts.SlicePrompts`, the labels present) and
:func:`interactive_provenance` makes the record that every export writes
(:mod:`protocol.formats.provenance`). A label present without any recorded
prompt was made by hand (paint, fill, merge) or by an automatic run: it is
listed as not replayable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from plugin.view.prompts import Prompt
from protocol.formats.provenance import PromptRecord, Provenance


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
