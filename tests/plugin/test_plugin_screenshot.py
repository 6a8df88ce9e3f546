"""A SHOWN viewer (under Xvfb) with the plugin docked, masks and named regions: screenshot and check.

Saves ``tests/artifacts/plugin_canvas.png`` (the canvas),
``tests/artifacts/plugin_window.png`` (the whole window, with the dock widget),
``tests/artifacts/plugin_labels_tab.png`` (the label list) and
``tests/artifacts/plugin_backend_tab.png`` (the backend events).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from skimage import io, measure

from plugin.labels.names import METADATA_KEY
from plugin.labels.ops import LabelMode, compute_edit
from plugin.view.layers import POINTS_MASK, ensure_labels, plane_of, slice_view, spatial_shape, write_edit
from tests.support.marks import GUI_TEST_MARKS
from tests.support.plugin_helpers import wait_for_redraws
from tests.support.standin_backend import SERVICE, StandinBackend

pytestmark = GUI_TEST_MARKS

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


class CanvasMap:
    """Data (row, col) of the shown 2D image -> screenshot pixel, from where the image lies on the canvas."""

    def __init__(self, shot: np.ndarray, shape: tuple[int, int]) -> None:
        lit = shot[..., :3].max(axis=-1) > 10  # the canvas background is black, the image is not
        rows, cols = np.flatnonzero(lit.any(axis=1)), np.flatnonzero(lit.any(axis=0))
        self.top, self.left = rows[0], cols[0]
        self.step = ((rows[-1] + 1 - rows[0]) / shape[0], (cols[-1] + 1 - cols[0]) / shape[1])

    def __call__(self, row: float, col: float) -> tuple[int, int]:
        return int(self.top + (row + 0.5) * self.step[0]), int(self.left + (col + 0.5) * self.step[1])


def brightened(after: np.ndarray, before: np.ndarray, center: tuple[int, int], half: tuple[int, int]) -> int:
    """Pixels around ``center`` that turned near-white (text) between two screenshots."""
    r, c = center
    window = np.s_[max(r - half[0], 0) : r + half[0], max(c - half[1], 0) : c + half[1], :3]
    now, then = after[window].astype(int), before[window].astype(int)
    return int(((now.min(axis=-1) > 200) & ((now - then).min(axis=-1) > 60)).sum())


def test_screenshot_shows_masks_and_names(make_napari_viewer, spawn, qtbot, monkeypatch) -> None:
    # The masks are written here, not answered: the widget needs a live backend, not SAM2's weights
    # (a stand-in worker starts in about two seconds, a SAM2 worker in ten or more).
    backend = StandinBackend(spawn, workers=1)
    monkeypatch.setenv("SAM2_BROKER_ADDRESS", backend.frontend)
    monkeypatch.setenv("SAM2_MODEL", SERVICE)
    monkeypatch.setenv("SAM2_EMBEDDED", "0")
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    (image,) = viewer.open_sample("napari-sam2-broker", "cell")  # via the npe2 manifest
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-sam2-broker", "SAM2 Segmentation")
    qtbot.waitUntil(lambda: widget.controller.session is not None, timeout=30_000)
    assert widget.controller.image is image

    # two masks, written the way answers are: a fresh id each, through the plugin's label ops
    labels = ensure_labels(viewer, image, POINTS_MASK)
    plane = plane_of(viewer, image, spatial_shape(image))
    cell = measure.label(image.data > 150)
    cell_mask = cell == np.argmax(np.bincount(cell.ravel())[1:]) + 1
    debris = np.zeros_like(cell_mask)
    debris[40:150, 230:400] = True
    for label_id, mask in ((1, cell_mask), (2, debris)):
        edit, _ = compute_edit(slice_view(labels, plane), mask, label_id, LabelMode.ADD)
        write_edit(labels, plane, edit)
    viewer.reset_view()
    viewer.layers.selection.active = labels
    qtbot.wait(300)
    before = viewer.screenshot(canvas_only=True, flash=False)

    names = widget.names
    names.layer_combo.set_layer(labels)
    for label_id, name in ((1, "cell"), (2, "debris")):
        names.label_id.setValue(label_id)
        names.name_edit.setText(name)
        names.name_button.click()
    assert labels.metadata[METADATA_KEY] == {1: "cell", 2: "debris"}
    overlay = viewer.layers[f"{POINTS_MASK} names"]
    qtbot.waitUntil(lambda: len(overlay.data) == 2, timeout=3000)
    viewer.layers.selection.active = labels
    qtbot.wait(500)
    shot = viewer.screenshot(canvas_only=True, flash=False)
    window = viewer.screenshot(canvas_only=False, flash=False)
    ARTIFACTS.mkdir(exist_ok=True)
    io.imsave(ARTIFACTS / "plugin_canvas.png", shot, check_contrast=False)
    io.imsave(ARTIFACTS / "plugin_window.png", window, check_contrast=False)

    to_canvas = CanvasMap(before, image.data.shape)
    assert abs(to_canvas.step[0] - to_canvas.step[1]) < 0.05  # square pixels: the map is right
    for label_id, mask in ((1, cell_mask), (2, debris)):
        rows, cols = np.nonzero(mask)
        at = to_canvas(rows.mean(), cols.mean())
        # the name is drawn at the centroid: white text pixels appear there
        gained = brightened(shot, before, at, (15, 50))
        assert gained > 30, (label_id, at, gained)
        assert brightened(shot, before, (at[0] + 80, at[1]), (15, 50)) == 0  # nothing below it
        # the region is drawn in its label colour: saturated pixels where the image is grey
        inside = to_canvas(rows.mean() + 25, cols.mean())
        patch = shot[inside[0] - 3 : inside[0] + 3, inside[1] - 3 : inside[1] + 3, :3].astype(int)
        colour = np.asarray(labels.get_color(label_id))[:3] * 255
        saturation = (patch.max(axis=-1) - patch.min(axis=-1)).mean()
        assert saturation > 25, (label_id, patch.mean(axis=(0, 1)), colour)
        brightest = int(np.argmax(colour))
        assert np.argmax(patch.mean(axis=(0, 1))) == brightest, (patch.mean(axis=(0, 1)), colour)
    # away from both regions the image stays grey
    far = to_canvas(600, 60)
    patch = shot[far[0] - 3 : far[0] + 3, far[1] - 3 : far[1] + 3, :3].astype(int)
    assert (patch.max(axis=-1) - patch.min(axis=-1)).mean() < 8
    assert "1 worker(s)" in widget.status_label.text()

    # the Labels tab: the list of the layer's labels, one selected; then the Backend tab
    widget.tabs.setCurrentIndex(1)
    widget.labels.layer_combo.set_layer(labels)
    wait_for_redraws(qtbot, widget)
    table = widget.labels.model
    rows = [tuple(table.cell(r, c) for c in (1, 2, 3)) for r in range(table.rowCount())]
    assert rows == [("1", "cell", f"{cell_mask.sum():,}"), ("2", "debris", f"{debris.sum():,}")]
    widget.labels.select(2)
    qtbot.wait(300)
    io.imsave(ARTIFACTS / "plugin_labels_tab.png", viewer.screenshot(canvas_only=False, flash=False))
    swatch = table.cell(1, 0, Qt.ItemDataRole.DecorationRole)
    colour = np.asarray(labels.get_color(2))[:3] * 255
    assert np.allclose([swatch.red(), swatch.green(), swatch.blue()], colour, atol=2)
    answers: list = []
    session = widget.controller.session
    session.submit("info", lambda client: client.call("info"), answers.append, answers.append)
    qtbot.waitUntil(lambda: bool(answers), timeout=30_000)
    widget.tabs.setCurrentIndex(2)
    qtbot.waitUntil(lambda: widget.events_panel.rows()[0][2] == "info", timeout=5000)
    io.imsave(ARTIFACTS / "plugin_backend_tab.png", viewer.screenshot(canvas_only=False, flash=False))
    assert widget.events_panel.rows()[-1][1] == "connect"
