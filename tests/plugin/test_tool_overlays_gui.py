"""napari's polygon and brush tools on the plugin's result layers, whose tool visuals are made on first use.

``plugin.view.layers.defer_tool_overlays`` hides a new result layer's polygon and
brush-stroke overlays so that adding the layer does not build their vispy visuals;
picking the tool must build them, and the tools must then paint as napari's own do.
Driven here with real mouse and key events on a shown viewer's canvas (Xvfb).
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QPoint, Qt

from plugin.view.layers import POINTS_MASK, defer_tool_overlays, ensure_labels
from tests.support.marks import GUI_TEST_MARKS

pytestmark = GUI_TEST_MARKS


def tool_visuals(viewer, layer) -> set[str]:
    """Names of ``layer``'s tool overlays that have a vispy visual on the canvas."""
    made = viewer.window._qt_viewer.canvas._layer_overlay_to_visual.get(layer, {})
    return {name for name in ("polygon", "brush_stroke") if layer._overlays[name] in made}


def canvas_point(viewer, row: float, col: float) -> QPoint:
    """Where data (row, col) of a 2D layer without transform is on the canvas widget."""
    canvas = viewer.window._qt_viewer.canvas
    x, y = canvas.view.scene.transform.map([col, row])[:2]
    return QPoint(round(x), round(y))


def test_result_layer_tools_are_built_when_picked_and_paint(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(900, 700)
    image = viewer.add_image(np.zeros((64, 64), np.uint8))
    labels = ensure_labels(viewer, image, POINTS_MASK)
    viewer.reset_view()
    qtbot.wait(100)
    assert tool_visuals(viewer, labels) == set(), "adding the layer built the tool visuals"

    viewer.layers.selection.active = labels
    native = viewer.window._qt_viewer.canvas.native
    labels.selected_label = 3
    labels.brush_size = 3
    labels.mode = "paint"
    assert tool_visuals(viewer, labels) == {"brush_stroke"}
    start, end = canvas_point(viewer, 10.5, 10.5), canvas_point(viewer, 10.5, 30.5)
    qtbot.mousePress(native, Qt.MouseButton.LeftButton, pos=start)
    for t in np.linspace(0.0, 1.0, 8):
        qtbot.mouseMove(native, QPoint(round(start.x() + t * (end.x() - start.x())), start.y()))
        qtbot.wait(10)
    qtbot.mouseRelease(native, Qt.MouseButton.LeftButton, pos=end)
    qtbot.waitUntil(lambda: bool((labels.data[10, 12:29] == 3).all()), timeout=5_000)
    assert not (labels.data[40:] != 0).any()

    labels.selected_label = 5
    labels.mode = "polygon"
    assert tool_visuals(viewer, labels) == {"brush_stroke", "polygon"}
    for row, col in ((40.5, 40.5), (40.5, 55.5), (55.5, 55.5), (55.5, 40.5)):
        qtbot.mouseClick(native, Qt.MouseButton.LeftButton, pos=canvas_point(viewer, row, col))
        qtbot.wait(20)
    native.setFocus()
    qtbot.keyClick(native, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: labels.data[47, 47] == 5, timeout=5_000)
    assert labels.data[20, 47] == 0 and labels.data[10, 20] == 3


def test_a_layer_already_in_a_tool_mode_builds_that_tool() -> None:
    from napari.layers import Labels

    layer = Labels(np.zeros((8, 8), np.uint32))
    layer.mode = "paint"
    defer_tool_overlays(layer)
    assert layer._overlays["brush_stroke"].visible
    assert not layer._overlays["polygon"].visible
    layer.mode = "polygon"
    assert layer._overlays["polygon"].visible
