"""Tracks in a time-lapse of labels: the frames each label is on, its parent, gaps split.

A time-lapse is a labels stack ``(T, [Z,] Y, X)`` (axis 0 is time, 0 is
background); one label id is one object through time. Divisions are a
lineage ``{daughter_label: parent_label}`` (the plugin keeps it in the
layer's metadata). The tracking formats (Cell Tracking Challenge, GEFF) want
tracks as the CTC defines them: one id per *unbroken* run of frames, with
``begin``/``end`` (inclusive) and a parent. :func:`build_tracks` makes them:

* a label on frames 0-4 and 7-9 becomes two tracks: the first run keeps the
  label's id, the later run gets a new id whose parent is the earlier run;
* a daughter's parent is the run of its parent label that ends last before
  the daughter begins (a parent that is nowhere in the stack is reported in
  :attr:`TrackSet.orphans` and the daughter has no parent).

Pure numpy; one pass over the stack (``np.unique`` per frame).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Track:
    """One unbroken run of frames of one label.

    Attributes:
        track_id: the id of this run in the exported labels (the label's id for its first run).
        label_id: the label it belongs to in the labels stack.
        begin: first frame (inclusive).
        end: last frame (inclusive).
        parent: the parent's ``track_id``, 0 when none.
    """

    track_id: int
    label_id: int
    begin: int
    end: int
    parent: int = 0


@dataclass(frozen=True)
class TrackSet:
    """The tracks of a labels stack, sorted by ``track_id``.

    Attributes:
        tracks: one :class:`Track` per unbroken run of a label.
        orphans: daughter label ids whose recorded parent label is nowhere in the stack.
    """

    tracks: tuple[Track, ...]
    orphans: tuple[int, ...] = field(default=())

    def by_id(self) -> dict[int, Track]:
        return {t.track_id: t for t in self.tracks}

    def parents(self) -> dict[int, int]:
        """``{track_id: parent track_id}`` for tracks with a parent."""
        return {t.track_id: t.parent for t in self.tracks if t.parent}

    def needs_relabel(self) -> bool:
        """Whether some run got a new id (a label with a gap)."""
        return any(t.track_id != t.label_id for t in self.tracks)

    def frame_ids(self, frame: int) -> dict[int, int]:
        """``{label_id: track_id}`` of the runs on ``frame`` whose id differs from their label's."""
        return {
            t.label_id: t.track_id
            for t in self.tracks
            if t.track_id != t.label_id and t.begin <= frame <= t.end
        }


def label_frames(stack: np.ndarray) -> dict[int, list[int]]:
    """``{label_id: sorted frames it has pixels on}`` of a ``(T, ...)`` integer labels stack."""
    frames: dict[int, list[int]] = {}
    for t in range(stack.shape[0]):
        for label_id in np.unique(np.asarray(stack[t])):
            if label_id != 0:
                frames.setdefault(int(label_id), []).append(t)
    return frames


def runs(frames: Iterable[int]) -> list[tuple[int, int]]:
    """Unbroken runs (begin, end), inclusive, of sorted frames: ``[0, 1, 2, 5]`` -> ``[(0, 2), (5, 5)]``.

    Each run is a CTC track.
    """
    found: list[tuple[int, int]] = []
    for t in frames:
        if found and t == found[-1][1] + 1:
            found[-1] = (found[-1][0], t)
        else:
            found.append((t, t))
    return found


def build_tracks(stack: np.ndarray, parents: Mapping[int, int] | None = None) -> TrackSet:
    """The tracks of a ``(T, [Z,] Y, X)`` labels stack with lineage ``{daughter: parent}`` (label ids).

    Raises:
        ValueError: a stack that is not integer with at least 3 axes, negative ids, or a label its own parent.
    """
    array = np.asarray(stack) if not hasattr(stack, "shape") else stack
    if array.ndim < 3:
        raise ValueError(f"a time-lapse needs axes (t, [z,] y, x), got shape {array.shape}")
    if np.dtype(array.dtype).kind not in "iub":
        raise ValueError(f"labels must be integers, got {array.dtype}")
    return tracks_from_frames(label_frames(array), parents)


def tracks_from_frames(
    present: Mapping[int, list[int]], parents: Mapping[int, int] | None = None
) -> TrackSet:
    """:func:`build_tracks` from ``{label_id: sorted frames it is on}`` (:func:`label_frames`), so a
    caller that keeps the frames' contents (the plugin's Tracks layer) re-reads only frames that changed.

    Raises:
        ValueError: negative ids, or a label its own parent.
    """
    lineage = {int(d): int(p) for d, p in (parents or {}).items() if int(p) != 0}
    if any(d == p for d, p in lineage.items()):
        raise ValueError("a label cannot be its own parent")
    if any(label_id < 0 for label_id in present):
        raise ValueError("labels must not be negative")
    next_id = max([0, *present, *lineage, *lineage.values()]) + 1
    label_runs: dict[int, list[Track]] = {}
    for label_id in sorted(present):
        previous = 0
        for i, (begin, end) in enumerate(runs(present[label_id])):
            track_id = label_id if i == 0 else next_id
            next_id += 0 if i == 0 else 1
            label_runs.setdefault(label_id, []).append(Track(track_id, label_id, begin, end, previous))
            previous = track_id
    orphans: list[int] = []
    tracks: list[Track] = []
    for label_id, found in label_runs.items():
        first = found[0]
        parent_label = lineage.get(label_id)
        if parent_label is not None:
            before = [t for t in label_runs.get(parent_label, []) if t.end < first.begin]
            if before:
                first = Track(first.track_id, label_id, first.begin, first.end, before[-1].track_id)
            else:
                orphans.append(label_id)
        tracks += [first, *found[1:]]
    return TrackSet(tuple(sorted(tracks, key=lambda t: t.track_id)), tuple(orphans))


@dataclass(frozen=True)
class FrameObjects:
    """Every (frame, label) of a time-lapse, one row each, frame by frame then by label.

    Attributes:
        frame: (N,) int64 frame index.
        label_id: (N,) int64 label id.
        pixels: (N,) int64 pixel (voxel) count.
        centroid: (N, D) float64 centroid in pixel indices of the D spatial axes ((z,) row, col).
    """

    frame: np.ndarray
    label_id: np.ndarray
    pixels: np.ndarray
    centroid: np.ndarray


def frame_objects(stack: np.ndarray) -> FrameObjects:
    """The objects of a ``(T, [Z,] Y, X)`` labels stack, read frame by frame (numpy, zarr or dask)."""
    return join_frames([objects_of_frame(stack[t], t) for t in range(stack.shape[0])], stack.ndim - 1)


def objects_of_frame(frame: np.ndarray, t: int) -> FrameObjects:
    """The objects of one ``([Z,] Y, X)`` frame ``t`` of a time-lapse."""
    from skimage.measure import regionprops_table

    array = np.asarray(frame)
    table = regionprops_table(array, properties=["label", "area", "centroid"])
    n = len(table["label"])
    return FrameObjects(
        np.full(n, t, np.int64),
        np.asarray(table["label"], np.int64),
        np.asarray(table["area"], np.int64),
        np.stack([np.asarray(table[f"centroid-{i}"], np.float64) for i in range(array.ndim)], 1).reshape(
            n, array.ndim
        ),
    )


def join_frames(parts: Sequence[FrameObjects], spatial: int) -> FrameObjects:
    """The rows of ``parts`` (frames in order) as one :class:`FrameObjects` of ``spatial`` axes."""
    if not parts:
        empty = np.zeros(0, np.int64)
        return FrameObjects(empty, empty, empty, np.zeros((0, spatial)))
    return FrameObjects(
        np.concatenate([p.frame for p in parts]),
        np.concatenate([p.label_id for p in parts]),
        np.concatenate([p.pixels for p in parts]),
        np.concatenate([p.centroid for p in parts]),
    )


def track_of_objects(tracks: TrackSet, objects: FrameObjects) -> np.ndarray:
    """(N,) the ``track_id`` of each (frame, label) row of ``objects``."""
    run_of = {(t.label_id, f): t.track_id for t in tracks.tracks for f in range(t.begin, t.end + 1)}
    return np.asarray(
        [run_of[(int(i), int(f))] for i, f in zip(objects.label_id, objects.frame, strict=True)], np.int64
    )


def relabel_frame(frame: np.ndarray, mapping: Mapping[int, int], dtype: np.dtype | None = None) -> np.ndarray:
    """``frame`` with ids replaced by ``mapping`` (ids not in it unchanged).

    One ``np.unique`` pass, whatever the number of ids. ``dtype``: the output's (default: the frame's).
    """
    out_dtype = np.dtype(dtype or frame.dtype)
    if not mapping:
        return frame.astype(out_dtype, copy=False)
    ids, inverse = np.unique(frame, return_inverse=True)
    new_ids = np.array([mapping.get(int(i), int(i)) for i in ids], dtype=np.int64)
    if new_ids.size and (new_ids.min() < 0 or new_ids.max() > np.iinfo(out_dtype).max):
        raise ValueError(f"ids up to {int(new_ids.max())} do not fit {out_dtype}")
    return new_ids.astype(out_dtype)[inverse.reshape(frame.shape)]
