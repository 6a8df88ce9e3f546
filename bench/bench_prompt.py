"""Benchmark 1 (and 7 on a GPU): a repeat prompt through the whole stack vs ``predict`` in-process.

The floor is SAM2's own compute once the image embedding exists:
``SAM2ImagePredictor.predict`` on the same model, image and device, in this
process. The full path is what the napari plugin does for a click on an
image the worker has already encoded: ``SamClient.call("segment", ...,
image=...)`` (image key computed from the pixels, only the key sent), the
broker, the SAM2 worker (``python -m workers``), the compressed mask back,
decoded. Both run with the same torch thread count; calls alternate so both
see the same machine state. Target: median(full) / median(predict) <= 1.10
(CPU, sam2.1 tiny, 1024²); on CUDA (``--device cuda``, benchmark 7): at most
3 ms added, for tiny and large, with bf16 autocast as the worker runs it.
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import common
from protocol.runtime.processes import log_text

# Rounds of calls not counted at the start (caches, allocators, sockets warming up).
WARMUP_ROUNDS = 2

# A worker log line: "request_id=<id> op=segment status=ok ms=45"
# (or, from older workers, "request <id> op=segment ok in 0.045s").
_DONE_RES = (
    re.compile(r"request_id=(\S+) op=segment status=ok ms=([0-9.]+)"),
    re.compile(r"request (\S+) op=segment ok in ([0-9.]+)s"),
)


@dataclass(frozen=True)
class TestImage:
    """One image as the plugin would send it."""

    name: str
    pixels: np.ndarray
    contrast_limits: tuple[float, float] | None


def test_images(size: int) -> list[TestImage]:
    """An RGB uint8 photograph-like image and a grey uint16 fluorescence image, both ``size``²."""
    from skimage import data
    from skimage.transform import resize

    from bench.bench_codec import synthetic_stack

    retina = resize(data.retina(), (size, size), preserve_range=True, anti_aliasing=True)
    grey = synthetic_stack((1, size, size), seed=2)[0]
    return [
        TestImage(f"RGB uint8 {size}² (retina)", retina.astype(np.uint8), None),
        TestImage(f"grey uint16 {size}² (fluorescence)", grey, (100.0, 2000.0)),
    ]


def _points(size: int, count: int, seed: int = 0) -> list[tuple[float, float]]:
    """Click positions (row, col), away from the border."""
    rng = np.random.default_rng(seed)
    return [(float(r), float(c)) for r, c in rng.uniform(0.1 * size, 0.9 * size, (count, 2))]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _worker_times(log: str) -> dict[str, float]:
    """Seconds the worker reports per segment request id (its log, 1 ms resolution)."""
    times = {m.group(1): float(m.group(2)) / 1000 for m in _DONE_RES[0].finditer(log)}
    times.update({m.group(1): float(m.group(2)) for m in _DONE_RES[1].finditer(log)})
    return times


@dataclass
class PathResult:
    """Samples of one way of answering a click."""

    seconds: list[float]
    request_ids: list[str]


def measure_model(
    procs: common.Processes,
    model_name: str,
    device: str,
    size: int,
    repeats: int,
    threads: int,
    compare_tree: Path | None = None,
) -> tuple[list[list[str]], list[tuple[str, float, float]]]:
    """Rows of the main table for one model, and (image, ratio, added ms) per image."""
    import torch
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from protocol.wire.client import ClientConfig, SamClient
    from protocol.wire.image_key import image_key
    from workers.device import resolve_device
    from workers.models import load_model
    from workers.prep import prepare_image

    checkpoint = common.ensure_checkpoint(model_name)
    stacks = {"full": None} if compare_tree is None else {"full": None, "before": compare_tree}
    clients: dict[str, SamClient] = {}
    workers: dict[str, Any] = {}
    for path, tree in stacks.items():
        frontend, backend, _ = common.start_broker(procs, name=f"broker-{model_name}-{path}", tree=tree)
        workers[path] = common.start_sam_worker(
            procs,
            backend,
            checkpoint,
            name=f"worker-{model_name}-{path}",
            model=model_name,
            device=device,
            threads=threads,
            tree=tree,
        )
        clients[path] = SamClient(frontend, model_name, config=ClientConfig(timeout_s=120.0, retries=0))
    choice = resolve_device(device)
    autocast = choice.autocast
    model = load_model(model_name, checkpoint, choice.device)
    predictor = SAM2ImagePredictor(model)
    rows: list[list[str]] = []
    verdicts: list[tuple[str, float, float]] = []
    # The baseline runs on its own long-lived thread, as the worker runs the model on its compute
    # thread: on a loaded machine the main thread of this process was up to 5x slower than any other.
    baseline = ThreadPoolExecutor(max_workers=1, thread_name_prefix="baseline")

    def predict_once(row: float, col: float) -> tuple[float, tuple[int, ...]]:
        """``predict`` for one click (x, y) = (col, row), timed; the best mask's shape."""
        started = time.perf_counter()
        xy = np.array([[col, row]], dtype=np.float32)
        with autocast():
            masks, scores, _ = predictor.predict(xy, np.ones(1, np.int32), multimask_output=True)
        best = masks[int(np.argmax(scores))] > 0.5
        return time.perf_counter() - started, best.shape

    try:
        for image in test_images(size):
            rgb = prepare_image(image.pixels, image.contrast_limits)

            # Encoder: the baseline's set_image, and the first prompt through the stack.
            def set_image(rgb: np.ndarray = rgb) -> float:
                _sync(device)
                started = time.perf_counter()
                with autocast():
                    predictor.set_image(rgb)
                _sync(device)
                return time.perf_counter() - started

            encoder_s = baseline.submit(set_image).result()
            first_point = _points(size, 1, seed=99)[0]
            first_s = 0.0
            for path, client in clients.items():
                params: dict[str, Any] = {"points": [list(first_point)], "point_labels": [1]}
                started = time.perf_counter()
                client.call("segment", params, image=image.pixels, contrast_limits=image.contrast_limits)
                if path == "full":
                    first_s = time.perf_counter() - started

            results = {path: PathResult([], []) for path in ["predict", *clients]}
            order = list(results)
            points = iter(_points(size, len(order) * (repeats + WARMUP_ROUNDS)))
            expected_shape = (size, size)
            for round_number in range(repeats + WARMUP_ROUNDS):
                # One click per path and round, the order rotating from round to round, so that the
                # paths see the same machine; the rounds' ratios pair calls made moments apart.
                shift = round_number % len(order)
                for path in order[shift:] + order[:shift]:
                    row, col = next(points)
                    if path == "predict":
                        elapsed, shape = baseline.submit(predict_once, row, col).result()
                        request_id = ""
                    else:
                        started = time.perf_counter()
                        params = {"points": [[row, col]], "point_labels": [1]}
                        reply = clients[path].call(
                            "segment", params, image=image.pixels, contrast_limits=image.contrast_limits
                        )
                        elapsed = time.perf_counter() - started
                        shape, request_id = reply.arrays["mask"].shape, reply.request_id
                    if shape != expected_shape:
                        raise RuntimeError(f"{path}: a {shape} mask for a {expected_shape} image")
                    if round_number >= WARMUP_ROUNDS:
                        results[path].seconds.append(elapsed)
                        results[path].request_ids.append(request_id)
            time.sleep(0.3)  # let the worker's log lines reach the file
            done = _worker_times(log_text(workers["full"]))
            worker_s = [done[r] for r in results["full"].request_ids if r in done]
            key_s = [
                _timed_once(lambda im=image: image_key(im.pixels, im.contrast_limits, model_name))
                for _ in range(10)
            ]
            p, f = (
                common.Stats.of(results["predict"].seconds).scaled(1000),
                common.Stats.of(results["full"].seconds).scaled(1000),
            )
            ratio = f.median / p.median
            added = f.median - p.median
            paired = statistics.median(
                full / base
                for full, base in zip(results["full"].seconds, results["predict"].seconds, strict=True)
            )
            row_cells = [
                model_name,
                image.name,
                common.fmt(encoder_s, 2),
                common.fmt(first_s, 2),
                common.fmt_range(p, 1),
                common.fmt_range(f, 1),
                common.fmt(common.Stats.of(worker_s).median * 1000, 0) if worker_s else "-",
                common.fmt(common.Stats.of(key_s).median * 1000, 2),
                f"{added:+.1f}",
                f"{ratio:.3f}",
                f"{paired:.3f}",
            ]
            if "before" in results:
                b = common.Stats.of(results["before"].seconds).scaled(1000)
                row_cells += [common.fmt_range(b, 1), f"{b.median / p.median:.3f}"]
            rows.append(row_cells)
            verdicts.append((f"{model_name}, {image.name}", ratio, added))
            print(f"  {model_name} {image.name}: " + ", ".join(row_cells[4:]))
    finally:
        baseline.shutdown()
        for client in clients.values():
            client.close()
    predictor.reset_predictor()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return rows, verdicts


def _timed_once(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def run(
    quick: bool = False,
    device: str = "cpu",
    models: Sequence[str] = (common.MODEL,),
    size: int | None = None,
    compare_tree: Path | None = None,
) -> common.BenchResult:
    """Run benchmark 1 (``device="cpu"``) or 7 (``device="cuda"``).

    ``compare_tree``: also time the full path through the broker and worker
    of another checkout (e.g. from before an optimisation), in the same blocks.
    """
    gpu = device.startswith("cuda")
    name, title = (
        ("gpu", "7. GPU: repeat prompt on CUDA")
        if gpu
        else ("prompt", "1. Repeat prompt: full path vs predict")
    )
    result = common.BenchResult(name, title)
    import torch

    if gpu and not torch.cuda.is_available():
        result.notes.append("no CUDA device: not measured")
        result.targets.append(
            common.Target("GPU: added overhead over predict (tiny, large)", "not measured", "<= 3 ms", None)
        )
        return result
    size = size or (512 if quick else 1024)
    repeats = 4 if quick else 40
    threads = os.cpu_count() or 1
    if not gpu:
        torch.set_num_threads(threads)
    table = common.Table(
        f"Repeat prompt on {device}"
        + (f" ({torch.cuda.get_device_name()})" if gpu else f", {threads} torch threads in both processes"),
        [
            "model",
            "image",
            "encoder (set_image) s",
            "first prompt, full path s",
            "predict ms",
            "full path ms",
            "worker ms",
            "client key ms",
            "added ms",
            "full / predict (medians)",
            "median of per-round ratios",
            *(["full path, compared tree ms", "compared / predict"] if compare_tree else []),
        ],
    )
    all_verdicts: list[tuple[str, float, float]] = []
    with common.Processes() as procs:
        for model_name in models:
            rows, verdicts = measure_model(procs, model_name, device, size, repeats, threads, compare_tree)
            for row in rows:
                table.add(*row)
            all_verdicts += verdicts
    table.note = (
        f"Medians [p10-p90] of {repeats} rounds (after {WARMUP_ROUNDS} not counted), one call per path and "
        "round in rotating order. predict: "
        "SAM2ImagePredictor.predict (3 masks) + picking the best, in this process (on a thread of its own, "
        "as the worker runs it). full path: "
        "SamClient.call('segment', image=...) -> python -m broker -> python -m workers -> mask back, "
        "decoded; the worker decodes with workers.ops.predict_best (the same mask, only the best one "
        "upsampled; what that saves is in the 'Best mask only' table). "
        "worker ms: the worker's own time for the request (its log, 1 ms resolution); client "
        "key ms: hashing the image for its key, done by the client on every call. Random weights "
        "(same compute as real ones)."
    )
    result.tables.append(table)
    if gpu:
        worst = max(added for _, _, added in all_verdicts)
        result.targets.append(
            common.Target(
                f"GPU ({torch.cuda.get_device_name()}): added ms over predict (worst of {len(all_verdicts)})",
                f"{worst:+.1f} ms",
                "<= 3 ms",
                worst <= 3.0,
            )
        )
    else:
        for label, ratio, _ in all_verdicts:
            result.targets.append(
                common.Target(
                    f"repeat prompt: full path / predict, {label}", f"{ratio:.3f}", "<= 1.10", ratio <= 1.10
                )
            )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for benchmark 7")
    parser.add_argument("--models", default=common.MODEL, help="comma-separated model names")
    parser.add_argument(
        "--size", type=int, default=None, help="image side in pixels (default 1024; quick 512)"
    )
    parser.add_argument(
        "--compare-tree", type=Path, default=None, help="also time the broker and worker of this checkout"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    models = [m for m in args.models.split(",") if m]
    common.finish(run(args.quick, args.device, models, args.size, args.compare_tree), started, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
