"""npe2 reader and writer: labels layers with their names (see :mod:`plugin.export`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from plugin.export import is_labels_file, read_labels, write_labels
from plugin.label_names import METADATA_KEY, features_table, names_from_metadata

LayerData = tuple[Any, dict[str, Any], str]


def write_labels_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer: the labels as TIFF plus ``.names.json`` and ``.names.csv``."""
    names = names_from_metadata(meta.get("metadata"))
    written = write_labels(path, data, names, meta.get("scale"), meta.get("translate"))
    return [str(p) for p in written]


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """npe2 reader: only TIFFs we wrote (or their ``.names.json``); anything else is left to others."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    return read_layers if is_labels_file(path) else None


def read_layers(path: str | list[str]) -> list[LayerData]:
    """One labels layer with its names in metadata and features."""
    target = Path(path[0] if isinstance(path, list) else path)
    saved = read_labels(target)
    stem = target.name[: -len(".names.json")] if target.name.endswith(".names.json") else target.stem
    kwargs: dict[str, Any] = {
        "name": stem,
        "metadata": {METADATA_KEY: saved.names},
        "features": features_table(saved.names),
    }
    if saved.scale is not None:
        kwargs["scale"] = saved.scale
    if saved.translate is not None:
        kwargs["translate"] = saved.translate
    return [(saved.data, kwargs, "labels")]
