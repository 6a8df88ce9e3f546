"""Embeddings ahead of prompts (protocol/ops/embed_many.py): every image over every worker, then prompts
that carry no image; cancel; how many embeddings the workers' caches hold. Real broker and stand-in
worker processes (``python -m workers --model standin-blobs``)."""

from __future__ import annotations

import threading

import numpy as np

from protocol.geometry.windows import click_windows, window_for_prompt
from protocol.ops import requests as ops
from protocol.ops.embed_many import cache_room, embed_many, worker_capacity
from protocol.wire.client import ClientConfig, KnownKeys, SamClient
from protocol.wire.wire_image import WireImage, to_wire
from tests.support.processes import ProcessSpawner
from tests.support.standin_backend import SERVICE, StandinBackend


def images(count: int, size: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 255, (size, size), dtype=np.uint8) for _ in range(count)]


def received(backend: StandinBackend) -> int:
    return sum(int(info["counters"]["images_received"]) for info in backend.infos().values())


def test_click_windows_are_every_window_a_click_gets() -> None:
    rng = np.random.default_rng(0)
    for shape in [(3000, 2600), (1000, 5000), (1500, 1100), (1024, 1024), (700, 300)]:
        windows = click_windows(shape)
        assert len(set(windows)) == len(windows)
        positions = rng.integers(0, shape, (4000, 2))
        clicks = {window_for_prompt(shape, [(r + 0.5, c + 0.5)]) for r, c in positions}
        assert clicks <= set(windows)
        covered = np.zeros(shape, dtype=bool)
        for w in windows:
            covered[w.slices] = True
        assert covered.all()
    assert click_windows((800, 600)) == [window_for_prompt((800, 600), [(1.0, 1.0)])]  # a small slice: itself


def test_embed_many_uses_every_worker_and_later_prompts_send_no_image(spawn: ProcessSpawner) -> None:
    backend = StandinBackend(spawn, 2, worker_args=["--encode-delay-s", "0.2"])
    keys = KnownKeys()
    config = ClientConfig(timeout_s=30.0, retries=0)

    def client() -> SamClient:
        return SamClient(backend.frontend, SERVICE, config=config, known_keys=keys)

    pictures = images(6)
    progress: list[tuple[int, int]] = []
    sources = [lambda p=p: to_wire(p, None) for p in pictures]
    result = embed_many(sources, client, on_progress=lambda d, t: progress.append((d, t)))
    assert (result.done, result.total, result.in_flight, result.cached) == (6, 6, 2, 0)
    assert progress == [(k, 6) for k in range(1, 7)] and not result.cancelled
    infos = backend.infos()
    runs = [int(info["counters"]["encoder_runs"]) for info in infos.values()]
    assert len(runs) == 2 and sum(runs) == 6 and min(runs) >= 1  # both workers took part
    before = received(backend)
    with client() as prompting:
        for picture in pictures:
            answer = ops.segment(prompting, WireImage(picture, None), [(10.0, 10.0)], [1])
            assert answer.mask.shape == picture.shape
    assert received(backend) == before  # every prompt went with its key only, to the worker holding it
    runs_after = sum(int(info["counters"]["encoder_runs"]) for info in backend.infos().values())
    assert runs_after == 6
    again = embed_many(sources, client, in_flight=1)  # one at a time: each goes to the idle worker holding it
    assert (again.done, again.cached) == (6, 6)


def test_embed_many_cancel_stops_the_rest(spawn: ProcessSpawner) -> None:
    backend = StandinBackend(spawn, 2, worker_args=["--encode-delay-s", "0.5"])
    cancel = threading.Event()
    sources = [lambda p=p: to_wire(p, None) for p in images(20)]

    def progress(done: int, _total: int) -> None:
        if done >= 2:
            cancel.set()

    result = embed_many(sources, backend.client, on_progress=progress, cancel=cancel)
    assert result.cancelled and 2 <= result.done < 8 and result.total == 20
    assert result.seconds < 4.0


def test_cache_room_counts_what_every_worker_holds(spawn: ProcessSpawner) -> None:
    backend = StandinBackend(spawn, 2, worker_args=["--cache-entries", "3"])
    assert cache_room(backend.client, 2) is None  # empty caches cannot say how large an entry is
    embed_many([lambda p=p: to_wire(p, None) for p in images(4)], backend.client)
    room = cache_room(backend.client, 2)
    assert room is not None and (room.workers, room.answered, room.capacity) == (2, 2, 6)
    assert worker_capacity({"cache": {"entries": 2, "bytes": 32 << 20, "limit_bytes": 1 << 30}}) == 64
    assert worker_capacity({"cache": {"entries": 0, "bytes": 0, "limit_bytes": 1 << 30}}) is None
    assert worker_capacity({}) is None
