"""npe2 readers and writers: labels layers with their names (see :mod:`plugin.export`).

Writers (``File > Save Selected Layers``, chosen by the file's extension):

* ``.tif`` / ``.tiff``: ImageJ/Fiji TIFF + ``.names.json`` + ``.names.csv``;
* ``.ome.zarr`` / ``.zarr``: OME-Zarr (NGFF 0.4) labels with ``image-label`` names;
* ``.geojson``: one polygon per label (and slice), QuPath conventions, pixel coordinates;
* ``.csv``: measurements per label and slice; select an image layer of the same
  shape too and it gets the mean intensity.

Readers: TIFFs we wrote (or their ``.names.json``), OME-Zarr stores holding
NGFF labels, and GeoJSON files (ours or QuPath's) come back as labels layers
with names, scale, translate and units.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from plugin.export import (
    GEOJSON,
    MEASUREMENTS,
    OME_ZARR,
    export_labels,
    is_labels_file,
    read_any,
    write_labels,
)
from plugin.labels.names import METADATA_KEY, features_table, names_from_metadata
from protocol.formats.geojson import is_geojson
from protocol.formats.labels_file import LabelsFile
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
    written = export_labels(
        fmt, path, np.asarray(_exact_ids(data, meta)), names, title=title, **_layer_facts(meta), **extra
    )
    return [str(p) for p in written]


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
    """npe2 reader: TIFFs we wrote (or ``.names.json``), OME-Zarr labels, GeoJSON; others left alone."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    target = Path(str(path).rstrip("/\\"))
    if is_ngff_labels(target) or is_geojson(target) or is_labels_file(target):
        return read_layers
    return None


def _layer(saved: LabelsFile, default_name: str) -> LayerData:
    kwargs: dict[str, Any] = {
        "name": saved.title or default_name,
        "metadata": {METADATA_KEY: saved.names},
        "features": features_table(saved.names),
        **saved.layer_kwargs(),
    }
    return (saved.data, kwargs, "labels")


def _stem(target: Path) -> str:
    name = target.name
    for suffix in (".names.json", ".ome.zarr", ".zarr", ".geojson"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return target.stem


def read_layers(path: str | list[str]) -> list[LayerData]:
    """One labels layer (per label image of an OME-Zarr store) with its names in metadata and features."""
    target = Path(str(path[0] if isinstance(path, list) else path).rstrip("/\\"))
    return [_layer(saved, _stem(target)) for saved in read_any(target)]
