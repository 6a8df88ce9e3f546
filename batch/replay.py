"""``sam2-batch --replay FILE IMAGE``: redo an annotation from its provenance record.

The record written with every export (:mod:`protocol.formats.provenance`)
holds, per label, the newest prompt on each slice (points ``(row, col)`` with
polarity, box) and the contrast limits the image was shown with. Replay sends
each of those prompts again, to the model chosen now (the same one, or better
weights), on IMAGE, and writes the new labels (``NAME_replay`` in ``--format``)
with a ``replay`` record of their own.

Each prompt is sent as the plugin sent it: a slice no larger than the
model's input whole (``segment``), a larger one as a window around the prompt
(``segment_windowed``); the mask is written with the label's id on that slice,
labels in id order, prompts oldest first. With the same model and weights the
labels made by one prompt per slice come back exactly; a label refined with
the previous answer's logits (several clicks in a row) comes back from its
newest points alone. Labels made by hand edits (paint, fill, merge) are listed
as not replayable (logged, and kept in the new record); they are not in the output.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from batch.inputs import input_geometry, read_image
from batch.outputs import output_path, write_output
from batch.provenance import service_info
from protocol.formats.provenance import PromptRecord, Provenance
from protocol.formats.provenance_files import read_provenance
from protocol.geometry.windows import MODEL_INPUT
from protocol.ops.requests import segment
from protocol.ops.windowed import segment_windowed
from protocol.wire.client import ClientConfig, SamClient
from protocol.wire.wire_image import to_wire

log = logging.getLogger(__name__)
REPLAY_SUFFIX = "_replay"


class ReplayError(ValueError):
    """The record cannot be replayed on this image (no prompts, slices that do not fit...)."""


@dataclass(frozen=True)
class ReplayReport:
    """What a replay did.

    Attributes:
        output: the label file written.
        labels: label ids made again from their prompts.
        not_replayable: label ids made by hand edits (listed in the record, not in the output).
        requests: prompts sent.
    """

    output: Path
    labels: tuple[int, ...]
    not_replayable: tuple[int, ...]
    requests: int


def load_record(path: Path) -> Provenance:
    """The record stored with ``path`` (any output we write, or its ``.provenance.json``).

    Raises:
        ReplayError: the file has no record, or a record without prompts (an automatic result).
    """
    record = read_provenance(path)
    if record is None:
        raise ReplayError(f"{path} holds no provenance record (was it written by this plugin or sam2-batch?)")
    if not record.prompts:
        raise ReplayError(
            f"{path}: the record ({record.operation}) has no prompts to replay"
            + (f"; labels {list(record.not_replayable)} were made by hand" if record.not_replayable else "")
        )
    return record


def flat_slice(prompt: PromptRecord, label_shape: tuple[int, ...]) -> int:
    """The index in the input's flattened slices of the slice a prompt was made on.

    Raises:
        ReplayError: the prompt's slice has another number of axes, is not in the last two, or is outside.
    """
    index = prompt.slice
    if len(index) != len(label_shape) or index[-2:] != (None, None) or None in index[:-2]:
        raise ReplayError(
            f"a prompt on slice {list(index)} does not fit an image of shape {label_shape} "
            "(replay takes prompts on slices of the last two axes)"
        )
    leading = tuple(int(i) for i in index[:-2] if i is not None)
    if any(not 0 <= i < n for i, n in zip(leading, label_shape[:-2], strict=True)):
        raise ReplayError(f"slice {list(index)} is outside the image's {label_shape}")
    return int(np.ravel_multi_index(leading, label_shape[:-2])) if leading else 0


def replay(
    record_path: Path,
    image_path: Path,
    out_dir: Path,
    broker: str,
    model: str,
    output_format: str = "tiff",
    timeout_s: float = 600.0,
) -> ReplayReport:
    """Re-run the prompts of ``record_path``'s record on ``image_path`` with ``model``; write the labels.

    Raises:
        ReplayError: no record or prompts, or prompts that do not fit the image.
        ReadError: the image cannot be read.
        ClientError, RemoteError, AnswerError: a request failed (nothing is written).
    """
    record = load_record(record_path)
    image = read_image(image_path)
    shape = image.label_shape
    plan = [(i, flat_slice(p, shape), p) for i in sorted(record.prompts) for p in record.prompts[i]]
    limits_value = record.parameters.get("contrast_limits")
    limits = (float(limits_value[0]), float(limits_value[1])) if limits_value else None
    labels = np.zeros((image.slices.shape[0], *shape[-2:]), np.uint32)
    config = ClientConfig(timeout_s=timeout_s, retries=1)
    with SamClient(broker, model, config=config) as client:
        for label_id, n, prompt in plan:
            source = image.slices[n]
            if max(source.shape[:2]) <= MODEL_INPUT:
                wire = to_wire(source, limits)
                answer = segment(client, wire, prompt.points, prompt.point_labels, prompt.box)
                labels[n][answer.mask] = label_id
            else:
                windowed = segment_windowed(
                    client, source, prompt.points, prompt.point_labels, prompt.box, contrast_limits=limits
                )
                (r0, c0), (h, w) = windowed.offset, windowed.mask.shape
                labels[n, r0 : r0 + h, c0 : c0 + w][windowed.mask] = label_id
    worker_info = service_info(broker, model)
    new_record = Provenance.from_info(
        "replay",
        {"model": model, **worker_info},
        source_path=str(image_path),
        parameters={**record.parameters, "replayed_from": str(record_path), "replayed_model": record.model},
        prompts=record.prompts,
        not_replayable=record.not_replayable,
    )
    stem = image_path.name.split(".")[0]
    output = output_path(out_dir / f"{stem}{REPLAY_SUFFIX}.tif", output_format)
    geometry = input_geometry(image_path, len(shape))
    write_output(output, labels.reshape(shape), output_format, geometry, provenance=new_record)
    if record.not_replayable:
        log.warning("not replayable (made by hand edits): labels %s", list(record.not_replayable))
    return ReplayReport(output, tuple(sorted(record.prompts)), record.not_replayable, len(plan))
