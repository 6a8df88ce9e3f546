"""The SAM2 dock widget against a REAL backend (broker + random-weight SAM2 tiny worker).

Random weights make masks meaningless (possibly empty), so the tests assert
what is deterministic: which layer is written, that it holds exactly the
worker's answer (with a freshly allocated id), which slice changed, and the
prompt coordinates the worker received.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from napari.utils.events import Event
from napari.utils.interactions import mouse_press_callbacks
from skimage import data as skdata

from plugin._qt.widget import SamWidget
from plugin.jobs.controller import AUTO, BOX, POINTS, Applied
from plugin.labels.names import METADATA_KEY
from plugin.labels.ops import LabelMode
from plugin.view.layers import AUTO_MASK, BOUNDING_BOX, BOX_MASK, POINTS_MASK, PROMPT_POINTS
from protocol.wire.client import SamClient
from tests.support.backend import Backend, running_backend
from tests.support.marks import GUI_TEST_MARKS
from tests.support.plugin_helpers import dock_widget
from tests.support.processes import free_endpoint, wait_until

pytestmark = GUI_TEST_MARKS

ANSWER_TIMEOUT_MS = 60_000


@pytest.fixture
def cell() -> np.ndarray:
    """A real fluorescence image, small: scikit-image's ``cell`` (uint8) cropped to 160 x 160."""
    return np.ascontiguousarray(skdata.cell()[200:360, 150:310])


@pytest.fixture(scope="module")
def shared_backend(tmp_path_factory: pytest.TempPathFactory, random_checkpoint: Path) -> Iterator[Backend]:
    """One broker + one worker for the module's tests that leave the backend as they found it."""
    with running_backend(tmp_path_factory.mktemp("widget_backend"), random_checkpoint) as backend:
        yield backend


@pytest.fixture
def connected(make_napari_viewer, make_backend, shared_backend, qtbot, monkeypatch) -> Callable[..., tuple]:
    """Factory: a viewer with an image, a backend and a connected widget.

    The backend is the module's shared one unless ``service_wait_s`` (the broker's, for
    ``no_worker``; such a test also kills its worker) is given. A test that needs a cold cache
    sends an image no other test sends; one that counts requests reads the counters before and after.
    """

    def factory(image: np.ndarray, service_wait_s: float | None = None, **image_kwargs) -> tuple:
        if service_wait_s is not None:
            backend = make_backend(workers=1, service_wait_s=service_wait_s)
        else:
            backend = shared_backend
        viewer = make_napari_viewer()
        layer = viewer.add_image(image, **image_kwargs)
        widget = dock_widget(viewer, qtbot, monkeypatch, backend.frontend)
        assert widget.points_button.isEnabled() and widget.auto_button.isEnabled()
        assert "1 worker(s) of sam2.1_hiera_tiny on cpu" in widget.status_label.text()
        assert widget.controller.image is layer
        return viewer, layer, widget, backend

    return factory


def answer_of(widget: SamWidget, channel: str, qtbot, after: Applied | None = None) -> Applied:
    """Wait for a newer answer of ``channel`` than ``after``."""
    qtbot.waitUntil(
        lambda: widget.controller.applied.get(channel) not in (None, after), timeout=ANSWER_TIMEOUT_MS
    )
    widget.controller.session.wait_idle(5)
    qtbot.wait(50)
    return widget.controller.applied[channel]


def worker_info(backend: Backend) -> dict:
    with SamClient(backend.frontend) as client:
        return client.call("info").header["result"]


def assert_written_exactly(labels2d: np.ndarray, before: np.ndarray, applied: Applied) -> None:
    """The new label covers exactly the answer's mask where there was background
    ("Add without overwriting", on by default); everything else is unchanged."""
    assert applied.answer is not None
    if applied.label_ids:
        (label_id,) = applied.label_ids
        assert label_id > int(before.max())  # a fresh id
        np.testing.assert_array_equal(labels2d == label_id, applied.answer & (before == 0))
        np.testing.assert_array_equal(labels2d[~applied.answer], before[~applied.answer])
    else:  # an empty answer writes nothing and allocates no id
        assert not applied.answer.any()
        np.testing.assert_array_equal(labels2d, before)


def test_point_box_and_auto_each_write_a_new_label(connected, cell, qtbot) -> None:
    viewer, image, widget, backend = connected(cell, scale=(0.5, 0.5), translate=(7, -3))
    widget.points_button.click()
    points = viewer.layers[PROMPT_POINTS]
    assert viewer.layers.selection.active is points and points.mode == "add"
    # the result layer is made on the next turn of the event loop (one new layer per turn)
    assert POINTS_MASK not in viewer.layers
    qtbot.waitUntil(lambda: POINTS_MASK in viewer.layers, timeout=5000)
    prepared = viewer.layers[POINTS_MASK]
    assert viewer.layers.selection.active is points and points.mode == "add"
    points.add([40, 52])
    applied = answer_of(widget, POINTS, qtbot)
    assert applied.echo["points"] == [[40.5, 52.5]] and applied.echo["point_labels"] == [1]
    assert viewer.layers.selection.active is points  # the next click is a prompt again
    result = viewer.layers[POINTS_MASK]
    assert result is prepared
    assert result.data.shape == cell.shape and result.data.dtype == np.uint32
    np.testing.assert_array_equal(result.scale, image.scale)
    np.testing.assert_array_equal(result.translate, image.translate)
    assert_written_exactly(result.data, np.zeros_like(result.data), applied)

    # a box: its own layer and result layer; the box reaches the worker in (row, col)
    widget.box_button.click()
    boxes = viewer.layers[BOUNDING_BOX]
    assert boxes.mode == "add_rectangle" and BOX_MASK not in viewer.layers
    qtbot.waitUntil(lambda: BOX_MASK in viewer.layers, timeout=5000)
    assert viewer.layers.selection.active is boxes
    boxes.add_rectangles(np.array([[20, 30], [90, 110]]))
    applied = answer_of(widget, BOX, qtbot)
    assert applied.echo["box"] == [20.5, 30.5, 90.5, 110.5]
    box_result = viewer.layers[BOX_MASK]
    assert_written_exactly(box_result.data, np.zeros_like(box_result.data), applied)

    # AUTO-SEGMENT on the current slice, with progress, into AutoSeg_mask
    widget.controller.auto_settings = type(widget.controller.auto_settings)(
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,  # random weights: keep whatever it finds
    )
    widget.points_per_side.setValue(4)
    widget.auto_box.toggle_slice()
    assert not widget.progress_bar.isHidden() and widget.auto_button.text().startswith("Cancel")
    applied = answer_of(widget, AUTO, qtbot)
    qtbot.waitUntil(lambda: widget.progress_bar.isHidden(), timeout=5000)
    auto_layer = viewer.layers[AUTO_MASK]
    assert auto_layer.data.shape == cell.shape
    objects = applied.answer
    np.testing.assert_array_equal(auto_layer.data > 0, objects > 0)
    if applied.label_ids:  # object k got id k (the layer was empty): ids are 1..n
        np.testing.assert_array_equal(auto_layer.data, objects)
    # a second point in another object: a fresh id above all earlier ones, never reused
    widget.new_button.click()
    assert len(points.data) == 0
    before = result.data.copy()
    previous = widget.controller.applied[POINTS]
    points.add([120, 120])
    applied = answer_of(widget, POINTS, qtbot, after=previous)
    assert_written_exactly(result.data, before, applied)
    if applied.label_ids and previous.label_ids:
        assert applied.label_ids[0] == previous.label_ids[0] + 1


def reference(labels: np.ndarray, mask: np.ndarray, label_id: int, mode: LabelMode) -> np.ndarray:
    out = labels.copy()
    if mode in (LabelMode.INTERSECTION, LabelMode.OVERWRITE):
        out[(labels == label_id) & ~mask] = 0
    if mode is not LabelMode.INTERSECTION:
        out[mask] = label_id
    return out


def test_refine_modes_change_exactly_the_right_pixels(connected, cell, qtbot) -> None:
    viewer, image, widget, backend = connected(cell)
    widget.start_points()
    points = viewer.layers[PROMPT_POINTS]
    points.add([50, 50])  # Add mode first: the answer for this prompt (deterministic weights)
    probe = answer_of(widget, POINTS, qtbot).answer
    labels = viewer.add_labels(np.zeros(cell.shape, np.uint32), name="cells")
    start = np.zeros(cell.shape, np.uint32)
    start[30:90, 30:90] = 1  # the label to refine...
    start[~probe] = 1  # ...reaching where the mask is not: the modes then differ
    start[60:120, 60:120] = 2  # a neighbour it overlaps
    start[0:10, 0:10] = 3
    widget.refine_radio.setChecked(True)
    widget.refine_layer.set_layer(labels)
    widget.refine_id.setValue(1)
    assert len(points.data) == 0  # a new target: a new object, the points were cleared
    widget.box_button.click()  # refining: no result layer is made ahead (answers go to "cells")
    qtbot.wait(50)
    assert BOUNDING_BOX in viewer.layers and BOX_MASK not in viewer.layers
    widget.start_points()
    previous, results = None, {}
    for op in ("union", "intersection", "overwrite"):
        labels.data = start.copy()
        widget.refine_op.setCurrentText(op)  # a new mode: a new object, points cleared
        assert len(points.data) == 0 and widget.controller.mode is LabelMode(op)
        points.add([50, 50])
        applied = answer_of(widget, POINTS, qtbot, after=previous)
        previous = applied
        assert applied.layer_name == "cells" and applied.label_ids == (1,)
        np.testing.assert_array_equal(labels.data, reference(start, applied.answer, 1, LabelMode(op)))
        results[op] = labels.data.copy()
    if (~probe).any():
        assert len({r.tobytes() for r in results.values()}) == 3  # three different outcomes
    # a second point on the same object refines it again, sending the previous answer's logits
    points.add([70, 40])
    applied = answer_of(widget, POINTS, qtbot, after=previous)
    assert applied.mask_input and worker_info(backend)["last_prompt"]["mask_input"] is True
    assert len(applied.echo["points"]) == 2
    np.testing.assert_array_equal(labels.data, reference(start, applied.answer, 1, LabelMode.OVERWRITE))


def test_point_on_slice_k_of_a_scaled_stack_writes_only_slice_k(connected, cell, qtbot) -> None:
    stack = np.stack([np.roll(cell, 7 * k, axis=1).astype(np.uint16) * 200 for k in range(5)])
    viewer, image, widget, backend = connected(stack, scale=(2.0, 0.5, 0.25), translate=(10, 3, -4))
    viewer.dims.set_point(0, 10 + 2.0 * 3)  # world z of slice 3
    widget.start_points()
    points = viewer.layers[PROMPT_POINTS]
    world = np.array([10 + 2.0 * 3, 3 + 0.5 * 41.2, -4 + 0.25 * 77.6])
    points.add(points.world_to_data(world))
    applied = answer_of(widget, POINTS, qtbot)
    expected = image.world_to_data(world)
    assert applied.plane.index == (3, None, None)
    assert applied.echo["points"] == [pytest.approx([expected[1] + 0.5, expected[2] + 0.5])]
    assert worker_info(backend)["last_prompt"]["points"] == applied.echo["points"]
    result = viewer.layers[POINTS_MASK]
    assert result.data.shape == stack.shape
    others = np.delete(result.data, 3, axis=0)
    assert not others.any()  # only slice 3 is written
    assert_written_exactly(result.data[3], np.zeros_like(result.data[3]), applied)


def test_rapid_prompts_apply_only_the_newest_answer(connected, qtbot) -> None:
    # A crop of skimage's cell that no other test sends: its first click encodes (seconds), so the
    # clicks that follow arrive while it is in flight, as on a worker with a cold cache.
    fresh = np.ascontiguousarray(skdata.cell()[40:200, 20:180])
    viewer, image, widget, backend = connected(fresh)
    widget.start_points()
    points = viewer.layers[PROMPT_POINTS]
    segments_before = worker_info(backend)["counters"]["by_op"].get("segment", 0)
    for position in ([30, 40], [35, 45], [40, 50], [45, 55]):  # one object, four quick clicks
        points.add(position)
    applied = answer_of(widget, POINTS, qtbot)
    runner = widget.controller.session.runner(POINTS)
    assert len(applied.echo["points"]) == 4  # the newest prompt: all four points
    segments = worker_info(backend)["counters"]["by_op"].get("segment", 0) - segments_before
    assert segments == 2  # the first click, then only the newest of the rest
    assert runner.superseded >= 2 and runner.delivered == 1
    result = viewer.layers[POINTS_MASK]
    assert_written_exactly(result.data, np.zeros_like(result.data), applied)
    # the plugin's own edit of the prompt layer (clearing it) sends nothing
    widget.controller.new_object()
    qtbot.wait(300)
    assert not runner.busy
    assert worker_info(backend)["counters"]["by_op"].get("segment", 0) - segments_before == 2


def test_rgb_and_float_images_reach_the_worker(connected, cell, qtbot) -> None:
    rgb = np.stack([cell, cell[::-1], np.zeros_like(cell)], axis=-1)
    viewer, image, widget, backend = connected(rgb)
    assert image.rgb
    widget.start_points()
    viewer.layers[PROMPT_POINTS].add([20, 20])
    applied = answer_of(widget, POINTS, qtbot)
    assert applied.answer.shape == cell.shape
    floats = viewer.add_image(cell.astype(np.float64) / 255.0, name="float", contrast_limits=(0.1, 0.6))
    widget.image_combo.set_layer(floats)
    assert widget.controller.image is floats
    widget.start_points()  # a new image: the prompt layer is kept (same ndim), the object starts afresh
    viewer.layers[PROMPT_POINTS].add([60, 60])
    applied = answer_of(widget, POINTS, qtbot, after=applied)
    assert applied.answer.shape == cell.shape


def test_names_survive_export_and_reopen(make_napari_viewer, qtbot, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SAM2_BROKER_ADDRESS", free_endpoint())
    monkeypatch.setenv("SAM2_EMBEDDED", "0")
    viewer = make_napari_viewer()
    data = np.zeros((3, 40, 50), np.uint32)
    data[1, 5:15, 5:20] = 4
    data[1, 25:35, 30:45] = 9
    data[2, 0:5, 0:5] = 4
    labels = viewer.add_labels(data, name="nuclei", scale=(3, 1, 1))
    widget = SamWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SAM2 Segmentation")
    qtbot.waitUntil(lambda: "Not connected" in widget.status_label.text(), timeout=10_000)
    assert not widget.points_button.isEnabled()
    names = widget.names
    names.layer_combo.set_layer(labels)
    viewer.dims.set_point(0, 3.0)  # slice 1
    names.pick_button.click()  # then a click on a region chooses its label
    click = Event(
        type_name="mouse_press",
        position=(3.0, 30.0, 40.0),  # world (z, y, x): slice 1, row 30, col 40 -> label 9
        view_direction=None,
        dims_displayed=[1, 2],
        modifiers=[],
        is_dragging=False,
    )
    mouse_press_callbacks(viewer, click)
    assert names.label_id.value() == 9 and labels.mode == "pan_zoom"
    names.label_id.setValue(4)
    names.name_edit.setText("cell nucleus")
    names.name_button.click()
    assert labels.metadata[METADATA_KEY] == {4: "cell nucleus"}
    assert list(labels.features["name"]) == ["cell nucleus"]
    overlay = viewer.layers["nuclei names"]
    qtbot.waitUntil(lambda: len(overlay.data) == 1, timeout=2000)
    np.testing.assert_allclose(overlay.data[0], [1, 9.5, 12])  # the centroid on slice 1
    assert list(overlay.text.values) == ["cell nucleus"]
    # the labels change (as a SAM2 answer or a brush would): the name follows its region
    rows, cols = np.nonzero(labels.data[1] == 4)
    labels.data_setitem((np.ones_like(rows), rows, cols), 0)
    rows, cols = np.mgrid[36:40, 0:10]
    labels.data_setitem((np.ones(rows.size, int), rows.ravel(), cols.ravel()), 4)
    qtbot.waitUntil(lambda: np.allclose(overlay.data[0], [1, 37.5, 4.5]), timeout=2000)
    labels.data_setitem((np.ones(rows.size, int), rows.ravel(), cols.ravel()), 0)
    rows, cols = np.mgrid[5:15, 5:20]
    labels.data_setitem((np.ones(rows.size, int), rows.ravel(), cols.ravel()), 4)  # back again
    viewer.dims.set_point(0, 6.0)  # slice 2: the name moves with the slice
    qtbot.waitUntil(lambda: len(overlay.data) == 1 and overlay.data[0][0] == 2, timeout=2000)
    np.testing.assert_allclose(overlay.data[0], [2, 2, 2])

    widget.labels.layer_combo.set_layer(labels)
    written = widget.export_box.export(labels, tmp_path / "nuclei.tif")  # the Labels tab's Export box
    assert [p.name for p in written] == ["nuclei.tif", "nuclei.names.json", "nuclei.names.csv"]
    assert "4,cell nucleus,175" in written[2].read_text()
    # napari's File > Save Selected Layers goes through the npe2 writer: the same three files
    viewer.layers.selection = {labels}
    saved = viewer.layers.save(str(tmp_path / "via_napari.tif"), selected=True, plugin="napari-sam2-broker")
    assert sorted(Path(p).name for p in saved) == [
        "via_napari.names.csv",
        "via_napari.names.json",
        "via_napari.tif",
    ]
    assert json.loads((tmp_path / "via_napari.names.json").read_text())[METADATA_KEY] == {"4": "cell nucleus"}
    viewer.layers.clear()
    (reopened,) = viewer.open(str(written[0]), plugin="napari-sam2-broker")
    assert reopened.name == "nuclei" and type(reopened).__name__ == "Labels"
    np.testing.assert_array_equal(reopened.data, data)
    np.testing.assert_array_equal(reopened.scale, [3, 1, 1])
    assert reopened.metadata[METADATA_KEY] == {4: "cell nucleus"}
    qtbot.waitUntil(lambda: "nuclei names" in viewer.layers, timeout=2000)
    assert list(viewer.layers["nuclei names"].text.values) == ["cell nucleus"]


def test_embedded_backend_starts_and_stops_with_napari(make_napari_viewer, qtbot, monkeypatch) -> None:
    address = free_endpoint()  # a local address where no broker answers
    monkeypatch.setenv("SAM2_BROKER_ADDRESS", address)
    monkeypatch.setenv("SAM2_RANDOM_WEIGHTS", "1")
    monkeypatch.delenv("SAM2_EMBEDDED", raising=False)
    viewer = make_napari_viewer()
    widget = SamWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SAM2 Segmentation")
    qtbot.waitUntil(lambda: widget.controller.session is not None, timeout=180_000)
    assert widget.status.embedded and widget.status.on_cpu and widget.status.info["random_weights"]
    text = widget.status_label.text()
    assert "embedded local backend" in text and "CPU" in text and "RANDOM WEIGHTS" in text
    procs = list(widget.local.procs.values())
    assert len(procs) == 2 and all(p.poll() is None for p in procs)
    try:
        viewer.close()
        assert wait_until(lambda: all(p.poll() is not None for p in procs), 15)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)


def test_backend_errors_become_notifications_and_the_status_follows(connected, cell, qtbot) -> None:
    from napari.utils.notifications import NotificationSeverity, notification_manager

    viewer, image, widget, backend = connected(cell, service_wait_s=1.0)  # no_worker 1 s after the last left
    widget.negative.setChecked(True)  # the toggle: the next point is negative, drawn in another colour
    widget.start_points()
    points = viewer.layers[PROMPT_POINTS]
    points.add([30, 30])
    assert list(points.features["polarity"]) == ["negative"]
    np.testing.assert_allclose(points.face_color[0], [1, 0, 1, 1])  # magenta, positives are green
    applied = answer_of(widget, POINTS, qtbot)
    assert applied.echo["point_labels"] == [0]

    backend.workers[0].send_signal(signal.SIGKILL)  # the only worker dies
    backend.workers[0].wait(10)
    seen = len(notification_manager.records)
    widget.negative.setChecked(False)
    widget.new_button.click()
    points.add([60, 60])

    def error_shown() -> bool:
        return any(
            n.severity == NotificationSeverity.ERROR and "SAM2 backend error (no_worker)" in n.message
            for n in notification_manager.records[seen:]
        )

    qtbot.waitUntil(error_shown, timeout=40_000)
    assert widget.controller.applied[POINTS] is applied  # nothing was written
    widget.refresh_status()
    qtbot.waitUntil(lambda: not widget.points_button.isEnabled(), timeout=10_000)
    assert "no live sam2.1_hiera_tiny worker" in widget.status_label.text()
    backend.add_worker()  # a worker comes back: prompts are enabled again
    widget.refresh_status()
    qtbot.waitUntil(lambda: widget.points_button.isEnabled(), timeout=10_000)
