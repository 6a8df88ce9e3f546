"""GeoJSON for QuPath and GIS tools: one polygon feature per label (and per slice of a stack).

Polygons follow pixel edges exactly: each label's pixels are cut into runs
along rows, each run is a rectangle, and shapely (GEOS) unites them; holes
stay holes and a label split into parts becomes a ``MultiPolygon``. So a
polygon's area is exactly the label's pixel count (times the pixel area in
physical coordinates).

Coordinates are GeoJSON ``[x, y]`` = ``[col, row]`` with the image's top-left
corner at (0, 0) and y pointing down, as QuPath and ImageJ draw them. In
physical coordinates they are multiplied by the pixel size and shifted by
the layer's origin (the corner of pixel 0 sits at the layer's ``translate``,
as in the ImageJ TIFF).

Each feature's ``properties`` follow QuPath's conventions:
``objectType: "annotation"``, ``name`` and ``classification: {"name", "color"}``
(unnamed labels are "Label <id>" with no classification), plus ``label_id``
and, for stacks, the plane (``z``/``t`` index, also in QuPath's
``geometry.plane``). The collection carries a foreign member
``"napari-sam2-broker"`` with the array shape, axes, pixel size and origin,
so this plugin's reader rebuilds the labels layer exactly.
"""

from __future__ import annotations

import colorsys
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from protocol.formats.geometry import Geometry
from protocol.formats.labels_file import LabelsFile
from protocol.formats.provenance import Provenance
from protocol.runtime.atomic import atomic_file

GEOJSON_SUFFIXES = (".geojson",)
COLLECTION_KEY = "napari-sam2-broker"
PIXEL = "pixel"
PHYSICAL = "physical"


def geojson_path(path: str | os.PathLike[str]) -> Path:
    """The file path for a requested path (``.geojson`` added when missing)."""
    p = Path(path)
    return p if p.suffix.lower() in GEOJSON_SUFFIXES else p.with_name(p.name + ".geojson")


def label_polygons(plane: np.ndarray) -> dict[int, Any]:
    """``{label_id: shapely Polygon or MultiPolygon}`` along pixel edges, coordinates (col, row).

    Args:
        plane: 2D integer labels (rows, cols); 0 is background.
    """
    import shapely

    labels = np.asarray(plane)
    if labels.ndim != 2:
        raise ValueError(f"label_polygons takes one 2D plane, got shape {labels.shape}")
    rows, cols = labels.shape
    if labels.size == 0:
        return {}
    change = labels[:, 1:] != labels[:, :-1]
    starts_mask = np.ones_like(labels, dtype=bool)
    starts_mask[:, 1:] = change
    ends_mask = np.ones_like(labels, dtype=bool)
    ends_mask[:, :-1] = change
    starts, ends = np.flatnonzero(starts_mask), np.flatnonzero(ends_mask)
    values = labels.ravel()[starts]
    keep = values != 0
    starts, ends, values = starts[keep], ends[keep], values[keep]
    if values.size == 0:
        return {}
    run_rows, first_col, last_col = starts // cols, starts % cols, ends % cols + 1
    # runs repeated on consecutive rows (same label, same columns) become one taller rectangle
    order = np.lexsort((run_rows, last_col, first_col, values))
    run_rows, first_col, last_col, values = run_rows[order], first_col[order], last_col[order], values[order]
    same = np.zeros(values.size, dtype=bool)
    same[1:] = (
        (values[1:] == values[:-1])
        & (first_col[1:] == first_col[:-1])
        & (last_col[1:] == last_col[:-1])
        & (run_rows[1:] == run_rows[:-1] + 1)
    )
    block = np.flatnonzero(~same)
    bottom = np.append(block[1:], values.size) - 1
    boxes = shapely.box(first_col[block], run_rows[block], last_col[block], run_rows[bottom] + 1)
    values = values[block]
    order = np.argsort(values, kind="stable")
    ids, first = np.unique(values[order], return_index=True)
    polygons: dict[int, Any] = {}
    for label_id, group in zip(ids, np.split(order, first[1:]), strict=True):
        merged = shapely.union_all(boxes[group])
        polygons[int(label_id)] = shapely.simplify(merged, 0.0)
    return polygons


def label_color(label_id: int) -> list[int]:
    """A stable, distinct RGB colour (0..255) for a label id (golden-ratio hues)."""
    hue = (label_id * 0.618033988749895) % 1.0
    return [round(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.75, 0.95)]


def _planes(data: np.ndarray) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
    """Every 2D (rows, cols) plane of an nD array with its leading indices."""
    for index in np.ndindex(*data.shape[:-2]):
        yield index, data[index]


def _to_physical(geometry_obj: Any, geometry: Geometry) -> Any:
    import shapely

    sx, sy = geometry.size("x"), geometry.size("y")
    ox, oy = geometry.origin("x"), geometry.origin("y")
    return shapely.transform(geometry_obj, lambda xy: xy * np.array([sx, sy]) + np.array([ox, oy]))


def labels_to_features(
    data: np.ndarray,
    names: Mapping[int, str],
    geometry: Geometry,
    coordinates: str = PIXEL,
) -> list[dict[str, Any]]:
    """GeoJSON features, one per label and 2D plane (leading axes: one plane per index).

    Args:
        data: nD integer labels, axes as in ``geometry`` (the last two are rows, cols).
        names: ``{label_id: name}``.
        geometry: axes, pixel size and origin.
        coordinates: ``"pixel"`` (pixel edges) or ``"physical"`` (x pixel size + origin).
    """
    import shapely

    if coordinates not in (PIXEL, PHYSICAL):
        raise ValueError(f"coordinates must be 'pixel' or 'physical', got {coordinates!r}")
    features = []
    leading = geometry.axes[:-2]
    for index, plane in _planes(np.asarray(data)):
        for label_id, shape in label_polygons(plane).items():
            if coordinates == PHYSICAL:
                shape = _to_physical(shape, geometry)
            geo = json.loads(shapely.to_geojson(shape))
            name = names.get(label_id)
            properties: dict[str, Any] = {
                "objectType": "annotation",
                "name": name or f"Label {label_id}",
                "label_id": label_id,
                "pixel_count": round(shape.area / _pixel_area(geometry, coordinates)),
            }
            if name:
                properties["classification"] = {"name": name, "color": label_color(label_id)}
            if index:
                properties.update({axis: int(i) for axis, i in zip(leading, index, strict=True)})
                geo["plane"] = {
                    "c": -1,
                    "z": int(properties.get("z", 0)),
                    "t": int(properties.get("t", 0)),
                }
            features.append({"type": "Feature", "geometry": geo, "properties": properties})
    return features


def _pixel_area(geometry: Geometry, coordinates: str) -> float:
    return geometry.size("x") * geometry.size("y") if coordinates == PHYSICAL else 1.0


def write_geojson(
    path: str | os.PathLike[str],
    data: np.ndarray,
    names: Mapping[int, str],
    geometry: Geometry,
    coordinates: str = PIXEL,
    provenance: Provenance | None = None,
) -> Path:
    """Write the labels as a GeoJSON FeatureCollection (atomically); return the path written.

    Args:
        path: the file (``.geojson`` is added when missing).
        data, names, geometry, coordinates: as :func:`labels_to_features`.
        provenance: how the labels were made, as ``napari-sam2-broker.provenance`` of the collection.
    """
    target = geojson_path(path)
    array = np.asarray(data)
    collection = {
        "type": "FeatureCollection",
        COLLECTION_KEY: {
            "shape": list(array.shape),
            "axes": geometry.axes,
            "scale": list(geometry.scale),
            "translate": list(geometry.translate),
            "units": list(geometry.units),
            "coordinates": coordinates,
            "provenance": None if provenance is None else provenance.to_dict(),
        },
        "features": labels_to_features(array, names, geometry, coordinates),
    }
    text = json.dumps(collection, separators=(",", ":"))
    with atomic_file(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target


def read_geojson_provenance(path: str | os.PathLike[str]) -> Provenance | None:
    """The provenance record of a GeoJSON file we wrote, None when it has none."""
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    stored = document.get(COLLECTION_KEY) if isinstance(document, dict) else None
    record = stored.get("provenance") if isinstance(stored, dict) else None
    return None if record is None else Provenance.from_dict(record)


def is_geojson(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a ``.geojson`` file (any producer: this plugin, QuPath, GIS tools)."""
    p = Path(path)
    return p.suffix.lower() in GEOJSON_SUFFIXES and p.is_file()


def _feature_label(feature: Mapping[str, Any], index: int) -> tuple[int, str]:
    """The label id and name of a feature: ours, or QuPath's classification/name, else its position."""
    properties = feature.get("properties") or {}
    label_id = properties.get("label_id")
    if not isinstance(label_id, int) or label_id <= 0:
        label_id = index + 1
    classification = properties.get("classification")
    name = properties.get("name")
    if isinstance(classification, dict) and isinstance(classification.get("name"), str):
        name = name if isinstance(name, str) and name else classification["name"]
    return label_id, name if isinstance(name, str) else ""


def read_geojson(path: str | os.PathLike[str]) -> LabelsFile:
    """Rasterise a GeoJSON FeatureCollection back into labels with names.

    Polygons are filled where a pixel's centre lies inside (exact for the
    pixel-edge polygons we write). Files we wrote come back with their shape,
    plane indices, scale, origin and units; others (e.g. QuPath's) become one
    2D plane large enough for every polygon, in pixel coordinates, ids in
    feature order.

    Raises:
        ValueError: not a GeoJSON FeatureCollection, Feature or list of features.
    """
    import shapely

    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path}: not a readable GeoJSON file ({e})") from e
    if isinstance(document, dict) and document.get("type") == "Feature":
        document = {"type": "FeatureCollection", "features": [document]}
    if isinstance(document, list):  # QuPath's export without "Export as FeatureCollection"
        document = {"type": "FeatureCollection", "features": document}
    if not isinstance(document, dict) or not isinstance(document.get("features"), list):
        raise ValueError(f"{path}: not a GeoJSON FeatureCollection")
    stored = document.get(COLLECTION_KEY)
    ours: dict[str, Any] = stored if isinstance(stored, dict) else {}
    shapes = []
    for i, feature in enumerate(document["features"]):
        geo = feature.get("geometry") if isinstance(feature, dict) else None
        if not isinstance(geo, dict) or geo.get("type") not in ("Polygon", "MultiPolygon"):
            continue
        label_id, name = _feature_label(feature, i)
        shape = shapely.from_geojson(json.dumps({k: v for k, v in geo.items() if k != "plane"}))
        shapes.append((label_id, name, shape, feature.get("properties") or {}, geo.get("plane") or {}))
    geometry = _stored_geometry(ours)
    if geometry is not None and ours.get("coordinates") == PHYSICAL:
        shapes = [(i, n, _to_pixels(s, geometry), p, pl) for i, n, s, p, pl in shapes]
    shape_nd = ours.get("shape")
    if not (isinstance(shape_nd, list) and len(shape_nd) >= 2 and all(isinstance(n, int) for n in shape_nd)):
        bounds = [s.bounds for _, _, s, _, _ in shapes] or [(0, 0, 1, 1)]
        shape_nd = [int(np.ceil(max(b[3] for b in bounds))), int(np.ceil(max(b[2] for b in bounds)))]
        geometry = None
    axes = geometry.axes if geometry is not None else "yx"
    data = np.zeros(shape_nd, dtype=np.uint32)
    names: dict[int, str] = {}
    for label_id, name, shape, properties, plane in shapes:
        index = tuple(_plane_index(axis, properties, plane) for axis in axes[:-2])
        _fill(data[index], shape, label_id)
        if name and name != f"Label {label_id}":
            names[label_id] = name
    if geometry is None:
        return LabelsFile(data, names)
    return LabelsFile(data, names, geometry.scale, geometry.translate, geometry.units, geometry.axes)


def _stored_geometry(ours: Mapping[str, Any]) -> Geometry | None:
    try:
        units = ours.get("units") or [None] * len(ours["axes"])
        return Geometry(
            str(ours["axes"]),
            tuple(float(s) for s in ours["scale"]),
            tuple(float(t) for t in ours["translate"]),
            tuple(u if isinstance(u, str) else None for u in units),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _to_pixels(shape: Any, geometry: Geometry) -> Any:
    import shapely

    scale = np.array([geometry.size("x"), geometry.size("y")])
    origin = np.array([geometry.origin("x"), geometry.origin("y")])
    return shapely.transform(shape, lambda xy: (xy - origin) / scale)


def _plane_index(axis: str, properties: Mapping[str, Any], plane: Mapping[str, Any]) -> int:
    value = properties.get(axis, plane.get(axis, 0))
    return int(value) if isinstance(value, int | float) else 0


def _fill(plane: np.ndarray, shape: Any, label_id: int) -> None:
    """Set ``label_id`` on every pixel of the 2D ``plane`` whose centre lies inside ``shape``."""
    import shapely

    x0, y0, x1, y1 = shape.bounds
    rows, cols = plane.shape
    r0, r1 = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)), rows)
    c0, c1 = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)), cols)
    if r0 >= r1 or c0 >= c1:
        return
    rr, cc = np.mgrid[r0:r1, c0:c1]
    inside = shapely.contains_xy(shape, cc.ravel() + 0.5, rr.ravel() + 0.5).reshape(rr.shape)
    plane[r0:r1, c0:c1][inside] = label_id
