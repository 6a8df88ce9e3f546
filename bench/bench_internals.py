"""The worker's own optimisations, each measured against the code it replaced, in one run.

* **Best mask only**: ``workers.ops.predict_best`` (upsample and copy only
  the best of SAM2's low-resolution masks) against
  ``SAM2ImagePredictor.predict`` + ``argmax`` (upsamples all three), same
  model, image, prompts and threads, calls alternating. Both give the same
  mask (``tests/workers/test_worker_predict_best.py``).
* **Heap trimming**: the worker's per-image steps (prepare, encode, store the
  embedding in a 64 MiB ``EmbeddingCache``) over distinct images in two
  fresh processes, one calling ``protocol.runtime.memory.release_free_memory`` after
  each encoder run as the worker does, one not; RSS after each image.
* **Header parsing**: ``json.loads(bytes, parse_constant=...)``, which builds
  a JSON decoder on every call, against ``protocol.wire.codec``'s one prebuilt
  decoder, on the headers of a point prompt and of an echo; the broker peeks
  at every request's header, the worker parses it.
* **Image key**: ``protocol.wire.image_key`` with BLAKE2b (before) and BLAKE3
  (after) on the slices a click sends: the client hashes the slice on every
  prompt, the worker every image it receives.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

from bench.common import (
    MODEL,
    PYTHON,
    REPO_ROOT,
    BenchResult,
    Stats,
    Table,
    base_parser,
    ensure_checkpoint,
    finish,
    fmt,
    fmt_range,
)

MIB = 2**20
THREADS = 2


def _predictor(device: str = "cpu") -> Any:
    import torch
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from workers.models import load_model

    torch.set_num_threads(THREADS)
    return SAM2ImagePredictor(load_model(MODEL, ensure_checkpoint(MODEL), device))


def best_mask_only(size: int, rounds: int) -> Table:
    """predict + argmax vs predict_best on one ``size``² RGB image; ms per prompt."""
    import torch

    from bench.bench_prompt import test_images
    from workers.prompts import SamPrompt
    from workers.sam2_internals import predict_best

    predictor = _predictor()
    image = test_images(size)[0].pixels  # the RGB uint8 image of benchmark 1
    with torch.inference_mode():
        predictor.set_image(image)
    rng = np.random.default_rng(0)
    clicks = rng.uniform(0.1 * size, 0.9 * size, (rounds + 2, 2)).astype(np.float32)  # (x, y)
    labels = np.ones(1, dtype=np.int32)

    def old(xy: np.ndarray) -> np.ndarray:
        masks, scores, _ = predictor.predict(
            point_coords=xy[None], point_labels=labels, multimask_output=True
        )
        return masks[int(np.argmax(scores))] > 0.5

    def new(xy: np.ndarray) -> np.ndarray:
        return predict_best(predictor, SamPrompt(xy[None], labels, None), None, True)[0]

    samples: dict[str, list[float]] = {"predict + argmax": [], "predict_best": []}
    with torch.inference_mode():
        for i, xy in enumerate(clicks):
            order = [("predict + argmax", old), ("predict_best", new)]
            if i % 2:
                order.reverse()
            answers = []
            for name, fn in order:
                started = time.perf_counter()
                answers.append(fn(xy))
                if i >= 2:  # the first two rounds warm up
                    samples[name].append(time.perf_counter() - started)
            if not np.array_equal(answers[0], answers[1]):
                raise RuntimeError(f"predict_best and predict disagree on click {xy}")
    stats = {name: Stats.of(values).scaled(1000) for name, values in samples.items()}
    ratios = [n / o for o, n in zip(samples["predict + argmax"], samples["predict_best"], strict=True)]
    table = Table(
        f"Best mask only: one click on a {size}² RGB image, {MODEL}, CPU, {THREADS} threads (ms)",
        ["way", "ms, median [p10-p90]", "vs predict (median of per-click ratios)"],
    )
    table.add("predict + argmax (before)", fmt_range(stats["predict + argmax"], 1), "1.00")
    table.add("predict_best (after)", fmt_range(stats["predict_best"], 1), f"{statistics.median(ratios):.2f}")
    saved = stats["predict + argmax"].median - stats["predict_best"].median
    table.note = (
        f"{rounds} clicks, the two ways alternating (first {2} not counted); the masks are compared on "
        f"every click and are identical. Saved per click: {saved:.1f} ms."
    )
    return table


def rss_child(trim: bool, images: int, size: int, cache_mib: float) -> None:
    """In this process: the worker's per-image steps over ``images`` images; print RSS as JSON lines."""
    import psutil
    import torch

    from protocol.runtime.memory import release_free_memory
    from workers.cache import EmbeddingCache, EmbeddingEntry
    from workers.prep import prepare_image

    predictor = _predictor()
    cache = EmbeddingCache(int(cache_mib * MIB))
    process = psutil.Process()
    rng = np.random.default_rng(0)
    print(json.dumps({"images": 0, "rss": process.memory_info().rss}), flush=True)
    for i in range(1, images + 1):
        rgb = prepare_image(rng.integers(0, 256, (size, size), dtype=np.uint8), None)
        with torch.inference_mode():
            predictor.set_image(rgb)
        cache.put(f"image-{i}", EmbeddingEntry.from_predictor(predictor))
        if trim:
            release_free_memory()
        print(json.dumps({"images": i, "rss": process.memory_info().rss, "cache": cache.nbytes}), flush=True)


def heap_trimming(images: int, size: int, cache_mib: float) -> Table:
    """RSS over ``images`` images without and with trimming (two fresh processes, one after the other)."""
    runs: dict[bool, list[dict[str, int]]] = {}
    for trim in (False, True):
        out = subprocess.run(
            [PYTHON, "-m", "bench.bench_internals", "--rss-child", "trim" if trim else "keep"]
            + ["--images", str(images), "--size", str(size), "--cache-mib", str(cache_mib)],
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
            text=True,
            timeout=60 + 30 * images,
        ).stdout
        runs[trim] = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    table = Table(
        f"Heap trimming: worker RSS over distinct {size}² images, cache limit {cache_mib:g} MiB (MiB)",
        ["images", "cache MiB", "RSS, no trimming (before)", "RSS, malloc_trim after each encode (after)"],
    )
    for before, after in zip(runs[False], runs[True], strict=True):
        table.add(
            before["images"],
            fmt(after.get("cache", 0) / MIB, 0),
            fmt(before["rss"] / MIB, 0),
            fmt(after["rss"] / MIB, 0),
        )
    last_before, last_after = runs[False][-1]["rss"], runs[True][-1]["rss"]
    table.note = (
        f"Two fresh processes, the same images; the encoder's temporaries are freed in torch's threads "
        f"and glibc keeps them in per-thread arenas unless trimmed. After {images} images: "
        f"{(last_before - last_after) / MIB:.0f} MiB less with trimming."
    )
    return table


def _reject_constant(name: str) -> None:
    raise ValueError(name)


def header_parsing(rounds: int, calls: int) -> Table:
    """Microseconds per header: a decoder built per call (before) vs the codec's prebuilt one (after)."""
    from protocol.wire import codec

    headers = {
        "point prompt": codec.encode(
            {
                "op": "segment",
                "request_id": "r-000123",
                "image_key": "k" * 64,
                "params": {"points": [[412.5, 377.0]], "labels": [1], "multimask": True},
            },
            {"image": np.zeros((8, 8), np.uint16)},
        )[0],
        "echo": codec.encode({"op": "echo", "request_id": "latency", "params": {}})[0],
    }

    def before(frame: Any) -> Any:
        return json.loads(bytes(frame), parse_constant=_reject_constant)

    table = Table(
        "Header parsing: us per header (median [p10-p90] of rounds)",
        ["header", "bytes", "json.loads(parse_constant=) (before)", "codec.peek_header (after)"],
    )
    for name, frame in headers.items():
        assert before(frame) == codec.peek_header(frame)
        cells = _alternating([partial(before, frame), partial(codec.peek_header, frame)], rounds, calls)
        table.add(name, len(frame), *(fmt_range(c.scaled(1e6)) for c in cells))
    table.note = (
        f"{calls} calls per round, {rounds} rounds, the two ways alternating, in this process. Both give "
        "the same dict; the codec also decodes as UTF-8 only, as the protocol says."
    )
    return table


def _alternating(ways: Sequence[Callable[[], Any]], rounds: int, calls: int) -> list[Stats]:
    """Seconds per call of each way: ``rounds`` rounds of ``calls`` calls, the ways alternating."""
    samples: list[list[float]] = [[] for _ in ways]
    for _ in range(rounds):
        for way, call in enumerate(ways):
            started = time.perf_counter()
            for _ in range(calls):
                call()
            samples[way].append((time.perf_counter() - started) / calls)
    return [Stats.of(values) for values in samples]


def _blake2b_key(image: np.ndarray, contrast_limits: Sequence[float] | None, model: str) -> str:
    """``protocol.wire.image_key`` as it was before BLAKE3 (the "before" of the Image key table)."""
    import hashlib

    from protocol.wire.image_key import hash_image_into

    digest = hashlib.blake2b(digest_size=16)
    hash_image_into(digest, image, contrast_limits, model)
    return "img-" + digest.hexdigest()


def image_keys(rounds: int, calls: int, sizes: Sequence[int]) -> Table:
    """Milliseconds per image key: BLAKE2b (before) vs BLAKE3 (after), on RGB uint8 and grey uint16 slices."""
    from protocol.wire.image_key import image_key

    rng = np.random.default_rng(0)
    table = Table(
        "Image key: ms per slice (median [p10-p90] of rounds)",
        ["slice", "MiB", "BLAKE2b (before)", "BLAKE3 (after)", "after / before"],
    )
    for size in sizes:
        for name, image in (
            (f"RGB uint8 {size}²", rng.integers(0, 256, (size, size, 3), dtype=np.uint8)),
            (f"grey uint16 {size}²", rng.integers(0, 65536, (size, size), dtype=np.uint16)),
        ):
            limits = None if image.dtype == np.uint8 else (100.0, 60000.0)
            ways = [partial(_blake2b_key, image, limits, MODEL), partial(image_key, image, limits, MODEL)]
            cells = _alternating(ways, rounds, calls)
            table.add(
                name,
                f"{image.nbytes / MIB:.0f}",
                *(fmt_range(c.scaled(1e3)) for c in cells),
                f"{cells[1].median / cells[0].median:.2f}",
            )
    table.note = (
        f"{calls} calls per round, {rounds} rounds, the two ways alternating, in this process, one thread "
        "each. Both hash the same bytes (the preparation's JSON, then the pixels); BLAKE3 keeps a "
        "cryptographic hash, so a key still cannot be forged to poison a worker's cache."
    )
    return table


def run(quick: bool = False) -> BenchResult:
    """All comparisons; quick: smaller image, fewer clicks, images and calls."""
    result = BenchResult("internals", "Worker and protocol optimisations: before and after, side by side")
    result.tables.append(best_mask_only(512 if quick else 1024, 6 if quick else 30))
    result.tables.append(heap_trimming(3 if quick else 8, 256, 64.0))
    result.tables.append(header_parsing(5 if quick else 15, 2000 if quick else 20000))
    sizes = (512,) if quick else (1024, 2048)
    result.tables.append(image_keys(3 if quick else 11, 5 if quick else 20, sizes))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--rss-child", choices=("keep", "trim"), help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--cache-mib", type=float, default=64.0)
    args = parser.parse_args(argv)
    if args.rss_child:
        rss_child(args.rss_child == "trim", args.images, args.size, args.cache_mib)
        return 0
    started = time.monotonic()
    finish(run(quick=args.quick), started, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
