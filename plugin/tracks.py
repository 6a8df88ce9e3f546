"""Tracks of a time-lapse labels layer for napari's Tracks layer, and the track table's rows.

A labels layer is a time-lapse when its first axis is time (``axis_labels``
``t``/``time``/``frame``, or a time unit: :class:`protocol.formats.geometry.Geometry`).
Each label is an object through time; divisions are the lineage in the
layer's metadata (:mod:`plugin.labels.lineage`). Tracks follow the CTC rules
(:func:`protocol.formats.tracks.build_tracks`: a gap splits a label's track).

:func:`napari_tracks` gives the Tracks layer's data in the labels layer's
*data* coordinates ``(track_id, t, [z,] row, col)`` (the Tracks layer gets the
labels layer's scale and translate, so they line up) and its ``graph``
``{daughter track: [parent track]}``. :func:`track_rows` gives one row per
track for the track table (first/last frame, parent, displacement and mean
speed in physical units per frame interval).

Computing tracks reads the whole stack: :class:`plugin.tracks_follow.TracksFollower` does it on a
thread (then only the frames each edit touched) and only adds or updates the layer on the GUI
thread (:func:`apply_tracks`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from plugin.labels.names import names_from_metadata
from protocol.formats.geometry import Geometry
from protocol.formats.tracks import (
    FrameObjects,
    TrackSet,
    build_tracks,
    frame_objects,
    track_of_objects,
    tracks_from_frames,
)

if TYPE_CHECKING:
    import napari
    from napari.layers import Labels

TRACKS_SUFFIX = " tracks"
"""The Tracks layer of labels layer ``cells`` is ``cells tracks``."""


@dataclass(frozen=True)
class NapariTracks:
    """What a napari Tracks layer takes.

    Attributes:
        data: (N, 2 + D) float ``(track_id, t, [z,] row, col)`` in the labels' data coordinates.
        graph: ``{track_id: [parent track_id]}`` for tracks with a parent.
        tracks: the tracks themselves.
        label_of: ``{track_id: label_id}``.
    """

    data: np.ndarray
    graph: dict[int, list[int]]
    tracks: TrackSet
    label_of: dict[int, int]


def layer_geometry(layer: Any) -> Geometry | None:
    """The labels layer's geometry (None when it has no NGFF form)."""
    try:
        return Geometry.from_layer(
            layer.ndim,
            layer.scale,
            layer.translate,
            getattr(layer, "units", None),
            getattr(layer, "axis_labels", None),
        )
    except ValueError:
        return None


def is_time_lapse(layer: Any) -> bool:
    """Whether the labels layer's first axis is time and it has 3 or 4 axes."""
    geometry = layer_geometry(layer)
    return geometry is not None and geometry.ndim in (3, 4) and geometry.axes[0] == "t"


def napari_tracks(stack: Any, lineage: Mapping[int, int] | None = None) -> NapariTracks:
    """Tracks of a ``(T, [Z,] Y, X)`` labels stack with its lineage (see the module docstring)."""
    build_tracks(stack[:1], lineage)  # checks the axes, dtype and lineage (one frame read)
    return tracks_of(frame_objects(stack), lineage)


def tracks_of(objects: FrameObjects, lineage: Mapping[int, int] | None = None) -> NapariTracks:
    """The tracks of the objects of a time-lapse's frames (:func:`protocol.formats.tracks.frame_objects`)."""
    present: dict[int, list[int]] = {}
    for label_id, t in zip(objects.label_id.tolist(), objects.frame.tolist(), strict=True):
        present.setdefault(int(label_id), []).append(int(t))
    tracks = tracks_from_frames({k: sorted(v) for k, v in present.items()}, lineage)
    track_ids = track_of_objects(tracks, objects)
    data = np.column_stack([track_ids, objects.frame, objects.centroid]).astype(np.float64)
    order = np.lexsort((data[:, 1], data[:, 0]))
    graph = {t.track_id: [t.parent] for t in tracks.tracks if t.parent}
    return NapariTracks(data[order], graph, tracks, {t.track_id: t.label_id for t in tracks.tracks})


@dataclass(frozen=True)
class TrackRow:
    """One row of the track table.

    Attributes:
        track_id, label_id, name, first, last, parent: the track (``parent`` 0: none).
        displacement: distance from the first to the last centroid, physical units.
        mean_speed: path length / frames elapsed, physical units per frame interval (0 for one frame).
    """

    track_id: int
    label_id: int
    name: str
    first: int
    last: int
    parent: int
    displacement: float
    mean_speed: float


def track_rows(tracks: NapariTracks, names: Mapping[int, str], spatial_scale: Any) -> list[TrackRow]:
    """One :class:`TrackRow` per track, by id; ``spatial_scale``: pixel size per spatial axis."""
    scale = np.asarray(spatial_scale, dtype=np.float64)
    rows = []
    for track in tracks.tracks.tracks:
        points = tracks.data[tracks.data[:, 0] == track.track_id]
        path = points[:, 2:] * scale
        steps = np.linalg.norm(np.diff(path, axis=0), axis=1)
        elapsed = float(points[-1, 1] - points[0, 1]) if len(points) else 0.0
        rows.append(
            TrackRow(
                track.track_id,
                track.label_id,
                names.get(track.label_id, ""),
                track.begin,
                track.end,
                track.parent,
                float(np.linalg.norm(path[-1] - path[0])) if len(path) else 0.0,
                float(steps.sum() / elapsed) if elapsed else 0.0,
            )
        )
    return rows


def tracks_layer_name(labels_name: str) -> str:
    return labels_name + TRACKS_SUFFIX


def label_colours(layer: Any, label_ids: np.ndarray) -> np.ndarray:
    """(N, 4) RGBA float of ``label_ids`` in the labels layer's colormap (one vectorised lookup)."""
    ids = np.asarray(label_ids)
    try:
        return np.asarray(layer.colormap.map(ids.astype(layer.data.dtype)), dtype=np.float32).reshape(-1, 4)
    except (AttributeError, TypeError, ValueError):
        return np.asarray([layer.get_color(int(i)) for i in ids], dtype=np.float32).reshape(-1, 4)


def track_colouring(layer: Any, tracks: NapariTracks) -> tuple[dict[str, Any], Any]:
    """The Tracks layer's features (``label_id``, ``label_colour``: each track's rank) and the
    colormap that gives each track its label's colour (napari colours ``color_by`` over min..max)."""
    from napari.utils.colormaps import Colormap

    track_ids = np.unique(tracks.data[:, 0]).astype(np.int64)
    labels = np.asarray([tracks.label_of[int(i)] for i in track_ids], np.int64)
    rank = np.searchsorted(track_ids, tracks.data[:, 0].astype(np.int64))
    features = {"label_id": labels[rank], "label_colour": rank}
    n = len(track_ids)
    colours = label_colours(layer, labels)
    if n == 1:
        colours, controls = np.repeat(colours, 2, axis=0), np.array([0.0, 0.5, 1.0])
    else:
        controls = np.concatenate([[0.0], (np.arange(1, n) - 0.5) / (n - 1), [1.0]])
    return features, Colormap(colors=colours, controls=controls, interpolation="zero", name="label colours")


def apply_tracks(viewer: napari.Viewer, layer: Labels, tracks: NapariTracks) -> Any:
    """Add the Tracks layer of ``layer`` or replace its data (GUI thread); return it.

    Each track has its label's colour (:func:`track_colouring`)."""
    name = tracks_layer_name(layer.name)
    existing = viewer.layers[name] if name in viewer.layers else None
    if not len(tracks.data):
        if existing is not None:
            viewer.layers.remove(existing)
        return None
    features, colormap = track_colouring(layer, tracks)
    if existing is not None:
        existing.color_by = "track_id"  # always there: the new data drops the old features
        existing.data = tracks.data
        existing.graph = tracks.graph
        existing.features = features
        existing.colormaps_dict = {"label_colour": colormap}
        existing.color_by = "label_colour"
        return existing
    return viewer.add_tracks(
        tracks.data,
        graph=tracks.graph,
        features=features,
        colormaps_dict={"label_colour": colormap},
        color_by="label_colour",
        name=name,
        scale=layer.scale,
        translate=layer.translate,
        tail_length=30,
    )


def names_of(layer: Any) -> dict[int, str]:
    """The labels layer's names (for the track table)."""
    return names_from_metadata(layer.metadata)
