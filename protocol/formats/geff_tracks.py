"""GEFF (graph exchange file format) tracks, written and validated with the ``geff`` library.

Layout of a store written by :func:`write_geff` (atomically: a temporary folder
beside it, swapped in; :func:`protocol.runtime.atomic.atomic_dir`)::

    movie.zarr/                 zarr v2 root group
    ├── tracks/                 the GEFF group: nodes, edges, attributes "geff"
    └── segmentation/           (T, [Z,] Y, X) uint32 labels, one chunk per frame

The graph (directed):

* one **node** per (frame, label) with properties ``t`` (frame index), the
  spatial axes (``z``,) ``y``, ``x`` (the label's centroid in napari's world
  coordinates: pixel index x pixel size + the layer's translate, so a napari
  Tracks layer and the labels layer line up), ``area`` (pixels x pixel area;
  a volume for (t, z, y, x)), ``name`` (the label's name, "" when none),
  ``seg_id`` (the label id in ``segmentation``), ``track_id`` (the CTC-style
  track: a label's unbroken run, :mod:`protocol.formats.tracks`) and
  ``lineage_id`` (the root track of its family, declared as GEFF's lineage);
* one **edge** between a label's consecutive frames (across a gap too) and
  from a parent's last node to each daughter's first node.

The axes carry units when the layer's are known (time: ``scale`` = frame
interval, ``scaled_unit``); ``related_objects`` points at ``segmentation``
(``node_prop`` ``seg_id``); ``extra`` holds the provenance record
(:data:`protocol.formats.provenance.PROVENANCE_KEY`) and the layer's axes,
scale and translate for an exact round trip. ``geff`` validates the structure
on write; :func:`read_geff` reads it back with ``geff.read_to_memory``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from protocol.formats.geometry import SECONDS_PER, Geometry
from protocol.formats.provenance import PROVENANCE_KEY, Provenance
from protocol.formats.tracks import Track, TrackSet, build_tracks, frame_objects, track_of_objects

GEFF_GROUP = "tracks"
SEGMENTATION = "segmentation"
LAYER_KEY = "napari-sam2-broker"
"""``extra`` entry with the layer's axes, scale, translate and units."""


@dataclass(frozen=True)
class GeffTracks:
    """A GEFF store in memory.

    Attributes:
        labels: the ``segmentation`` labels, None when the store has none.
        tracks: one track per ``track_id`` (``label_id`` = ``seg_id``), parents from the edges.
        names: ``{label_id: name}`` from the nodes' ``name``.
        geometry: axes, scale, translate and units (from ``extra``; plain when absent).
        provenance: the record in ``extra``, None when absent.
        graph: geff's in-memory graph (``node_ids``, ``edge_ids``, ``node_props``...).
    """

    labels: np.ndarray | None
    tracks: TrackSet
    names: dict[int, str]
    geometry: Geometry | None
    provenance: Provenance | None
    graph: Mapping[str, Any]


def geff_path(path: str | os.PathLike[str]) -> Path:
    """The store path for a requested path (``.zarr`` added when it does not end in ``.zarr``)."""
    p = Path(path)
    return p if p.name.lower().endswith(".zarr") else p.with_name(p.name + ".geff.zarr")


def _axes(geometry: Geometry) -> list[Any]:
    from geff_spec import Axis

    time_unit = geometry.units[0] if geometry.axes[0] == "t" else None
    axes = [
        Axis(
            name="t",
            type="time",
            unit="frame",
            scale=geometry.scale[0] if time_unit in SECONDS_PER else None,
            scaled_unit=time_unit if time_unit in SECONDS_PER else None,
        )
    ]
    for i, axis in enumerate(geometry.axes[1:], start=1):
        axes.append(Axis(name=axis, type="space", unit=geometry.units[i]))
    return axes


def _lineage(tracks: TrackSet) -> dict[int, int]:
    """``{track_id: root track_id}`` following parents up."""
    parents = tracks.parents()
    root: dict[int, int] = {}
    for t in tracks.tracks:
        current, seen = t.track_id, set()
        while current in parents and current not in seen:
            seen.add(current)
            current = parents[current]
        root[t.track_id] = current
    return root


def write_geff(
    path: str | os.PathLike[str],
    stack: Any,
    names: Mapping[int, str],
    geometry: Geometry,
    parents: Mapping[int, int] | None = None,
    provenance: Provenance | None = None,
) -> Path:
    """Write a labels time-lapse as a GEFF store with its segmentation; return the store.

    Args:
        path: the store (``.geff.zarr`` added unless it ends in ``.zarr``); replaced atomically.
        stack: ``(T, [Z,] Y, X)`` non-negative integer labels (axis 0 is time).
        names: ``{label_id: name}``.
        geometry: one entry per axis of ``stack`` (axis 0 is taken as time whatever its letter).
        parents: lineage ``{daughter label: parent label}``.
        provenance: stored in the GEFF metadata's ``extra``.

    Raises:
        ValueError: not a time-lapse of labels, a geometry of another rank, or a graph geff rejects.
    """
    import zarr
    from geff.core_io import write_arrays
    from geff_spec import GeffMetadata, RelatedObject

    from protocol.runtime.atomic import atomic_dir

    if stack.ndim not in (3, 4) or geometry.ndim != stack.ndim:
        raise ValueError(f"GEFF tracks need (t, [z,] y, x) labels with a geometry each, got {stack.shape}")
    geometry = Geometry("t" + geometry.axes[1:], geometry.scale, geometry.translate, geometry.units)
    tracks = build_tracks(stack, parents)
    objects = frame_objects(stack)
    node_ids = np.arange(objects.frame.size, dtype=np.uint64)
    pairs = zip(objects.label_id.tolist(), objects.frame.tolist(), strict=True)
    index = {(s, f): i for i, (s, f) in enumerate(pairs)}
    track_ids = track_of_objects(tracks, objects)
    roots = _lineage(tracks)
    voxel = float(np.prod(geometry.scale[1:]))
    edges = _edges(tracks, index)
    world = objects.centroid * np.asarray(geometry.scale[1:]) + np.asarray(geometry.translate[1:])
    node_props = {
        "t": objects.frame,
        **{a: world[:, i] for i, a in enumerate(geometry.axes[1:])},
        "area": objects.pixels * voxel,
        "name": np.asarray([names.get(int(s), "") for s in objects.label_id], dtype=str),
        "seg_id": objects.label_id,
        "track_id": track_ids,
        "lineage_id": np.asarray([roots[int(t)] for t in track_ids], dtype=np.int64),
    }
    metadata = GeffMetadata(
        directed=True,
        axes=_axes(geometry),
        node_props_metadata={},
        edge_props_metadata={},
        track_node_props={"lineage": "lineage_id"},
        related_objects=[RelatedObject(type="labels", path=f"../{SEGMENTATION}", node_prop="seg_id")],
        extra={
            PROVENANCE_KEY: None if provenance is None else provenance.to_dict(),
            LAYER_KEY: {
                "axes": geometry.axes,
                "scale": list(geometry.scale),
                "translate": list(geometry.translate),
                "units": list(geometry.units),
            },
        },
    )
    store = geff_path(path)
    with atomic_dir(store) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        chunks = (1, *stack.shape[1:])
        seg = root.create_array(SEGMENTATION, shape=stack.shape, chunks=chunks, dtype=np.uint32)
        for t in range(stack.shape[0]):
            seg[t] = np.asarray(stack[t]).astype(np.uint32, copy=False)
        write_arrays(
            str(tmp / GEFF_GROUP),
            node_ids,
            {k: {"values": v, "missing": None} for k, v in node_props.items()},
            np.asarray(edges, dtype=np.uint64).reshape(-1, 2),
            {},
            metadata,
            zarr_format=2,
        )
    return store


def _edges(tracks: TrackSet, index: Mapping[tuple[int, int], int]) -> list[tuple[int, int]]:
    """Node pairs: a label's consecutive frames within each track, and parent's last -> child's first."""
    by_id = tracks.by_id()
    edges: list[tuple[int, int]] = []
    for t in tracks.tracks:
        frames = range(t.begin, t.end + 1)
        edges += [(index[(t.label_id, a)], index[(t.label_id, a + 1)]) for a in frames[:-1]]
        if t.parent:
            parent = by_id[t.parent]
            edges.append((index[(parent.label_id, parent.end)], index[(t.label_id, t.begin)]))
    return edges


def is_geff(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a zarr store holding a GEFF group (``tracks`` or at its root)."""
    return _geff_group(Path(path)) is not None


def _geff_group(path: Path) -> Path | None:
    if not path.is_dir():
        return None
    for candidate in (path / GEFF_GROUP, path):
        for attrs in (".zattrs", "zarr.json"):
            file = candidate / attrs
            if file.is_file() and '"geff"' in file.read_text(encoding="utf-8", errors="replace"):
                return candidate
    return None


def geff_provenance(path: str | os.PathLike[str]) -> Provenance | None:
    """The provenance record in a GEFF store's metadata (``extra``), None when it has none."""
    from geff_spec import GeffMetadata

    group = _geff_group(Path(path))
    if group is None:
        raise ValueError(f"{path} holds no GEFF graph")
    record = (GeffMetadata.read(str(group)).extra or {}).get(PROVENANCE_KEY)
    return None if record is None else Provenance.from_dict(record)


def read_geff(path: str | os.PathLike[str]) -> GeffTracks:
    """Read a GEFF store (ours or another tool's, with ``seg_id``) back: graph, tracks, labels.

    Tracks come from ``track_id`` (else one track per ``seg_id``); a track's parent is the track of
    the source of an edge that enters its first node from another track.

    Raises:
        ValueError: not a GEFF store, or nodes without ``t`` or ``seg_id``.
    """
    import zarr
    from geff.core_io import read_to_memory

    group = _geff_group(Path(path))
    if group is None:
        raise ValueError(f"{path} holds no GEFF graph")
    graph = read_to_memory(str(group))
    props = graph["node_props"]
    if "t" not in props or "seg_id" not in props:
        raise ValueError(f"{path}: GEFF nodes need 't' and 'seg_id' properties to be read as labels")
    frames = np.asarray(props["t"]["values"]).astype(np.int64)
    seg = np.asarray(props["seg_id"]["values"]).astype(np.int64)
    track = np.asarray(props["track_id"]["values"]).astype(np.int64) if "track_id" in props else seg
    node_track = dict(zip(np.asarray(graph["node_ids"]).tolist(), track.tolist(), strict=True))
    parent_of: dict[int, int] = {}
    for source, target in np.asarray(graph["edge_ids"]).reshape(-1, 2).tolist():
        if node_track[source] != node_track[target]:
            parent_of[node_track[target]] = node_track[source]
    tracks = []
    for track_id in sorted(set(track.tolist())):
        mine = track == track_id
        tracks.append(
            Track(
                int(track_id),
                int(seg[mine][0]),
                int(frames[mine].min()),
                int(frames[mine].max()),
                parent_of.get(int(track_id), 0),
            )
        )
    names: dict[int, str] = {}
    if "name" in props:
        for s, n in zip(seg.tolist(), np.asarray(props["name"]["values"]).tolist(), strict=True):
            if n:
                names[int(s)] = str(n)
    metadata = graph["metadata"]
    extra = metadata.extra or {}
    record = extra.get(PROVENANCE_KEY)
    provenance = None if record is None else Provenance.from_dict(record)
    labels = None
    for related in metadata.related_objects or []:
        if related.type == "labels":
            labels = np.asarray(zarr.open_array(str((group / related.path).resolve()), mode="r")[...])
            break
    layer = extra.get(LAYER_KEY)
    geometry = None
    if isinstance(layer, Mapping):
        geometry = Geometry(
            str(layer["axes"]),
            tuple(float(s) for s in layer["scale"]),
            tuple(float(t) for t in layer["translate"]),
            tuple(layer["units"]),
        )
    return GeffTracks(labels, TrackSet(tuple(tracks)), names, geometry, provenance, graph)
