"""The one write path into a labels layer, single-scale or pyramid (napari layer models, no Qt).

Every pixel the plugin writes (a pasted answer, a refine, delete, merge,
propagation, the "Edit here" write-back) goes through :func:`write_values`:

* a single-scale layer: ``layer.data_setitem`` (napari records the step and
  redraws the changed box);
* a pyramid layer (:mod:`plugin.labels.pyramid`, multiscale in napari, which
  refuses ``data_setitem`` there): level 0 is written and carried down the
  display levels inside the written box, the change is recorded in the
  layer's undo history as napari would (:func:`plugin.labels.history.record_atom`)
  and the layer re-reads what is on screen.

Either way the write is one atom of napari's undo history, so undo/redo
(:class:`plugin.labels.history.LabelHistory`), the label list's counts and
the label boxes follow it the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from plugin.labels.history import record_atom, run_here
from plugin.labels.pyramid import LabelPyramid, pyramid_of, redraw

if TYPE_CHECKING:
    from napari.layers import Labels


Atom = tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray]
"""``(indices, old values, new values)`` of the pixels a write changed, as napari records them."""


def store_write(
    pyramid: LabelPyramid, indices: tuple[np.ndarray, ...], values: np.ndarray | int
) -> Atom | None:
    """Write a pyramid's store only (no napari call, so it may run off the GUI thread); the changed pixels.

    Record the returned atom with :func:`record_atoms` on the GUI thread (None: nothing changed).
    """
    arrays = tuple(np.asarray(i, dtype=np.int64).ravel() for i in indices)
    if not arrays or arrays[0].size == 0:
        return None
    new = np.broadcast_to(np.asarray(values, dtype=pyramid.dtype), arrays[0].shape)
    old = pyramid.write_points(arrays, new)
    changed = old != new
    if not changed.any():
        return None
    return tuple(a[changed] for a in arrays), old[changed], new[changed].copy()


def record_atoms(layer: Labels, atoms: list[Atom]) -> None:
    """Record writes :func:`store_write` made as **one** undo step of ``layer`` and redraw (GUI thread)."""
    if not atoms:
        return
    with layer.block_history():
        for atom in atoms:
            record_atom(layer, atom)
    redraw(layer)


def write_values(
    layer: Labels,
    indices: tuple[np.ndarray, ...],
    values: np.ndarray | int,
    refresh: bool = True,
    off_gui: Callable[[Callable[[], Any]], Any] = run_here,
) -> int:
    """Set the pixels at ``indices`` ((N,) arrays, one per layer axis) to ``values`` ((N,) or one value).

    Args:
        refresh: redraw now; a run of writes passes False to all but the last.
        off_gui: runs a pyramid's store write (``off_gui(work)`` returns ``work()``; the widget's
            keeps the window drawing while a thread writes); recording and redrawing stay here.

    Returns:
        How many pixels changed (on a pyramid layer; -1 on a single-scale one, where napari counts).
    """
    pyramid = pyramid_of(layer)
    if pyramid is None:
        layer.data_setitem(indices, values, refresh)
        return -1
    atom = off_gui(lambda: store_write(pyramid, indices, values))
    if atom is None:
        return 0
    record_atom(layer, atom)
    if refresh:
        redraw(layer)
    return int(atom[1].size)
