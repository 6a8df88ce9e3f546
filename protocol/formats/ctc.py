"""Cell Tracking Challenge (CTC) tracks: one uint16 mask per frame and the ``L B E P`` table.

Layout of a folder written by :func:`write_ctc` (atomically: a temporary
folder beside it, renamed into place; :func:`protocol.runtime.atomic.atomic_dir`)::

    NAME/
    ├── man_track000.tif ...    one uint16 mask per frame (2D, or 3D for (t, z, y, x))
    ├── man_track.txt           one line per track: "L B E P" (id, first frame, last frame, parent id)
    ├── man_track_ids.csv       only when a CTC id differs from its label: ctc_id,label_id,begin,end
    └── provenance.json         when given (:mod:`protocol.formats.provenance`)

Tracks follow the CTC rules (:mod:`protocol.formats.tracks`): a label with a
gap is split, the later part gets a new id whose parent is the earlier part;
a daughter's parent is the track of its parent label. CTC masks are 16-bit:
ids above 65,535 are renumbered 1..N in order of first frame (the mapping file
says which label each id was), or, with ``renumber=False``, refused with the
count (:class:`CtcIdError`); nothing is written then.

Frame names have 3 digits (4 or more for longer movies), as the CTC's
evaluation tools expect. :func:`read_ctc` reads a folder back (ours, or a
CTC ``man_track``/``res_track`` folder), checking the table against the masks.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from protocol.formats.provenance import Provenance
from protocol.formats.tracks import Track, TrackSet, build_tracks, relabel_frame
from protocol.runtime.atomic import atomic_dir

CTC_MAX_ID = 0xFFFF
"""CTC masks are 16-bit: the largest id they hold."""
TRACK_TABLE = "man_track.txt"
ID_MAP = "man_track_ids.csv"
PROVENANCE_NAME = "provenance.json"
_MASK = re.compile(r"^(man_track|mask)(\d+)\.tiff?$")
_TABLES = (TRACK_TABLE, "res_track.txt")


class CtcIdError(ValueError):
    """The labels hold more track ids above 65,535 than the caller allowed to renumber."""


@dataclass(frozen=True)
class CtcTracks:
    """A CTC folder in memory.

    Attributes:
        labels: ``(T, [Z,] Y, X)`` uint16 masks, CTC track ids.
        tracks: the table, ``track_id`` = CTC id, ``label_id`` = the original label (from the
            mapping file; the CTC id when there is none).
        provenance: the folder's ``provenance.json``, None when absent.
    """

    labels: np.ndarray
    tracks: TrackSet
    provenance: Provenance | None = None


def mask_name(frame: int, n_frames: int) -> str:
    """``man_track007.tif``: 3 digits, more when the movie has 1000 frames or more."""
    digits = max(3, len(str(max(n_frames - 1, 0))))
    return f"man_track{frame:0{digits}d}.tif"


def ctc_ids(tracks: TrackSet, renumber: bool = True) -> dict[int, int]:
    """``{track_id: CTC id}``: the same ids when all fit 16 bits, else 1..N by (first frame, id).

    Raises:
        CtcIdError: ids above 65,535 and ``renumber`` is False, or more than 65,535 tracks.
    """
    over = sum(1 for t in tracks.tracks if t.track_id > CTC_MAX_ID)
    if not over:
        return {t.track_id: t.track_id for t in tracks.tracks}
    if not renumber:
        raise CtcIdError(
            f"{over} track ids are above 65535, which CTC's 16-bit masks cannot hold; "
            "allow renumbering (a mapping file is written beside the masks)"
        )
    if len(tracks.tracks) > CTC_MAX_ID:
        raise CtcIdError(f"{len(tracks.tracks)} tracks: CTC's 16-bit masks hold at most {CTC_MAX_ID}")
    order = sorted(tracks.tracks, key=lambda t: (t.begin, t.track_id))
    return {t.track_id: i for i, t in enumerate(order, start=1)}


def track_table_text(tracks: TrackSet, ids: Mapping[int, int]) -> str:
    """``man_track.txt``: ``L B E P`` per track, sorted by CTC id."""
    rows = sorted((ids[t.track_id], t.begin, t.end, ids[t.parent] if t.parent else 0) for t in tracks.tracks)
    return "".join(f"{label} {begin} {end} {parent}\n" for label, begin, end, parent in rows)


def id_map_text(tracks: TrackSet, ids: Mapping[int, int]) -> str:
    """``man_track_ids.csv``: ``ctc_id,label_id,begin,end`` per track, sorted by CTC id."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["ctc_id", "label_id", "begin", "end"])
    for t in sorted(tracks.tracks, key=lambda t: ids[t.track_id]):
        writer.writerow([ids[t.track_id], t.label_id, t.begin, t.end])
    return buffer.getvalue()


def write_ctc(
    path: str | os.PathLike[str],
    stack: np.ndarray,
    parents: Mapping[int, int] | None = None,
    *,
    renumber: bool = True,
    provenance: Provenance | None = None,
) -> TrackSet:
    """Write a labels time-lapse as a CTC folder at ``path`` (replaced atomically); return its tracks.

    Args:
        path: the folder.
        stack: ``(T, [Z,] Y, X)`` integer labels (numpy, zarr or dask: read frame by frame).
        parents: lineage ``{daughter label: parent label}``.
        renumber: renumber ids above 65,535 (else :class:`CtcIdError`).
        provenance: written as ``provenance.json``.

    Returns:
        The tracks with their CTC ids as ``track_id`` (``label_id``: the label each came from).

    Raises:
        CtcIdError: ids CTC cannot hold (see :func:`ctc_ids`).
        ValueError: not a time-lapse of integer labels.
    """
    tracks = build_tracks(stack, parents)
    ids = ctc_ids(tracks, renumber)
    n_frames = int(stack.shape[0])
    with atomic_dir(path) as tmp:
        import tifffile

        for frame in range(n_frames):
            on_frame = {
                t.label_id: ids[t.track_id]
                for t in tracks.tracks
                if t.begin <= frame <= t.end and ids[t.track_id] != t.label_id
            }
            mask = relabel_frame(np.asarray(stack[frame]), on_frame, np.dtype(np.uint16))
            tifffile.imwrite(tmp / mask_name(frame, n_frames), mask, compression="zlib")
        (tmp / TRACK_TABLE).write_text(track_table_text(tracks, ids), encoding="utf-8")
        if any(ids[t.track_id] != t.label_id for t in tracks.tracks):
            (tmp / ID_MAP).write_text(id_map_text(tracks, ids), encoding="utf-8")
        if provenance is not None:
            (tmp / PROVENANCE_NAME).write_text(provenance.to_json() + "\n", encoding="utf-8")
    renamed = (
        Track(ids[t.track_id], t.label_id, t.begin, t.end, ids[t.parent] if t.parent else 0)
        for t in tracks.tracks
    )
    return TrackSet(tuple(sorted(renamed, key=lambda t: t.track_id)), tracks.orphans)


def is_ctc(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder with a CTC track table and masks."""
    p = Path(path)
    return p.is_dir() and any((p / name).is_file() for name in _TABLES) and bool(_masks(p))


def _masks(folder: Path) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for entry in folder.iterdir():
        match = _MASK.match(entry.name)
        if match and entry.is_file():
            found[int(match.group(2))] = entry
    return found


def parse_track_table(text: str, source: str = TRACK_TABLE) -> list[tuple[int, int, int, int]]:
    """``(L, B, E, P)`` per line of a CTC table; blank lines skipped.

    Raises:
        ValueError: a line that is not four non-negative integers, B > E, a repeated id, an unknown parent.
    """
    rows: list[tuple[int, int, int, int]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 4 or not all(p.isdigit() for p in parts):
            raise ValueError(f"{source} line {number}: expected 'L B E P' (four integers), got {line!r}")
        label, begin, end, parent = (int(p) for p in parts)
        if label == 0 or begin > end:
            raise ValueError(f"{source} line {number}: id must be > 0 and begin <= end, got {line!r}")
        rows.append((label, begin, end, parent))
    ids = [r[0] for r in rows]
    if len(ids) != len(set(ids)):
        raise ValueError(f"{source}: a track id appears twice")
    unknown = sorted({r[3] for r in rows if r[3] and r[3] not in set(ids)})
    if unknown:
        raise ValueError(f"{source}: parents {unknown} are not tracks of the table")
    return rows


def _read_id_map(path: Path) -> dict[int, int]:
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as handle:
        try:
            return {int(r["ctc_id"]): int(r["label_id"]) for r in csv.DictReader(handle)}
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: expected columns ctc_id,label_id,begin,end") from e


def read_ctc(path: str | os.PathLike[str]) -> CtcTracks:
    """Read a CTC folder: masks stacked over time, the track table (and our id map and provenance).

    Raises:
        ValueError: no table or masks, frames missing, masks of different shapes, or a table that
            does not parse (:func:`parse_track_table`).
    """
    import tifffile

    folder = Path(path)
    table = next((folder / n for n in _TABLES if (folder / n).is_file()), None)
    masks = _masks(folder) if folder.is_dir() else {}
    if table is None or not masks:
        raise ValueError(f"{folder} is not a CTC folder (needs {TRACK_TABLE} and man_trackTTT.tif masks)")
    frames = sorted(masks)
    if frames != list(range(len(frames))):
        missing = sorted(set(range(frames[-1] + 1)) - set(frames))
        raise ValueError(f"{folder}: mask frames {missing[:10]} are missing")
    rows = parse_track_table(table.read_text(encoding="utf-8"), table.name)
    planes = [tifffile.imread(masks[t]) for t in frames]
    if len({p.shape for p in planes}) != 1:
        raise ValueError(f"{folder}: masks have different shapes")
    labels = np.stack(planes)
    id_map = _read_id_map(folder / ID_MAP)
    tracks = TrackSet(
        tuple(
            Track(label, id_map.get(label, label), begin, end, parent) for label, begin, end, parent in rows
        )
    )
    provenance_file = folder / PROVENANCE_NAME
    provenance = (
        Provenance.from_json(provenance_file.read_text("utf-8")) if provenance_file.is_file() else None
    )
    return CtcTracks(labels, tracks, provenance)
