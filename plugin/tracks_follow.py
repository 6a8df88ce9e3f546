"""The Tracks layer of a time-lapse labels layer follows its edits, re-reading only the frames touched.

:class:`TracksFollower` keeps each frame's objects (label ids and centroids,
:func:`protocol.formats.tracks.objects_of_frame`) of one labels layer ``(T, [Z,] Y, X)`` (axis 0
is time). Every pixel write (the plugin's edits, brush strokes: napari's ``paint`` event) and
every undo or redo (:attr:`plugin.labels.history.LabelHistory.step_listeners`) says where it
wrote (:func:`plugin.labels.history.atom_regions`); those frames are marked, and a thread
re-reads them from the layer (a frame at a time: never a copy of the stack on the GUI thread),
rebuilds the tracks from the kept frames (:func:`protocol.formats.tracks.tracks_from_frames`,
the lineage from the metadata) and hands the result to the GUI thread, which updates the Tracks
layer (:func:`plugin.tracks.apply_tracks`, tracks coloured with their label's colour). Marks
that come while a thread runs are taken by the next run (one at a time, the newest wins).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from plugin.labels.history import LabelHistory, Step, atom_regions
from plugin.labels.lineage import lineage_from_metadata
from plugin.tracks import NapariTracks, apply_tracks, is_time_lapse, tracks_of
from protocol.formats.tracks import FrameObjects, join_frames, objects_of_frame

if TYPE_CHECKING:
    import napari
    from napari.layers import Labels


def frames_of(step: Iterable[Any], n_frames: int) -> set[int]:
    """The frames (axis 0) that a history step or paint event's atoms wrote."""
    frames: set[int] = set()
    for index, _values in atom_regions(list(step)):
        first = index[0]
        if isinstance(first, slice):
            frames.update(range(*first.indices(n_frames)))
        elif np.ndim(first) == 0:
            frames.add(int(first))
        else:
            frames.update(int(t) for t in np.unique(np.asarray(first)))
    return {t for t in frames if 0 <= t < n_frames}


class TracksFollower:
    """Keeps ``layer``'s Tracks layer in step with its edits (see the module docstring).

    Args:
        viewer: the viewer holding both layers.
        layer: a time-lapse labels layer (numpy, zarr or dask; not multiscale).
        history: the layer's history (undo and redo say where they wrote).
        dispatch: runs a call on the GUI thread.
    """

    def __init__(
        self,
        viewer: napari.Viewer,
        layer: Labels,
        history: LabelHistory,
        dispatch: Callable[[Callable[[], None]], None],
    ) -> None:
        if not is_time_lapse(layer) or layer.multiscale:
            raise ValueError(f"{layer.name} is not a time-lapse (t first, 3 or 4 axes)")
        self.viewer, self.layer, self.history, self.dispatch = viewer, layer, history, dispatch
        self.n_frames = int(layer.data.shape[0])
        self.objects: dict[int, FrameObjects] = {}
        self.listeners: list[Callable[[NapariTracks], None]] = []
        """Called with the new tracks after the Tracks layer is updated (GUI thread): the track table."""
        self.frames_read = 0
        """Frames read from the layer so far (all of them once, then only those touched)."""
        self._pending: set[int] = set(range(self.n_frames))
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        layer.events.paint.connect(self._on_paint)
        history.step_listeners.append(self._on_step)
        self._start()

    def close(self) -> None:
        """Stop following (the layer was removed, or the user closed the Tracks layer)."""
        self.layer.events.paint.disconnect(self._on_paint)
        if self._on_step in self.history.step_listeners:
            self.history.step_listeners.remove(self._on_step)

    @property
    def busy(self) -> bool:
        """Whether frames are still to be read or a thread is reading them."""
        with self._lock:
            return bool(self._pending) or self._thread is not None

    def mark(self, frames: Iterable[int]) -> None:
        """Re-read ``frames`` (GUI thread) and update the Tracks layer."""
        with self._lock:
            self._pending.update(frames)
        self._start()

    def _on_paint(self, event: Any) -> None:
        self.mark(frames_of(event.value, self.n_frames))

    def _on_step(self, _layer: Labels, step: Step) -> None:
        self.mark(frames_of(step, self.n_frames))

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or not self._pending:
                return
            frames, self._pending = sorted(self._pending), set()
            lineage = lineage_from_metadata(self.layer.metadata)
            self._thread = threading.Thread(target=self._run, args=(frames, lineage), daemon=True)
            self._thread.start()

    def _run(self, frames: list[int], lineage: dict[int, int]) -> None:
        data = self.layer.data
        try:
            for t in frames:
                self.objects[t] = objects_of_frame(data[t], t)
            self.frames_read += len(frames)
            spatial = data.ndim - 1
            parts = [self.objects[t] for t in sorted(self.objects)]
            tracks: NapariTracks | None = tracks_of(join_frames(parts, spatial), lineage)
        except ValueError:
            tracks = None
        self.dispatch(lambda: self._deliver(tracks))

    def _deliver(self, tracks: NapariTracks | None) -> None:
        with self._lock:
            self._thread = None
        if tracks is not None and self.layer in self.viewer.layers:
            apply_tracks(self.viewer, self.layer, tracks)
            for listener in list(self.listeners):
                listener(tracks)
        self._start()
