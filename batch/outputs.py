"""What a batch leaves behind: label TIFFs and a CSV summary, both written atomically.

Every file is written to a temporary name in its folder and moved into place
with ``os.replace``, so a crash or Ctrl-C never leaves a half-written label
file that a later run would take for a finished one. Resume rule: an input
whose label file exists is skipped (unless ``--overwrite``).

The summary describes the inputs of the latest run: one row per slice
(``slice`` empty for a single image) and one row per unreadable file. An
input skipped because an earlier run made its labels keeps that run's rows.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

SUMMARY_NAME = "summary.csv"
STATUS_OK = "ok"
STATUS_ERROR = "error"
STATUS_SKIPPED = "skipped"


@dataclass(frozen=True)
class Row:
    """One line of the summary.

    Attributes:
        file: the input file as given on the command line (or found in a folder).
        slice: index of the slice in the flattened stack, "" for a single image.
        objects: labels found (0..n), "" when the slice failed.
        seconds: wall time of the request, "" when not run.
        status: ``ok``, ``error`` or ``skipped`` (label file already there).
        error: what went wrong, "" when ok.
        request_id: the request's id, to find it in the broker and worker logs.
    """

    file: str
    slice: str = ""
    objects: str = ""
    seconds: str = ""
    status: str = STATUS_OK
    error: str = ""
    request_id: str = ""


COLUMNS = [f.name for f in fields(Row)]


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path next to ``path`` to write to; on success it is moved onto ``path``, else deleted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_labels(path: Path, labels: np.ndarray) -> None:
    """Write a uint32 label image atomically: (H, W) one page, (..., H, W) one page per slice."""
    import tifffile

    if labels.dtype != np.uint32:
        raise ValueError(f"labels must be uint32, got {labels.dtype}")
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, labels, compression="zlib", photometric="minisblack")


def read_summary(path: Path) -> list[Row]:
    """Rows of an existing summary (none if it is missing or unreadable)."""
    try:
        with path.open(newline="") as handle:
            return [Row(**{c: record.get(c) or "" for c in COLUMNS}) for record in csv.DictReader(handle)]
    except (OSError, csv.Error, TypeError):
        return []


def merge_rows(previous: Iterable[Row], current: Iterable[Row], skipped_files: set[str]) -> list[Row]:
    """This run's rows plus the earlier rows of the files it skipped, sorted by file and slice.

    Args:
        previous: rows of the summary found in the output folder.
        current: rows made by this run.
        skipped_files: inputs of this run whose labels an earlier run made.
    """
    kept = [row for row in previous if row.file in skipped_files]
    rows = kept + list(current)
    return sorted(rows, key=lambda r: (r.file, int(r.slice) if r.slice.isdigit() else -1))


def write_summary(path: Path, rows: Iterable[Row]) -> None:
    """Write the CSV summary atomically."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(asdict(row))
