"""A box larger than the model's input at full resolution (issue 23, item 2): real broker and stand-in
worker processes on a synthetic object whose right answer is known.

Sent whole, a 2,700 px box is block-averaged by 3 and the object comes back coarse; tiled, each
piece of the box is seen at native resolution and the pieces make the object exactly, once, at
its place. The stand-in (``python -m workers --model standin-blobs``) answers a box with the largest bright
component inside it, looked at <= 1024 px as SAM does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest

from protocol.ops.tiled_box import box_view, segment_box_tiled
from protocol.ops.windowed import segment_windowed
from protocol.wire.errors import Superseded
from tests.support.box_objects import BOX, large_object
from tests.support.processes import ProcessSpawner
from tests.support.standin_backend import StandinBackend


@pytest.fixture
def standin(spawn: ProcessSpawner) -> Callable[..., StandinBackend]:
    return lambda workers=2: StandinBackend(spawn, workers)


def placed(answer, shape) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    answer.paste_into(out)
    return out


def test_a_large_box_is_said_to_be_downsampled_and_the_tiled_box_is_exact(
    standin: Callable[..., StandinBackend],
) -> None:
    backend = standin(workers=2)
    image, truth = large_object()
    view = box_view(image.shape, BOX)
    assert view.downsampled and view.factor == 3 and view.tiles == 16
    assert "1/3 resolution" in view.notice() and "16 tiles" in view.notice()
    with backend.client() as client:
        whole = segment_windowed(client, image, box=BOX)  # what one request gives: coarse
    coarse = placed(whole, image.shape)
    assert whole.window.factor == 3 and not np.array_equal(coarse, truth)
    progress: list[tuple[int, int]] = []
    tiled = segment_box_tiled(backend.client, image, BOX, on_progress=lambda d, t: progress.append((d, t)))
    np.testing.assert_array_equal(placed(tiled, image.shape), truth)  # exact, one object, at its place
    assert tiled.tries == 16 and tiled.window.factor == 1 and progress[-1] == (16, 16)
    infos = backend.infos()
    shapes = [tuple(s) for info in infos.values() for s in info["image_shapes"]]
    assert all(max(s) <= 1024 for s in shapes)  # every tile seen at native resolution


def test_a_small_box_needs_no_tiles_and_cancel_stops(standin: Callable[..., StandinBackend]) -> None:
    small = box_view((3000, 3000), [100.0, 100.0, 700.0, 800.0])
    assert not small.downsampled and small.factor == 1
    backend = standin(workers=1)
    image, _truth = large_object()
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Superseded):
        segment_box_tiled(backend.client, image, BOX, cancel=cancel)
    with pytest.raises(ValueError, match="outside the slice"):
        box_view((3000, 3000), [4000.0, 4000.0, 4100.0, 4100.0])
