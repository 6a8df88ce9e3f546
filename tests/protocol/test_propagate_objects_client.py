"""``protocol.ops.propagate_objects`` against the deterministic stand-in worker.

Real broker and stand-in worker processes.

The stand-in tracks each object as the bright component overlapping it on
the previous slice, so the answers are known: ids kept per object, slices in
propagation order with progress, a vanished object stops, and a prompt on a
later slice restarts it from there (as SAM2 conditions on every prompted slice).
"""

from __future__ import annotations

import numpy as np
import pytest

from protocol.ops.requests import PropagatedLabels, propagate_objects
from protocol.wire.propagate import SlicePrompt
from protocol.wire.wire_image import stack_to_wire
from tests.support.processes import ProcessSpawner
from tests.support.standin_backend import StandinBackend

SIZE = 64


def _disc(centre: tuple[int, int], radius: int = 6) -> np.ndarray:
    rows, cols = np.mgrid[:SIZE, :SIZE]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def test_ids_order_stop_and_a_correction_on_a_later_slice(spawn: ProcessSpawner) -> None:
    backend = StandinBackend(spawn, 1)
    stack = np.full((5, SIZE, SIZE), 10, np.uint8)
    for z in range(5):
        stack[z][_disc((16, 12 + 5 * z))] = 220  # object 11 drifts right
        if z != 2:
            stack[z][_disc((46, 46))] = 220  # object 40 is gone on slice 2, back on 3 and 4
    masks = np.zeros((SIZE, SIZE), np.int64)
    masks[_disc((16, 17))] = 11
    masks[_disc((46, 46))] = 40
    slices: list[PropagatedLabels] = []
    fix = SlicePrompt(4, 40, points=((46.0, 46.0),), point_labels=(1,))
    with backend.client() as client:
        answer = propagate_objects(
            client, stack_to_wire(stack, None), 1, "both", slices.append, masks=masks, prompts=[fix]
        )
    assert answer.frames == 5 and not answer.cancelled
    assert [s.frame_index for s in slices] == [1, 2, 3, 4, 0]
    assert [(s.done, s.total) for s in slices] == [(i, 5) for i in range(1, 6)]
    by_slice = {s.frame_index: s for s in slices}
    assert [by_slice[z].object_ids for z in range(5)] == [(11, 40), (11, 40), (11,), (11,), (11, 40)]
    # slice 3: 40 stopped on slice 2 and is not picked up again; slice 4: the correction restarts it
    for z in range(5):
        np.testing.assert_array_equal(by_slice[z].labels == 11, _disc((16, 12 + 5 * z)), err_msg=f"slice {z}")
    np.testing.assert_array_equal(by_slice[4].labels == 40, _disc((46, 46)))


def test_client_refuses_bad_calls_before_sending() -> None:
    stack = stack_to_wire(np.zeros((3, SIZE, SIZE), np.uint8), None)
    with pytest.raises(ValueError, match="at least one object"):
        propagate_objects(None, stack, 0, "both", print)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        propagate_objects(None, stack, 0, "both", print, masks=np.ones((4, 4), np.uint32))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="direction"):
        propagate_objects(None, stack, 0, "up", print, masks=np.ones((SIZE, SIZE), np.uint32))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="0..4294967295"):
        propagate_objects(None, stack, 0, "both", print, masks=-np.ones((SIZE, SIZE), np.int64))  # type: ignore[arg-type]
