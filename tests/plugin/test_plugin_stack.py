"""Label control, undo/redo, propagation, AUTO-SEGMENT STACK, the events panel and reconnecting,
through the dock widget against a REAL backend (broker + random-weight SAM2 tiny worker).

One backend serves the whole module; the reconnect test kills it and starts
it again on the same endpoints; the propagation test comes last (its cancelled
request keeps the worker busy until the slice it computes is done).
Random weights make masks meaningless, so the tests check what is
deterministic: which pixels change (exactly where the worker's masks say),
with which ids, the undo steps, and what the panels show. AUTO-SEGMENT STACK
is judged by a stand-in worker of its own (``python -m workers --model standin-blobs``),
whose objects are known, so its ids and undo step are always checked.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from bench.discs import disc_image
from plugin._qt.widget import SamWidget
from plugin.jobs.controller import POINTS
from plugin.jobs.stacks import AUTO_STACK, PROPAGATE
from plugin.labels.names import METADATA_KEY, names_from_metadata
from plugin.labels.stats import pixel_counts
from plugin.view.layers import AUTO_MASK, POINTS_MASK, PROMPT_POINTS
from tests.support.backend import Backend
from tests.support.marks import GUI_TEST_MARKS
from tests.support.plugin_helpers import (
    HEARTBEAT,
    TIMEOUT_MS,
    cell,
    click_point,
    dock_widget,
    start_worker,
    wait_for_redraws,
)
from tests.support.processes import PYTHON, ProcessSpawner, log_text, wait_until
from tests.support.standin_backend import SERVICE, StandinBackend

pytestmark = GUI_TEST_MARKS


@pytest.fixture(scope="module")
def shared_backend(tmp_path_factory: pytest.TempPathFactory, random_checkpoint: Path) -> Iterator[Backend]:
    """One broker + one worker for the module's tests."""
    spawner = ProcessSpawner(tmp_path_factory.mktemp("plugin_stack_backend"))
    try:
        backend = Backend(spawner, random_checkpoint, heartbeat_interval_s=0.25)
        start_worker(backend)
        yield backend
    finally:
        spawner.stop_all()


@pytest.fixture
def connect(make_napari_viewer, qtbot, monkeypatch) -> Callable[..., tuple]:
    """Factory: a viewer with ``image``, the dock widget connected to ``backend``."""

    def factory(backend: Backend | StandinBackend, image: np.ndarray, **kwargs) -> tuple:
        viewer = make_napari_viewer()
        layer = viewer.add_image(image, **kwargs)
        widget = dock_widget(viewer, qtbot, monkeypatch, backend.frontend)
        return viewer, layer, widget

    return factory


def table_state(widget: SamWidget, qtbot) -> list[tuple[int, str, int]]:
    """What the label list shows once its coalesced redraw ran: (id, name, pixels) per row."""
    wait_for_redraws(qtbot, widget)
    table = widget.labels.model
    return [
        (int(table.cell(r, 1)), table.cell(r, 2), int(table.cell(r, 3).replace(",", "")))
        for r in range(table.rowCount())
    ]


def expected_rows(layer) -> list[tuple[int, str, int]]:
    counts, names = pixel_counts(layer.data), names_from_metadata(layer.metadata)
    return [(i, names.get(i, ""), counts.get(i, 0)) for i in sorted(set(counts) | set(names))]


def test_label_list_edits_and_undo_with_answers(shared_backend, connect, qtbot) -> None:
    viewer, image, widget = connect(shared_backend, cell(128))
    labels = viewer.add_labels(np.zeros((128, 128), np.uint32), name="cells")
    labels.data_setitem(tuple(np.mgrid[5:25, 5:30].reshape(2, -1)), 1)  # labels the user painted
    labels.data_setitem(tuple(np.mgrid[90:120, 80:100].reshape(2, -1)), 2)
    labels.data_setitem(tuple(np.mgrid[0:4, 120:128].reshape(2, -1)), 3)
    labels.metadata = {METADATA_KEY: {1: "cell", 2: "debris"}}
    widget.tabs.setCurrentIndex(1)
    table = widget.labels
    table.layer_combo.set_layer(labels)
    assert table.layer is labels
    assert table_state(widget, qtbot) == [(1, "cell", 500), (2, "debris", 600), (3, "", 32)]
    history = widget.controller.histories(labels)
    states = [(labels.data.copy(), names_from_metadata(labels.metadata))]

    # delete 2 (its name goes), merge 3 into 1 (1 keeps its name): one undo step each
    table.select(2)
    assert labels.selected_label == 2
    table.delete_button.click()
    assert names_from_metadata(labels.metadata) == {1: "cell"} and not (labels.data == 2).any()
    states.append((labels.data.copy(), names_from_metadata(labels.metadata)))
    assert table_state(widget, qtbot) == [(1, "cell", 500), (3, "", 32)]
    table.table.selectAll()
    assert table.selected_ids() == [1, 3] and table.merge_target.value() == 1
    table.merge_button.click()
    assert set(np.unique(labels.data)) == {0, 1} and names_from_metadata(labels.metadata) == {1: "cell"}
    states.append((labels.data.copy(), names_from_metadata(labels.metadata)))
    assert table_state(widget, qtbot) == [(1, "cell", 532)]

    # two segmentation answers refine label 1 (union, then overwrite): each one undo step
    widget.refine_radio.setChecked(True)
    widget.refine_layer.set_layer(labels)
    widget.refine_id.setValue(1)
    for op, point in (("union", [40, 40]), ("overwrite", [70, 50])):
        widget.refine_op.setCurrentText(op)
        depth = history.undo_depth
        click_point(widget, qtbot, point)
        answer = widget.controller.applied[POINTS].answer
        before = states[-1][0]
        expected = before.copy()
        if op == "overwrite":
            expected[(before == 1) & ~answer] = 0
        expected[answer] = 1
        np.testing.assert_array_equal(labels.data, expected)
        if history.undo_depth > depth:  # an answer that changes nothing is no step
            states.append((labels.data.copy(), names_from_metadata(labels.metadata)))
        assert table_state(widget, qtbot) == expected_rows(labels)
    assert history.undo_depth == 3 + len(states) - 1  # the three strokes, then ours

    # all the way back (the deleted label's name returns) and forward again, the list in step
    assert table.undo_button.isEnabled() and not table.redo_button.isEnabled()
    for data, names in reversed(states[:-1]):
        table.undo_button.click()
        np.testing.assert_array_equal(labels.data, data)
        assert names_from_metadata(labels.metadata) == names
        assert table_state(widget, qtbot) == expected_rows(labels)
    assert names_from_metadata(labels.metadata) == {1: "cell", 2: "debris"}
    for data, names in states[1:]:
        table.redo_button.click()
        np.testing.assert_array_equal(labels.data, data)
        assert names_from_metadata(labels.metadata) == names
    assert not table.redo_button.isEnabled()
    assert table_state(widget, qtbot) == expected_rows(labels)
    # the keys, as napari dispatches them: Ctrl+Z / Ctrl+Shift+Z on the labels layer, then Ctrl+Z on
    # the prompt layer (which undoes on the layer the last answer went to)
    keys = viewer.window._qt_viewer._key_map_handler
    viewer.layers.selection.active = labels
    keys.press_key("Control-Z")
    np.testing.assert_array_equal(labels.data, states[-2][0])
    keys.press_key("Control-Shift-Z")
    np.testing.assert_array_equal(labels.data, states[-1][0])
    viewer.layers.selection.active = viewer.layers[PROMPT_POINTS]
    keys.press_key("Control-Z")
    np.testing.assert_array_equal(labels.data, states[-2][0])
    assert names_from_metadata(labels.metadata) == states[-2][1]
    # a name typed into the list names the label
    row = [r[0] for r in table_state(widget, qtbot)].index(1)
    table.model.setData(table.model.index(row, 2), "big cell")
    assert names_from_metadata(labels.metadata)[1] == "big cell"


def test_events_panel_shows_requests_and_errors(shared_backend, connect, qtbot) -> None:
    viewer, image, widget = connect(shared_backend, cell(64))
    panel = widget.events_panel
    qtbot.waitUntil(lambda: any(r[1] == "connect" for r in panel.rows()), timeout=5000)
    click_point(widget, qtbot, [30, 30])
    qtbot.waitUntil(lambda: any(r[1] == "request" and r[2] == "segment" for r in panel.rows()), timeout=5000)
    row = next(r for r in panel.rows() if r[2] == "segment")
    assert len(row[3]) == 8 and float(row[4]) > 0  # a request id and a duration in ms
    failures: list[Exception] = []
    widget.controller.session.submit(
        "probe", lambda client: client.call("no_such_op"), print, failures.append
    )
    qtbot.waitUntil(lambda: bool(failures), timeout=30_000)
    qtbot.waitUntil(lambda: panel.rows()[0][1] == "error", timeout=5000)
    newest = panel.rows()[0]
    assert newest[2] == "no_such_op" and "unknown_op" in newest[5]
    assert [r[1] for r in panel.rows()][-1] == "connect"  # newest first: the connection is the oldest


def test_auto_segment_stack_writes_every_slice_with_unique_ids(spawn, connect, qtbot, monkeypatch) -> None:
    """Judged by the stand-in worker (its objects are the bright components, so every slice has
    some); the real worker's AUTO-SEGMENT answers in the widget are tested in test_plugin_widget.py."""
    backend = StandinBackend(spawn, 1)
    monkeypatch.setenv("SAM2_MODEL", SERVICE)
    centres, radii = np.array([[16.0, 16.0], [44.0, 40.0]]), np.array([8.0, 10.0])
    stack = np.stack([disc_image((64, 64), centres + [0.0, 2.0 * z], radii)[0] for z in range(3)])
    viewer, image, widget = connect(backend, stack)
    widget.controller.auto_settings = type(widget.controller.auto_settings)(
        pred_iou_thresh=0.0, stability_score_thresh=0.0, link_stack=False
    )  # per-slice ids ("One id through z/t" off): each slice's objects are new
    widget.points_per_side.setValue(4)
    box = widget.auto_box
    box.stack_button.click()
    assert box.stack_task.running and box.stack_button.text().startswith("Cancel")
    assert not box.stack_bar.isHidden()
    qtbot.waitUntil(lambda: not box.stack_task.running, timeout=3 * TIMEOUT_MS)
    run = widget.controller.stack.runs[AUTO_STACK]
    assert run.completed and sorted(run.written) == [0, 1, 2]
    layer = viewer.layers[AUTO_MASK]
    seen: set[int] = set()
    for z, objects in run.written.items():
        np.testing.assert_array_equal(layer.data[z] > 0, objects > 0)
        ids = set(np.unique(layer.data[z])) - {0}
        assert ids and not ids & seen  # unique across slices
        assert min(ids) > max(seen, default=0)  # max + 1 tracked slice after slice
        seen |= ids
    assert sorted(seen) == sorted(run.label_ids)
    history = widget.controller.histories(layer)
    assert history.undo_depth == 1  # one undo step for the whole stack
    history.undo()
    assert not layer.data.any()


def test_backend_death_keeps_labels_and_reconnects(shared_backend, connect, qtbot, monkeypatch) -> None:
    from napari.utils.notifications import NotificationSeverity, notification_manager

    monkeypatch.setattr("plugin._qt.backend_link.REFRESH_INTERVAL_MS", 300)
    monkeypatch.setattr("plugin._qt.backend_link.RETRY_INTERVAL_MS", 300)
    backend = shared_backend  # killed and started again: later tests get the new one
    viewer, image, widget = connect(backend, cell(64))
    click_point(widget, qtbot, [30, 30])
    widget.controller.new_object()
    labels = viewer.layers[POINTS_MASK]
    labels.data_setitem(tuple(np.mgrid[0:5, 0:5].reshape(2, -1)), 9)  # and a label painted by hand
    kept = labels.data.copy()
    seen = len(notification_manager.records)
    for proc in (backend.broker, *backend.workers):
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    def warned() -> bool:
        return any(
            n.severity == NotificationSeverity.WARNING and "SAM2 backend lost" in n.message
            for n in notification_manager.records[seen:]
        )

    qtbot.waitUntil(warned, timeout=20_000)
    assert not widget.points_button.isEnabled() and "lost the broker" in widget.status_label.text()
    np.testing.assert_array_equal(labels.data, kept)  # nothing made is lost
    assert any(e.kind == "disconnect" for e in widget.controller.events.recent())

    # the backend comes back on the same endpoints: the plugin reconnects by itself
    backend.broker = backend.spawn(
        [PYTHON, "-m", "broker", "--frontend", backend.frontend, "--backend", backend.backend, *HEARTBEAT],
        "broker_again",
    )
    assert wait_until(lambda: "broker ready" in log_text(backend.broker), 30), log_text(backend.broker)
    start_worker(backend)
    qtbot.waitUntil(lambda: widget.points_button.isEnabled(), timeout=30_000)
    assert "1 worker(s)" in widget.status_label.text()
    assert any("SAM2 backend is back" in n.message for n in notification_manager.records[seen:])
    before = labels.data.copy()
    click_point(widget, qtbot, [40, 20])  # a new prompt works on the new backend
    applied = widget.controller.applied[POINTS]
    if applied.label_ids:
        # "Add without overwriting" (the default): the hand-painted label 9 is never painted over
        np.testing.assert_array_equal(labels.data == applied.label_ids[0], applied.answer & (before == 0))
    np.testing.assert_array_equal(labels.data[before != 0], before[before != 0])
    np.testing.assert_array_equal(labels.data[~applied.answer], before[~applied.answer])


@pytest.mark.timeout(600)  # its own waits (a real SAM2 propagation: up to 270 s) exceed the default 300 s
def test_propagate_through_the_stack_and_cancel(shared_backend, connect, qtbot) -> None:
    stack = np.stack([cell(64, shift=4 * k) for k in range(4)])
    viewer, image, widget = connect(shared_backend, stack)
    start = np.zeros(stack.shape, np.uint32)
    start[1, 20:40, 18:44] = 7
    start[3, 0:10, 0:10] = 2  # another object, left alone except where a mask covers it
    labels = viewer.add_labels(start, name="tracked")
    labels.metadata = {METADATA_KEY: {7: "cell"}}
    widget.tabs.setCurrentIndex(1)
    widget.labels.layer_combo.set_layer(labels)
    wait_for_redraws(qtbot, widget)
    viewer.dims.set_point(0, 0)
    widget.labels.select(2)  # selecting a label shows the slice where it is
    assert viewer.dims.current_step[0] == 3 and labels.selected_label == 2
    widget.labels.select(7)
    assert viewer.dims.current_step[0] == 1 and labels.selected_label == 7
    before = labels.data.copy()
    box = widget.propagate_box
    box.direction.setCurrentText("both")
    box.button.click()
    assert box.task.running
    qtbot.waitUntil(lambda: not box.task.running, timeout=3 * TIMEOUT_MS)
    run = widget.controller.stack.runs[PROPAGATE]
    errors = [e for e in widget.controller.events.recent() if e.kind == "error" and e.op == "propagate"]
    assert run.completed, [e.detail for e in errors]
    assert sorted(run.written) == [0, 2, 3]  # every slice but the source
    np.testing.assert_array_equal(labels.data[1], before[1])
    for z, mask in run.written.items():
        np.testing.assert_array_equal(labels.data[z], np.where(mask, 7, before[z]))  # the masks, id 7
    history = widget.controller.histories(labels)
    assert history.undo_depth == 1  # one step
    history.undo()
    np.testing.assert_array_equal(labels.data, before)
    history.redo()

    # cancel: stops at once; what was written stays
    after_first = labels.data.copy()
    box.direction.setCurrentText("backward")  # slices 1 (the source), then 0
    box.button.click()
    qtbot.waitUntil(
        lambda: box.bar.format().startswith("Propagate: slice") or not box.task.running, timeout=TIMEOUT_MS
    )
    box.button.click()  # "Cancel propagation"
    qtbot.waitUntil(lambda: not box.task.running, timeout=10_000)
    run = widget.controller.stack.runs[PROPAGATE]
    assert not run.completed and not run.written  # slice 0 never came (or came and was dropped)
    expected = after_first.copy()
    for z, mask in run.written.items():
        expected[z] = np.where(mask, 7, after_first[z])
    np.testing.assert_array_equal(labels.data, expected)
