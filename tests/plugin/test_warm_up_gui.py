"""The widget's warm-up of napari's text glyphs, in a shown viewer (plugin/view/layers.py)."""

from __future__ import annotations

import numpy as np
from napari._vispy.utils.qt_font import QtTextureFont

from plugin._qt.widget import SamWidget
from plugin.view.layers import PROMPT_POINTS, TEXT_METRIC_CHARS
from tests.support.marks import GUI_TEST_MARKS

pytestmark = GUI_TEST_MARKS


def test_after_the_widget_docks_the_first_prompt_layer_draws_without_loading_glyphs(
    make_napari_viewer, qtbot
) -> None:
    """The glyphs vispy's Text visual measures are loaded on a turn after the dock, so the first
    Points layer's first draw (Point prompts) loads none."""
    loaded: list[str] = []
    real = QtTextureFont._load_char

    def counted(self, char: str) -> None:
        loaded.append(char)
        real(self, char)

    QtTextureFont._load_char = counted
    try:
        viewer = make_napari_viewer(show=True)
        viewer.add_image(np.zeros((256, 256), np.uint8))
        widget = SamWidget(viewer)
        viewer.window.add_dock_widget(widget)
        qtbot.waitUntil(lambda: set(TEXT_METRIC_CHARS) <= set(loaded), timeout=5000)
        loaded.clear()
        widget.start_points()
        qtbot.waitUntil(lambda: PROMPT_POINTS in viewer.layers, timeout=5000)
        for _ in range(5):  # its first draws
            viewer.window._qt_viewer.canvas.native.repaint()
            qtbot.wait(20)
        assert loaded == []
    finally:
        QtTextureFont._load_char = real
