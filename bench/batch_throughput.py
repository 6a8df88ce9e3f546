"""Benchmark: batch automatic segmentation (``sam2-batch``) throughput with 1, 2 and 4 workers.

``--client``: whether one client keeps up with the pool instead (issue 22):
tiled ``auto`` of a uint16 slide against N = 1, 2, 4 ... 32 cheap stand-in
workers that take ``--delay-s`` (0.5 s) per 1,024² tile (``bench/peers.py
mdp-tiles``: the true labels of the tile, no model), through ``sam2-batch``
(``run_batch`` on an uncompressed TIFF) and through the plugin's tiled AUTO
at the protocol level (``tiled_auto`` into a ``CompressedPlane``). Printed
per N: tiles/s against the ideal N / delay, and the client's process CPU per
tile and share of one core. Each N gets a slide of 8 x N tiles (8 rounds).

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

import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from batch.runner import BatchSettings, run_batch
from bench.common import (
    MODEL,
    BenchResult,
    Processes,
    Table,
    Target,
    base_parser,
    ensure_checkpoint,
    finish,
    fmt,
    start_broker,
    start_peer,
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


# ----------------------------------------------------------------------------
# --client: one client against many fast workers

TILES_SERVICE = "tiles"
TILE_SIDE = 768
"""Core of a tile in a slide of 768 x k px (windows of 1,024² with the default 128 px halo)."""
LIMITS = (0.0, 4000.0)


def disc_slide(shape: tuple[int, int], spacing: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A uint16 slide of bright discs (radius 6-12 px on a jittered grid) and its uint32 true labels."""
    rng = np.random.default_rng(seed)
    image = np.full(shape, 1000, np.uint16)
    truth = np.zeros(shape, np.uint32)
    label = 0
    for r in np.arange(spacing / 2, shape[0] - spacing / 2, spacing):
        for c in np.arange(spacing / 2, shape[1] - spacing / 2, spacing):
            rr, cc = r + rng.uniform(-spacing / 6, spacing / 6), c + rng.uniform(-spacing / 6, spacing / 6)
            rad = rng.uniform(6.0, 12.0)
            r0, c0 = int(rr - rad - 1), int(cc - rad - 1)
            yy, xx = np.ogrid[r0 : int(rr + rad + 2), c0 : int(cc + rad + 2)]
            inside = (yy + 0.5 - rr) ** 2 + (xx + 0.5 - cc) ** 2 <= rad**2
            label += 1
            image[r0 : r0 + inside.shape[0], c0 : c0 + inside.shape[1]][inside] = 3000
            truth[r0 : r0 + inside.shape[0], c0 : c0 + inside.shape[1]][inside] = label
    return image, truth


def slide_tiles(workers: int) -> tuple[int, int]:
    """(rows, cols) of tiles for ``workers``: 8 x workers tiles, near square."""
    total = 8 * workers
    rows = 2 ** (int(np.log2(total)) // 2)
    return rows, total // rows


def tile_index(image: np.ndarray, shapes: Sequence[tuple[int, int]]) -> dict[str, list[int]]:
    """Image key -> window of each tile of the top-left sub-slides of ``shapes`` (mdp-tiles' index)."""
    from protocol.geometry.grid import tile_grid
    from protocol.wire.image_key import image_key
    from protocol.wire.wire_image import to_wire

    index: dict[str, list[int]] = {}
    for shape in shapes:
        for tile in tile_grid(shape).tiles:
            wire = to_wire(image[tile.window_slices], LIMITS)
            index[image_key(wire.pixels, wire.contrast_limits, TILES_SERVICE)] = list(tile.window)
    return index


def start_tile_peers(
    procs: Processes, backend: str, folder: Path, delay_s: float, count: int, first: int = 0
) -> list[Any]:
    """Start ``count`` ``mdp-tiles`` workers on ``folder``'s truth.npy and tiles.json; wait until ready."""
    args = ["--connect", backend, "--service", TILES_SERVICE, "--truth", str(folder / "truth.npy")]
    args += ["--tiles", str(folder / "tiles.json"), "--delay-s", str(delay_s)]
    peers = [start_peer(procs, "mdp-tiles", *args, name=f"tiles{first + k}") for k in range(count)]
    for proc in peers:
        wait_for_log(proc, "ready", 60)
    return peers


def client_run(kind: str, frontend: str, image: np.ndarray, folder: Path) -> tuple[float, float, int]:
    """One tiled auto of ``image`` as ``kind`` (``sam2-batch`` or ``plugin``); (seconds, CPU s, tiles)."""
    from protocol.geometry.compressed import CompressedPlane
    from protocol.geometry.grid import tile_grid
    from protocol.ops.tiled import tiled_auto
    from protocol.wire.client import ClientConfig, SamClient

    tiles = len(tile_grid(image.shape))
    if kind == "sam2-batch":
        import tifffile

        path = folder / f"slide{image.shape[0]}x{image.shape[1]}.tif"
        if not path.exists():
            tifffile.imwrite(path, image)
        settings = BatchSettings(
            broker=frontend, model=TILES_SERVICE, contrast_limits=LIMITS, progress=False, overwrite=True
        )
        cpu, begin = time.process_time(), time.perf_counter()
        report = run_batch([path], folder / "out", settings)
        seconds, cpu = time.perf_counter() - begin, time.process_time() - cpu
        if not report.ok:
            raise RuntimeError(f"sam2-batch failed; see {folder / 'out' / 'summary.csv'}")
        return seconds, cpu, tiles
    config = ClientConfig(timeout_s=120.0, retries=0)
    cpu, begin = time.process_time(), time.perf_counter()
    out = CompressedPlane(image.shape)
    result = tiled_auto(
        image, out, lambda: SamClient(frontend, TILES_SERVICE, config=config), contrast_limits=LIMITS
    )
    seconds, cpu = time.perf_counter() - begin, time.process_time() - cpu
    if result.tiles_done != tiles:
        raise RuntimeError(f"tiled auto stitched {result.tiles_done} of {tiles} tiles")
    return seconds, cpu, tiles


def run_client(worker_counts: Sequence[int] = (1, 2, 4, 8, 16, 32), delay_s: float = 0.5) -> BenchResult:
    """Tiles/s and client CPU per tile of sam2-batch and the plugin's tiled AUTO against N fast workers."""
    title = "One client against N fast workers: tiles/s and client CPU per tile"
    result = BenchResult("client_scaling", title)
    most = max(worker_counts)
    shapes = {n: tuple(TILE_SIDE * k for k in slide_tiles(n)) for n in worker_counts}
    full = (max(s[0] for s in shapes.values()), max(s[1] for s in shapes.values()))
    image, truth = disc_slide(full, spacing=36)
    table = Table(
        f"Tiled auto against N stand-in workers taking {delay_s * 1000:.0f} ms per 1,024² tile "
        f"(uint16 slide of 8 x N tiles, ~{int((1024 / 36) ** 2)} objects per tile)",
        ["client", "N workers", "tiles", "in flight", "seconds", "tiles/s", "ideal N / delay", "ratio",
         "client CPU ms per tile", "client CPU share of a core"],
    )  # fmt: skip
    targets = []
    with tempfile.TemporaryDirectory(prefix="client-scaling-") as tmp, Processes() as procs:
        folder = Path(tmp)
        np.save(folder / "truth.npy", truth)
        (folder / "tiles.json").write_text(json.dumps(tile_index(image, list(shapes.values()))))
        del truth
        frontend, backend, _ = start_broker(procs, name="client-broker")
        started: list[Any] = []
        worst = {"sam2-batch": 9.0, "plugin": 9.0}
        for n in worker_counts:
            started += start_tile_peers(procs, backend, folder, delay_s, n - len(started), first=len(started))
            wait_for_workers(frontend, TILES_SERVICE, n)
            sub = image[: shapes[n][0], : shapes[n][1]]
            for kind in ("sam2-batch", "plugin"):
                seconds, cpu, tiles = client_run(kind, frontend, sub, folder)
                rate, ideal = tiles / seconds, n / delay_s
                worst[kind] = min(worst[kind], rate / ideal)
                table.add(
                    kind, n, tiles, 2 * n, fmt(seconds, 2), fmt(rate, 2), fmt(ideal, 1),
                    f"{rate / ideal:.2f}", fmt(1000 * cpu / tiles, 1), f"{cpu / seconds:.2f}",
                )  # fmt: skip
        for kind, ratio in worst.items():
            targets.append(
                Target(f"client: {kind} tiles/s / (N / delay), N = 1..{most} (worst)", f"{ratio:.2f}",
                       ">= 0.90", ratio >= 0.9)
            )  # fmt: skip
    table.note = (
        "Each row one run, workers already registered. sam2-batch: run_batch in this process on an "
        "uncompressed TIFF read whole (labels in memory, written as a Fiji TIFF at the end, all counted); "
        "plugin: tiled_auto into a CompressedPlane, as the plugin's AUTO-SEGMENT does (without napari). "
        "Client CPU: this process's CPU time (all threads) over the run; the workers and the broker are "
        "other processes on the same cores."
    )
    result.tables.append(table)
    result.targets += targets
    result.notes.append(f"{os.cpu_count()} cores shared by the client, the broker and {most} workers.")
    return result


MEASURED_BATCH = (
    "import json, re, sys, time\n"
    "from batch.__main__ import main\n"
    "began = time.perf_counter()\n"
    "code = main(sys.argv[1:])\n"
    "hwm = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
    "print(json.dumps({'rc': code, 'maxrss_kib': hwm, 'seconds': time.perf_counter() - began}))\n"
)
"""``python -c`` body: run sam2-batch, print its exit code, peak RSS (VmHWM, KiB) and seconds."""


def run_memory(
    side: int = 8192, limit_mib: int = 64, workers: int = 8, delay_s: float = 0.1, repeats: int = 2
) -> BenchResult:
    """sam2-batch on a uint16 slide larger than ``--max-in-memory-mib``: peak RSS and time, bounded vs not."""
    import subprocess

    import tifffile

    result = BenchResult("batch_memory", "sam2-batch memory: --max-in-memory-mib against no limit")
    image, truth = disc_slide((side, side), spacing=36)
    table = Table(
        f"sam2-batch on a {side:,}² uint16 uncompressed TIFF ({image.nbytes / 2**20:.0f} MiB; uint32 labels "
        f"{truth.nbytes / 2**20:.0f} MiB), {workers} stand-in workers at {delay_s * 1000:.0f} ms per tile",
        ["run", "--max-in-memory-mib", "peak RSS MiB", "seconds", "time vs unbounded", "labels"],
    )
    with tempfile.TemporaryDirectory(prefix="batch-memory-") as tmp, Processes() as procs:
        folder = Path(tmp)
        np.save(folder / "truth.npy", truth)
        (folder / "tiles.json").write_text(json.dumps(tile_index(image, [image.shape])))
        tifffile.imwrite(folder / "slide.tif", image)
        del image, truth
        frontend, backend, _ = start_broker(procs, name="memory-broker")
        start_tile_peers(procs, backend, folder, delay_s, workers)
        wait_for_workers(frontend, TILES_SERVICE, workers)
        runs: dict[str, list[dict[str, float]]] = {"unbounded": [], "bounded": []}
        for k in range(repeats):
            for kind in ("unbounded", "bounded") if k % 2 == 0 else ("bounded", "unbounded"):
                limit = ["--max-in-memory-mib", str(limit_mib)] if kind == "bounded" else []
                args = [str(folder / "slide.tif"), "--out", str(folder / kind), "--broker", frontend,
                        "--model", TILES_SERVICE, "--contrast-limits", *map(str, LIMITS), "--no-progress",
                        "--overwrite", "--log-level", "WARNING", *limit]  # fmt: skip
                proc = subprocess.run(
                    [sys.executable, "-c", MEASURED_BATCH, *args], capture_output=True, text=True, timeout=900
                )
                measured = json.loads(proc.stdout.strip().splitlines()[-1])
                if measured["rc"] != 0:
                    raise RuntimeError(f"sam2-batch failed: {proc.stderr[-2000:]}")
                runs[kind].append(measured)
    base = float(np.median([r["seconds"] for r in runs["unbounded"]]))
    for kind, measured in runs.items():
        seconds = float(np.median([r["seconds"] for r in measured]))
        peak = max(r["maxrss_kib"] for r in measured) / 1024
        limit_text = str(limit_mib) if kind == "bounded" else "(default 1,024)"
        where = "a file on disk, tile by tile" if kind == "bounded" else "numpy in memory"
        table.add(kind, limit_text, fmt(peak, 0), fmt(seconds, 2), f"{seconds / base:.2f}", where)
        if kind == "bounded":
            result.targets.append(
                Target("batch: bounded time / unbounded time", f"{seconds / base:.2f}", "<= 1.30",
                       seconds / base <= 1.3)
            )  # fmt: skip
    table.note = (
        f"{repeats} runs of each, alternating, medians of the time, the highest peak RSS (VmHWM of the "
        "sam2-batch process: interpreter, libraries, tiles in flight, labels; not the page cache). "
        "Bounded: the input is read row range by row range from the file; each core goes once into a "
        "temporary uncompressed file (a writer thread), read once as the tiled BigTIFF is written, "
        "relabelled and deflated there. Unbounded: the labels in numpy, relabelled in place, a Fiji TIFF."
    )
    result.tables.append(table)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=None, help="images per run (default 8, --quick 4)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (%(default)s)")
    parser.add_argument("--workers", default="1,2,4", help="worker counts to compare (%(default)s)")
    parser.add_argument("--device", default="cpu", help="worker device: cpu, cuda, cuda:N (%(default)s)")
    parser.add_argument("--points-per-side", type=int, default=8, help="auto's grid (%(default)s)")
    parser.add_argument("--client", action="store_true", help="one client against N fast stand-in workers")
    parser.add_argument("--delay-s", type=float, default=0.5, help="--client: seconds per tile (%(default)s)")
    parser.add_argument("--memory", action="store_true", help="sam2-batch peak RSS, bounded vs not")
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.memory:
        finish(run_memory(), started, args.json)
        return 0
    if args.client:
        given = [int(n) for n in args.workers.split(",")]
        counts = given if args.workers != "1,2,4" else [1, 2, 4, 8, 16, 32]
        finish(run_client(counts, args.delay_s), started, args.json)
        return 0
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
