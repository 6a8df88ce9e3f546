"""A pyramid layer's store written in a thread while the window keeps drawing: what arrives meanwhile.

While :func:`plugin._qt.off_thread.run_keeping_window_alive` writes a label
store in a thread (a pyramid's undo, redo, tiled paste, Edit here's write-back),
the GUI thread keeps processing events, and among them the answers that the
worker threads hand to :class:`plugin._qt.qt_helpers.GuiDispatcher`. An answer
that wrote the same layer then would be written and recorded in the middle of
another step (its undo history moved under the step being undone). Here a
real viewer, a real pyramid store and the real dispatcher check that such an
answer waits for the write and its bookkeeping, in the order the answers came,
while progress still moves during the write.
"""

from __future__ import annotations

import threading

import numpy as np

from plugin._qt.off_thread import read_keeping_window_alive, run_keeping_window_alive
from plugin._qt.qt_helpers import GuiDispatcher
from plugin.jobs.context import DuringStoreWrites
from plugin.labels.history import LabelHistory
from plugin.labels.writes import write_values
from plugin.view.layers import POINTS_MASK, ensure_labels
from tests.plugin.test_plugin_pyramid import assert_levels_in_step, small_pyramids  # noqa: F401 (autouse fixture)
from tests.support.marks import GUI_TEST_MARKS

pytestmark = GUI_TEST_MARKS

SHAPE = (2048, 2048)


def box(r0: int, c0: int, r1: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[r0:r1, c0:c1]
    return rows.ravel(), cols.ravel()


def test_an_answer_arriving_during_an_undo_in_a_thread_is_written_after_it(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros(SHAPE, np.uint8))
    layer = ensure_labels(viewer, image, POINTS_MASK)
    assert layer.multiscale
    dispatch = GuiDispatcher()
    started, seen_in_write = threading.Event(), []

    def slow_off_gui(work):
        def waiting():
            started.set()
            return work()

        return run_keeping_window_alive(waiting)

    history = LabelHistory(layer, bind_keys=False, off_gui=slow_off_gui)
    write_values(layer, box(100, 100, 300, 300), 5)  # step 1: label 5
    write_values(layer, box(200, 200, 400, 400), 6)  # step 2: label 6 over a corner of 5
    assert history.undo_depth == 2

    # an answer (label 9 over both) and a progress step were queued before the undo starts
    dispatch(lambda: write_values(layer, box(250, 250, 450, 450), 9))
    dispatch(DuringStoreWrites(lambda: seen_in_write.append(started.is_set())))
    assert history.undo()  # undoes step 2; the event loop runs inside, the answer arrives there

    assert seen_in_write == [True]  # progress moved while the thread wrote
    level0 = assert_levels_in_step(layer)
    assert not (level0 == 9).any()  # the answer waits for the undo and its bookkeeping
    assert history.undo_depth == 1 and history.redo_depth == 1
    qtbot.waitUntil(lambda: (np.asarray(layer.data[0][250:450, 250:450]) == 9).all(), timeout=5000)

    level0 = assert_levels_in_step(layer)
    expected = np.zeros(SHAPE, np.uint32)
    expected[100:300, 100:300] = 5
    expected[250:450, 250:450] = 9
    np.testing.assert_array_equal(level0, expected)  # 6 undone, then 9 written on top
    assert history.undo_depth == 2 and history.redo_depth == 0  # a new step after an undo: no redo
    assert history.undo()  # 9 undone: 5 as it was; 6 is gone for good
    expected[250:450, 250:450] = 0
    expected[100:300, 100:300] = 5
    np.testing.assert_array_equal(assert_levels_in_step(layer), expected)
    assert history.undo()
    assert not assert_levels_in_step(layer).any() and history.undo_depth == 0


def test_answers_held_during_a_write_keep_their_order_and_reads_hold_nothing(
    make_napari_viewer, qtbot
) -> None:
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros(SHAPE, np.uint8))
    layer = ensure_labels(viewer, image, POINTS_MASK)
    dispatch = GuiDispatcher()
    order: list[str] = []

    for label in (7, 8):  # two answers on the same pixels: the newer one must end on top
        dispatch(lambda v=label: (order.append(f"write {v}"), write_values(layer, box(0, 0, 64, 64), v)))
    release = threading.Event()
    dispatch(DuringStoreWrites(release.set))  # progress runs during the write and lets it end

    def store_write():
        assert release.wait(10)
        order.append("store write")

    run_keeping_window_alive(store_write)
    assert order == ["store write"]
    qtbot.waitUntil(lambda: len(order) == 3, timeout=5000)
    assert order == ["store write", "write 7", "write 8"]
    assert (np.asarray(layer.data[0][:64, :64]) == 8).all()

    # a read (a count, an export) holds nothing back: edits made meanwhile go on
    done = threading.Event()
    dispatch(lambda: (write_values(layer, box(0, 0, 8, 8), 3), done.set()))
    read_keeping_window_alive(lambda: done.wait(10))
    assert done.is_set() and (np.asarray(layer.data[0][:8, :8]) == 3).all()
