"""Benchmark 6: memory of a worker over many distinct images and of the broker over many requests.

Worker: a real SAM2 worker (``python -m workers``) with a small embedding
cache (``--cache-mib``, 64 by default: four 1024² embeddings) receives
``--images`` distinct images through ``embed`` (each runs the full image
encoder at 1024², whatever the image size). Its RSS is sampled after every
image. Target: RSS after the last image <= RSS with the model loaded and one
image encoded (the model, the runtime and the encoder's working memory)
+ the cache limit. The default run uses the issue's 1,000 images (about
25 minutes of encoder time on a 2-core CPU); ``--quick`` uses 4.

Broker: ``python -m broker`` with one light MDP echo worker forwards
100,000 requests (8 in flight, each with its own request id and image key,
a new client connection every 10,000 requests); its RSS after 100,000 must
stay within 10 % of its RSS after 1,000.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import zmq

from bench import common
from protocol.runtime.processes import rss_bytes, wait_for_log
from protocol.wire import codec, mdp

MIB = 2**20


def worker_memory(images: int, image_size: int, cache_mib: float) -> tuple[common.Table, common.Target]:
    """Embed ``images`` distinct images; RSS after each."""
    from protocol.ops import requests as ops
    from protocol.wire.client import ClientConfig, SamClient
    from protocol.wire.wire_image import to_wire

    checkpoint = common.ensure_checkpoint(common.MODEL)
    samples: list[tuple[int, int, dict[str, Any]]] = []
    with common.Processes() as procs:
        frontend, backend, _ = common.start_broker(procs, name="broker-memory")
        worker = common.start_sam_worker(
            procs, backend, checkpoint, name="worker-memory", cache_mib=cache_mib
        )
        started_rss = rss_bytes(worker.pid)
        rng = np.random.default_rng(0)
        with SamClient(frontend, common.MODEL, config=ClientConfig(timeout_s=300.0, retries=0)) as client:
            for i in range(1, images + 1):
                image = rng.integers(0, 256, (image_size, image_size), dtype=np.uint8)
                ops.embed(client, to_wire(image, None))
                if i in (1, 2) or i % max(1, images // 20) == 0 or i == images:
                    cache = ops.info(client)["cache"]
                    samples.append((i, rss_bytes(worker.pid), cache))
    table = common.Table(
        f"SAM2 worker RSS over distinct images ({image_size}² grey, encoder at 1024², cache limit "
        f"{cache_mib:g} MiB)",
        ["images", "RSS MiB", "cache entries", "cache MiB", "evictions"],
    )
    table.add(0, common.fmt(started_rss / MIB, 0), 0, "0", 0)
    for i, rss, cache in samples:
        table.add(
            i,
            common.fmt(rss / MIB, 0),
            cache["entries"],
            common.fmt(cache["bytes"] / MIB, 0),
            cache["evictions"],
        )
    first_rss = samples[0][1]
    bound = first_rss + cache_mib * MIB
    last_i, last_rss, _ = samples[-1]
    # Growth per image once the cache is full (least squares over the second half of the samples).
    tail = [(i, rss) for i, rss, _ in samples if i >= images // 2]
    slope = float(np.polyfit([i for i, _ in tail], [r for _, r in tail], 1)[0]) if len(tail) >= 3 else 0.0
    extrapolated = ""
    if last_i < 1000:
        extrapolated = (
            f"; extrapolated, not measured, for 1,000 images: "
            f"{(last_rss + slope * (1000 - last_i)) / MIB:.0f} MiB"
        )
    table.note = (
        f"Bound = RSS after the first image ({first_rss / MIB:.0f} MiB: model, runtime, encoder working "
        f"memory, one entry) + the cache limit = {bound / MIB:.0f} MiB. Growth once the cache is full: "
        f"{slope / MIB * 1000:+.1f} MiB per 1,000 images (least-squares slope over the second half"
        f"{extrapolated}). Highest sample: {max(rss for _, rss, _ in samples) / MIB:.0f} MiB."
    )
    asked = "" if last_i >= 1000 else " (1,000 asked; see note)"
    target = common.Target(
        f"memory: worker RSS after {last_i:,} distinct images{asked} <= first image + cache",
        f"{last_rss / MIB:.0f} MiB (bound {bound / MIB:.0f})",
        "<= bound",
        last_rss <= bound,
    )
    return table, target


def broker_memory(
    requests: int, window: int = 8, reconnect_every: int = 10_000
) -> tuple[common.Table, common.Target]:
    """Push ``requests`` echo requests through the broker; its RSS at checkpoints."""
    checkpoints = sorted(c for c in {1_000, requests // 10, requests // 2, requests} if c >= 1_000)
    rows: list[tuple[int, int, float]] = []
    with common.Processes() as procs:
        frontend, backend, broker = common.start_broker(procs, name="broker-rss")
        echo = common.start_peer(
            procs, "mdp-echo", "--connect", backend, "--service", "echo", name="echo-rss"
        )
        wait_for_log(echo, "ready", 60)
        common.wait_for_workers(frontend, "echo", 1)
        context = zmq.Context()
        payload = np.arange(256, dtype=np.uint32)  # a 1 KiB array frame
        done = 0
        started = time.perf_counter()
        try:
            while done < requests:
                batch = min(reconnect_every, requests - done)
                sock = context.socket(zmq.DEALER)  # a new client identity for every batch
                sock.linger = 0
                sock.connect(frontend)
                sent = received = 0
                while received < batch:
                    while sent < batch and sent - received < window:
                        header = {
                            "op": "echo",
                            "request_id": uuid.uuid4().hex,
                            "image_key": f"img-{uuid.uuid4().hex}",
                        }
                        body = codec.encode(header, {"data": payload})
                        sock.send_multipart([mdp.CLIENT_HEADER, mdp.C_REQUEST, b"echo", *body], copy=False)
                        sent += 1
                    if not sock.poll(10_000):
                        raise RuntimeError(f"the broker stopped answering after {done + received} replies")
                    sock.recv_multipart(copy=False)
                    received += 1
                    if done + received in checkpoints:
                        rows.append((done + received, rss_bytes(broker.pid), time.perf_counter() - started))
                sock.close(linger=0)
                done += batch
        finally:
            context.destroy(linger=0)
    table = common.Table(
        "Broker RSS over echo requests (8 in flight, 1 KiB array each, new client every 10,000)",
        ["requests", "RSS MiB", "vs after 1,000", "elapsed s"],
    )
    base = rows[0][1]
    for count, rss, elapsed in rows:
        table.add(
            f"{count:,}", common.fmt(rss / MIB, 1), f"{(rss - base) / base:+.1%}", common.fmt(elapsed, 1)
        )
    growth = (rows[-1][1] - base) / base
    target = common.Target(
        f"memory: broker RSS after {rows[-1][0]:,} requests vs after 1,000",
        f"{growth:+.1%}",
        "<= +10%",
        growth <= 0.10,
    )
    return table, target


def run(
    quick: bool = False, images: int | None = None, image_size: int = 256, cache_mib: float = 64.0
) -> common.BenchResult:
    """Run benchmark 6 and return its tables and targets."""
    result = common.BenchResult("memory", "6. Memory: worker over distinct images, broker over many requests")
    images = images or (4 if quick else 1000)
    table, target = broker_memory(5_000 if quick else 100_000)
    result.tables.append(table)
    result.targets.append(target)
    table, target = worker_memory(images, image_size, cache_mib)
    result.tables.append(table)
    result.targets.append(target)
    if images < 1000:
        result.notes.append(
            f"Worker: {images} distinct images, not 1,000 (each runs the image encoder); "
            "full run: python -m bench.bench_memory (about 25 minutes on 2 CPU cores)."
        )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--images", type=int, default=None, help="distinct images for the worker (default 1000, quick 4)"
    )
    parser.add_argument("--image-size", type=int, default=256, help="side of each image in pixels")
    parser.add_argument("--cache-mib", type=float, default=64.0, help="the worker's embedding cache limit")
    args = parser.parse_args(argv)
    started = time.monotonic()
    common.finish(run(args.quick, args.images, args.image_size, args.cache_mib), started, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
