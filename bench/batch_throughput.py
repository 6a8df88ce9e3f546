"""Benchmark: batch automatic segmentation (``sam2-batch``) throughput with 1, 2 and 4 workers.

The same synthetic images go through ``batch.runner.run_batch`` (``auto``,
2 requests per worker in flight) against ``python -m broker`` and N real
SAM2 workers (sam2.1 tiny, random weights: the compute of real ones, the
masks meaningless), started fresh for each N. Printed: images per second and
the speed-up over one worker.

On a CPU-only machine the workers share the same cores (each gets
``cores // N`` torch threads): whatever speed-up shows there comes from
overlapping one worker's single-threaded parts (decoding, mask
post-processing, label painting) with another's encoder, and it is bounded
by the core count. It says nothing about GPUs; the number that matters is
on a GPU machine (``--device cuda``), where several workers share one GPU
and the batch keeps all of them busy.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from batch.runner import BatchSettings, run_batch
from bench.common import (
    MODEL,
    BenchResult,
    Processes,
    Table,
    base_parser,
    ensure_checkpoint,
    finish,
    fmt,
    start_broker,
    start_sam_worker,
    wait_for_workers,
)
from protocol.runtime.processes import wait_for_log
from protocol.wire.automask import AutoMaskParams


def make_images(folder: Path, count: int, size: int) -> list[Path]:
    """``count`` grey uint8 PNGs of ``size`` x ``size`` with a few bright disks each."""
    import imageio.v3 as iio

    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[:size, :size]
    paths = []
    for i in range(count):
        image = rng.integers(0, 50, (size, size)).astype(np.uint8)
        for _ in range(4):
            r, c, radius = rng.integers(size // 8, size - size // 8, 2).tolist() + [size // 10]
            image[(rows - r) ** 2 + (cols - c) ** 2 < radius**2] += 150
        path = folder / f"img{i:03d}.png"
        iio.imwrite(path, image)
        paths.append(path)
    return paths


def measure(
    procs: Processes,
    checkpoint: Path,
    files: list[Path],
    out_dir: Path,
    workers: int,
    device: str,
    points_per_side: int,
) -> tuple[float, int, int]:
    """Start a broker and ``workers`` workers and run the batch once.

    Returns:
        (seconds, torch threads per worker, requests in flight).
    """
    threads = max(1, (os.cpu_count() or 1) // workers) if device == "cpu" else 1
    frontend, backend, broker = start_broker(procs, name=f"batch-broker{workers}")
    started = [
        start_sam_worker(
            procs,
            backend,
            checkpoint,
            name=f"batch-worker{workers}-{i}",
            device=device,
            threads=threads,
            wait=False,
        )
        for i in range(workers)
    ]
    for proc in started:
        wait_for_log(proc, "worker ready", 300)
    wait_for_workers(frontend, MODEL, workers)
    auto_mask = AutoMaskParams(points_per_side=points_per_side)
    settings = BatchSettings(broker=frontend, model=MODEL, auto_mask=auto_mask, progress=False)
    begin = time.perf_counter()
    report = run_batch(files, out_dir, settings)
    seconds = time.perf_counter() - begin
    if not report.ok:
        raise RuntimeError(f"the batch failed for {report.failed} images; see {out_dir / 'summary.csv'}")
    for proc in [*started, broker]:
        procs.stop(proc)
    return seconds, threads, report.in_flight


def run(
    quick: bool = False,
    images: int | None = None,
    size: int = 128,
    worker_counts: Sequence[int] = (1, 2, 4),
    device: str = "cpu",
    points_per_side: int = 8,
) -> BenchResult:
    """Run the benchmark and return its table."""
    result = BenchResult("batch_throughput", "Batch automatic segmentation: images per second vs workers")
    count = images if images is not None else (4 if quick else 8)
    table = Table(
        f"sam2-batch, {count} images of {size}x{size}, auto with {points_per_side}x{points_per_side} points, "
        f"device {device}",
        ["workers", "torch threads each", "in flight", "seconds", "images/s", "vs 1 worker"],
    )
    checkpoint = ensure_checkpoint(MODEL)
    with tempfile.TemporaryDirectory(prefix="sam2-batch-bench-") as tmp, Processes() as procs:
        files = make_images(Path(tmp), count, size)
        single = None
        for workers in worker_counts:
            out_dir = Path(tmp) / f"out{workers}"
            seconds, threads, in_flight = measure(
                procs, checkpoint, files, out_dir, workers, device, points_per_side
            )
            rate = count / seconds
            single = rate if single is None else single
            table.add(workers, threads, in_flight, fmt(seconds, 1), fmt(rate, 3), f"{rate / single:.2f}")
    table.note = (
        "Workers start fresh for each row (not timed); the time covers reading the images, sending them, "
        "auto on every image and writing the label TIFFs and summary.csv."
    )
    result.tables.append(table)
    cores = os.cpu_count() or 1
    if device == "cpu":
        result.notes.append(
            f"CPU only ({cores} cores): the workers share these cores, so any speed-up here only "
            "overlaps single-threaded parts and is bounded by the core count; the number that "
            "matters is on a GPU machine (--device cuda)."
        )
    result.notes.append("Random weights: the same compute as real weights, meaningless masks.")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=None, help="images per run (default 8, --quick 4)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (%(default)s)")
    parser.add_argument("--workers", default="1,2,4", help="worker counts to compare (%(default)s)")
    parser.add_argument("--device", default="cpu", help="worker device: cpu, cuda, cuda:N (%(default)s)")
    parser.add_argument("--points-per-side", type=int, default=8, help="auto's grid (%(default)s)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    result = run(
        quick=args.quick,
        images=args.images,
        size=args.size,
        worker_counts=[int(n) for n in args.workers.split(",")],
        device=args.device,
        points_per_side=args.points_per_side,
    )
    finish(result, started, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
