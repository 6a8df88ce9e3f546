"""Benchmark: where one client's CPU goes per 1,024² tile (issue 22), stage by stage, in a real run.

The same run as ``python -m bench.batch_throughput --client`` for one N (``--workers``, default 8):
``sam2-batch`` and the plugin's tiled AUTO against N ``mdp-tiles`` stand-ins that sleep ``--delay-s``
per tile, twice each. Each stage is timed with ``time.thread_time`` in whichever thread runs it
(stitching's ``prepare`` runs in the receiving threads), summed over the run and divided by its
tiles; the rest of the process's CPU (``time.process_time``: all threads) is printed as "other"
(sending threads' loops and waits, ZeroMQ's I/O thread, thread start-up, settings and provenance).

Stages: ``to_wire`` (window -> wire pixels), ``SamClient.call`` (image key, encoding, ZeroMQ, decoding
the answer), the stitcher's ``prepare`` / ``add_prepared`` / ``finish``, and for ``sam2-batch``
reading the input and writing the label file.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bench.batch_throughput import (
    TILE_SIDE,
    TILES_SERVICE,
    client_run,
    disc_slide,
    slide_tiles,
    start_tile_peers,
    tile_index,
)
from bench.common import (
    BenchResult,
    Processes,
    Table,
    base_parser,
    finish,
    fmt,
    start_broker,
    wait_for_workers,
)


def stages() -> list[tuple[str, Any, str]]:
    """(stage name, owner, attribute) of each function timed; a stage may have several."""
    import batch.large
    import batch.runner
    import protocol.ops.tiled
    from protocol.geometry.stitch import TileStitcher
    from protocol.wire.client import SamClient

    return [
        ("to_wire", protocol.ops.tiled, "to_wire"),
        ("SamClient.call", SamClient, "call"),
        ("stitch: prepare", TileStitcher, "prepare"),
        ("stitch: add_prepared", TileStitcher, "add_prepared"),
        ("stitch: finish", TileStitcher, "finish"),
        ("sam2-batch: read input", batch.runner, "read_image"),
        ("sam2-batch: write labels", batch.runner, "write_output"),  # images written whole
        ("sam2-batch: write labels", batch.large, "write_output"),  # tiled images (labels in memory or not)
    ]


@contextmanager
def thread_timed(targets: list[tuple[str, Any, str]]) -> Iterator[defaultdict[str, float]]:
    """Time each target's calls with ``time.thread_time`` (seconds summed per stage) while inside."""
    spent: defaultdict[str, float] = defaultdict(float)
    lock = threading.Lock()
    originals = [getattr(owner, attr) for _, owner, attr in targets]

    def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            began = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                with lock:
                    spent[name] += time.thread_time() - began

        return call

    for (name, owner, attr), original in zip(targets, originals, strict=True):
        setattr(owner, attr, timed(name, original))
    try:
        yield spent
    finally:
        for (_, owner, attr), original in zip(targets, originals, strict=True):
            setattr(owner, attr, original)


def run_split(workers: int = 8, delay_s: float = 0.5, repeats: int = 2) -> BenchResult:
    """Per-tile CPU of each stage, sam2-batch and the plugin's tiled AUTO, against ``workers`` stand-ins."""
    result = BenchResult("client_split", "One client's CPU per 1,024² tile, stage by stage")
    rows, cols = slide_tiles(workers)
    shape = (TILE_SIDE * rows, TILE_SIDE * cols)
    image, truth = disc_slide(shape, spacing=36)
    names = list(dict.fromkeys(name for name, _, _ in stages()))
    table = Table(
        f"Client CPU per tile (ms, thread CPU of each stage), {workers} stand-ins at {delay_s * 1000:.0f} ms "
        f"per tile, {repeats} runs of {8 * workers} tiles each",
        ["stage", "sam2-batch", "plugin"],
    )
    columns: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="client-split-") as tmp, Processes() as procs:
        folder = Path(tmp)
        np.save(folder / "truth.npy", truth)
        (folder / "tiles.json").write_text(json.dumps(tile_index(image, [shape])))
        frontend, backend, _ = start_broker(procs, name="split-broker")
        start_tile_peers(procs, backend, folder, delay_s, workers)
        wait_for_workers(frontend, TILES_SERVICE, workers)
        for kind in ("sam2-batch", "plugin"):
            client_run(kind, frontend, image, folder)  # warm-up: imports, first connections
            cpu_s, tiles = 0.0, 0
            with thread_timed(stages()) as spent:
                for _ in range(repeats):
                    _, cpu, count = client_run(kind, frontend, image, folder)
                    cpu_s, tiles = cpu_s + cpu, tiles + count
            per_tile = {name: 1000 * spent[name] / tiles for name in names}
            per_tile["other"] = 1000 * cpu_s / tiles - sum(per_tile.values())
            per_tile["process CPU (all threads)"] = 1000 * cpu_s / tiles
            columns[kind] = per_tile
    for name in [*names, "other", "process CPU (all threads)"]:
        table.add(name, fmt(columns["sam2-batch"][name], 2), fmt(columns["plugin"][name], 2))
    table.note = (
        "Thread CPU of each stage in the thread that ran it (stitching's prepare in the receiving threads); "
        "'other': the process's CPU not in a timed stage. The 2 cores are shared with the broker and the "
        "workers, so concurrent numpy work is slower than alone."
    )
    result.tables.append(table)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8, help="stand-in workers (%(default)s)")
    parser.add_argument("--delay-s", type=float, default=0.5, help="seconds per tile (%(default)s)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    finish(run_split(args.workers, args.delay_s, repeats=1 if args.quick else 2), started, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
