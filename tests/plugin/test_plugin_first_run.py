"""What a new user hit on a first run, through the dock widget in a real napari viewer.

Tests that need answers talk to a real broker and a deterministic stand-in
worker (``python -m workers --model standin-blobs``, one for the module): what they check
is the plugin's (where prompts go, refusals, minimum area, keep-labels); the
real SAM2 worker's answers in the widget are tested in test_plugin_widget.py.
The others need no backend (the widget then says it is not connected, which
is what they check around).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from bench.discs import disc_image
from plugin._qt.widget import SamWidget
from plugin.jobs.controller import AUTO, POINTS
from plugin.view.layers import BOUNDING_BOX, POINTS_MASK, PROMPT_POINTS, plane_of
from plugin.view.picking import PICK_CURSOR, PICK_HELP, PICK_WAITING
from tests.support.marks import GUI_TEST_MARKS
from tests.support.plugin_helpers import cell, click_point, dock_widget, wait_for_redraws
from tests.support.processes import ProcessSpawner, free_endpoint
from tests.support.standin_backend import SERVICE, StandinBackend

pytestmark = GUI_TEST_MARKS

TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def shared_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandinBackend]:
    """One broker + one stand-in worker for the module's tests that need answers (0.3 s per auto
    request, so a running AUTO-SEGMENT STACK is still running a moment later)."""
    spawner = ProcessSpawner(tmp_path_factory.mktemp("first_run_backend"))
    try:
        yield StandinBackend(spawner, 1, delay_s=0.3)
    finally:
        spawner.stop_all()


@pytest.fixture
def offline(make_napari_viewer, qtbot, monkeypatch) -> Callable[[], tuple]:
    """Factory: a viewer and the dock widget with no backend to talk to."""

    def factory() -> tuple:
        monkeypatch.setenv("SAM2_BROKER_ADDRESS", free_endpoint())
        monkeypatch.setenv("SAM2_EMBEDDED", "0")
        viewer = make_napari_viewer()
        widget = SamWidget(viewer)
        viewer.window.add_dock_widget(widget, name="SAM2 Segmentation")
        qtbot.waitUntil(lambda: "Not connected" in widget.status_label.text(), timeout=10_000)
        return viewer, widget

    return factory


@pytest.fixture
def connect(make_napari_viewer, qtbot, monkeypatch) -> Callable[..., tuple]:
    """Factory: a viewer with ``image``, the dock widget connected to ``backend``."""

    def factory(backend: StandinBackend, image: np.ndarray, **kwargs) -> tuple:
        viewer = make_napari_viewer()
        layer = viewer.add_image(image, **kwargs)
        widget = dock_widget(viewer, qtbot, monkeypatch, backend.frontend, SERVICE)
        return viewer, layer, widget

    return factory


def notes_of(widget: SamWidget) -> list[tuple[str, str]]:
    """Record the controller's notifications (level, message) from now on."""
    notes: list[tuple[str, str]] = []
    widget.controller.notify = lambda level, message: notes.append((level, message))
    return notes


# -- memory ---------------------------------------------------------------------------------------


def rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def test_deleted_layers_give_their_memory_back(offline, qtbot) -> None:
    viewer, widget = offline()
    controller = widget.controller
    size = 4000
    objects = np.zeros((size, size), np.uint32)
    objects[200:1200, 200:1200] = 1  # an AUTO-SEGMENT answer: two objects, 1.25 M pixels
    objects[2000:2500, 2000:2500] = 2
    readings = []
    for round_ in range(5):  # a leak of only the history (30 MB a round) grows 120 MB: over 10 %
        labels = viewer.add_labels(np.zeros((size, size), np.uint32), name=f"big {round_}")
        widget.labels.layer_combo.set_layer(labels)  # the Labels tab follows it
        plane = plane_of(viewer, labels, labels.data.shape)
        ids, pixels = controller.results.paste_auto(labels, plane, objects)  # history, ids, watchers
        assert ids == (1, 2) and pixels == 1_250_000
        widget.names.layer_combo.set_layer(labels)
        widget.names.label_id.setValue(1)
        widget.names.name_edit.setText("cell")
        widget.names.name_button.click()  # a name table and a names overlay
        qtbot.waitUntil(lambda la=labels: f"{la.name} names" in viewer.layers, timeout=5000)
        wait_for_redraws(qtbot, widget)  # the table and the overlay
        assert widget.labels.model.rowCount() == 2
        viewer.layers.remove(labels)
        del labels
        wait_for_redraws(qtbot, widget)
        readings.append(rss_mb())
    growth = readings[-1] - readings[0]
    assert growth < 0.1 * readings[0], readings  # each round held 64 MB of labels and 30 MB of history
    assert "big 4 names" not in viewer.layers and len(viewer.layers) == 0
    assert len(controller.histories) == 0 and len(controller.tracker) == 0
    assert not controller.objects and not controller.prompt_layers.watched and controller.last_written is None
    assert widget.labels.layer is None and widget.labels.model.rowCount() == 0
    assert not widget.names.overlays


# -- the Image box follows the user --------------------------------------------------------------


def test_prompts_go_to_the_image_the_user_adds_or_selects(shared_backend, connect, qtbot) -> None:
    viewer, first, widget = connect(shared_backend, cell(96), name="first")
    click_point(widget, qtbot, [40, 40])
    assert widget.controller.applied[POINTS].layer_name == POINTS_MASK
    assert "on first" in widget.result.text()
    second = viewer.add_image(cell(64, shift=30), name="second")  # added: prompts go to it
    assert widget.image_combo.layer() is second and widget.controller.image is second
    assert "second" in widget.result.text()
    viewer.layers.selection.active = first  # selected in the layer list: prompts go to it
    assert widget.controller.image is first
    viewer.layers.selection.active = second
    assert widget.image_combo.layer() is second and widget.controller.image is second
    click_point(widget, qtbot, [30, 30])
    applied = widget.controller.applied[POINTS]
    assert applied.layer_name == f"{POINTS_MASK} (second)"
    assert viewer.layers[applied.layer_name].data.shape == (64, 64)
    assert "on second" in widget.result.text() and f"{POINTS_MASK} (second)" in widget.result.text()


# -- Point prompts explain themselves -------------------------------------------------------------


def test_point_prompts_without_an_image_or_with_the_layer_hidden_say_why(offline, qtbot) -> None:
    viewer, widget = offline()
    notes = notes_of(widget)
    widget.start_points()  # no image yet: a clear message, no layer
    assert PROMPT_POINTS not in viewer.layers
    assert notes[-1][0] == "warning" and notes[-1][1].startswith("Point prompts: open an image first")
    widget.start_box()
    assert BOUNDING_BOX not in viewer.layers and notes[-1][1].startswith("Box prompts: open an image first")
    viewer.add_image(cell(64))
    widget.start_points()
    points = viewer.layers[PROMPT_POINTS]
    assert points.visible and points.mode == "add"
    points.visible = False  # the user hides it: clicks would do nothing, so the plugin says so
    assert notes[-1][0] == "info" and f"{PROMPT_POINTS} is hidden" in notes[-1][1]
    viewer.layers.selection.active = viewer.layers[0]
    widget.start_points()  # pressing Point prompts shows it again and says so
    assert points.visible and viewer.layers.selection.active is points and points.mode == "add"
    assert "shown again" in notes[-1][1]


# -- prompt layers follow the image -------------------------------------------------------------------


def test_prompt_layers_follow_the_current_images_transform_and_dimensions(offline, qtbot) -> None:
    viewer, widget = offline()
    notes = notes_of(widget)
    small = viewer.add_image(cell(64), name="quarter", scale=(0.25, 0.25), translate=(5, 5))
    widget.start_points()
    widget.start_box()
    points = viewer.layers[PROMPT_POINTS]
    np.testing.assert_allclose(points.scale, [0.25, 0.25])
    points.add([10, 10])
    plain = viewer.add_image(cell(64, shift=20), name="plain")  # scale 1: prompts must follow it
    assert widget.controller.image is plain
    points = viewer.layers[PROMPT_POINTS]
    np.testing.assert_allclose(points.scale, plain.scale)
    np.testing.assert_allclose(points.translate, plain.translate)
    np.testing.assert_allclose(viewer.layers[BOUNDING_BOX].scale, plain.scale)
    assert len(points.data) == 0 and any(
        "rebuilt for plain" in m and "1 earlier prompt" in m for _, m in notes
    )
    widget.start_points()
    points.add([30, 30])  # drawn at the image's scale: as wide as 4 of its pixels, not 1 of the old one's
    world_size = float(np.asarray(points.size)[0]) * float(points.scale[-1])
    assert world_size >= 4 * float(plain.scale[-1])
    viewer.layers.selection.active = small
    assert widget.controller.image is small
    np.testing.assert_allclose(viewer.layers[PROMPT_POINTS].scale, small.scale)

    seen = len(notes)
    stack = viewer.add_image(np.stack([cell(64)] * 3), name="stack")  # 3D: no silent deletion
    assert widget.controller.image is stack
    assert viewer.layers[PROMPT_POINTS].ndim == 3 and viewer.layers[BOUNDING_BOX].ndim == 3
    said = [m for _, m in notes[seen:]]
    assert any(f"{PROMPT_POINTS} was rebuilt for stack (3D instead of 2D)" in m for m in said), said
    assert any(f"{BOUNDING_BOX} was rebuilt for stack (3D instead of 2D)" in m for m in said), said
    assert viewer.layers.selection.active is stack  # the user's selection is kept


# -- the names summary follows renames -----------------------------------------------------------------


def test_names_summary_follows_a_rename_in_the_labels_table(offline, qtbot) -> None:
    viewer, widget = offline()
    data = np.zeros((40, 40), np.uint32)
    data[2:10, 2:10], data[20:30, 20:30] = 1, 2
    labels = viewer.add_labels(data, name="cells")
    widget.names.layer_combo.set_layer(labels)
    widget.names.label_id.setValue(2)
    widget.names.name_edit.setText("debris")
    widget.names.name_button.click()
    assert widget.names.names_label.text() == "2: debris"
    widget.labels.layer_combo.set_layer(labels)
    wait_for_redraws(qtbot, widget)  # the table's
    table = widget.labels.model
    row = [table.cell(r, 1) for r in range(table.rowCount())].index("2")
    table.setData(table.index(row, 2), "cell fragment")  # renamed in the Labels tab
    assert widget.names.names_label.text() == "2: cell fragment"
    # names also follow a delete and its undo
    widget.labels.select(2)
    widget.labels.delete_button.click()
    assert widget.names.names_label.text() == "No named labels yet."
    wait_for_redraws(qtbot, widget)
    widget.labels.undo_button.click()
    assert widget.names.names_label.text() == "2: cell fragment"


# -- one AUTO-SEGMENT at a time -------------------------------------------------------------------------


def test_auto_segment_is_refused_while_the_stack_runs_and_the_reverse(shared_backend, connect, qtbot) -> None:
    viewer, image, widget = connect(shared_backend, np.stack([cell(64, shift=9 * k) for k in range(3)]))
    notes = notes_of(widget)
    widget.points_per_side.setValue(2)
    box = widget.auto_box
    box.stack_button.click()
    assert box.stack_task.running
    box.auto_button.click()  # a slice while the stack runs: refused at once, with the reason
    assert not box.slice_task.running and box.auto_button.text() == "AUTO-SEGMENT"
    assert notes[-1][0] == "warning" and "AUTO-SEGMENT STACK is running" in notes[-1][1]
    box.stack_button.click()  # cancel the stack
    qtbot.waitUntil(lambda: not box.stack_task.running, timeout=TIMEOUT_MS)
    widget.controller.session.wait_idle(30)

    box.auto_button.click()  # the reverse: a stack while a slice runs is refused too
    assert box.slice_task.running
    shown = viewer.dims.current_step[0]  # named by its index, not "slice (1, None, None)"
    assert box.progress_bar.format() == f"AUTO-SEGMENT: sending slice {shown} to the backend…"
    box.stack_button.click()
    assert not box.stack_task.running and "AUTO-SEGMENT is running on a slice" in notes[-1][1]
    qtbot.waitUntil(lambda: not box.slice_task.running, timeout=TIMEOUT_MS)
    assert AUTO in widget.controller.applied  # the slice's answer was written


# -- minor -------------------------------------------------------------------------------------------


def table_rows(widget: SamWidget, qtbot) -> list[tuple[int, int]]:
    wait_for_redraws(qtbot, widget)  # the table's
    table = widget.labels.model
    return [(int(table.cell(r, 1)), int(table.cell(r, 3).replace(",", ""))) for r in range(table.rowCount())]


def test_a_label_undone_by_napari_leaves_the_labels_table(offline, qtbot) -> None:
    viewer, widget = offline()
    labels = viewer.add_labels(np.zeros((40, 40), np.uint32), name="cells")
    widget.labels.layer_combo.set_layer(labels)
    objects = np.zeros((40, 40), np.uint32)
    objects[5:10, 5:10] = 1
    plane = plane_of(viewer, labels, (40, 40))
    widget.controller.results.paste_auto(labels, plane, objects)  # as AUTO-SEGMENT
    assert table_rows(widget, qtbot) == [(1, 25)]
    labels.undo()  # napari's own undo (its menu, a script), not the plugin's keys
    assert table_rows(widget, qtbot) == []
    labels.redo()
    assert table_rows(widget, qtbot) == [(1, 25)]
    widget.labels.undo_button.click()  # and the plugin's own undo, as before
    assert table_rows(widget, qtbot) == [] and not labels.data.any()


def test_export_dialog_opens_where_the_image_came_from(offline, qtbot, tmp_path, monkeypatch) -> None:
    import tifffile

    viewer, widget = offline()
    folder = tmp_path / "experiment 1"
    folder.mkdir()
    tifffile.imwrite(folder / "cells.tif", cell(48))
    asked: list[str] = []

    def dialog(_parent, _title, start, _filter, **_options):
        asked.append(start)
        return "", ""  # the user cancels

    monkeypatch.setattr("plugin._qt.export_widget.QFileDialog.getSaveFileName", dialog)
    labels = viewer.add_labels(np.zeros((48, 48), np.uint32), name="nuclei")
    widget.labels.layer_combo.set_layer(labels)
    widget.export_box.export_button.click()  # no file anywhere: the home folder
    assert Path(asked[-1]).parent == Path.home() and Path(asked[-1]).name.startswith("nuclei.")
    viewer.open(str(folder / "cells.tif"), plugin="napari")
    widget.labels.layer_combo.set_layer(labels)
    widget.export_box.export_button.click()  # the image's folder
    assert Path(asked[-1]).parent == folder and Path(asked[-1]).name.startswith("nuclei.")


def test_pick_shows_it_waits_and_gives_back_the_active_layer(offline, qtbot) -> None:
    from napari.utils.events import Event
    from napari.utils.interactions import mouse_press_callbacks

    viewer, widget = offline()
    image = viewer.add_image(cell(40))
    data = np.zeros((40, 40), np.uint32)
    data[10:20, 10:20] = 7
    labels = viewer.add_labels(data, name="cells")
    viewer.layers.selection.active = image
    names = widget.names
    names.layer_combo.set_layer(labels)
    names.pick_button.click()
    assert names.pick_button.text() == PICK_WAITING and viewer.help == PICK_HELP
    assert viewer.layers.selection.active is labels and labels.cursor == PICK_CURSOR
    click = Event(
        type_name="mouse_press",
        position=(15.0, 15.0),
        view_direction=None,
        dims_displayed=[0, 1],
        modifiers=[],
        is_dragging=False,
    )
    mouse_press_callbacks(viewer, click)
    assert names.label_id.value() == 7
    assert viewer.layers.selection.active is image  # the layer the user worked on is active again
    assert names.pick_button.text() == "Pick" and viewer.help != PICK_HELP and labels.cursor != PICK_CURSOR
    # the Refine box's Pick too
    widget.refine_radio.setChecked(True)
    widget.refine_layer.set_layer(labels)
    viewer.layers.selection.active = image
    widget.pick_button.click()
    assert widget.pick_button.text() == PICK_WAITING
    mouse_press_callbacks(viewer, click)
    assert widget.refine_id.value() == 7 and viewer.layers.selection.active is image
    assert widget.pick_button.text() == "Pick"


# -- expectations: AUTO-SEGMENT settings, "Add without overwriting" ------------------------------------------


def test_auto_settings_and_overwriting_are_kept_between_napari_runs(offline, qtbot) -> None:
    viewer, widget = offline()
    box = widget.auto_box
    assert widget.keep_labels.isChecked() and widget.controller.results.only_background  # on by default
    box.iou_thresh.setValue(0.5)
    box.stability_thresh.setValue(0.7)
    box.min_area.setValue(30)
    widget.keep_labels.setChecked(False)
    settings = widget.controller.auto_settings
    assert (settings.pred_iou_thresh, settings.stability_score_thresh, settings.min_area) == (0.5, 0.7, 30)
    assert settings.params()["pred_iou_thresh"] == 0.5 and settings.params()["stability_score_thresh"] == 0.7
    assert not widget.controller.results.only_background
    viewer.close()

    viewer, widget = offline()  # the next run of napari
    box = widget.auto_box
    assert (box.iou_thresh.value(), box.stability_thresh.value(), box.min_area.value()) == (0.5, 0.7, 30)
    settings = widget.controller.auto_settings
    assert (settings.pred_iou_thresh, settings.stability_score_thresh, settings.min_area) == (0.5, 0.7, 30)
    assert not widget.keep_labels.isChecked() and not widget.controller.results.only_background


def test_auto_segment_settings_and_add_without_overwriting_with_a_backend(
    shared_backend, connect, qtbot
) -> None:
    """Minimum area and keep-labels act on the answer in the plugin; the stand-in's objects are
    the discs, so the first answer is known."""
    from plugin.view.layers import AUTO_MASK

    discs, truth = disc_image((64, 64), np.array([[16.0, 16.0], [44.0, 40.0]]), np.array([8.0, 12.0]))
    viewer, image, widget = connect(shared_backend, discs)
    box = widget.auto_box
    box.points_per_side.setValue(4)
    box.iou_thresh.setValue(0.0)
    box.stability_thresh.setValue(0.0)

    def run() -> object:
        previous = widget.controller.applied.get(AUTO)
        box.auto_button.click()
        qtbot.waitUntil(lambda: not box.slice_task.running, timeout=TIMEOUT_MS)
        applied = widget.controller.applied.get(AUTO)
        assert applied is not None and applied is not previous
        return applied

    first = run()
    layer = viewer.layers[AUTO_MASK]
    assert first.label_ids == (1, 2)
    written = layer.data.copy()
    np.testing.assert_array_equal(written > 0, truth > 0)
    np.testing.assert_array_equal(written > 0, first.answer > 0)
    box.min_area.setValue(64 * 64 + 1)  # every object is smaller: nothing is written
    again = run()
    assert again.label_ids == () and again.pixels == 0
    np.testing.assert_array_equal(layer.data, written)
    box.min_area.setValue(0)
    same = run()  # the same objects again: they only fill background, and there is none left under them
    assert same.pixels == 0
    np.testing.assert_array_equal(layer.data, written)
    widget.keep_labels.setChecked(False)  # overwriting allowed: the new objects paint over the old ones
    over = run()
    assert over.pixels > 0 and min(over.label_ids) > int(written.max())
    np.testing.assert_array_equal(layer.data > 0, first.answer > 0)
    assert not np.isin(layer.data[layer.data > 0], np.unique(written[written > 0])).any()
