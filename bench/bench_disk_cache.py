"""The first click on an image encoded in an earlier worker's life vs a repeat click (issue 24).

A real broker and SAM2 tiny worker (random weights: the same compute as real
ones) on the CPU, with a disk cache in a fresh folder:

1. worker A gets a click on an image (the encoder runs, the embedding is
   written to disk), then repeat clicks (memory hits);
2. the worker is killed and a new one started, several times, alternating
   the two ways a worker finds an earlier embedding: read into memory at
   start (``--disk-cache-preload``, the default: the most recently used
   entries) or read from disk at the first request for it (preload 0). Each
   new worker gets a click on the same image *by key only* (as the plugin
   sends once it has sent the pixels), then a few repeat clicks.

Printed side by side: the encode click, the first click after a restart in
each mode and the repeat clicks, the ratios first-after-restart / repeat
(target <= 1.2), and the cache counters of the workers' ``info``.

    python -m bench.bench_disk_cache [--quick] [--json PATH]
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import common
from workers.__main__ import DEFAULT_PRELOAD

TARGET_RATIO = 1.2
SIDE = 1024


def _click_ms(client: Any, image: np.ndarray, point: list[int]) -> float:
    started = time.perf_counter()
    client.call("segment", {"points": [point], "point_labels": [1]}, image=image)
    return 1000.0 * (time.perf_counter() - started)


def _cache_row(table: common.Table, name: str, info: dict[str, Any]) -> None:
    memory, disk = info["cache"], info.get("disk_cache") or {}
    table.add(
        name,
        info["counters"]["encoder_runs"],
        memory["hits"],
        memory["misses"],
        disk.get("preloaded", "-"),
        disk.get("hits", "-"),
        disk.get("misses", "-"),
        disk.get("writes", "-"),
    )


def _restart(procs: common.Processes, client: Any, backend: str, old: Any, name: str, preload: int) -> Any:
    """Kill ``old`` (no goodbye), start one with ``--disk-cache-preload preload``, wait until it serves."""
    os.kill(old.pid, signal.SIGKILL)
    old.wait(10)
    checkpoint = common.ensure_checkpoint(common.MODEL)
    options = ["--disk-cache-preload", str(preload)]
    worker = common.start_sam_worker(procs, backend, checkpoint, name=name, threads=2, options=options)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the broker forgets the old one at its liveness timeout
        if client.services().get(common.MODEL, {}).get("workers") == 1:
            break
        time.sleep(0.2)
    return worker


def run(quick: bool = False) -> common.BenchResult:
    from protocol.wire.client import ClientConfig, SamClient

    repeats = 5 if quick else 20
    restarts = 1 if quick else 3
    checkpoint = common.ensure_checkpoint(common.MODEL)
    image = np.random.default_rng(0).integers(0, 256, (SIDE, SIDE), dtype=np.uint8)
    result = common.BenchResult("disk_cache", "Disk embedding cache: first click after a worker restart")
    clicks = common.Table(
        "Click latency, ms (CPU, sam2.1 tiny, random weights, 1024x1024)", ["click", "median", "p10-p90", "n"]
    )
    counts = common.Table(
        "Cache counters (info)",
        ["worker", "encoder runs", "memory hits", "memory misses", "disk preloaded", "disk hits",
         "disk misses", "disk writes"],
    )  # fmt: skip
    modes = {
        f"preloaded at start (default, {DEFAULT_PRELOAD})": DEFAULT_PRELOAD,
        "read when asked (preload 0)": 0,
    }
    firsts: dict[str, list[float]] = {mode: [] for mode in modes}
    repeat: list[float] = []
    with tempfile.TemporaryDirectory(prefix="sam2-disk-cache-") as folder:
        env = {"SAM2_DISK_CACHE_DIR": str(Path(folder)), "SAM2_DISK_CACHE_GIB": "1"}
        os.environ.update(env)
        with common.Processes() as procs:
            frontend, backend, _ = common.start_broker(procs)
            worker = common.start_sam_worker(procs, backend, checkpoint, name="worker_a", threads=2)
            with SamClient(frontend, common.MODEL, config=ClientConfig(timeout_s=120.0, retries=0)) as client:
                encode_ms = _click_ms(client, image, [500, 500])
                repeat += [_click_ms(client, image, [500 + i, 500]) for i in range(repeats)]
                _cache_row(counts, "A (encoded)", client.call("info").header["result"])
                for round_ in range(restarts):
                    for mode, preload in modes.items():  # alternating: both see the same machine state
                        name = f"worker_{'p' if preload else 'r'}{round_}"
                        worker = _restart(procs, client, backend, worker, name, preload)
                        # key only: the restarted worker never saw the pixels
                        firsts[mode].append(_click_ms(client, image, [500, 500]))
                        repeat += [_click_ms(client, image, [500 + i, 500]) for i in range(repeats // 4)]
                        if round_ == 0:
                            _cache_row(counts, f"restarted, {mode}", client.call("info").header["result"])
    for key in env:
        os.environ.pop(key, None)
    repeats_stats = common.Stats.of(repeat)
    clicks.add("first click, encoder runs (worker A)", common.fmt(encode_ms, 0), "-", 1)
    for mode, values in firsts.items():
        stats = common.Stats.of(values)
        clicks.add(
            f"first click after a restart, {mode}",
            common.fmt(stats.median, 0),
            f"{common.fmt(stats.p10, 0)}-{common.fmt(stats.p90, 0)}",
            stats.n,
        )
    clicks.add(
        "repeat click (memory hit, every worker)",
        common.fmt(repeats_stats.median, 0),
        f"{common.fmt(repeats_stats.p10, 0)}-{common.fmt(repeats_stats.p90, 0)}",
        repeats_stats.n,
    )
    result.tables += [clicks, counts]
    ratios = {mode: common.Stats.of(values).median / repeats_stats.median for mode, values in firsts.items()}
    result.notes.append(
        "; ".join(f"first after a restart, {mode} / repeat = {r:.2f}" for mode, r in ratios.items())
        + f"; encode / repeat = {encode_ms / repeats_stats.median:.1f}. Every restarted worker ran the image "
        "encoder 0 times (table above)."
    )
    for mode, ratio in ratios.items():
        result.targets.append(
            common.Target(
                f"first click after a restart / repeat click, {mode}",
                f"{ratio:.2f}",
                f"<= {TARGET_RATIO}",
                ratio <= TARGET_RATIO,
            )
        )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    return common.quick_main(run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
