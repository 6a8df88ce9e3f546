"""Propagate several labels in one pass through the dock widget, against the deterministic stand-in worker.

The stand-in (``python -m workers --model standin-blobs``) tracks each object as the bright
component overlapping it on the previous slice, so the right answer is known:
two discs drifting through a 5-slice stack keep their two ids, a disc that
vanishes stops (and is not picked up again when a disc reappears there), an
unlabelled disc is never written. Real viewer under Xvfb, real broker and
stand-in worker processes.
"""

from __future__ import annotations

import numpy as np
import pytest

from plugin._qt.propagate_widget import ALL_ON_SLICE, SELECTED
from plugin.jobs.stacks import PROPAGATE
from tests.support.marks import GUI_TEST_MARKS
from tests.support.plugin_helpers import dock_widget, wait_for_redraws
from tests.support.processes import ProcessSpawner
from tests.support.standin_backend import SERVICE, StandinBackend
from tests.support.timelapse import MOVIE_FRAMES as FRAMES
from tests.support.timelapse import MOVIE_SIDE as SIZE
from tests.support.timelapse import movie_disc as disc

pytestmark = GUI_TEST_MARKS

TIMEOUT_MS = 60_000


def drifting_discs() -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray | None]]:
    """(5, 96, 96) uint8 and the true discs: A drifts right on every slice; B drifts left on slices
    0..2, is gone on 3 and back on 4; C (never labelled) sits still."""
    stack = np.full((FRAMES, SIZE, SIZE), 20, np.uint8)
    a = [disc((30, 20 + 6 * z)) for z in range(FRAMES)]
    b: list[np.ndarray | None] = [disc((68, 60 - 4 * z)) if z != 3 else None for z in range(FRAMES)]
    c = disc((80, 86), 5)
    for z in range(FRAMES):
        stack[z][a[z]] = 200
        if b[z] is not None:
            stack[z][b[z]] = 200
        stack[z][c] = 200
    return stack, a, b


@pytest.fixture
def setup(make_napari_viewer, spawn: ProcessSpawner, qtbot, monkeypatch):
    backend = StandinBackend(spawn, 1, delay_s=0.4)
    stack, a, b = drifting_discs()
    viewer = make_napari_viewer()
    viewer.add_image(stack, name="discs")
    widget = dock_widget(viewer, qtbot, monkeypatch, backend.frontend, SERVICE)
    start = np.zeros(stack.shape, np.uint32)
    start[2][a[2]] = 3
    start[2][b[2]] = 8
    labels = viewer.add_labels(start, name="tracked")
    widget.tabs.setCurrentIndex(1)
    widget.labels.layer_combo.set_layer(labels)
    wait_for_redraws(qtbot, widget)
    viewer.dims.set_point(0, 2)
    return viewer, widget, labels, a, b


def test_all_labels_on_the_slice_keep_their_ids_and_a_vanished_disc_stops(setup, qtbot) -> None:
    viewer, widget, labels, a, b = setup
    box = widget.propagate_box
    box.which.setCurrentText(ALL_ON_SLICE)
    box.direction.setCurrentText("both")
    steps: list[str] = []
    box.bar.valueChanged.connect(lambda _v: steps.append(box.bar.format()))
    before = labels.data.copy()
    box.button.click()
    assert box.task.running
    qtbot.waitUntil(lambda: not box.task.running, timeout=TIMEOUT_MS)
    run = widget.controller.stack.runs[PROPAGATE]
    assert run.completed and run.label_ids == [3, 8]
    assert sorted(run.written) == [0, 1, 3, 4]
    np.testing.assert_array_equal(labels.data[2], before[2])  # the source slice is left as it is
    for z in (0, 1, 3, 4):
        expected = np.zeros((SIZE, SIZE), np.uint32)
        expected[a[z]] = 3  # A keeps id 3 on every slice
        if z < 2:
            expected[b[z]] = 8  # B keeps id 8 backwards
        # forwards B vanishes on slice 3 and stays stopped on slice 4, where a disc is back
        np.testing.assert_array_equal(labels.data[z], expected, err_msg=f"slice {z}")
    assert [s for s in steps if s.startswith("Propagate: slice")][-1] == "Propagate: slice 5 of 5"
    history = widget.controller.histories(labels)
    assert history.undo_depth == 1
    history.undo()
    np.testing.assert_array_equal(labels.data, before)


def test_selected_labels_only_and_cancel_keeps_what_was_written(setup, qtbot) -> None:
    viewer, widget, labels, a, b = setup
    box = widget.propagate_box
    box.which.setCurrentText(SELECTED)
    widget.labels.select(8)
    box.direction.setCurrentText("backward")  # slices 2 (the source), 1, 0
    box.button.click()
    qtbot.waitUntil(lambda: not box.task.running, timeout=TIMEOUT_MS)
    run = widget.controller.stack.runs[PROPAGATE]
    assert run.completed and run.label_ids == [8]
    for z in (0, 1):
        np.testing.assert_array_equal(labels.data[z], np.where(b[z], 8, 0).astype(np.uint32))

    # cancel after the first written slice: it stays, the rest never comes
    before = labels.data.copy()
    box.which.setCurrentText(ALL_ON_SLICE)
    box.direction.setCurrentText("forward")  # slices 2, 3, 4
    box.button.click()
    qtbot.waitUntil(lambda: 3 in widget.controller.stack.runs[PROPAGATE].written, timeout=TIMEOUT_MS)
    box.button.click()  # "Cancel propagation"
    qtbot.waitUntil(lambda: not box.task.running, timeout=10_000)
    run = widget.controller.stack.runs[PROPAGATE]
    assert not run.completed and sorted(run.written) == [3]
    qtbot.wait(1500)  # slice 4 would have come by now
    expected = before.copy()
    expected[3][a[3]] = 3
    np.testing.assert_array_equal(labels.data, expected)
