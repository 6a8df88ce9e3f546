# One file on purpose: the large-image measurements share their set-up (broker, stand-ins, disc images).
"""Large images (issue 14): windowed clicks, tiled ``auto`` over N workers, stitching, the tile halo.

Four measurements, each a ratio within this run:

1. **Clicks on a large slice** (real SAM2 worker, random weights, CPU): the
   first click on a new window of a 20,000² uint16 slice
   (:func:`protocol.ops.windowed.segment_windowed`: only a window around
   the click is read and sent) against the first click on a new 1,024²
   image, same worker, alternating; then a repeat click nearby (same window,
   embedding cached) against today's repeat click on a 1,024² image.
2. **Tiled auto over N workers** (:func:`protocol.ops.tiled.tiled_auto`) on
   an 8,192² image with 1, 2, 4 stand-in workers (``python -m workers --model standin-blobs``,
   ``--delay-s`` emulating model time per tile): throughput against N x one
   worker, which measures the client, stitching and broker side. With time,
   the real SAM2 worker's figure for 1 and 2 workers on a smaller image.
3. **Stitching cost per tile** (:class:`protocol.geometry.stitch.TileStitcher`), into
   numpy and into zarr, against the tile's model time.
4. **The tile halo**: 64, 128, 256 px on a disc image with discs up to 50 px
   in radius: discs found whole (IoU >= 0.9), strays, duplicates, and time.
5. **The plugin's work per answer** (``--plugin`` only, under ``xvfb-run -a``):
   the same disc clicked on 1,024², 8,192² and 20,000² slices in a real viewer
   and widget (stand-in worker): GUI-thread time per answer and RSS growth
   per answer, against the 1,024² slice.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from bench.common import (
    PYTHON,
    BenchResult,
    Processes,
    Stats,
    Table,
    Target,
    ensure_checkpoint,
    fmt,
    fmt_range,
    quick_main,
    start_broker,
    start_sam_worker,
    wait_for_workers,
)
from bench.discs import disc_image, disc_scores, scattered_discs
from protocol.geometry.grid import tile_grid
from protocol.geometry.stitch import TileStitcher
from protocol.ops import requests as ops
from protocol.ops.tiled import tiled_auto
from protocol.ops.windowed import segment_windowed
from protocol.runtime.processes import wait_for_log
from protocol.wire.client import ClientConfig, SamClient
from protocol.wire.wire_image import to_wire
from workers.standin import DEFAULT_MODEL as STANDIN

LARGE_SIDE = 20_000
SMALL_SIDE = 1024


# ----------------------------------------------------------------------------
# helpers


def start_standins(
    procs: Processes, backend: str, count: int, delay_s: float, *, encode_delay_s: float = 0.0, first: int = 0
) -> list[Any]:
    """Start ``count`` stand-in workers (``python -m workers --model standin-blobs``) and wait for them."""
    args = [PYTHON, "-m", "workers", "--model", STANDIN, "--connect", backend]
    args += ["--delay-s", str(delay_s), "--encode-delay-s", str(encode_delay_s)]
    started = [
        procs.start(
            args,
            f"standin{first + k}",
        )  # fmt: skip
        for k in range(count)
    ]
    for proc in started:
        wait_for_log(proc, "worker ready", 60)
    return started


def client_factory(frontend: str, service: str) -> Any:
    return lambda: SamClient(frontend, service, config=ClientConfig(timeout_s=600.0, retries=0))


def large_uint16(side: int, seed: int = 0) -> np.ndarray:
    """A (side, side) uint16 slice of smooth noise, filled block by block (no float copy of the whole)."""
    rng = np.random.default_rng(seed)
    image = np.empty((side, side), np.uint16)
    block = 2048
    for r in range(0, side, block):
        rows = min(block, side - r)
        image[r : r + rows] = rng.integers(1000, 3000, size=(rows, side), dtype=np.uint16)
    return image


# ----------------------------------------------------------------------------
# 1. clicks


def bench_clicks(
    frontend: str, service: str, repeats: int, large_side: int, worker: str
) -> tuple[Table, list[Target]]:
    """First and repeat clicks: a window of a large uint16 slice vs a whole 1,024² image."""
    large = large_uint16(large_side)
    limits = (1000.0, 3000.0)
    rng = np.random.default_rng(1)
    first_large: list[float] = []
    first_small: list[float] = []
    repeat_large: list[float] = []
    repeat_small: list[float] = []
    # Clicks on the large slice land in distinct windows (a new embedding each time).
    grid = max(1, large_side // 2048)
    spots = [
        (1024 + 2048 * (k // grid) + 300.5, 1024 + 2048 * (k % grid) + 300.5) for k in range(grid * grid)
    ]
    with client_factory(frontend, service)() as client:
        warm = to_wire(rng.integers(0, 255, (SMALL_SIDE, SMALL_SIDE), dtype=np.uint8), None)
        ops.segment(client, warm, [(512.5, 512.5)], [1])
        for k in range(repeats):
            small = to_wire(rng.integers(1000, 3000, (SMALL_SIDE, SMALL_SIDE), dtype=np.uint16), limits)
            point = spots[k % len(spots)]
            for side in ("large", "small") if k % 2 == 0 else ("small", "large"):
                started = time.perf_counter()
                if side == "large":
                    answer = segment_windowed(
                        client, large, [point], [1], contrast_limits=limits, max_tries=1
                    )
                    first_large.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    segment_windowed(
                        client, large, [(point[0] + 25, point[1] - 20)], [1],
                        contrast_limits=limits, max_tries=1, window=answer.window,
                    )  # fmt: skip
                    repeat_large.append(time.perf_counter() - started)
                else:
                    ops.segment(client, small, [(512.5, 512.5)], [1])
                    first_small.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    ops.segment(client, small, [(537.5, 492.5)], [1])
                    repeat_small.append(time.perf_counter() - started)
    fl, fs, rl, rs = (Stats.of(v) for v in (first_large, first_small, repeat_large, repeat_small))
    first_ratio = float(np.median(np.array(first_large) / np.array(first_small)))
    repeat_ratio = float(np.median(np.array(repeat_large) / np.array(repeat_small)))
    table = Table(
        f"Clicks: a window of a {large_side:,}² uint16 slice vs a whole {SMALL_SIDE:,}² image ({worker})",
        [
            "click",
            f"{large_side:,}² slice, s",
            f"{SMALL_SIDE:,}² image, s",
            "ratio (median of pairs)",
            "target",
        ],
    )
    table.add("first (new embedding)", fmt_range(fl), fmt_range(fs), f"{first_ratio:.2f}", "<= 1.5")
    table.add("repeat nearby (same window)", fmt_range(rl), fmt_range(rs), f"{repeat_ratio:.2f}", "<= 1.1")
    table.note = (
        f"{repeats} pairs, sides alternating; each first click on the large slice lands in a new window "
        "(read from the in-memory slice, converted and sent: ~1,024² px); max_tries=1 (random weights make "
        "masks touch window borders arbitrarily, which would add regrow requests). The repeat click passes "
        "the first answer's window, as the plugin does for a nearby click."
    )
    targets = [
        Target(f"large: first click, {large_side:,}² vs {SMALL_SIDE:,}²", f"{first_ratio:.2f}", "<= 1.5",
               first_ratio <= 1.5),
        Target(f"large: repeat click nearby, {large_side:,}² vs {SMALL_SIDE:,}²", f"{repeat_ratio:.2f}",
               "<= 1.1", repeat_ratio <= 1.1),
    ]  # fmt: skip
    return table, targets


# ----------------------------------------------------------------------------
# 2. tiled auto over N workers


def bench_tiled_scaling(
    procs: Processes, frontend: str, backend: str, side: int, counts: Sequence[int], delay_s: float
) -> tuple[Table, Target]:
    centres, radii = scattered_discs((side, side), spacing=60, seed=5)
    image, _ = disc_image((side, side), centres, radii)
    workers: list[Any] = []
    single = None
    worst = None
    grid = tile_grid((side, side))
    table = Table(
        f"Tiled auto on a {side:,}² image ({len(grid)} tiles of 1,024², halo 128), stand-in workers "
        f"sleeping {delay_s * 1000:.0f} ms per tile",
        ["N workers", "seconds", "tiles/s", "ideal tiles/s", "vs N x one worker", "target >= 0.9"],
    )
    for n in counts:
        workers += start_standins(procs, backend, n - len(workers), delay_s, first=len(workers))
        wait_for_workers(frontend, STANDIN, n)
        out = np.zeros((side, side), np.uint32)
        result = tiled_auto(image, out, client_factory(frontend, STANDIN), in_flight=n)
        rate = result.tiles / result.seconds
        single = rate if single is None else single
        efficiency = rate / (n * single)
        worst = efficiency if worst is None else min(worst, efficiency)
        table.add(
            n, fmt(result.seconds), fmt(rate, 2), fmt(n / delay_s, 2), f"{efficiency:.2f}", efficiency >= 0.9
        )
    table.note = (
        "tiled_auto with N requests in flight (one client per thread); the stand-in labels bright components "
        "(a few ms of CPU per tile) and sleeps for the model. The client reads, converts, sends, decodes and "
        "stitches every tile; 2 CPU cores are shared by all processes."
    )
    target = Target(
        f"large: tiled auto throughput / (N x one worker), N = {', '.join(map(str, counts))} (worst)",
        f"{worst:.2f}",
        ">= 0.90",
        worst is not None and worst >= 0.9,
    )
    for proc in workers:
        procs.stop(proc)
    return table, target


def bench_tiled_real(procs: Processes, frontend: str, backend: str, side: int, points: int) -> Table:
    """Tiled auto with 1 then 2 real SAM2 workers (one thread each) on a smaller image."""
    checkpoint = ensure_checkpoint()
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (side, side), dtype=np.uint8)
    grid = tile_grid((side, side))
    table = Table(
        f"Tiled auto with real SAM2 tiny workers (random weights, CPU, 1 thread each) on a {side:,}² image "
        f"({len(grid)} tiles, points_per_side {points})",
        ["N workers", "seconds", "tiles/s", "vs N x one worker"],
    )
    workers: list[Any] = []
    single = None
    for n in (1, 2):
        while len(workers) < n:
            workers.append(start_sam_worker(procs, backend, checkpoint, name=f"sam{len(workers)}", threads=1))
        wait_for_workers(frontend, "sam2.1_hiera_tiny", n)
        out = np.zeros((side, side), np.uint32)
        result = tiled_auto(
            image,
            out,
            client_factory(frontend, "sam2.1_hiera_tiny"),
            {"points_per_side": points},
            in_flight=n,
        )
        rate = result.tiles / result.seconds
        single = rate if single is None else single
        table.add(n, fmt(result.seconds), fmt(rate, 3), f"{rate / (n * single):.2f}")
    for proc in workers:
        procs.stop(proc)
    table.note = "2 CPU cores: two one-thread workers can at best double one one-thread worker."
    return table


# ----------------------------------------------------------------------------
# 3. stitching cost


def bench_stitching(side: int) -> Table:
    """Milliseconds per tile of TileStitcher.add (+ finish) into numpy and zarr outputs."""
    import zarr

    centres, radii = scattered_discs((side, side), spacing=60, seed=9)
    _, truth = disc_image((side, side), centres, radii)
    grid = tile_grid((side, side))
    tiles = [(tile, truth[tile.window_slices].copy()) for tile in grid.tiles]  # per-tile ids: already labels
    table = Table(
        f"Stitching cost per 1,024² tile ({side:,}² slice, {len(grid)} tiles, ~{len(centres) // len(grid)} "
        "objects per tile)",
        ["output", "ms per tile (add)", "finish, ms per tile", "tiles/s"],
    )
    for name in ("numpy", "zarr (1,024² chunks)"):
        if name == "numpy":
            out: Any = np.zeros((side, side), np.uint32)
        else:
            out = zarr.zeros((side, side), chunks=(1024, 1024), dtype=np.uint32)
        stitcher = TileStitcher(out, grid)
        started = time.perf_counter()
        for tile, labels in tiles:
            stitcher.add(tile, labels)
        added = time.perf_counter() - started
        started = time.perf_counter()
        stitcher.finish()
        finished = time.perf_counter() - started
        total = added + finished
        table.add(
            name,
            fmt(1000 * added / len(grid), 1),
            fmt(1000 * finished / len(grid), 1),
            fmt(len(grid) / total, 1),
        )
    table.note = (
        "Tiles are the true labels of a disc image (so every border object is merged); SAM2 tiny takes "
        "seconds per tile on CPU and ~0.1-0.5 s on a GPU, so stitching on the client's thread keeps up with "
        "many workers."
    )
    return table


# ----------------------------------------------------------------------------
# 4. halo


def bench_halo(frontend: str, side: int, halos: Sequence[int]) -> Table:
    centres, radii = scattered_discs((side, side), spacing=160, radius_range=(6.0, 50.0), seed=13)
    image, truth = disc_image((side, side), centres, radii)
    table = Table(
        f"Tile halo on a {side:,}² image of {len(centres)} discs, radius 6-50 px (stand-in, 2 workers)",
        ["halo px", "tiles", "seconds", "discs whole (IoU >= 0.9)", "worst IoU", "strays", "duplicates"],
    )
    for halo in halos:
        out = np.zeros((side, side), np.uint32)
        result = tiled_auto(image, out, client_factory(frontend, STANDIN), halo=halo)
        iou, stray, duplicates = disc_scores(out, truth)
        table.add(
            halo, result.tiles, fmt(result.seconds), f"{(iou >= 0.9).mean():.1%}", f"{iou.min():.2f}",
            stray, duplicates,
        )  # fmt: skip
    table.note = (
        "Default 128 (geometry/grid.py DEFAULT_HALO): an object is merged whole when the overlap holds "
        "enough of it to match; more halo costs more tiles (the grid needs more, smaller cores) for objects "
        "that already come back whole. Keep --tile-halo above the largest object's radius."
    )
    return table


# ----------------------------------------------------------------------------


# ----------------------------------------------------------------------------
# 5. the plugin's work per answer (napari under Xvfb)


class _GuiClock:
    """Wall time spent in chosen methods (all run on the GUI thread), patched on their classes."""

    def __init__(self, targets: Sequence[tuple[Any, str]]) -> None:
        self.total_s = 0.0
        self._saved = [(owner, name, getattr(owner, name)) for owner, name in targets]
        for owner, name, real in self._saved:
            setattr(owner, name, self._timed(real))

    def _timed(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                self.total_s += time.perf_counter() - started

        return timed

    def restore(self) -> None:
        for owner, name, real in self._saved:
            setattr(owner, name, real)


def _pump(done: Callable[[], bool], timeout_s: float) -> None:
    """Run the Qt event loop until ``done()`` (RuntimeError after ``timeout_s``)."""
    from qtpy.QtWidgets import QApplication

    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for the plugin")
        QApplication.processEvents()
        time.sleep(0.002)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _answers_on(
    frontend: str, side: int, centres: list[tuple[float, float]], radius: float
) -> dict[str, Any]:
    """Click each disc of a (side, side) uint8 slice once (a new object each) in a real viewer and widget.

    The first click is a warm-up (first use of the labels layer, the worker's embedding); the others
    are timed: wall time of the plugin's GUI-thread work per answer (writing the answer, and the label
    list's and the name overlay's coalesced redraws) and the process RSS growth per answer.
    """
    import napari

    from plugin._qt.label_table_widget import LabelTable
    from plugin._qt.widget import SamWidget
    from plugin.jobs.segment import PromptJobs
    from plugin.jobs.submit import POINTS
    from plugin.labels.history import set_names
    from plugin.view.layers import POINTS_MASK, PROMPT_POINTS
    from plugin.view.name_overlay import NameOverlay

    image = np.full((side, side), 20, np.uint8)
    yy, xx = np.mgrid[-int(radius) - 1 : int(radius) + 2, -int(radius) - 1 : int(radius) + 2]
    for row, col in centres:
        r, c = int(row), int(col)
        patch = image[r - int(radius) - 1 : r + int(radius) + 2, c - int(radius) - 1 : c + int(radius) + 2]
        patch[yy**2 + xx**2 <= radius**2] = 200
    viewer = napari.Viewer(show=True)
    try:
        viewer.add_image(image, name="slice")
        widget = SamWidget(viewer)
        viewer.window.add_dock_widget(widget, name="SAM2 Segmentation")
        _pump(lambda: widget.controller.session is not None, 60)
        controller = widget.controller
        controller.notify = lambda level, message: None

        def click(point: tuple[float, float]) -> None:
            previous = controller.applied.get(POINTS)
            controller.new_object()
            widget.start_points()
            viewer.layers[PROMPT_POINTS].add([point[0] + 0.5, point[1] + 0.5])
            _pump(lambda: controller.applied.get(POINTS) not in (None, previous), 120)
            settled = time.monotonic() + 0.25  # the list's and the overlay's coalesced redraws (30-60 ms)
            _pump(lambda: time.monotonic() > settled, 5)

        click(centres[0])
        labels = viewer.layers[POINTS_MASK]
        set_names(labels, {int(controller.applied[POINTS].label_ids[0]): "cell"})  # the overlay draws names
        widget.names.attach(labels)
        viewer.layers.selection.active = labels  # the label list follows it
        click(centres[0])  # settles the overlay and the list (not timed)
        write = _GuiClock([(PromptJobs, "_paste_windowed"), (PromptJobs, "_paste_segment")])
        redraw = _GuiClock([(LabelTable, "refresh"), (NameOverlay, "update")])
        try:
            gc.collect()
            rss_before = _rss_bytes()
            writes: list[float] = []
            redraws: list[float] = []
            pixels = []
            for centre in centres[1:]:
                before = write.total_s, redraw.total_s
                click(centre)
                writes.append(write.total_s - before[0])
                redraws.append(redraw.total_s - before[1])
                pixels.append(controller.applied[POINTS].pixels)
            gc.collect()
            growth = (_rss_bytes() - rss_before) / len(writes)
        finally:
            write.restore()
            redraw.restore()
        return {
            "write_s": writes,
            "redraw_s": redraws,
            "gui_s": [a + b for a, b in zip(writes, redraws, strict=True)],
            "rss_growth": growth,
            "pixels": float(np.median(pixels)),
        }
    finally:
        viewer.close()
        gc.collect()


def bench_plugin_answers(frontend: str, sides: Sequence[int], answers: int) -> tuple[Table, list[Target]]:
    """The plugin's per-answer GUI-thread time and memory growth, same object, several slice sizes."""
    radius = 12.0
    per_row = int(np.ceil(np.sqrt(answers + 1)))
    centres = [(200.0 + 60 * (k // per_row), 200.0 + 60 * (k % per_row)) for k in range(answers + 1)]
    measured = {side: _answers_on(frontend, side, centres, radius) for side in sides}
    base = float(np.median(measured[sides[0]]["gui_s"]))
    table = Table(
        f"The plugin's work per answer: the same {2 * radius + 1:.0f}-px disc clicked on slices of "
        f"{', '.join(f'{s:,}²' for s in sides)} (napari under Xvfb, stand-in worker)",
        [
            "slice",
            "GUI-thread ms per answer",
            "of which writing, ms",
            "redraws (list, names), ms",
            f"vs {sides[0]:,}²",
            "RSS growth per answer, KiB",
            "pixels",
        ],
    )
    targets = []
    for side in sides:
        stats = Stats.of(measured[side]["gui_s"]).scaled(1000)
        ratio = float(np.median(measured[side]["gui_s"])) / base
        growth = measured[side]["rss_growth"] / 1024
        writes = fmt(1000 * float(np.median(measured[side]["write_s"])))
        redraws = fmt(1000 * float(np.median(measured[side]["redraw_s"])))
        pixels = f"{measured[side]['pixels']:.0f}"
        table.add(f"{side:,}²", fmt_range(stats), writes, redraws, f"{ratio:.2f}", f"{growth:.0f}", pixels)
        if side != sides[0]:
            targets.append(
                Target(f"large: plugin GUI-thread time per answer, {side:,}² vs {sides[0]:,}²",
                       f"{ratio:.2f}", "<= 1.5", ratio <= 1.5)
            )  # fmt: skip
    table.note = (
        f"{answers} answers per slice after 2 not counted, each a new object (a disc of the same size in the "
        "same place of each slice), medians [p10-p90]. GUI-thread time: writing the answer "
        "(PromptJobs._paste_windowed on slices larger than 1,024², _paste_segment on 1,024²: the edit "
        "plan, data_setitem with napari's partial redraw, the undo history and the label boxes) plus the "
        "label list's and the name overlay's coalesced redraws. RSS growth: the process's resident memory "
        "after the answers minus before, per answer (napari's undo record of the changed pixels; "
        "page-granular, so noisy). The viewer is shown (a hidden canvas has no texture and napari would "
        "redraw the whole slice)."
    )
    return table, targets


def run(quick: bool = False, real: bool | None = None) -> BenchResult:
    """Run the large-image benchmarks and return their tables and targets."""
    result = BenchResult("large", "14. Large images: windows, tiles over N workers, stitching, halo")
    real = (not quick) if real is None else real
    with Processes() as procs:
        frontend, backend, _ = start_broker(procs)
        # 1. clicks (real SAM2 worker; quick mode: the stand-in, ~0.2 s per new image)
        if quick:
            (clicker,) = start_standins(procs, backend, 1, 0.0, encode_delay_s=0.2, first=20)
            wait_for_workers(frontend, STANDIN, 1)
            clicks, click_targets = bench_clicks(frontend, STANDIN, 2, 4096, "stand-in worker, quick mode")
        else:
            clicker = start_sam_worker(procs, backend, ensure_checkpoint(), name="sam-clicks")
            wait_for_workers(frontend, "sam2.1_hiera_tiny", 1)
            clicks, click_targets = bench_clicks(
                frontend, "sam2.1_hiera_tiny", 4, LARGE_SIDE, "SAM2 tiny, random weights, CPU"
            )
        result.tables.append(clicks)
        result.targets += click_targets
        procs.stop(clicker)
        # 2. tiled auto over N stand-in workers
        scaling, target = bench_tiled_scaling(
            procs, frontend, backend, 2048 if quick else 8192, (1, 2) if quick else (1, 2, 4),
            0.05 if quick else 0.3,
        )  # fmt: skip
        result.tables.append(scaling)
        result.targets.append(target)
        # 4. halo (stand-in)
        start_standins(procs, backend, 2, 0.0, first=10)
        wait_for_workers(frontend, STANDIN, 2)
        result.tables.append(
            bench_halo(frontend, 1500 if quick else 3000, (64, 128) if quick else (64, 128, 256))
        )
        # 3. stitching (no network)
        result.tables.append(bench_stitching(2048 if quick else 8192))
        if real:
            result.tables.append(bench_tiled_real(procs, frontend, backend, 1536, 4))
        else:
            result.notes.append("Real-model tiled auto (1 and 2 SAM2 workers) skipped in quick mode.")
    if not quick and os.environ.get("DISPLAY"):
        plugin = run_plugin()
        result.tables += plugin.tables
        result.targets += plugin.targets
    elif not quick:
        result.notes.append("The plugin's per-answer benchmark needs a display: xvfb-run -a ... --plugin.")
    return result


def run_plugin(quick: bool = False) -> BenchResult:
    """Only the plugin's per-answer benchmark (needs a display: run under ``xvfb-run -a``)."""
    result = BenchResult("large_plugin", "14. Large images: the plugin's work per answer")
    sys.argv = sys.argv[:1]  # napari reads the command line for plugins to open
    with Processes() as procs:
        frontend, backend, _ = start_broker(procs)
        start_standins(procs, backend, 1, 0.0)
        wait_for_workers(frontend, STANDIN, 1)
        os.environ.update(SAM2_BROKER_ADDRESS=frontend, SAM2_MODEL=STANDIN, SAM2_EMBEDDED="0")
        sides = (SMALL_SIDE, 2048, 4096) if quick else (SMALL_SIDE, 8192, LARGE_SIDE)
        table, targets = bench_plugin_answers(frontend, sides, 4 if quick else 12)
        result.tables.append(table)
        result.targets += targets
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--plugin" in args:  # only the plugin's per-answer benchmark (under xvfb-run -a)
        args.remove("--plugin")
        return quick_main(lambda quick=False: run_plugin(quick), "The plugin's work per answer", args)
    return quick_main(run, __doc__.splitlines()[0], args)


if __name__ == "__main__":
    sys.exit(main())
