"""Find the provenance record of any output we write, whatever its format (for ``--replay`` and tests).

Each format keeps the record in its own place (table in
:mod:`protocol.formats.provenance`); :func:`read_provenance` looks there:
a CTC folder's ``provenance.json``, a GEFF store's metadata, an OME-Zarr
store's root attribute, a TIFF's ImageJ property (or a plain TIFF's JSON
description), a GeoJSON collection's member, a sidecar ``NAME.provenance.json``
(the measurements CSV's), or such a JSON file itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from protocol.formats.provenance import PROVENANCE_KEY, SIDECAR_SUFFIX, Provenance, read_sidecar, sidecar_path


def read_provenance(path: str | os.PathLike[str]) -> Provenance | None:
    """The provenance record stored with the output at ``path``; None when it has none.

    Raises:
        ProvenanceError: a record is there but is not valid.
        OSError: the path cannot be read.
    """
    p = Path(path)
    if p.name.endswith(SIDECAR_SUFFIX):
        return read_sidecar(p)
    if p.is_dir():
        return _from_folder(p)
    suffix = p.suffix.lower()
    if suffix in (".tif", ".tiff"):
        found = _from_tiff(p)
        if found is not None:
            return found
    if suffix == ".geojson":
        from protocol.formats.geojson import read_geojson_provenance

        return read_geojson_provenance(p)
    sidecar = sidecar_path(p)
    return read_sidecar(sidecar) if sidecar.is_file() else None


def _from_folder(folder: Path) -> Provenance | None:
    from protocol.formats.ctc import PROVENANCE_NAME, is_ctc
    from protocol.formats.geff_tracks import is_geff

    if is_ctc(folder):
        record = folder / PROVENANCE_NAME
        return read_sidecar(record) if record.is_file() else None
    if is_geff(folder):
        from protocol.formats.geff_tracks import geff_provenance

        return geff_provenance(folder)
    from protocol.formats.ngff import is_ngff_labels, read_ngff_provenance

    return read_ngff_provenance(folder) if is_ngff_labels(folder) else None


def _from_tiff(path: Path) -> Provenance | None:
    import tifffile

    from protocol.formats.imagej import read_provenance as imagej_provenance

    with tifffile.TiffFile(path) as tif:
        found = imagej_provenance(tif)
        if found is not None:
            return found
        description = tif.pages.first.description if tif.pages else ""
    try:
        meta = json.loads(description)
    except ValueError:
        return None
    record = meta.get(PROVENANCE_KEY) if isinstance(meta, dict) else None
    return None if record is None else Provenance.from_dict(record)
