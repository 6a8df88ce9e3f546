"""npe2 readers and writers: labels layers with their names (see :mod:`plugin.export`).

Writers (``File > Save Selected Layers``, chosen by the file's extension):

* ``.tif`` / ``.tiff``: ImageJ/Fiji TIFF + ``.names.json`` + ``.names.csv``;
* ``.ome.zarr`` / ``.zarr``: OME-Zarr (NGFF 0.4) labels with ``image-label`` names;
* ``.geojson``: one polygon per label (and slice), QuPath conventions, pixel coordinates;
* ``.csv``: measurements per label and slice; select an image layer of the same
  shape too and it gets the mean intensity.

* ``.ctc`` (a folder): Cell Tracking Challenge masks + ``man_track.txt``, a time-lapse;
* ``.geff``: a GEFF store (``NAME.geff.zarr``) with the segmentation beside the graph.

Readers: TIFFs we wrote (or their ``.names.json``), OME-Zarr stores holding
NGFF labels, and GeoJSON files (ours or QuPath's) come back as labels layers
with names, scale, translate and units. A CTC folder or a GEFF store (ours,
or one corrected in another tracking tool) comes back as a labels layer (the
CTC/track ids, divisions in its metadata) plus a Tracks layer.
Any other TIFF that carries a pixel
size (ImageJ or OME metadata, or resolution tags) opens as an image layer
with that pixel size, unit and z spacing (:mod:`plugin.calibration`); other
TIFFs are left to napari's own reader.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from plugin.calibration import file_calibration, read_calibrated_tiff
from plugin.export import (
    CTC,
    GEFF,
    GEOJSON,
    MEASUREMENTS,
    OME_ZARR,
    export_labels,
    is_labels_file,
    read_any,
    write_labels,
)
from plugin.labels.lineage import LINEAGE_KEY, lineage_from_metadata, lineage_metadata
from plugin.labels.names import METADATA_KEY, features_table, names_from_metadata
from plugin.tracks import napari_tracks, tracks_layer_name
from protocol.formats.ctc import is_ctc, read_ctc
from protocol.formats.geff_tracks import is_geff, read_geff
from protocol.formats.geojson import is_geojson
from protocol.formats.labels_file import SCORES_KEY, LabelsFile
from protocol.formats.ngff import is_ngff_labels

LayerData = tuple[Any, dict[str, Any], str]


def _layer_facts(meta: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "scale": meta.get("scale"),
        "translate": meta.get("translate"),
        "units": meta.get("units"),
        "axis_labels": meta.get("axis_labels"),
    }


def _exact_ids(data: Any, meta: Mapping[str, Any]) -> Any:
    """The label ids to write: level 0 of a multiscale (pyramid) labels layer, else the data."""
    return data[0] if meta.get("multiscale") else data


def write_labels_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer: the labels as an ImageJ TIFF plus ``.names.json`` and ``.names.csv``."""
    data = _exact_ids(data, meta)
    names = names_from_metadata(meta.get("metadata"))
    facts = _layer_facts(meta)
    written = write_labels(
        path, data, names, facts["scale"], facts["translate"], facts["units"], facts["axis_labels"]
    )
    return [str(p) for p in written]


def _write_as(fmt: str, path: str, data: Any, meta: dict[str, Any], **extra: Any) -> list[str]:
    names = names_from_metadata(meta.get("metadata"))
    title = str(meta.get("name") or "labels")
    parents = lineage_from_metadata(meta.get("metadata"))
    written = export_labels(
        fmt,
        path,
        _exact_ids(data, meta),  # not read here: a large layer is written chunk by chunk
        names,
        title=title,
        parents=parents,
        **_layer_facts(meta),
        **extra,
    )
    return [str(p) for p in written]


def write_ctc_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer: a time-lapse as a CTC folder (divisions from the layer's metadata)."""
    return _write_as(CTC.key, path, data, meta)


def write_geff_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer: a time-lapse as a GEFF store with its segmentation."""
    target = path + ".zarr" if path.lower().endswith(".geff") else path
    return _write_as(GEFF.key, target, data, meta)


def write_ngff_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer: the labels as an OME-Zarr (NGFF) label image with names."""
    return _write_as(OME_ZARR.key, path, data, meta)


def write_geojson_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer: one GeoJSON polygon feature per label (pixel coordinates)."""
    return _write_as(GEOJSON.key, path, data, meta)


def write_measurements_layers(path: str, layers: list[LayerData]) -> list[str]:
    """npe2 multi-layer writer: measurements CSV of the labels layer (+ mean intensity of an image layer)."""
    labels = [layer for layer in layers if layer[2] == "labels"]
    images = [layer for layer in layers if layer[2] == "image"]
    if len(labels) != 1:
        raise ValueError("select one labels layer (and optionally one image layer) to save measurements")
    data, meta, _ = labels[0]
    image = None
    if images:
        image_data = images[0][0]
        image = np.asarray(image_data[0] if images[0][1].get("multiscale") else image_data)
    return _write_as(MEASUREMENTS.key, path, data, meta, image=image)


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """npe2 reader: TIFFs we wrote (or ``.names.json``), OME-Zarr labels, GeoJSON, calibrated TIFF images;
    others left alone."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    target = Path(str(path).rstrip("/\\"))
    if is_ctc(target) or is_geff(target):
        return read_track_layers
    if is_ngff_labels(target) or is_geojson(target) or is_labels_file(target):
        return read_layers
    if file_calibration(target) is not None:
        return read_calibrated_tiff
    return None


def read_track_layers(path: str | list[str]) -> list[LayerData]:
    """A CTC folder or GEFF store: the labels (track ids, divisions in metadata) and a Tracks layer."""
    target = Path(str(path[0] if isinstance(path, list) else path).rstrip("/\\"))
    name = _stem(target)
    names: dict[int, str] = {}
    kwargs: dict[str, Any] = {}
    if is_ctc(target):
        ctc = read_ctc(target)
        labels, parents = ctc.labels, ctc.tracks.parents()
    else:
        geff = read_geff(target)
        if geff.labels is None:
            raise ValueError(f"{target}: the GEFF has no segmentation to open as labels")
        labels, names = geff.labels, geff.names
        by_id = geff.tracks.by_id()
        parents = {  # label lineage: a gap's later run (same label) is no division
            t.label_id: by_id[t.parent].label_id
            for t in geff.tracks.tracks
            if t.parent and by_id[t.parent].label_id != t.label_id
        }
        if geff.geometry is not None:
            kwargs = geff.geometry.napari_kwargs()
    tracks = napari_tracks(labels, parents)
    labels_kwargs = {
        "name": name,
        "metadata": {METADATA_KEY: names, LINEAGE_KEY: lineage_metadata(parents)},
        "features": features_table(names),
        **kwargs,
    }
    tracks_kwargs = {
        "name": tracks_layer_name(name),
        "graph": tracks.graph,
        **{k: v for k, v in kwargs.items() if k in ("scale", "translate")},
    }
    return [(labels, labels_kwargs, "labels"), (tracks.data, tracks_kwargs, "tracks")]


def _layer(saved: LabelsFile, default_name: str) -> LayerData:
    metadata: dict[str, Any] = {METADATA_KEY: saved.names}
    if saved.scores:  # a concept run's (sam2-batch --concept): as Find all keeps them
        metadata[SCORES_KEY] = saved.scores
    kwargs: dict[str, Any] = {
        "name": saved.title or default_name,
        "metadata": metadata,
        "features": features_table(saved.names),
        **saved.layer_kwargs(),
    }
    return (saved.data, kwargs, "labels")


def _stem(target: Path) -> str:
    name = target.name
    for suffix in (".names.json", ".geff.zarr", ".ome.zarr", ".zarr", ".geojson", ".ctc"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return target.stem


def read_layers(path: str | list[str]) -> list[LayerData]:
    """One labels layer (per label image of an OME-Zarr store) with its names in metadata and features."""
    target = Path(str(path[0] if isinstance(path, list) else path).rstrip("/\\"))
    return [_layer(saved, _stem(target)) for saved in read_any(target)]
