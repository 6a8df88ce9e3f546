"""Save and load a labels layer with its names.

``write_labels("cells.tif", ...)`` writes three files, each atomically (a
temporary file in the same folder, then ``os.replace``):

* ``cells.tif``: the labels as an ImageJ/Fiji hyperstack (:mod:`protocol.formats.imagej`:
  calibration, origin, names in Info and Properties; uint8, uint16, or float32
  for ids above 65535) when ImageJ can hold them, else a plain TIFF in the
  smallest unsigned dtype with the names, scale and translate in its
  (tifffile "shaped") JSON description;
* ``cells.names.json``: ``{"label_names": {"1": "cell nucleus"}, "scale": [...],
  "translate": [...]}``;
* ``cells.names.csv``: ``id,name,pixel_count`` for every label present or named.

Labels too large to read into one array (a pyramid layer's level 0, or any labels
above the memory budget: :mod:`plugin.export_large`) are written tile by tile
as a uint32 tiled BigTIFF instead (:mod:`protocol.formats.tiled_tiff`, the file
``sam2-batch`` writes beyond its budget; names, scale and translate in its JSON
description), with the same two sidecars; :func:`read_labels` opens such a file
above the budget lazily (a zarr array over its tiles).

:func:`read_labels` restores data, names, scale and translate (names from the
JSON file, or from the TIFF description when the JSON file is missing).

:func:`export_labels` writes any of :data:`EXPORT_FORMATS` (this TIFF set,
OME-Zarr, GeoJSON, measurements CSV, and for a time-lapse the Cell Tracking
Challenge folder and GEFF; see :mod:`protocol.formats`), each with the
provenance record when given (:mod:`protocol.formats.provenance`), and
:func:`read_any` reads the first three back.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from plugin.export_large import (
    check_fits_memory,
    checked_id_range,
    read_lazily,
    write_ngff_chunkwise,
    written_chunkwise,
)
from plugin.labels.names import METADATA_KEY, clean_name, names_from_metadata
from plugin.labels.stats import pixel_counts
from protocol.formats.ctc import write_ctc
from protocol.formats.geff_tracks import geff_path, write_geff
from protocol.formats.geojson import PIXEL, geojson_path, is_geojson, read_geojson, write_geojson
from protocol.formats.geometry import Geometry
from protocol.formats.imagej import PROPERTIES_KEY, read_imagej, write_imagej
from protocol.formats.labels_file import LabelsFile, scores_from_metadata
from protocol.formats.measure import MEASUREMENTS_SUFFIX, measurements_path, write_measurements
from protocol.formats.ngff import is_ngff_labels, read_ngff_labels, write_ngff_labels, zarr_path
from protocol.formats.provenance import PROVENANCE_KEY, Provenance, sidecar_path
from protocol.formats.tiled_tiff import TIFF_LABEL_DTYPE, open_tiled_tiff, write_tiled_tiff
from protocol.runtime.atomic import atomic_file

FORMAT = "napari-sam2-broker labels v1"
TIFF_SUFFIXES = (".tif", ".tiff")
__all__ = [
    "EXPORT_FORMATS",
    "LabelsFile",
    "export_labels",
    "export_paths",
    "is_labels_file",
    "read_any",
    "read_labels",
    "write_labels",
]


def tiff_path(path: str | os.PathLike[str]) -> Path:
    """The TIFF path for a requested path (``.tif`` added when missing)."""
    p = Path(path)
    return p if p.suffix.lower() in TIFF_SUFFIXES else p.with_name(p.name + ".tif")


def sidecar_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(names_json, names_csv)`` next to the TIFF ``path``."""
    tif = tiff_path(path)
    stem = tif.with_suffix("")
    return stem.with_name(stem.name + ".names.json"), stem.with_name(stem.name + ".names.csv")


def compact_dtype(data: np.ndarray) -> np.ndarray:
    """The labels in the smallest unsigned dtype that holds them (signed if negative)."""
    if data.dtype.kind not in "iub":
        raise TypeError(f"labels must be integers, got {data.dtype}")
    if data.size == 0:
        return data.astype(np.uint8)
    low, high = int(data.min()), int(data.max())
    if low < 0:
        return data
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if high <= np.iinfo(dtype).max:
            return data.astype(dtype, copy=False)
    return data


def names_csv_text(names: Mapping[int, str], counts: Mapping[int, int]) -> str:
    """CSV ``id,name,pixel_count``, one row per label present or named, sorted by id."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "name", "pixel_count"])
    for label_id in sorted(set(names) | set(counts)):
        writer.writerow([label_id, names.get(label_id, ""), counts.get(label_id, 0)])
    return buffer.getvalue()


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    with atomic_file(path) as tmp:
        write(tmp)


def write_labels(
    path: str | os.PathLike[str],
    data: np.ndarray,
    names: Mapping[int, str],
    scale: Sequence[float] | None = None,
    translate: Sequence[float] | None = None,
    units: Sequence[Any] | None = None,
    axis_labels: Sequence[str] | None = None,
    provenance: Provenance | None = None,
    counts: Mapping[int, int] | None = None,
) -> list[Path]:
    """Write labels + names (TIFF, JSON, CSV); return the three paths written.

    Args:
        path: the TIFF path (``.tif`` is added when it has no TIFF suffix).
        data: nD integer labels (any array-like; read once, or tile by tile when
            :func:`plugin.export_large.written_chunkwise`: a tiled uint32 BigTIFF).
        names: ``{label_id: name}``.
        scale, translate: the layer's world transform, stored for reopening.
        units, axis_labels: the layer's ``units`` and ``axis_labels`` (napari >= 0.5), for the
            calibration Fiji shows; unknown units stay unknown (pixels).
        provenance: how the labels were made: the TIFF's ``sam2.provenance`` ImageJ property
            (a plain TIFF: its JSON description) and the names JSON.
        counts: ``{label_id: pixels}`` of ``data``'s non-zero ids when the caller has counted them
            already (:func:`plugin.labels.stats.pixel_counts`; a count of a 100,000² slide takes
            minutes); None: counted here, block by block.
    """
    chunkwise = written_chunkwise(data)
    array = data if chunkwise else compact_dtype(np.asarray(data))
    counts = pixel_counts(array) if counts is None else counts
    if chunkwise:
        checked_id_range(counts, np.dtype(data.dtype), int(np.iinfo(TIFF_LABEL_DTYPE).max))
    clean = {int(k): clean_name(v) for k, v in names.items() if clean_name(v)}
    meta: dict[str, Any] = {
        "format": FORMAT,
        METADATA_KEY: {str(k): v for k, v in sorted(clean.items())},
        "scale": None if scale is None else [float(s) for s in scale],
        "translate": None if translate is None else [float(t) for t in translate],
    }
    geometry = _geometry(len(array.shape), scale, translate, units, axis_labels)
    if geometry is not None:
        meta["axes"] = geometry.axes
        meta["units"] = list(geometry.units)
    if provenance is not None:
        meta[PROVENANCE_KEY] = provenance.to_dict()
    tif = tiff_path(path)
    json_path, csv_path = sidecar_paths(tif)
    tif.parent.mkdir(parents=True, exist_ok=True)
    csv_text = names_csv_text(clean, counts)

    def write_tiff(tmp: Path) -> None:
        facts = {k: v for k, v in meta.items() if k != PROVENANCE_KEY}
        if geometry is None or not write_imagej(tmp, array, clean, geometry, facts, provenance=provenance):
            tifffile.imwrite(tmp, array, metadata=meta, compression="zlib")

    if chunkwise:
        write_tiled_tiff(tif, array, geometry=geometry, metadata=meta)
    else:
        _atomic_write(tif, write_tiff)
    _atomic_write(json_path, lambda tmp: tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8"))
    _atomic_write(csv_path, lambda tmp: tmp.write_text(csv_text, encoding="utf-8"))
    return [tif, json_path, csv_path]


def _geometry(
    ndim: int,
    scale: Sequence[float] | None,
    translate: Sequence[float] | None,
    units: Sequence[Any] | None,
    axis_labels: Sequence[str] | None,
) -> Geometry | None:
    """The labels' geometry, None when it has no NGFF/ImageJ form (1D, more than 5D, bad scale)."""
    try:
        return Geometry.from_layer(ndim, scale, translate, units, axis_labels)
    except ValueError:
        return None


def _tiff_meta(tif: tifffile.TiffFile) -> dict[str, Any]:
    shaped = tif.shaped_metadata or ()
    meta = shaped[0] if shaped else {}
    return dict(meta) if isinstance(meta, dict) and meta.get("format") == FORMAT else {}


def _is_ours(tif: tifffile.TiffFile) -> bool:
    """Whether the TIFF carries our facts (ImageJ property or shaped JSON description)."""
    properties = (tif.imagej_metadata or {}).get("Properties")
    return (isinstance(properties, dict) and PROPERTIES_KEY in properties) or bool(_tiff_meta(tif))


def is_labels_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a TIFF we wrote, or its names JSON file."""
    p = Path(path)
    if p.name.endswith(".names.json"):
        return tiff_for_sidecar(p) is not None
    if p.suffix.lower() not in TIFF_SUFFIXES or not p.is_file():
        return False
    if sidecar_paths(p)[0].is_file():
        return True
    try:
        with tifffile.TiffFile(p) as tif:
            return _is_ours(tif)
    except (OSError, tifffile.TiffFileError):
        return False


def tiff_for_sidecar(json_path: Path) -> Path | None:
    """The TIFF next to ``NAME.names.json`` (``NAME.tif`` or ``NAME.tiff``), if present."""
    stem = json_path.name[: -len(".names.json")]
    for suffix in TIFF_SUFFIXES:
        candidate = json_path.with_name(stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def _tuple(value: Any) -> tuple[float, ...] | None:
    if isinstance(value, list) and all(isinstance(v, int | float) for v in value):
        return tuple(float(v) for v in value)
    return None


def _units(value: Any) -> tuple[str | None, ...] | None:
    if isinstance(value, list) and all(v is None or isinstance(v, str) for v in value):
        return tuple(value)
    return None


def read_labels(path: str | os.PathLike[str]) -> LabelsFile:
    """Read a labels file written by :func:`write_labels` (TIFF or its names JSON).

    A tiled BigTIFF larger than the memory budget comes back as a read-only zarr array (tiles read
    when indexed); any other TIFF as a numpy array in the smallest dtype that holds its ids."""
    p = Path(path)
    if p.name.endswith(".names.json"):
        found = tiff_for_sidecar(p)
        if found is None:
            raise FileNotFoundError(f"no TIFF next to {p}")
        p = found
    with tifffile.TiffFile(p) as tif:
        lazy = read_lazily(tif)
        from_imagej = None if lazy else read_imagej(tif)
        if lazy:
            data, meta = open_tiled_tiff(p), _tiff_meta(tif)
        elif from_imagej is not None:
            data, meta = from_imagej
        else:
            data, meta = tif.asarray(), _tiff_meta(tif)
    if not lazy:
        if data.dtype.kind == "f" and np.array_equal(data, np.round(data)):
            data = data.astype(np.int64)  # a 32-bit label image saved again by Fiji
        data = compact_dtype(data)
    json_path = sidecar_paths(p)[0]
    if json_path.is_file():
        try:
            sidecar = json.loads(json_path.read_text(encoding="utf-8"))
            if isinstance(sidecar, dict):
                meta = {**meta, **sidecar}
        except ValueError:
            pass
    scale, translate = _tuple(meta.get("scale")), _tuple(meta.get("translate"))
    units, axes = _units(meta.get("units")), meta.get("axes")
    if scale is not None and len(scale) != data.ndim:
        scale = None
    if translate is not None and len(translate) != data.ndim:
        translate = None
    if units is not None and len(units) != data.ndim:
        units = None
    if not isinstance(axes, str) or len(axes) != data.ndim:
        axes = None
    return LabelsFile(
        data, names_from_metadata(meta), scale, translate, units, axes, scores=scores_from_metadata(meta)
    )


# -- every export format -----------------------------------------------------------------


@dataclass(frozen=True)
class ExportFormat:
    """One way to save a labels layer.

    Attributes:
        key: the name used by ``sam2-batch --format`` and the export box.
        title: what the export box shows.
        suffix: added to a chosen path that lacks it.
        file_filter: the save dialog's filter.
    """

    key: str
    title: str
    suffix: str
    file_filter: str


TIFF = ExportFormat("tiff", "TIFF for Fiji (+ names JSON, CSV)", ".tif", "TIFF (*.tif *.tiff)")
OME_ZARR = ExportFormat("ome-zarr", "OME-Zarr (NGFF labels)", ".ome.zarr", "OME-Zarr (*.zarr)")
GEOJSON = ExportFormat("geojson", "GeoJSON for QuPath / GIS", ".geojson", "GeoJSON (*.geojson)")
MEASUREMENTS = ExportFormat("measurements", "Measurements CSV", MEASUREMENTS_SUFFIX, "CSV (*.csv)")
CTC = ExportFormat("ctc", "Cell Tracking Challenge tracks (folder)", "_ctc", "Folder (*)")
GEFF = ExportFormat("geff", "GEFF tracks (motile-tracker...)", ".geff.zarr", "GEFF (*.zarr)")
EXPORT_FORMATS = {f.key: f for f in (TIFF, OME_ZARR, GEOJSON, MEASUREMENTS, CTC, GEFF)}
TRACK_FORMATS = (CTC.key, GEFF.key)
"""Formats for a time-lapse (axis 0 is time): tracks and divisions."""


def export_paths(fmt: str, path: str | os.PathLike[str]) -> list[Path]:
    """Every file or store :func:`export_labels` writes for ``fmt`` at ``path`` (suffixes added as it adds
    them), so a caller can ask before overwriting any of them.

    Raises:
        ValueError: unknown format.
    """
    if fmt == TIFF.key:
        return [tiff_path(path), *sidecar_paths(path)]
    where = {
        OME_ZARR.key: zarr_path,
        GEOJSON.key: geojson_path,
        MEASUREMENTS.key: measurements_path,
        CTC.key: Path,
        GEFF.key: geff_path,
    }
    if fmt not in where:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    return [where[fmt](path)]


def export_labels(
    fmt: str,
    path: str | os.PathLike[str],
    data: np.ndarray,
    names: Mapping[int, str],
    *,
    scale: Sequence[float] | None = None,
    translate: Sequence[float] | None = None,
    units: Sequence[Any] | None = None,
    axis_labels: Sequence[str] | None = None,
    image: np.ndarray | None = None,
    coordinates: str = PIXEL,
    title: str = "labels",
    parents: Mapping[int, int] | None = None,
    provenance: Provenance | None = None,
    counts: Mapping[int, int] | None = None,
) -> list[Path]:
    """Save labels with names as ``fmt`` (a key of :data:`EXPORT_FORMATS`); return the paths written.

    Args:
        fmt: ``tiff``, ``ome-zarr``, ``geojson`` or ``measurements``.
        path: where (the format's suffix is added when missing).
        data: nD integer labels.
        names: ``{label_id: name}``.
        scale, translate, units, axis_labels: the layer's world transform, units and axis names.
        image: intensities for the measurements' mean intensity (same shape, or plus a colour axis).
        coordinates: GeoJSON coordinates, ``pixel`` or ``physical``.
        title: the label image's name inside an OME-Zarr store.
        parents: CTC and GEFF: the divisions, ``{daughter label: parent label}``.
        provenance: how the labels were made, written in the format's own place.
        counts: TIFF: the non-zero ids' pixel counts of ``data`` when counted already (else counted).

    Raises:
        ValueError: unknown format, labels the format cannot hold, or an image that does not match.
        TypeError: labels that are not integers.
        OSError: the file system refused.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if fmt == TIFF.key:
        return write_labels(path, data, names, scale, translate, units, axis_labels, provenance, counts)
    clean = {int(k): clean_name(v) for k, v in names.items() if clean_name(v)}
    if fmt == OME_ZARR.key and written_chunkwise(data):
        geometry = Geometry.from_layer(len(data.shape), scale, translate, units, axis_labels)
        return [write_ngff_chunkwise(path, data, clean, geometry, title, provenance)]
    check_fits_memory(data, EXPORT_FORMATS[fmt].title)
    array = compact_dtype(np.asarray(data))
    geometry = Geometry.from_layer(array.ndim, scale, translate, units, axis_labels)
    if fmt == OME_ZARR.key:
        if array.dtype.kind == "i":
            raise ValueError("OME-Zarr labels must not be negative")
        return [write_ngff_labels(path, array, clean, geometry, name=title, provenance=provenance)]
    if fmt == GEOJSON.key:
        return [write_geojson(path, array, clean, geometry, coordinates, provenance)]
    if fmt in TRACK_FORMATS:
        return _write_tracks(fmt, Path(path), array, clean, geometry, parents, provenance)
    written = write_measurements(path, array, clean, geometry, image, provenance, parents)
    return [written] + ([] if provenance is None else [sidecar_path(written)])


def _write_tracks(
    fmt: str,
    path: Path,
    array: np.ndarray,
    names: Mapping[int, str],
    geometry: Geometry,
    parents: Mapping[int, int] | None,
    provenance: Provenance | None,
) -> list[Path]:
    """CTC folder or GEFF store of a time-lapse (axis 0 is time)."""
    if array.ndim not in (3, 4) or array.dtype.kind == "i" and array.size and int(array.min()) < 0:
        raise ValueError(
            f"tracks need a time-lapse of labels (t, [z,] y, x) without negative ids, got shape {array.shape}"
        )
    if fmt == CTC.key:
        write_ctc(path, array, parents, provenance=provenance)
        return [path]
    return [write_geff(path, array, names, geometry, parents, provenance)]


def read_any(path: str | os.PathLike[str]) -> list[LabelsFile]:
    """Read labels with names from any format we write (TIFF or names JSON, OME-Zarr, GeoJSON).

    Raises:
        ValueError: not a labels file we can read.
    """
    p = Path(path)
    if is_ngff_labels(p):
        return read_ngff_labels(p)
    if is_geojson(p):
        return [read_geojson(p)]
    if is_labels_file(p):
        return [read_labels(p)]
    raise ValueError(f"{p} is not a labels file this plugin reads")
