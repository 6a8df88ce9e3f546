"""What a user feels on a very large slide (issue 22): the longest event-loop stall per phase, shown viewer.

A 10 ms ``QTimer`` heartbeat runs in a shown napari viewer (under
``xvfb-run -a``); for each phase the longest gap between two beats is the
longest time the window was frozen, and the wall time from the action to
its result is taken too, with the process's peak RSS after the phase.
Phases, as a user goes: **open** (a lazily read pyramid image and the
docked plugin), the **Point prompts** button (creates the prompt and result
layers), **first click**, **later click** (far away: another window), the
**Box prompts** button and a **first box**, **AUTO** (tiled, the whole slide or
AUTO's "visible region" zoomed to ``--auto-side`` around the centre; its paste is timed apart as **paste**:
GUI-thread time in the plugin's paste), **undo** (of AUTO's paste),
**Edit here** (open a window and paint with napari's brush; close it, which
writes back: two actions),
**export** (TIFF of level 0), and the **Labels tab** refreshed with 300,000
labels. Stand-in workers answer (bright connected components, exactly).
Each phase also counts Python's full (generation-2) garbage collections and
the longest (a stall of its own when on the GUI thread).

The slide is a 20,000² uint16 zarr pyramid of ~10,000 discs, generated
chunk by chunk; ``--side 100000`` makes a 100,000² one on disk (clicks
anywhere; AUTO over ``--auto-side`` px, 10,000 by default there); ``--slide-dir DIR`` keeps the
generated slide there and opens it again on the next run (generating 100,000² takes ~8 min).

Run: ``xvfb-run -a -s "-screen 0 1600x1200x24" python -m bench.bench_gui_stall [--quick] [--side N]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_large import STANDIN, start_standins
from bench.common import BenchResult, Processes, Table, Target, finish, start_broker, wait_for_workers
from bench.stall_sampler import StallSampler
from plugin.labels.pyramid import downsample_max, level_shapes

STALL_TARGET_S = 0.100
DISC_SPACING = 200
DISC_RADIUS = 10


SLIDE_DONE = "slide-complete"
"""File written in a slide folder once every level is; a folder without it is generated again."""


def disc_pyramid(side: int, folder: str | None) -> tuple[list[Any], list[tuple[int, int]]]:
    """A (side, side) uint16 zarr pyramid (level 0 first, halved by 2×2 maximum) of discs on a grid.

    Written 1,024² chunk by chunk (never a slide-sized array); returns the levels and the disc centres.
    In memory (``folder`` None) or in ``folder``; a folder holding a complete slide of this side
    (:data:`SLIDE_DONE`) is opened, not generated again.
    """
    import zarr

    shapes = level_shapes((side, side))
    offsets = np.arange(DISC_SPACING // 2, side - DISC_RADIUS, DISC_SPACING)
    centres = [(int(r), int(c)) for r in offsets for c in offsets]
    done = None if folder is None else Path(folder) / SLIDE_DONE
    if done is not None and done.is_file() and done.read_text().strip() == str(side):
        return [zarr.open_array(f"{folder}/{k}", mode="r") for k in range(len(shapes))], centres
    if done is not None:
        done.unlink(missing_ok=True)
    levels = [
        zarr.create_array(
            store=zarr.storage.MemoryStore() if folder is None else f"{folder}/{k}",
            shape=s,
            chunks=(1024, 1024),
            dtype="uint16",
            fill_value=500,
            overwrite=True,
        )
        for k, s in enumerate(shapes)
    ]
    block = 4096  # a multiple of 2**k for every level k, so each level's part of a block is whole pixels

    def to_centre(coords: np.ndarray) -> np.ndarray:
        """Distance to the nearest disc centre along one axis (centres at DISC_SPACING/2 + k·DISC_SPACING)."""
        half = DISC_SPACING // 2
        return np.where(coords < side - DISC_RADIUS, (coords % DISC_SPACING) - half, DISC_SPACING)

    for r0 in range(0, side, block):
        for c0 in range(0, side, block):
            dr = to_centre(np.arange(r0, min(r0 + block, side)))
            dc = to_centre(np.arange(c0, min(c0 + block, side)))
            inside = dr[:, None] ** 2 + dc[None, :] ** 2 <= DISC_RADIUS**2
            tile = np.where(inside, np.uint16(40000), np.uint16(500))
            for k, level in enumerate(levels):
                if k:
                    tile = downsample_max(tile)
                level[(r0 >> k) : (r0 >> k) + tile.shape[0], (c0 >> k) : (c0 >> k) + tile.shape[1]] = tile
    if done is not None:
        done.write_text(str(side))
    return levels, centres


class StallMeter:
    """The longest gap between beats of a 10 ms QTimer on the GUI thread since :meth:`start`."""

    def __init__(self, interval_ms: int = 10) -> None:
        from qtpy.QtCore import QTimer

        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._beat)
        self.last = time.perf_counter()
        self.longest_s = 0.0
        self.timer.start()

    def _beat(self) -> None:
        now = time.perf_counter()
        self.longest_s = max(self.longest_s, now - self.last)
        self.last = now

    def start(self) -> None:
        self.last = time.perf_counter()
        self.longest_s = 0.0


class GcClock:
    """Full (generation-2) garbage collections since :meth:`start`: how many, and the longest, in seconds.

    A full collection walks every object Python tracks (hundreds of thousands in napari), on
    whichever thread allocated last: on the GUI thread it is a stall of its own.
    """

    def __init__(self) -> None:
        self.count, self.longest_s, self._began = 0, 0.0, 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.count += 1
            self.longest_s = max(self.longest_s, time.perf_counter() - self._began)

    def start(self) -> None:
        self.count, self.longest_s = 0, 0.0

    def close(self) -> None:
        gc.callbacks.remove(self._on_gc)


def one_redraw_s(viewer: Any, times: int = 3) -> float:
    """Median seconds of ``times`` forced repaints of the canvas (``QWidget.repaint``: drawn now).

    Whatever changes on screen costs at least one redraw on the GUI thread; under Xvfb it is
    Mesa's software renderer drawing every visible layer (tens to 150 ms here), on a GPU a few ms.
    """
    canvas = viewer.window._qt_viewer.canvas.native
    spent = []
    for _ in range(times):
        started = time.perf_counter()
        canvas.repaint()
        spent.append(time.perf_counter() - started)
        settle(0.05)
    return float(np.median(spent))


def pump(done: Callable[[], bool], timeout_s: float) -> None:
    """Run the Qt event loop until ``done()`` (RuntimeError after ``timeout_s``)."""
    from qtpy.QtWidgets import QApplication

    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        QApplication.processEvents()
        time.sleep(0.002)


def settle(seconds: float = 0.4) -> None:
    until = time.monotonic() + seconds
    pump(lambda: time.monotonic() > until, seconds + 5)


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PhaseClock:
    """GUI-thread wall time spent inside chosen methods (patched on their classes)."""

    def __init__(self, owner: Any, name: str) -> None:
        self.owner, self.name, self.real = owner, name, getattr(owner, name)
        self.calls: list[float] = []
        real, calls = self.real, self.calls

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                calls.append(time.perf_counter() - started)

        setattr(owner, name, timed)

    def restore(self) -> None:
        setattr(self.owner, self.name, self.real)


def run_phases(
    frontend: str, side: int, auto_side: int, folder: str | None, why: bool = False, dock_first: bool = False
) -> tuple[Table, list[Target]]:
    import threading

    import napari

    from plugin._qt.qt_helpers import next_turn
    from plugin._qt.widget import SamWidget
    from plugin.jobs.auto_settings import VISIBLE, WHOLE
    from plugin.jobs.controller import AUTO, BOX, POINTS
    from plugin.jobs.results import Results
    from plugin.labels.stats import LabelCounts
    from plugin.view.edit_here import close_edit_window, open_edit_window
    from plugin.view.layers import AUTO_MASK, BOUNDING_BOX, BOX_MASK, POINTS_MASK, PROMPT_POINTS, view_camera

    rows: list[tuple[str, float, float, int, str, str, float]] = []
    viewer = napari.Viewer(show=True)
    meter = StallMeter()
    collections = GcClock()
    sampler = StallSampler(lambda: meter.last, threading.get_ident()) if why else None
    settle(1.0)
    gc.collect()
    empty_rss = rss_bytes()
    levels, centres = disc_pyramid(side, folder)

    def phase(
        name: str, action: Callable[[], Callable[[], bool] | None], note: str = "", wait_s: float = 600
    ) -> None:
        gc.collect()
        if sampler is not None:
            sampler.take()  # only this phase's stalls
        meter.start()
        collections.start()
        started = time.perf_counter()
        done = action()
        if done is not None:
            pump(done, wait_s)
        wall = time.perf_counter() - started
        settle()
        full_gc = f"{collections.count}, {collections.longest_s * 1000:.0f}" if collections.count else "0"
        longest, redraw = meter.longest_s, one_redraw_s(viewer)
        rows.append((name, longest, wall, peak_rss_bytes(), full_gc, note, redraw))
        print(
            f"  {name}: stall {longest * 1000:.0f} ms, wall {wall:.2f} s, full gc {full_gc}, "
            f"one redraw {redraw * 1000:.0f} ms",
            flush=True,
        )
        if sampler is not None:
            print(sampler.report(name), flush=True)

    try:
        widget_box: list[Any] = []

        def open_slide() -> Callable[[], bool]:
            viewer.add_image(levels, multiscale=True, contrast_limits=(0, 40000), name="slide")
            return lambda: True

        def dock_plugin() -> Callable[[], bool]:
            widget = SamWidget(viewer)
            viewer.window.add_dock_widget(widget, name="SAM2 Segmentation")
            widget_box.append(widget)
            return lambda: widget.controller.session is not None

        # two user actions, two phases: napari opening the slide, then the plugin docking (or the other
        # way round, a few seconds apart, as a user who docks the plugin first and then opens a file)
        if dock_first:
            phase("dock the plugin (connects to the backend)", dock_plugin)
            settle(3.0)
            phase("open the slide (napari's add_image)", open_slide)
        else:
            phase("open the slide (napari's add_image)", open_slide)
            phase("dock the plugin (connects to the backend)", dock_plugin)
        settle(1.0)
        gc.collect()
        image_rss = rss_bytes()
        widget = widget_box[0]
        controller = widget.controller
        controller.notify = lambda level, message: None

        def click(centre: tuple[int, int]) -> Callable[[], Callable[[], bool]]:
            def action() -> Callable[[], bool]:
                previous = controller.applied.get(POINTS)
                controller.new_object()
                viewer.layers[PROMPT_POINTS].add([centre[0] + 0.5, centre[1] + 0.5])
                return lambda: controller.applied.get(POINTS) not in (None, previous)

            return action

        def mode_button(start: Callable[[], None], *names: str) -> Callable[[], Callable[[], bool]]:
            """Press a prompt mode's button: done when its layers exist (made over several loop turns)."""

            def action() -> Callable[[], bool]:
                start()
                return lambda: all(name in viewer.layers for name in names)

            return action

        phase(
            "Point prompts button (creates the prompt and result layers)",
            mode_button(widget.start_points, PROMPT_POINTS, POINTS_MASK),
        )
        phase("first click", click(centres[len(centres) // 3]))
        phase("later click (another window)", click(centres[-len(centres) // 3]))
        labels = viewer.layers[POINTS_MASK]

        def box() -> Callable[[], bool]:
            r, c = centres[len(centres) // 2]
            previous = controller.applied.get(BOX)
            viewer.layers[BOUNDING_BOX].add_rectangles(
                np.array([[r - 14, c - 14], [r + 15, c + 15]], dtype=float)
            )
            return lambda: controller.applied.get(BOX) not in (None, previous)

        phase(
            "Box prompts button (creates the prompt and result layers)",
            mode_button(widget.start_box, BOUNDING_BOX, BOX_MASK),
        )
        phase("first box", box)

        paste = PhaseClock(Results, "paste_rectangles")

        def auto() -> Callable[[], bool]:
            centre, camera = side / 2, view_camera(viewer)
            camera.center = (centre, centre)
            camera.zoom = min(1.0, 1600 / max(auto_side, 1))
            previous = controller.applied.get(AUTO)
            widget.auto_box.set_region(WHOLE if auto_side >= side else VISIBLE)
            widget.auto_box.toggle_slice()
            return lambda: (
                controller.applied.get(AUTO) not in (None, previous)
                and not widget.auto_box.slice_task.running
            )

        region = "whole slide" if auto_side >= side else f"visible region, about {auto_side:,}²"
        phase(f"AUTO ({region}, tiles)", auto, note="the plugin's tiled AUTO")
        paste.restore()
        if paste.calls:
            rows.append(
                (
                    "paste (AUTO's stitched result)",
                    float("nan"),  # not a stall: a pyramid's store is written in a thread, loop running
                    sum(paste.calls),
                    peak_rss_bytes(),
                    "(in AUTO's)",
                    "duration of Results.paste_rectangles; its stalls are in AUTO's",
                    float("nan"),
                )
            )
        target = viewer.layers[AUTO_MASK] if AUTO_MASK in viewer.layers else labels
        history = controller.histories(target)
        phase("undo (the last paste)", lambda: (history.undo(), None)[1])

        windows: list[Any] = []

        def edit_here() -> Callable[[], bool]:
            """As the Labels tab's button: the brush is picked on the next turn; one stroke once it is."""
            window = open_edit_window(viewer, labels, later=next_turn)
            windows.append(window)

            def painted() -> bool:
                if str(window.layer.mode) != "paint":
                    return False
                window.layer.paint((window.layer.data.shape[0] // 2, window.layer.data.shape[1] // 2), 999)
                return True

            return painted

        def close_edit_here() -> None:
            close_edit_window(
                viewer, windows.pop(), off_gui=controller.histories.off_gui
            )  # as the Labels tab

        camera = view_camera(viewer)
        camera.center = tuple(float(x) for x in centres[len(centres) // 3])
        camera.zoom = 1.0
        phase("Edit here: open (and one brush stroke)", edit_here)
        phase("Edit here: close (write back)", close_edit_here)

        def export() -> None:
            with tempfile.TemporaryDirectory() as out:
                widget.export_box.export(labels, Path(out) / "labels.tif")

        phase("export (TIFF of level 0)", export, note="read and written in a thread (input waits)")

        widget.tabs.setCurrentIndex(1)
        widget.labels.layer_combo.set_layer(labels)
        settle()
        widget.labels.watcher.counts = LabelCounts({i: 10 + i % 90 for i in range(1, 300_001)})

        def table() -> None:
            widget.labels.refresh()

        phase("Labels tab, 300,000 labels (refresh)", table)
        result_rss = rss_bytes()
    finally:
        meter.timer.stop()
        collections.close()
        if sampler is not None:
            sampler.stop()
        viewer.close()

    table_out = Table(
        f"What a user feels on a {side:,}² uint16 pyramid slide ({len(centres):,} discs), napari under Xvfb, "
        "stand-in workers",
        [
            "phase",
            "longest stall, ms",
            "action to result, s",
            "peak RSS, GiB",
            "full gc: count, longest ms",
            "one redraw after it, ms",
            "note",
        ],
    )
    targets = []
    for name, stall, wall, peak, full_gc, note, redraw in rows:
        shown = "(in AUTO)" if np.isnan(stall) else f"{stall * 1000:.0f}"
        drawn = "" if np.isnan(redraw) else f"{redraw * 1000:.0f}"
        table_out.add(name, shown, f"{wall:.2f}", f"{peak / 1024**3:.2f}", full_gc, drawn, note)
        if np.isnan(stall):
            continue
        targets.append(
            Target(
                f"stall: {name}, {side:,}²", f"{stall * 1000:.0f} ms", "<= 100 ms", stall <= STALL_TARGET_S
            )
        )
    walls = {name: wall for name, _, wall, *_ in rows}
    first, later = walls["first click"], walls["later click (another window)"]
    targets.append(
        Target(
            f"first click's click-to-mask time against a later click's, {side:,}²",
            f"{first:.2f} s / {later:.2f} s = {first / later:.2f}x",
            "<= 1.5x",
            first <= 1.5 * later,
        )
    )
    above = (result_rss - image_rss) / 1024**3
    targets.append(
        Target(
            f"RSS with the labels above the viewer with the image, {side:,}²",
            f"{above:.2f} GiB",
            "<= 1.5 GiB",
            above <= 1.5,
        )
    )
    table_out.note = (
        f"Longest stall: the longest gap between two beats of a 10 ms QTimer on the GUI thread, from the "
        f"action to 0.4 s after its result. One redraw: the median of three forced repaints of the canvas "
        f"once the phase is over (napari drawing what is loaded: the least any change on screen costs). "
        f"RSS: empty viewer {empty_rss / 1024**3:.2f} GiB, with the image "
        f"open lazily {image_rss / 1024**3:.2f} GiB, at the end {result_rss / 1024**3:.2f} GiB."
    )
    return table_out, targets


def profile_result_layer(side: int) -> None:
    """cProfile of creating the first and a second pyramid result layer in a shown viewer (top 25)."""
    import cProfile
    import pstats

    import napari

    from plugin.view.layers import BOX_MASK, POINTS_MASK, ensure_labels

    levels, _ = disc_pyramid(side, None)
    viewer = napari.Viewer(show=True)
    image = viewer.add_image(levels, multiscale=True, contrast_limits=(0, 40000))
    settle(2.0)
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    ensure_labels(viewer, image, POINTS_MASK)
    settle(0.01)
    profile.disable()
    print(f"first result layer, created and drawn: {time.perf_counter() - started:.2f} s")
    pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
    started = time.perf_counter()
    ensure_labels(viewer, image, BOX_MASK)
    settle(0.01)
    print(f"second result layer: {time.perf_counter() - started:.2f} s")
    viewer.close()


def compare_codecs() -> None:
    """One 2,048² uint32 write + read per codec (labels on 30 % of the pixels), four repeats."""
    import zarr
    from zarr.codecs import BloscCodec, BloscShuffle

    block = (np.random.default_rng(0).random((2048, 2048)) > 0.7).astype(np.uint32) * 77
    codecs: dict[str, Any] = {
        "zarr default (zstd)": None,
        "blosc lz4 + bitshuffle": BloscCodec(cname="lz4", clevel=1, shuffle=BloscShuffle.bitshuffle),
        "blosc lz4 + shuffle": BloscCodec(cname="lz4", clevel=1, shuffle=BloscShuffle.shuffle),
        "none": [],
    }
    for name, codec in codecs.items():
        extra = {} if codec is None else {"compressors": codec}
        array = zarr.create_array(
            store=zarr.storage.MemoryStore(),
            shape=(20000, 20000),
            chunks=(1024, 1024),
            dtype="uint32",
            **extra,
        )
        seconds = []
        for k in range(4):
            started = time.perf_counter()
            array[k * 2048 : (k + 1) * 2048, :2048] = block
            np.asarray(array[k * 2048 : (k + 1) * 2048, :2048])
            seconds.append(time.perf_counter() - started)
        print(f"{name}: {', '.join(f'{x:.3f}' for x in seconds)} s")


def compare_store_writes(rounds: int = 3) -> None:
    """A tiled paste's store writes, per tile: display levels carried down by each write, or held and
    carried once (``LabelPyramid.levels_held``, what a tiled paste and its undo do), alternating, in
    one run; 50 tiles of 1,024² discs into a 10,240² pyramid in memory."""
    import contextlib

    from plugin.labels.pyramid import LabelPyramid
    from plugin.labels.writes import store_write

    rows, cols = np.mgrid[0:1024, 0:1024]
    inside = (
        (rows % DISC_SPACING - DISC_SPACING // 2) ** 2 + (cols % DISC_SPACING - DISC_SPACING // 2) ** 2
    ) <= (DISC_RADIUS**2)
    disc_rows, disc_cols = np.nonzero(inside)
    for _ in range(rounds):
        for held in (False, True):
            pyramid = LabelPyramid.create((10240, 10240))
            started, tiles = time.perf_counter(), 0
            with pyramid.levels_held() if held else contextlib.nullcontext():
                for r in range(0, 5120, 1024):
                    for c in range(0, 10240, 1024):
                        tiles += 1
                        store_write(pyramid, (disc_rows + r, disc_cols + c), np.uint32(tiles))
            per_tile = (time.perf_counter() - started) / tiles * 1000
            name = "levels held, carried once" if held else "levels carried by each write"
            print(f"{name}: {per_tile:.1f} ms per tile ({tiles} tiles)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 4,096² slide")
    parser.add_argument("--side", type=int, default=20_000, help="slide side in pixels (100000: on disk)")
    parser.add_argument(
        "--auto-side",
        type=int,
        default=None,
        help="AUTO region side (default: the slide up to 20,000²; smaller: AUTO's visible region, zoomed)",
    )
    parser.add_argument(
        "--slide-dir",
        type=Path,
        default=None,
        help="keep the generated slide in this folder and reuse it next time (default: a temporary one)",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--profile", action="store_true", help="only profile creating the result layer")
    parser.add_argument("--codecs", action="store_true", help="only compare the label store's codecs")
    parser.add_argument(
        "--store-writes", action="store_true", help="only compare a tiled paste's store writes, per tile"
    )
    parser.add_argument(
        "--why", action="store_true", help="after each phase, where the GUI thread was during its stalls"
    )
    parser.add_argument(
        "--dock-first", action="store_true", help="dock the plugin, then open the slide 3 s later"
    )
    args = parser.parse_args(argv)
    if args.codecs:
        compare_codecs()
        return 0
    if args.store_writes:
        compare_store_writes()
        return 0
    if args.profile:
        sys.argv = sys.argv[:1]
        profile_result_layer(args.side)
        return 0
    side = 4096 if args.quick else args.side
    auto_side = args.auto_side if args.auto_side is not None else (side if side <= 20_000 else 10_000)
    sys.argv = sys.argv[:1]  # napari reads the command line for plugins to open
    started = time.monotonic()
    result = BenchResult("gui_stall", "22. What a user feels: event-loop stalls on a large slide")
    with Processes() as procs, tempfile.TemporaryDirectory(prefix="bench-slide-") as scratch:
        if args.slide_dir is not None:
            args.slide_dir.mkdir(parents=True, exist_ok=True)
        folder = str(args.slide_dir or scratch)
        frontend, backend, _ = start_broker(procs)
        start_standins(procs, backend, args.workers, 0.0)
        wait_for_workers(frontend, STANDIN, args.workers)
        os.environ.update(SAM2_BROKER_ADDRESS=frontend, SAM2_MODEL=STANDIN, SAM2_EMBEDDED="0")
        table, targets = run_phases(
            frontend,
            side,
            auto_side,
            folder if side > 20_000 or args.slide_dir else None,
            args.why,
            args.dock_first,
        )
        result.tables.append(table)
        result.targets += targets
    finish(result, started, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
