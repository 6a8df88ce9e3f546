"""Track corrections on a time-lapse labels layer (axis 0 is time), each one undo step.

* :func:`break_track`: label ``a`` from frame ``t`` on becomes a new id (its daughters follow it);
* :func:`link_tracks`: label ``b`` becomes ``a`` (one track; refused when both are on one frame);
* :func:`swap_tracks`: from frame ``t`` on, ``a`` and ``b`` trade ids (a tracker's identity switch);
* :func:`divide`: ``parent`` ends before frame ``t``, ``daughters`` are its children;
* :func:`record_division`: ``daughters`` are the children of ``parent`` in the lineage.

Pixels go through ``layer.data_setitem`` inside :meth:`plugin.labels.history.LabelHistory.edit`
and the lineage (:mod:`plugin.labels.lineage`, the layer's metadata) is set with them
(``metadata_after``): one step, ``Ctrl+Z`` undoes pixels and lineage together, redo redoes both.
:func:`record_division` alone changes no pixel, so it is no undo step (record it again to change it).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from plugin.labels.history import LabelHistory
from plugin.labels.lineage import LINEAGE_KEY, lineage_from_metadata, lineage_metadata
from plugin.labels.ops import dtype_max_id


def _frames_of(data: np.ndarray, label_id: int) -> set[int]:
    return {t for t in range(data.shape[0]) if (np.asarray(data[t]) == label_id).any()}


def _write(
    history: LabelHistory,
    writes: list[tuple[tuple[np.ndarray, ...], int]],
    lineage: dict[int, int] | None = None,
) -> int:
    """Write the pixels as one undo step; ``lineage`` (None: unchanged) is set with it."""
    after = None if lineage is None else {LINEAGE_KEY: lineage_metadata(lineage) or None}
    with history.edit(metadata_after=after):
        for indices, value in writes:
            if indices[0].size:
                history.layer.data_setitem(indices, value)
    return sum(int(indices[0].size) for indices, _ in writes)


def _pixels_from(data: np.ndarray, label_id: int, frame: int) -> tuple[np.ndarray, ...]:
    found = np.nonzero(np.asarray(data[frame:]) == label_id)
    return (found[0] + frame, *found[1:])


def _set_lineage(history: LabelHistory, lineage: dict[int, int]) -> None:
    history.layer.metadata = {**history.layer.metadata, LINEAGE_KEY: lineage_metadata(lineage)}


def _check_time_lapse(data: np.ndarray) -> None:
    if data.ndim not in (3, 4):
        raise ValueError(f"track corrections need a time-lapse (t, [z,] y, x), got shape {data.shape}")


def break_track(history: LabelHistory, label_id: int, frame: int, new_id: int) -> int:
    """From ``frame`` on, ``label_id`` becomes ``new_id`` (a new track); returns the pixels changed.

    Raises:
        ValueError: not a time-lapse, ``new_id`` already used or too large, or nothing to break.
    """
    data = history.layer.data
    _check_time_lapse(data)
    if not 0 < new_id <= dtype_max_id(data.dtype) or (np.asarray(data) == new_id).any():
        raise ValueError(f"label {new_id} is in use or out of range: choose a new id")
    pixels = _pixels_from(data, label_id, frame)
    if not pixels[0].size:
        raise ValueError(f"label {label_id} is not on frame {frame} or later")
    lineage = lineage_from_metadata(history.layer.metadata)
    lineage = {d: (new_id if p == label_id else p) for d, p in lineage.items()}
    return _write(history, [(pixels, new_id)], lineage)


def link_tracks(history: LabelHistory, keep: int, other: int) -> int:
    """``other`` becomes ``keep`` (one track, one id); returns the pixels changed.

    Raises:
        ValueError: the two are on a common frame (linking would merge two objects), or the same id.
    """
    data = history.layer.data
    _check_time_lapse(data)
    if keep == other:
        raise ValueError("link two different tracks")
    common = sorted(_frames_of(data, keep) & _frames_of(data, other))
    if common:
        raise ValueError(f"labels {keep} and {other} are both on frames {common[:5]}: not one track")
    lineage = lineage_from_metadata(history.layer.metadata)
    other_parent = lineage.pop(other, None)
    if other_parent is not None:
        lineage.setdefault(keep, other_parent)  # the linked track's parent, unless keep has one
    lineage = {d: (keep if p == other else p) for d, p in lineage.items()}
    return _write(
        history, [(np.nonzero(np.asarray(data) == other), keep)], {d: p for d, p in lineage.items() if d != p}
    )


def swap_tracks(history: LabelHistory, a: int, b: int, frame: int) -> int:
    """From ``frame`` on, ``a`` and ``b`` trade ids; returns the pixels changed (one undo step)."""
    data = history.layer.data
    _check_time_lapse(data)
    if a == b:
        raise ValueError("swap two different tracks")
    pixels_a, pixels_b = _pixels_from(data, a, frame), _pixels_from(data, b, frame)
    return _write(history, [(pixels_a, b), (pixels_b, a)])


def divide(history: LabelHistory, parent: int, daughters: Iterable[int], frame: int) -> int:
    """``daughters`` divide from ``parent`` at ``frame``: the parent's pixels from ``frame`` on are
    cleared (its track ends on ``frame - 1``) and the lineage records the division: one undo step
    (when no pixel of the parent is left to clear, only the lineage is recorded: no undo step).

    Returns the pixels cleared.
    """
    data = history.layer.data
    _check_time_lapse(data)
    pixels = _pixels_from(data, parent, frame)
    if not pixels[0].size:
        record_division(history, parent, daughters)
        return 0
    return _write(history, [(pixels, 0)], _with_division(history, parent, daughters))


def record_division(history: LabelHistory, parent: int, daughters: Iterable[int]) -> None:
    """``daughters`` divide from ``parent`` (lineage in the layer's metadata).

    Raises:
        ValueError: fewer than one daughter, or a daughter that is the parent.
    """
    _set_lineage(history, _with_division(history, parent, daughters))


def _with_division(history: LabelHistory, parent: int, daughters: Iterable[int]) -> dict[int, int]:
    """The layer's lineage with ``daughters`` of ``parent`` added (raises as :func:`record_division`)."""
    ids = sorted({int(d) for d in daughters})
    if not ids or parent in ids:
        raise ValueError("a division needs daughters other than the parent")
    lineage = lineage_from_metadata(history.layer.metadata)
    lineage.update({d: int(parent) for d in ids})
    return lineage
