"""The first click on an image encoded in an earlier worker's life vs a repeat click (issue 24).

A real broker and SAM2 tiny worker (random weights: the same compute as real
ones) on the CPU, with a disk cache in a fresh folder:

1. worker A gets a click on an image (the encoder runs, the embedding is
   written to disk), then repeat clicks (memory hits);
2. worker A is killed; worker B starts and gets a click on the same image
   *by key only* (as the plugin sends once it has sent the pixels): B reads
   the embedding from disk, then repeat clicks on B (memory hits).

Printed side by side: the encode click, B's first (disk) click and the repeat
clicks, the ratio first-from-disk / repeat (target <= 1.2), and the memory
and disk hit/miss counters of both workers' ``info``.

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
        disk.get("hits", "-"),
        disk.get("misses", "-"),
        disk.get("writes", "-"),
    )


def run(quick: bool = False) -> common.BenchResult:
    from protocol.wire.client import ClientConfig, SamClient

    repeats = 5 if quick else 20
    checkpoint = common.ensure_checkpoint(common.MODEL)
    image = np.random.default_rng(0).integers(0, 256, (SIDE, SIDE), dtype=np.uint8)
    result = common.BenchResult("disk_cache", "Disk embedding cache: first click after a worker restart")
    clicks = common.Table(
        "Click latency, ms (CPU, sam2.1 tiny, random weights, 1024x1024)", ["click", "median", "p10-p90", "n"]
    )
    counts = common.Table(
        "Cache counters (info)",
        ["worker", "encoder runs", "memory hits", "memory misses", "disk hits", "disk misses", "disk writes"],
    )
    with tempfile.TemporaryDirectory(prefix="sam2-disk-cache-") as folder:
        env = {"SAM2_DISK_CACHE_DIR": str(Path(folder)), "SAM2_DISK_CACHE_GIB": "1"}
        os.environ.update(env)
        with common.Processes() as procs:
            frontend, backend, _ = common.start_broker(procs)
            worker_a = common.start_sam_worker(procs, backend, checkpoint, name="worker_a", threads=2)
            with SamClient(frontend, common.MODEL, config=ClientConfig(timeout_s=120.0, retries=0)) as client:
                encode_ms = _click_ms(client, image, [500, 500])
                repeat_a = [_click_ms(client, image, [500 + i, 500]) for i in range(repeats)]
                _cache_row(counts, "A (encoded)", client.call("info").header["result"])
                os.kill(worker_a.pid, signal.SIGKILL)
                worker_a.wait(10)
                common.start_sam_worker(procs, backend, checkpoint, name="worker_b", threads=2)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:  # the broker forgets A at its liveness timeout
                    if client.services().get(common.MODEL, {}).get("workers") == 1:
                        break
                    time.sleep(0.2)
                first_disk_ms = _click_ms(client, image, [500, 500])  # key only: B never saw the pixels
                repeat_b = [_click_ms(client, image, [500 + i, 500]) for i in range(repeats)]
                info_b = client.call("info").header["result"]
                _cache_row(counts, "B (restarted)", info_b)
    for key in env:
        os.environ.pop(key, None)
    repeat = common.Stats.of(repeat_a + repeat_b)
    clicks.add("first click, encoder runs (worker A)", common.fmt(encode_ms, 0), "-", 1)
    clicks.add("first click from the disk cache (worker B)", common.fmt(first_disk_ms, 0), "-", 1)
    clicks.add(
        "repeat click (memory hit, A and B)",
        common.fmt(repeat.median, 0),
        f"{common.fmt(repeat.p10, 0)}-{common.fmt(repeat.p90, 0)}",
        repeat.n,
    )
    ratio = first_disk_ms / repeat.median
    result.tables += [clicks, counts]
    result.notes.append(
        f"first-from-disk / repeat = {ratio:.2f}; encode / repeat = {encode_ms / repeat.median:.1f}; "
        f"B's encoder runs: {info_b['counters']['encoder_runs']} (0: it never ran the image encoder)"
    )
    result.targets.append(
        common.Target(
            "first click after a restart / repeat click",
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
