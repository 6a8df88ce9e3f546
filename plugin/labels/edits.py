"""Delete and merge labels of a layer, as single undo steps with their names (napari models, no Qt).

The plans come from :mod:`plugin.labels.stats` (pure); the writes go
through :func:`plugin.labels.writes.write_values` (single-scale and pyramid
layers alike) inside :meth:`plugin.labels.history.LabelHistory.edit`,
so ``Ctrl+Z`` brings back the pixels *and* the names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from plugin.labels.history import LabelHistory
from plugin.labels.names import names_from_metadata
from plugin.labels.ops import dtype_max_id
from plugin.labels.pyramid import label_data
from plugin.labels.stats import LabelChange, names_after_delete, names_after_merge, plan_delete, plan_merge
from plugin.labels.writes import write_values

Where = tuple[slice, ...] | None
"""A box (one slice per layer axis) known to hold every pixel of the labels edited; None: look everywhere."""


def _plan_in(plan: Callable[..., LabelChange], data: Any, where: Where, *args: Any) -> LabelChange:
    """``plan(data, *args)`` read only inside ``where`` (its indices in the whole array)."""
    if where is None:
        return plan(data, *args)
    change = plan(np.asarray(data[where]), *args)
    indices = tuple(i + s.start for i, s in zip(change.indices, where, strict=True))
    return LabelChange(indices, change.old, change.new)


def delete_labels(history: LabelHistory, label_ids: Iterable[int], where: Where = None) -> int:
    """Set every pixel of ``label_ids`` to 0 and drop their names; returns the pixels changed.

    Args:
        where: a box holding all their pixels (e.g. from the label boxes): only it is read,
            so a delete on a 20,000² pyramid costs the labels' box, not the slide.
    """
    layer = history.layer
    ids = sorted({int(i) for i in label_ids if int(i) > 0})
    if not ids:
        return 0
    change = _plan_in(plan_delete, label_data(layer), where, ids)
    names = names_after_delete(names_from_metadata(layer.metadata), ids)
    with history.edit(names_after=names):
        if change.size:
            write_values(layer, change.indices, change.new)
    return change.size


def merge_labels(history: LabelHistory, sources: Iterable[int], target: int, where: Where = None) -> int:
    """Relabel every pixel of ``sources`` as ``target``; names follow ``names_after_merge``.

    ``where``: as for :func:`delete_labels` (a box holding every pixel of ``sources``).

    Returns:
        The pixels changed.

    Raises:
        ValueError: ``target`` is not a label id the layer's dtype can hold.
    """
    layer = history.layer
    target = int(target)
    if not 0 < target <= dtype_max_id(layer.data.dtype):
        raise ValueError(f"label {target} cannot be a merge target in a {layer.data.dtype} layer")
    ids = sorted({int(i) for i in sources if int(i) > 0} - {target})
    if not ids:
        return 0
    change = _plan_in(plan_merge, label_data(layer), where, ids, target)
    names = names_after_merge(names_from_metadata(layer.metadata), ids, target)
    with history.edit(names_after=names):
        if change.size:
            write_values(layer, change.indices, change.new)
    return change.size
