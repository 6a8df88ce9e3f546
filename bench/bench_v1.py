"""Benchmark 2: this stack against the v1.0 design (Flask, image as JSON in every request).

Both serve the same model (same random-weight checkpoint, same torch thread
count) on the same machine; calls alternate between them:

* repeat prompt: a click on an image the server has seen before, 1024² RGB
  uint8. v1 re-sends and re-encodes the image every time; we send the image
  key and reuse the cached embedding. Target: speed-up >= 20x on CPU.
* first prompt: a click on a new 2048² uint16 image (contrast limits given),
  both paths sending the image and running the image encoder.

The v1 server is ``bench/v1_server.py`` (Flask's own server, one request at
a time, JSON with ``requests`` on the client side, as the old plugin did).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench import common
from protocol.runtime.processes import free_endpoint, wait_for_log


def v1_click(
    url: str, image: np.ndarray, limits: tuple[float, float] | None, row: float, col: float
) -> np.ndarray:
    """One click the v1 way: the whole image as JSON lists, the mask back as JSON lists."""
    import requests

    payload: dict[str, Any] = {
        "image": image.tolist(),
        "dtype": image.dtype.name,
        "points": [[col, row]],
        "labels": [1],
        "contrast_limits": None if limits is None else list(limits),
    }
    response = requests.post(url, json=payload, timeout=600)
    response.raise_for_status()
    return np.asarray(response.json()["mask"], dtype=bool)


def add_speedup(
    table: common.Table,
    scenario: str,
    v1_s: list[float],
    ours_s: list[float],
    *,
    ours_digits: int,
    digits: int,
) -> float:
    """Add a row: seconds per click of v1 and of this stack (median [p10-p90]), the speed-up
    (``digits`` decimals) and the sample counts; returns the speed-up (v1 median / ours)."""
    v1, ours = common.Stats.of(v1_s), common.Stats.of(ours_s)
    speedup = v1.median / ours.median
    table.add(
        scenario,
        common.fmt_range(v1, 2),
        common.fmt_range(ours, ours_digits),
        f"{speedup:.{digits}f}x",
        v1.n,
        ours.n,
    )
    return speedup


def run(quick: bool = False) -> common.BenchResult:
    """Run benchmark 2 and return its table and target."""
    from bench.bench_codec import synthetic_stack
    from bench.bench_prompt import test_images
    from protocol.wire.client import ClientConfig, SamClient

    result = common.BenchResult("v1", "2. Against the v1.0 design (Flask, JSON image, set_image per request)")
    size = 512 if quick else 1024
    big = 1024 if quick else 2048
    v1_repeats = 1 if quick else 4
    ours_repeats = 3 if quick else 8
    first_repeats = 1 if quick else 3
    threads = os.cpu_count() or 1
    checkpoint = common.ensure_checkpoint(common.MODEL)
    rgb = test_images(size)[0]
    table = common.Table(
        "Seconds per click (median [p10-p90]) and speed-up",
        ["scenario", "v1.0: Flask + JSON", "this stack", "speed-up", "v1 calls", "our calls"],
    )
    with common.Processes() as procs:
        port = int(free_endpoint().rsplit(":", 1)[1])
        server = procs.start(
            [
                common.PYTHON, "-m", "bench.v1_server",
                "--checkpoint", str(checkpoint),
                "--model", common.MODEL,
                "--port", str(port),
                "--threads", str(threads),
            ],
            "v1-server",
        )  # fmt: skip
        frontend, backend, _ = common.start_broker(procs, name="broker-v1")
        common.start_sam_worker(procs, backend, checkpoint, name="worker-v1", threads=threads)
        wait_for_log(server, "ready", 300)
        url = f"http://127.0.0.1:{port}/predict"
        rng = np.random.default_rng(0)
        with SamClient(frontend, common.MODEL, config=ClientConfig(timeout_s=600.0, retries=0)) as client:
            # Repeat prompt: first calls warm both up (ours also encodes and caches the image).
            v1_click(url, rgb.pixels, rgb.contrast_limits, size / 2, size / 2)
            client.call("segment", {"points": [[size / 2, size / 2]], "point_labels": [1]}, image=rgb.pixels)
            v1_s: list[float] = []
            ours_s: list[float] = []
            for _ in range(v1_repeats):
                row, col = (float(v) for v in rng.uniform(0.1 * size, 0.9 * size, 2))
                started = time.perf_counter()
                v1_click(url, rgb.pixels, rgb.contrast_limits, row, col)
                v1_s.append(time.perf_counter() - started)
                for _ in range(ours_repeats // v1_repeats + 1):
                    row, col = (float(v) for v in rng.uniform(0.1 * size, 0.9 * size, 2))
                    started = time.perf_counter()
                    client.call("segment", {"points": [[row, col]], "point_labels": [1]}, image=rgb.pixels)
                    ours_s.append(time.perf_counter() - started)
            speedup = add_speedup(table, f"repeat prompt, {rgb.name}", v1_s, ours_s, ours_digits=3, digits=0)
            result.targets.append(
                common.Target(
                    f"v1.0 vs this stack: repeat-prompt speed-up ({size}² RGB, CPU)",
                    f"{speedup:.0f}x",
                    ">= 20x",
                    speedup >= 20,
                )
            )

            # First prompt on a new large uint16 image (a new image each time).
            limits = (100.0, 2000.0)
            v1_first: list[float] = []
            ours_first: list[float] = []
            for trial in range(first_repeats):
                image = synthetic_stack((1, big, big), seed=100 + trial)[0]
                row = col = big / 2
                for which in ("v1", "ours") if trial % 2 == 0 else ("ours", "v1"):
                    started = time.perf_counter()
                    if which == "v1":
                        v1_click(url, image, limits, row, col)
                        v1_first.append(time.perf_counter() - started)
                    else:
                        params = {"points": [[row, col]], "point_labels": [1]}
                        client.call("segment", params, image=image, contrast_limits=limits)
                        ours_first.append(time.perf_counter() - started)
            scenario = f"first prompt, new {big}² uint16 image"
            add_speedup(table, scenario, v1_first, ours_first, ours_digits=2, digits=1)
    table.note = (
        f"Same checkpoint (random weights) and {threads} torch threads in both servers; calls alternate. "
        "v1: requests.post(json=...) -> Flask -> np.asarray(lists) -> set_image -> predict -> mask as JSON "
        "lists. This stack: SamClient.call('segment', image=...) -> broker -> SAM2 worker -> compressed mask."
    )
    result.tables.append(table)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    return common.quick_main(run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
