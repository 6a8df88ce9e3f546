"""Images larger than the model's input, end to end: a real broker, real worker processes.

The deterministic stand-in worker (``python -m workers --model standin-blobs``) sees what it is
sent at <= 1024 px, like SAM, so on synthetic discs the right answer is
known: with tiles and windows every disc must come back once, whole, at
native resolution; sent whole, they come back coarse (which shows the test
can fail). The real SAM2 worker (random weights) runs the same paths for
shapes and offsets.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest
import zarr

from bench.discs import disc_image, disc_scores, scattered_discs
from protocol.ops.fan_out import requests_in_flight
from protocol.ops.tiled import tiled_auto, tiled_auto_stack
from protocol.ops.windowed import segment_windowed
from protocol.wire.client import ClientConfig, SamClient
from protocol.wire.errors import RemoteError
from tests.support.backend import Backend
from tests.support.counting_array import CountingArray
from tests.support.processes import ProcessSpawner
from tests.support.standin_backend import StandinBackend


@pytest.fixture
def standin(spawn: ProcessSpawner) -> Callable[..., StandinBackend]:
    return lambda workers=3, delay_s=0.0: StandinBackend(spawn, workers, delay_s)


@pytest.fixture(scope="module")
def discs_3000() -> tuple[np.ndarray, np.ndarray]:
    shape = (3000, 3000)
    centres, radii = scattered_discs(shape, spacing=60, radius_range=(6.0, 10.0), seed=7)
    return disc_image(shape, centres, radii)


def test_tiled_auto_finds_every_disc_once_whole_and_whole_slices_come_back_coarse(
    standin: Callable[..., StandinBackend], discs_3000: tuple[np.ndarray, np.ndarray]
) -> None:
    image, truth = discs_3000
    backend = standin(workers=3)
    progress: list[tuple[int, int]] = []
    out = np.zeros(image.shape, dtype=np.uint32)
    result = tiled_auto(image, out, backend.client, on_progress=lambda d, t: progress.append((d, t)))
    assert (
        result.in_flight == requests_in_flight(3)
        and result.tiles == result.tiles_done == 16
        and not result.cancelled
    )
    assert progress[-1] == (16, 16) and len(progress) == 16
    iou, stray, duplicates = disc_scores(out, truth)
    assert result.num_objects == int(truth.max()) == 49 * 49
    assert stray == 0 and duplicates == 0
    assert iou.min() >= 0.9, f"worst disc IoU {iou.min():.2f}"
    # Every worker took part.
    with backend.client() as client:
        pids = {int(client.call("info").header["result"]["pid"]) for _ in range(9)}
    assert pids == {p.pid for p in backend.workers}

    # The same slice sent whole: the worker sees it 3x downsampled and the discs come back coarse.
    whole = np.zeros(image.shape, dtype=np.uint32)
    coarse = tiled_auto(image, whole, backend.client, tile_size=4096, halo=0)
    assert coarse.tiles == 1
    coarse_iou, _, _ = disc_scores(whole, truth)
    assert np.median(coarse_iou) < 0.85 and (coarse_iou >= 0.9).mean() < 0.5, np.median(coarse_iou)


def test_tiled_auto_reads_a_zarr_slice_tile_by_tile_into_a_zarr_output(
    standin: Callable[..., StandinBackend], discs_3000: tuple[np.ndarray, np.ndarray]
) -> None:
    image, truth = discs_3000
    backend = standin(workers=2)
    source = CountingArray(zarr.array(image, chunks=(512, 512)))
    out = zarr.zeros(image.shape, chunks=(512, 512), dtype=np.uint32)
    result = tiled_auto(source, out, backend.client, contrast_limits=None)
    assert max(source.areas) <= 1024 * 1024, "a read larger than one tile"
    assert result.num_objects == 49 * 49
    iou, stray, duplicates = disc_scores(np.asarray(out[:]), truth)
    assert iou.min() >= 0.9 and stray == 0 and duplicates == 0


def test_cancel_stops_the_remaining_tiles(standin: Callable[..., StandinBackend]) -> None:
    backend = standin(workers=2, delay_s=0.3)
    image = np.zeros((4000, 4000), dtype=np.uint8)
    out = np.zeros(image.shape, dtype=np.uint32)
    cancel = threading.Event()

    def on_progress(done: int, total: int) -> None:
        if done >= 2:
            cancel.set()

    result = tiled_auto(image, out, backend.client, on_progress=on_progress, cancel=cancel)
    assert result.cancelled and 2 <= result.tiles_done < result.tiles == 36


def test_stack_auto_keeps_one_id_per_object_through_z(standin: Callable[..., StandinBackend]) -> None:
    backend = standin(workers=2)
    shape = (1500, 1400)
    centres, radii = scattered_discs(shape, spacing=70, radius_range=(8.0, 12.0), seed=5)
    stack = np.stack([disc_image(shape, centres + [2.0 * z, -1.5 * z], radii)[0] for z in range(3)])
    source = zarr.array(stack, chunks=(1, 512, 512))
    out = zarr.zeros(stack.shape, chunks=(1, 512, 512), dtype=np.uint32)
    seen: list[tuple[int, int, int, int]] = []
    result = tiled_auto_stack(source, out, backend.client, on_progress=lambda *p: seen.append(p))
    assert not result.cancelled and len(result.slices) == 3 and seen[-1] == (2, 3, 4, 4)
    linked = np.asarray(out[:])
    assert result.num_ids == len(centres) == int(linked.max())
    for r, c in centres.astype(int):
        ids = {int(linked[z, r + 2 * z, c - int(1.5 * z)]) for z in range(3)}
        assert len(ids) == 1 and 0 not in ids
    per_slice = zarr.zeros(stack.shape, chunks=(1, 512, 512), dtype=np.uint32)
    unlinked = tiled_auto_stack(source, per_slice, backend.client, link=False)
    assert unlinked.num_ids == len(centres)
    assert all(int(np.asarray(per_slice[z]).max()) == len(centres) for z in range(3))


def test_a_click_far_from_the_origin_of_a_6000_slice_comes_back_whole_at_its_place(
    standin: Callable[..., StandinBackend],
) -> None:
    backend = standin(workers=1)
    shape = (6000, 6000)
    centres = np.array([[4711.0, 5333.0], [4711.0, 5400.0], [300.0, 300.0]])
    image, truth = disc_image(shape, centres, np.array([9.0, 9.0, 9.0]))
    source = CountingArray(zarr.array(image, chunks=(1024, 1024)))  # a lazy slice
    with backend.client() as client:
        answer = segment_windowed(client, source, [[4711.5, 5333.5]], [1])
        # A second click on the neighbour reuses the window: the image travels once.
        again = segment_windowed(client, source, [[4711.5, 5400.5]], [1])
        info = client.call("info").header["result"]
    assert answer.tries == 1 and not answer.touches_border
    assert max(source.areas) <= 1024 * 1024
    placed = np.zeros(shape, dtype=bool)
    answer.paste_into(placed)
    np.testing.assert_array_equal(placed, truth == 1)  # exact: right place, native resolution
    assert answer.bbox == (4702, 5324, 4720, 5342)
    assert again.window == answer.window
    assert info["counters"]["images_received"] == 1 and info["image_shapes"] == [[1024, 1024]]


def centred_disc(shape: tuple[int, int], radius: float) -> tuple[np.ndarray, np.ndarray]:
    """One bright disc of ``radius`` px in the middle of a (H, W) image: (uint8 image, uint32 labels)."""
    return disc_image(shape, np.array([[shape[0] / 2, shape[1] / 2]]), np.array([radius]))


def test_an_object_cut_by_the_window_is_asked_again_on_a_window_that_holds_it(
    standin: Callable[..., StandinBackend],
) -> None:
    backend = standin(workers=1)
    shape = (5000, 5000)
    image, truth = centred_disc(shape, 400.0)
    with backend.client() as client:
        # A click near the disc's edge: the first window (1024 px around it) cuts the disc.
        answer = segment_windowed(client, image, [[2500.5, 2150.5]], [1])
    assert answer.tries >= 2 and not answer.touches_border
    placed = np.zeros(shape, dtype=bool)
    answer.paste_into(placed)
    np.testing.assert_array_equal(placed, truth == 1)


def test_a_big_box_is_sent_downsampled_and_comes_back_at_native_size(
    standin: Callable[..., StandinBackend],
) -> None:
    backend = standin(workers=1)
    shape = (6000, 6000)
    image, truth = centred_disc(shape, 700.0)
    with backend.client() as client:
        answer = segment_windowed(client, image, box=[2280.0, 2280.0, 3720.0, 3720.0])
        info = client.call("info").header["result"]
    assert answer.window.factor == 2 and info["image_shapes"] == [[1024, 1024]]
    placed = np.zeros(shape, dtype=bool)
    answer.paste_into(placed)
    inter = (placed & (truth == 1)).sum()
    assert inter / (placed | (truth == 1)).sum() >= 0.98
    assert abs(answer.bbox[0] - 2300) <= 2 and abs(answer.bbox[2] - 3700) <= 2


@pytest.mark.model
def test_real_worker_tiled_auto_and_windowed_segment_shapes_and_offsets(module_backend: Backend) -> None:
    backend = module_backend
    rng = np.random.default_rng(0)
    # 2 x 1 tiles of 1024 (halo 128): the second tile sits at a row offset; each tile is one encode
    # (seconds on CPU), and how tiles are cut and stitched is the stand-in tests' to judge.
    image = rng.integers(0, 4000, size=(1600, 1024), dtype=np.uint16)
    out = np.zeros(image.shape, dtype=np.uint32)

    def client() -> SamClient:
        return SamClient(backend.frontend, "sam2.1_hiera_tiny", config=ClientConfig(timeout_s=240, retries=0))

    result = tiled_auto(image, out, client, {"points_per_side": 2, "points_per_batch": 4})
    assert result.tiles == result.tiles_done == 2
    assert out.max() == result.num_objects == len(result.areas)
    with client() as c:
        first = segment_windowed(
            c, image, [[1580.5, 1000.5]], [1], contrast_limits=(0.0, 4000.0), max_tries=1
        )
        first_info = c.call("info").header["result"]
        # Random-weight masks often run into the window's border: then it is asked again, grown.
        answer = segment_windowed(c, image, [[1580.5, 1000.5]], [1], contrast_limits=(0.0, 4000.0))
        info = c.call("info").header["result"]
    window = first.window
    assert (window.rows, window.cols, window.factor) == (1024, 1024, 1)
    assert (window.row1, window.col1) == (1600, 1024)  # clipped to the slice's corner
    assert first_info["last_prompt"]["shape"] == [1024, 1024] and first.tries == 1
    final = answer.window
    assert info["last_prompt"]["shape"] == list(final.sent_shape)
    assert final.row0 <= window.row0 and final.col0 <= window.col0 and 1 <= answer.tries <= 3
    for got in (first, answer):
        if not got.empty:
            r0, c0, r1, c1 = got.bbox
            w = got.window
            assert w.row0 <= r0 < r1 <= w.row1 and w.col0 <= c0 < c1 <= w.col1


def _status_kib(pid: int, field: str) -> int:
    for line in open(f"/proc/{pid}/status").read().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


@pytest.mark.model
def test_a_huge_image_gets_a_clear_answer_and_worker_memory_stays_bounded(module_backend: Backend) -> None:
    """A 16,384² float32 request of zeros (1 GiB): answered (here: refused with a clear message),
    with the worker's peak memory within what it held before plus twice the request."""
    backend = module_backend
    pid = backend.workers[0].pid
    request_kib = 16384 * 16384 * 4 // 1024
    with SamClient(backend.frontend, "sam2.1_hiera_tiny", config=ClientConfig(timeout_s=120, retries=0)) as c:
        errors_before = c.call("info").header["result"]["counters"]["errors"]
        # The peak (VmHWM) starts again from the current RSS: the shared worker's earlier encodes
        # must not hide (or stand in for) this request's peak.
        with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        rss_before = _status_kib(pid, "VmRSS")
        with pytest.raises(RemoteError) as refused:
            c.call("embed", image=np.zeros((16384, 16384), dtype=np.float32))
        assert refused.value.code == "bad_request"
        assert "8192 x 8192" in refused.value.message and "window" in refused.value.message
        peak = _status_kib(pid, "VmHWM")
        # The worker is still serving.
        assert c.call("info").header["result"]["counters"]["errors"] == errors_before + 1
    assert peak <= rss_before + 2 * request_kib, (peak, rss_before)
