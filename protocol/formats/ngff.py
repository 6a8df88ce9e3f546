"""OME-Zarr (NGFF 0.4) labels: write with ``ome-zarr``, read back with names, scale and units.

Layout (the NGFF labels layout, zarr v2, NGFF 0.4 so Fiji, QuPath-era tools
and napari-ome-zarr all read it)::

    cells.ome.zarr/                 root group (optionally the source image: protocol/formats/ngff_image.py)
    └── labels/                     {"labels": ["cells"]}
        └── cells/                  multiscales (axes with units, scale + translation)
            ├── s0 ...              + "image-label": {"properties": [{"label-value": 4,
            └── s1 ...                                 "name": "cell nucleus"}, ...]}

``s0`` is the full-resolution labels; lower levels halve y and x (nearest
neighbour, as labels need) while both stay at least :data:`MIN_LEVEL_SIZE`.
Pixel size and units come from the layer; an axis whose unit is unknown has
no ``unit`` (NGFF: none said). The store is written into a temporary
directory beside the target, then swapped in (:func:`protocol.runtime.atomic.atomic_dir`).

In napari-ome-zarr open ``cells.ome.zarr/labels`` (or ``labels/cells``); this
plugin's reader opens ``cells.ome.zarr`` itself.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from protocol.formats.geometry import Geometry
from protocol.formats.labels_file import LabelsFile, scores_from_metadata
from protocol.formats.provenance import PROVENANCE_KEY, Provenance
from protocol.runtime.atomic import atomic_dir

NGFF_SUFFIXES = (".ome.zarr", ".zarr")
MIN_LEVEL_SIZE = 256
"""Lower resolution levels are made while y and x stay at least this many pixels."""
CHUNK_YX = 1024
NGFF_VERSION = "0.4"


def zarr_path(path: str | os.PathLike[str]) -> Path:
    """The store path for a requested path (``.ome.zarr`` added when it does not end in ``.zarr``)."""
    p = Path(path)
    return p if p.name.lower().endswith(".zarr") else p.with_name(p.name + ".ome.zarr")


def label_group_name(name: str) -> str:
    """A label image name safe as a zarr path: letters, digits, ``._-``; others become ``_``."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "labels"
    return safe


def scale_factors(shape_yx: tuple[int, int]) -> list[int]:
    """Downsampling factors (2, 4, ...) for the lower levels of a (rows, cols) plane."""
    factors: list[int] = []
    factor = 2
    while min(shape_yx) // factor >= MIN_LEVEL_SIZE:
        factors.append(factor)
        factor *= 2
    return factors


def image_label_properties(names: Mapping[int, str]) -> list[dict[str, Any]]:
    """NGFF ``image-label.properties``: ``[{"label-value": id, "name": name}, ...]`` sorted by id."""
    return [{"label-value": int(i), "name": str(n)} for i, n in sorted(names.items())]


def write_ngff_labels(
    path: str | os.PathLike[str],
    data: np.ndarray,
    names: Mapping[int, str],
    geometry: Geometry,
    name: str = "labels",
    image: Callable[[Any], None] | None = None,
    provenance: Provenance | None = None,
    stop: Callable[[], None] | None = None,
) -> Path:
    """Write ``data`` as the NGFF label image ``labels/<name>`` of a new store at ``path``; return the store.

    Args:
        path: the store (``.ome.zarr`` is added unless it ends in ``.zarr``); replaced atomically if present.
        data: nD unsigned integer labels, axes as in ``geometry`` (2 to 5 axes).
        names: ``{label_id: name}`` (stored as ``image-label`` properties).
        geometry: axes, pixel size, origin and units (units None: not written).
        name: the label image's name (made safe for a zarr path).
        image: called with the store's root group before the store is moved into place, to
            write the source image there (:func:`protocol.formats.ngff_image.write_image_pyramid`).
        provenance: how the labels were made, as the root group's ``sam2.provenance`` attribute.
        stop: called before each chunk is read (one thread): it raises (e.g. ``KeyboardInterrupt``
            of a deferred Ctrl-C, ``batch/interrupt.py``) to abandon the write between chunks, never
            inside zarr's asyncio bridge; the temporary store is then removed. None: one
            ``np.asarray`` of ``data`` and dask's default scheduler.
    """
    import dask
    import dask.array as da
    import zarr
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_labels

    if data.dtype.kind not in "ub":
        raise TypeError(f"NGFF labels must be unsigned integers, got {data.dtype}")
    if data.ndim != geometry.ndim:
        raise ValueError(f"labels have {data.ndim} axes, geometry {geometry.axes!r}")
    store = zarr_path(path)
    group_name = label_group_name(name)
    chunks = tuple(1 for _ in data.shape[:-2]) + tuple(min(CHUNK_YX, n) for n in data.shape[-2:])
    units = {a: u for a, u in zip(geometry.axes, geometry.units, strict=True) if u is not None}
    source: Any = np.asarray(data) if stop is None else StopBetweenChunks(data, stop)
    scheduler: dict[str, Any] = {} if stop is None else {"scheduler": "synchronous"}
    with atomic_dir(store) as tmp, dask.config.set(scheduler):
        root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        write_labels(
            da.from_array(source, chunks=chunks),
            root,
            name=group_name,
            scaler=None,
            scale_factors=scale_factors((data.shape[-2], data.shape[-1])),
            fmt=FormatV04(),
            axes=list(geometry.axes),
            scale=dict(zip(geometry.axes, geometry.scale, strict=True)),
            axes_units=units or None,
            storage_options={"chunks": chunks},
            label_metadata={"properties": image_label_properties(names)},
        )
        _add_translation(root[f"labels/{group_name}"], geometry.translate)
        if image is not None:
            image(root)
            link_to_root_image(root, group_name)
        if provenance is not None:
            root.attrs[PROVENANCE_KEY] = provenance.to_dict()
    return store


class StopBetweenChunks:
    """An array-like that calls ``stop`` before each read: the safe points of a chunked write.

    Wrap the source of a dask/zarr write in it (run with dask's synchronous scheduler, so a stop
    raised between chunks leaves no other thread writing).
    """

    def __init__(self, array: Any, stop: Callable[[], None]) -> None:
        self._array = array
        self._stop = stop
        self.shape = tuple(int(n) for n in array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        self._stop()
        return np.asarray(self._array[key])


def link_to_root_image(root: Any, group_name: str) -> None:
    """Name the store's root image as the source of label image ``labels/<group_name>`` (NGFF
    ``image-label.source``), so readers pair them."""
    label_group = root[f"labels/{group_name}"]
    image_label = dict(label_group.attrs.get("image-label") or {"version": NGFF_VERSION})
    image_label["source"] = {"image": "../../"}
    label_group.attrs["image-label"] = image_label


def _add_translation(group: Any, translate: tuple[float, ...]) -> None:
    """Shift every level's NGFF translation by the layer's origin (ome-zarr writes level offsets only)."""
    if not any(translate):
        return
    attrs = dict(group.attrs)
    for multiscale in attrs.get("multiscales", []):
        for dataset in multiscale.get("datasets", []):
            transforms = dataset.get("coordinateTransformations", [])
            shift = next((t for t in transforms if t.get("type") == "translation"), None)
            if shift is None:
                transforms.append({"type": "translation", "translation": list(translate)})
            else:
                shift["translation"] = [a + b for a, b in zip(shift["translation"], translate, strict=True)]
    group.attrs.update(attrs)


def _ome_attrs(group: Any) -> dict[str, Any]:
    """A group's NGFF attributes (0.4: the attributes; 0.5: their ``ome`` entry)."""
    attrs = dict(group.attrs)
    ome = attrs.get("ome")
    return dict(ome) if isinstance(ome, dict) else attrs


def _label_groups(group: Any) -> list[Any]:
    """The NGFF label images in or under ``group``: a store root, its ``labels`` group or one label image."""
    attrs = _ome_attrs(group)
    if "image-label" in attrs and "multiscales" in attrs:
        return [group]
    labels_group = group if "labels" in attrs else None
    if labels_group is None:
        try:
            child = group["labels"]
        except (KeyError, FileNotFoundError):
            return []
        if "labels" not in _ome_attrs(child):
            return []
        labels_group = child
    found = []
    for name in _ome_attrs(labels_group).get("labels", []):
        try:
            found.append(labels_group[str(name)])
        except (KeyError, FileNotFoundError):
            continue
    return [g for g in found if "multiscales" in _ome_attrs(g)]


def _open(path: str | os.PathLike[str]) -> Any:
    import zarr

    return zarr.open_group(str(path), mode="r")


def is_ngff_labels(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an OME-Zarr store (or its ``labels`` group, or a label image) holding labels."""
    p = Path(path)
    if not p.is_dir():
        return False
    try:
        return bool(_label_groups(_open(p)))
    except Exception:  # zarr raises many kinds of error for a folder that is not a store
        return False


def read_ngff_provenance(path: str | os.PathLike[str]) -> Provenance | None:
    """The ``sam2.provenance`` attribute of the store's root group, None when it has none."""
    record = dict(_open(path).attrs).get(PROVENANCE_KEY)
    return None if record is None else Provenance.from_dict(record)


def read_ngff_labels(path: str | os.PathLike[str]) -> list[LabelsFile]:
    """Every label image in the store at ``path``: full-resolution data, names, scale, translate, units.

    Raises:
        ValueError: the path holds no NGFF label image.
    """
    root = _open(path)
    groups = _label_groups(root)
    if not groups:
        raise ValueError(f"{path} holds no OME-Zarr (NGFF) label image")
    scores = scores_from_metadata(dict(root.attrs))  # a concept run's, written at the root
    return [_read_label_group(g, scores) for g in groups]


def _read_label_group(group: Any, scores: dict[int, float]) -> LabelsFile:
    attrs = _ome_attrs(group)
    multiscale = attrs["multiscales"][0]
    axes_meta = multiscale.get("axes") or []
    first = multiscale["datasets"][0]
    data = np.asarray(group[first["path"]][...])
    ndim = data.ndim
    scale: tuple[float, ...] = (1.0,) * ndim
    translate: tuple[float, ...] = (0.0,) * ndim
    for transform in first.get("coordinateTransformations", []):
        if transform.get("type") == "scale" and len(transform.get("scale", ())) == ndim:
            scale = tuple(float(s) for s in transform["scale"])
        if transform.get("type") == "translation" and len(transform.get("translation", ())) == ndim:
            translate = tuple(float(t) for t in transform["translation"])
    axes = "".join(str(a.get("name", "?"))[:1] if isinstance(a, dict) else str(a)[:1] for a in axes_meta)
    units = tuple(a.get("unit") if isinstance(a, dict) else None for a in axes_meta)
    names: dict[int, str] = {}
    for entry in attrs.get("image-label", {}).get("properties", []) or []:
        value, name = entry.get("label-value"), entry.get("name")
        if isinstance(value, int) and isinstance(name, str) and name:
            names[value] = name
    title = multiscale.get("name") or group.basename
    return LabelsFile(
        data,
        names,
        scale,
        translate,
        units if len(units) == ndim else None,
        axes if len(axes) == ndim else None,
        title=str(title),
        scores=scores,
    )
