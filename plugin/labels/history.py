"""Undo and redo of label edits, names included (napari layer models, no Qt).

napari's Labels layer records every ``data_setitem`` call (and every brush
stroke, fill or polygon) as one step of its own undo history, 100 steps per
layer; ``Ctrl+Z`` / ``Ctrl+Shift+Z`` walk it. This module keeps that history
as the single record of *pixels*, so the plugin's edits and the user's
brush strokes undo in the order they were made, and adds what napari does
not know about:

* **names**: a delete or merge also changes ``metadata["label_names"]``.
  Such an edit registers its names change against the history step it
  made; after every undo or redo the names are brought in line (a deleted
  label's name comes back with its pixels, and goes again on redo).
* **other metadata** (a time-lapse's lineage, say): an edit may also set
  metadata keys (``edit(metadata_after=...)``); they are rolled back and
  forth with its step the same way.
* **one step per operation**: an operation written slice by slice
  (propagation, automatic segmentation of a stack) is squashed into one
  step when it ends (:meth:`LabelHistory.squash`).
* **listeners**: the label list updates its counts from the pixels each
  undo or redo changed (:func:`atom_changes`), without a rescan. An undo or
  redo made by napari itself (``layer.undo()``: its menus, a script), which
  only refreshes the layer, is recognised from the step that moved between
  napari's two histories and handled the same way.

napari keeps its history in private attributes (``_undo_history``,
``_redo_history``: deques of steps, each a list of *atoms*); this module is
the only place that reads them, and ``tests/plugin/test_plugin_logic.py`` checks
the assumptions against the installed napari. Undo and redo keys are bound
on the layer *instance* (``layer.bind_key``, public), so ``Ctrl+Z`` on the
layer goes through :meth:`LabelHistory.undo` as the buttons do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from plugin.labels.names import METADATA_KEY, names_from_metadata
from plugin.labels.pyramid import pyramid_of, redraw

if TYPE_CHECKING:
    from napari.layers import Labels

UNDO_KEYS = ("Control-Z",)
REDO_KEYS = ("Control-Shift-Z", "Control-Y")
NamesDelta = dict[int, tuple[str | None, str | None]]
"""``{label_id: (name before, name after)}``; None means unnamed."""
MetadataDelta = dict[str, tuple[Any, Any]]
"""``{metadata key: (value before, value after)}``; None means absent."""
Step = list[Any]
"""One napari history step: a list of atoms applied together."""
Listener = Callable[["Labels", list[tuple[np.ndarray, np.ndarray]]], None]
"""``listener(layer, changes)`` after an undo or redo; ``changes`` as :func:`atom_changes`."""


def atom_changes(step: Step, undoing: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(values before, values after), ...]`` of the pixels a step changes when (un)done.

    Handles both atom kinds napari records: ``(indices, old_values,
    new_values)`` tuples (``data_setitem``) and masked paint atoms (brush,
    fill: ``old_values`` under a mask, one ``new_value``).
    """
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for atom in step:
        if hasattr(atom, "old_values"):  # a named tuple: test it first
            old, new = atom.old_values, atom.new_value
        else:
            _indices, old, new = atom
        old = np.asarray(old).ravel()
        new = np.broadcast_to(np.asarray(new), old.shape).ravel()
        out.append((new, old) if undoing else (old, new))
    return out


def atom_regions(step: Step) -> Iterator[tuple[tuple[Any, ...], np.ndarray]]:
    """``(index, values)`` of each atom of a step in turn: where it writes, the values there before and after.

    ``index`` is a tuple of (N,) index arrays (``data_setitem``; ``values``
    then holds the N old values followed by the N new ones) or of slices (a
    masked paint atom's bounding box; ``values`` are those found in it).
    Undoing or redoing the step writes only these values there. One atom at
    a time, so a step of many atoms (a tiled paste) never needs all its
    values at once.
    """
    for atom in step:
        if hasattr(atom, "old_values"):  # a named tuple: test it first
            old, new = np.asarray(atom.old_values).ravel(), np.asarray([atom.new_value])
            yield tuple(atom.slice_key), np.concatenate([old, new.astype(old.dtype)])
            continue
        indices, old, new = atom
        old = np.asarray(old).ravel()
        new = np.broadcast_to(np.asarray(new), old.shape).ravel()
        yield tuple(indices), np.concatenate([old, new.astype(old.dtype)])


def record_atom(layer: Labels, atom: tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray]) -> None:
    """Record a write the plugin made itself (``(indices, old values, new values)``) as napari would.

    The atom joins napari's undo history exactly like one of ``data_setitem``
    (inside ``block_history`` it is staged, else it is one step) and
    ``events.paint`` fires, so counts, boxes and :meth:`LabelHistory.capture`
    see it. Used for pyramid layers, whose ``data_setitem`` napari refuses.
    """
    layer._save_history(atom)


def run_here(work: Callable[[], Any]) -> Any:
    """Run ``work`` in the calling thread (the default way to run a pyramid step's store writes)."""
    return work()


def replay_step(layer: Labels, undoing: bool, off_gui: Callable[[Callable[[], Any]], Any] = run_here) -> None:
    """Undo (or redo) the newest step of a pyramid layer through its store, as napari's ``undo`` does.

    napari's own ``undo`` writes ``layer.data[indices]``, which a multiscale
    layer refuses; here the step moves between the two histories the same
    way and its atoms are written to level 0 and carried down, through ``off_gui``
    (the widget: in a thread while the window keeps drawing; the writes touch no napari object).
    """
    pyramid = pyramid_of(layer)
    if pyramid is None:
        raise TypeError(f"{layer.name} is not a pyramid layer")
    source, target = (
        (layer._undo_history, layer._redo_history) if undoing else (layer._redo_history, layer._undo_history)
    )
    if not source:
        return
    step = source[-1]
    if any(hasattr(atom, "old_values") for atom in step):  # brush atoms: napari cannot paint a pyramid
        raise TypeError("a pyramid layer's history holds only the plugin's writes")

    def write() -> None:
        held = pyramid.levels_held() if len(step) > 1 else nullcontext()
        with held:  # a tiled paste's step: the display levels carried down once
            for indices, old, new in reversed(step):
                pyramid.write_points(indices, old if undoing else new)

    off_gui(write)
    source.pop()
    target.append(list(reversed(step)))
    redraw(layer)


def set_names(layer: Labels, names: dict[int, str]) -> None:
    """Replace the layer's names (``metadata["label_names"]``)."""
    layer.metadata = {**layer.metadata, METADATA_KEY: dict(sorted(names.items()))}


def apply_metadata_delta(layer: Labels, delta: MetadataDelta, forward: bool) -> None:
    """Set (``forward``) or restore the metadata keys of ``delta``, leaving other keys alone."""
    if not delta:
        return
    metadata = dict(layer.metadata)
    for key, (before, after) in delta.items():
        value = after if forward else before
        if value is None:
            metadata.pop(key, None)
        else:
            metadata[key] = value
    layer.metadata = metadata


def apply_names_delta(layer: Labels, delta: NamesDelta, forward: bool) -> None:
    """Apply a names change (``forward``) or revert it, leaving other names alone."""
    names = names_from_metadata(layer.metadata)
    for label_id, (before, after) in delta.items():
        value = after if forward else before
        if value:
            names[label_id] = value
        else:
            names.pop(label_id, None)
    set_names(layer, names)


@dataclass
class _NamesEntry:
    atom: Any = field(repr=False)  # first atom of the step (held, so its id stays unique)
    delta: NamesDelta
    metadata: MetadataDelta = field(default_factory=dict)
    applied: bool = True

    def apply(self, layer: Labels, forward: bool) -> None:
        if self.delta:
            apply_names_delta(layer, self.delta, forward)
        apply_metadata_delta(layer, self.metadata, forward)
        self.applied = forward


class LabelHistory:
    """Undo/redo for one labels layer, keeping its names consistent with its pixels.

    Args:
        layer: the labels layer.
        bind_keys: bind ``Ctrl+Z`` / ``Ctrl+Shift+Z`` (and ``Ctrl+Y``) on it.
    """

    def __init__(
        self, layer: Labels, bind_keys: bool = True, off_gui: Callable[[Callable[[], Any]], Any] = run_here
    ) -> None:
        self.layer = layer
        self.off_gui = off_gui
        """Runs a pyramid step's store writes (:func:`replay_step`)."""
        self.listeners: list[Listener] = []
        self.step_listeners: list[Callable[[Labels, Step], None]] = []
        """``listener(layer, step)`` after an undo or redo of ``step`` (where: :func:`atom_regions`)."""
        self.before_change: list[Callable[[], None]] = []
        self._entries: list[_NamesEntry] = []
        self._moving = False
        self._depths = (self.undo_depth, self.redo_depth)
        layer.events.paint.connect(self._remember_depths)
        layer.events.set_data.connect(self._on_set_data)
        if bind_keys:
            for key in UNDO_KEYS:
                layer.bind_key(key, lambda _layer: self.undo(), overwrite=True)
            for key in REDO_KEYS:
                layer.bind_key(key, lambda _layer: self.redo(), overwrite=True)

    def disconnect(self) -> None:
        """Stop following the layer (it was removed)."""
        self.layer.events.paint.disconnect(self._remember_depths)
        self.layer.events.set_data.disconnect(self._on_set_data)
        self.listeners.clear()
        self.step_listeners.clear()
        self.before_change.clear()
        self._entries.clear()

    # -- napari's history (private attributes, read here only) ---------------------------------

    def _undo_steps(self) -> list[Step]:
        return list(getattr(self.layer, "_undo_history", ()))

    def _redo_steps(self) -> list[Step]:
        return list(getattr(self.layer, "_redo_history", ()))

    def steps(self) -> list[Step]:
        """Every step that undo or redo can replay now (undo history, then redo history)."""
        return self._undo_steps() + self._redo_steps()

    @property
    def undo_depth(self) -> int:
        """Steps that can be undone."""
        return len(self._undo_steps())

    @property
    def redo_depth(self) -> int:
        """Steps that can be redone."""
        return len(self._redo_steps())

    # -- recording -------------------------------------------------------------------------------

    @contextmanager
    def capture(self) -> Iterator[list[Step]]:
        """Collect the history steps made inside the block (the list fills as they are made)."""
        steps: list[Step] = []

        def on_paint(event: Any) -> None:
            steps.append(event.value)

        self.layer.events.paint.connect(on_paint)
        try:
            yield steps
        finally:
            self.layer.events.paint.disconnect(on_paint)

    @contextmanager
    def edit(
        self,
        names_after: dict[int, str] | None = None,
        metadata_after: Mapping[str, Any] | None = None,
    ) -> Iterator[list[Step]]:
        """One undoable edit: the pixel writes inside the block are one step, with a names change.

        Args:
            names_after: the layer's names after the edit (None: names unchanged).
            metadata_after: other metadata keys to set with the edit (a value None removes the key);
                undo restores what they were, redo sets them again. Set only when pixels changed.
        """
        before = names_from_metadata(self.layer.metadata)
        meta_before = {key: self.layer.metadata.get(key) for key in metadata_after or {}}
        with self.capture() as steps, self.layer.block_history():
            yield steps
        after = before if names_after is None else names_after
        delta = {
            i: (before.get(i), after.get(i))
            for i in sorted(set(before) | set(after))
            if before.get(i) != after.get(i)
        }
        metadata = {
            key: (meta_before[key], value)
            for key, value in (metadata_after or {}).items()
            if meta_before[key] != value
        }
        atoms = [atom for step in steps for atom in step]
        if not (delta or metadata) or not atoms:
            if delta:  # names change without pixels (nothing to undo): applied as before
                apply_names_delta(self.layer, delta, forward=True)
            return
        entry = _NamesEntry(atoms[0], delta, metadata)
        entry.apply(self.layer, forward=True)
        self._entries.append(entry)
        self._sync_names()

    def squash(self, steps: list[Step]) -> bool:
        """Make ``steps`` (recorded in order by :meth:`capture`) one undo step.

        Only done when they are still the newest steps of the history (no
        brush stroke or undo came in between); returns whether it was done.
        """
        history = getattr(self.layer, "_undo_history", None)
        steps = [s for s in steps if s]
        if history is None or len(steps) < 2 or len(history) < len(steps):
            return False
        tail = list(history)[-len(steps) :]
        if not all(a is b for a, b in zip(tail, steps, strict=True)):
            return False
        for _ in steps:
            history.pop()
        history.append([atom for step in steps for atom in step])
        self._remember_depths()
        return True

    # -- undo / redo -------------------------------------------------------------------------------

    def undo(self) -> bool:
        """Undo the newest step (pixels and names); False when there is none."""
        return self._move(undoing=True)

    def redo(self) -> bool:
        """Redo the newest undone step; False when there is none."""
        return self._move(undoing=False)

    def _move(self, undoing: bool) -> bool:
        source = self._undo_steps() if undoing else self._redo_steps()
        if not source:
            return False
        for hook in list(self.before_change):
            hook()
        step = source[-1]
        self._moving = True
        try:
            if pyramid_of(self.layer) is not None:
                replay_step(self.layer, undoing, self.off_gui)
            elif undoing:
                self.layer.undo()
            else:
                self.layer.redo()
        finally:
            self._moving = False
        self._moved(step, undoing)
        return True

    def _moved(self, step: Step, undoing: bool) -> None:
        self._remember_depths()
        self._sync_names()
        changes = atom_changes(step, undoing)
        for listener in list(self.listeners):
            listener(self.layer, changes)
        for step_listener in list(self.step_listeners):
            step_listener(self.layer, step)

    def _remember_depths(self, _event: Any = None) -> None:
        self._depths = (self.undo_depth, self.redo_depth)

    def _on_set_data(self, _event: Any) -> None:
        """Catch an undo or redo made by napari itself (``layer.undo()``, its menus), not through here.

        napari then only refreshes the layer; the step that moved between its
        two histories says which pixels changed, so names and listeners
        (the label list) follow as after :meth:`undo` / :meth:`redo`.
        """
        if self._moving:
            return
        (undo_before, redo_before), now = self._depths, (self.undo_depth, self.redo_depth)
        if now == (undo_before - 1, redo_before + 1):
            step, undoing = self._redo_steps()[-1], True
        elif now == (undo_before + 1, redo_before - 1):
            step, undoing = self._undo_steps()[-1], False
        else:
            self._depths = now  # the data was replaced (its history reset) or a squash
            return
        for hook in list(self.before_change):
            hook()
        self._moved(step, undoing)

    def _sync_names(self) -> None:
        """Revert the names changes of undone steps, re-apply those of redone ones."""
        done = {id(atom) for step in self._undo_steps() for atom in step}
        undone = {id(atom) for step in self._redo_steps() for atom in step}
        for entry in reversed(self._entries):
            if entry.applied and id(entry.atom) in undone:
                entry.apply(self.layer, forward=False)
        for entry in self._entries:
            if not entry.applied and id(entry.atom) in done:
                entry.apply(self.layer, forward=True)
        self._entries = [e for e in self._entries if id(e.atom) in done | undone]


class Histories:
    """One :class:`LabelHistory` per labels layer, made on first use.

    Args:
        bind_keys: bind the undo/redo keys on each layer.
    """

    def __init__(self, bind_keys: bool = True) -> None:
        self.bind_keys = bind_keys
        self.off_gui: Callable[[Callable[[], Any]], Any] = run_here
        """How every layer's pyramid undo/redo writes run (the widget: in a thread, window drawing)."""
        self._by_layer: dict[Any, LabelHistory] = {}
        self.listeners: list[Listener] = []
        self.before_change: list[Callable[[], None]] = []

    def __call__(self, layer: Labels) -> LabelHistory:
        history = self._by_layer.get(layer.unique_id)
        if history is None:
            history = LabelHistory(layer, self.bind_keys, lambda work: self.off_gui(work))
            history.listeners.append(self._notify)
            history.before_change.append(self._before)
            self._by_layer[layer.unique_id] = history
        return history

    def forget(self, layer: Labels) -> None:
        """Drop the history kept for ``layer`` (removed from the viewer): its names entries go with it."""
        history = self._by_layer.pop(layer.unique_id, None)
        if history is not None:
            history.disconnect()

    def __len__(self) -> int:
        """How many layers have a history here."""
        return len(self._by_layer)

    def _notify(self, layer: Labels, changes: list[tuple[np.ndarray, np.ndarray]]) -> None:
        for listener in list(self.listeners):
            listener(layer, changes)

    def _before(self) -> None:
        for hook in list(self.before_change):
            hook()
