"""One batch over many client processes: ``--shard I/N`` and merging their summaries.

A set of inputs is split across N ``sam2-batch`` processes (e.g. the tasks
of a SLURM array) that share one broker and its workers. Every process is
given the same inputs and the same ``--out``; shard I of N (1-based) does
the inputs at positions I-1, I-1+N, I-1+2N, ... of the inputs sorted by
path (round robin, so large and small inputs spread evenly). So each input
is done by exactly one process, and its label file is the one a single run
writes (label file names are chosen over the whole set, before the split).

``--shard auto`` takes I and N from a SLURM job array
(``SLURM_ARRAY_TASK_ID`` - ``SLURM_ARRAY_TASK_MIN`` + 1 and
``SLURM_ARRAY_TASK_COUNT``; the array's step must be 1). Without
``--shard`` a process does every input, also inside an array: sharding is
never guessed.

Each shard writes its own summary, ``summary.shard-I-of-N.csv``, so shards
never write one file at once; ``sam2-batch --merge-summaries DIR`` merges
them into ``DIR/summary.csv`` (rows sorted by file and slice, as a single
run writes them).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from batch.outputs import SUMMARY_NAME, Row, read_summary, sort_rows, write_summary

log = logging.getLogger(__name__)

SHARD_AUTO = "auto"
SHARD_SUMMARY_GLOB = "summary.shard-*-of-*.csv"
_SHARD_TEXT = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_SHARD_SUMMARY = re.compile(r"^summary\.shard-(\d+)-of-(\d+)\.csv$")


class ShardError(ValueError):
    """A ``--shard`` value or a set of shard summaries that cannot be used (the message says why)."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based: 1/4 .. 4/4)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def summary_name(self) -> str:
        """This shard's summary file name."""
        return f"summary.shard-{self.index}-of-{self.count}.csv"

    def select(self, files: Sequence[Path]) -> list[Path]:
        """This shard's inputs, in the order given (round robin over ``files`` sorted by path)."""
        ranked = sorted(dict.fromkeys(files), key=str)
        mine = {path for k, path in enumerate(ranked) if k % self.count == self.index - 1}
        return [path for path in dict.fromkeys(files) if path in mine]


def parse_shard(text: str | None, environ: Mapping[str, str] | None = None) -> Shard | None:
    """``"I/N"`` (1 <= I <= N), ``"auto"`` (a SLURM array task) or ``None`` (no sharding).

    Raises:
        ShardError: not ``I/N`` with 1 <= I <= N, or ``auto`` outside a SLURM array.
    """
    if text is None:
        return None
    if text.strip().lower() == SHARD_AUTO:
        return _slurm_shard(os.environ if environ is None else environ)
    match = _SHARD_TEXT.match(text)
    if match is None:
        raise ShardError(f"--shard must be I/N (e.g. 2/4: the second of 4 processes) or auto, got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1:
        raise ShardError(f"--shard {text}: the number of shards N must be at least 1")
    if not 1 <= index <= count:
        raise ShardError(f"--shard {text}: shards are numbered 1..{count}, got {index}")
    return Shard(index, count)


def _slurm_shard(environ: Mapping[str, str]) -> Shard:
    """The shard of this SLURM array task (1-based index from the task id and the array's first id)."""
    needed = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN")
    missing = [name for name in needed if not environ.get(name)]
    if missing:
        raise ShardError(
            f"--shard auto needs a SLURM job array (sbatch --array=...); {', '.join(missing)} not set. "
            "Give --shard I/N instead."
        )
    try:
        task, count, first = (int(environ[name]) for name in needed)
        step = int(environ.get("SLURM_ARRAY_TASK_STEP") or 1)
    except ValueError as e:
        raise ShardError(f"--shard auto: a SLURM_ARRAY_TASK_* variable is not a number: {e}") from e
    if step != 1:
        raise ShardError(f"--shard auto needs an array of consecutive ids (step 1), got step {step}")
    return parse_shard(f"{task - first + 1}/{count}")  # type: ignore[return-value]


def shard_summaries(folder: Path) -> dict[Shard, Path]:
    """The shard summaries in ``folder`` by shard (``summary.shard-I-of-N.csv``)."""
    found: dict[Shard, Path] = {}
    for path in sorted(folder.glob(SHARD_SUMMARY_GLOB)):
        match = _SHARD_SUMMARY.match(path.name)
        if match is not None:
            found[Shard(int(match.group(1)), int(match.group(2)))] = path
    return found


def merge_summaries(folder: Path) -> tuple[Path, int]:
    """Merge the shard summaries in ``folder`` into ``folder/summary.csv``; return (its path, rows).

    The shards of one split (one N) must all be there. Rows of a file named
    by several summaries (shards of an earlier split with another N) come
    from the most recently written summary.

    Raises:
        ShardError: no shard summaries, or shards of a split missing.
    """
    found = shard_summaries(folder)
    if not found:
        raise ShardError(f"no shard summaries ({SHARD_SUMMARY_GLOB}) in {folder}")
    for count in sorted({shard.count for shard in found}):
        missing = [str(i) for i in range(1, count + 1) if Shard(i, count) not in found]
        if missing:
            raise ShardError(
                f"shards {', '.join(missing)} of {count} have no summary in {folder} yet "
                "(still running, or not started); merge when every shard has finished"
            )
    newest_first = sorted(found.values(), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    rows: list[Row] = []
    taken: set[str] = set()
    for path in newest_first:
        these = read_summary(path)
        new = [row for row in these if row.file not in taken]
        taken |= {row.file for row in these}
        rows += new
    target = folder / SUMMARY_NAME
    write_summary(target, sort_rows(rows))
    log.info("merged %d shard summaries (%d rows) into %s", len(found), len(rows), target)
    return target, len(rows)
