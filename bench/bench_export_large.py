"""Export of a very large labels layer (issue 22): memory and time, chunk by chunk against whole.

A pyramid result layer (:class:`plugin.labels.pyramid.LabelPyramid`, in memory,
sparse discs-like rectangles) of ``--side``² is exported as TIFF and OME-Zarr by
:func:`plugin.export.export_labels` (chunk by chunk: a tiled BigTIFF, NGFF read
chunk by chunk) and, side by side in the same run, the way export worked before
(``np.asarray`` of level 0, then the same writers from memory). Printed: the
peak of Python/numpy allocations (``tracemalloc``) and the wall time of each,
and their ratios.

    .venv/bin/python -m bench.bench_export_large [--side 10240] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np


def layer_of(side: int) -> Any:
    """Level 0 of a ``side``² pyramid with 200 rectangles of 60 x 90 pixels (ids 1..200)."""
    from plugin.labels.pyramid import LabelPyramid

    pyramid = LabelPyramid.create((side, side))
    rng = np.random.default_rng(0)
    for label_id in range(1, 201):
        r, c = (int(v) for v in rng.integers(0, side - 100, 2))
        pyramid.write_block((r, c), np.full((60, 90), label_id, np.uint32))
    return pyramid.levels[0]


def measured(work: Callable[[], object]) -> tuple[float, float]:
    """(peak MiB of traced allocations, seconds) of ``work()``."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        work()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20, time.perf_counter() - start


def export_whole(fmt: str, path: str, level0: Any) -> object:
    """The export as it was: level 0 read into one numpy array first."""
    from plugin.export import export_labels

    return export_labels(fmt, path, np.asarray(level0), {1: "a"})


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from plugin.export import export_labels

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--side", type=int, default=10240, help="the layer's side in pixels (a pyramid above 8,192)"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    level0 = layer_of(args.side)
    with tempfile.TemporaryDirectory() as folder:  # imports and first-call costs out of the numbers
        for fmt in ("tiff", "ome-zarr"):
            export_labels(fmt, f"{folder}/warm_{fmt}", np.ones((64, 64), np.uint32), {})
    results: dict[str, Any] = {"side": args.side, "layer_mib": args.side**2 * 4 / 2**20}
    print(f"{args.side}² uint32 layer: {results['layer_mib']:.0f} MiB")
    print(f"{'format':<10}{'chunk by chunk':>22}{'whole (before)':>22}{'memory ratio':>14}")
    with tempfile.TemporaryDirectory() as folder:
        for fmt in ("tiff", "ome-zarr"):
            chunked = measured(partial(export_labels, fmt, f"{folder}/c_{fmt}", level0, {1: "a"}))
            whole = measured(partial(export_whole, fmt, f"{folder}/w_{fmt}", level0))
            results[fmt] = {"chunked_mib_s": chunked, "whole_mib_s": whole}
            print(
                f"{fmt:<10}{chunked[0]:>10.1f} MiB {chunked[1]:>6.1f} s"
                f"{whole[0]:>10.1f} MiB {whole[1]:>6.1f} s{whole[0] / max(chunked[0], 1e-9):>13.1f}x"
            )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
