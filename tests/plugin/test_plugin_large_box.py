"""A large box in napari (issue 23, item 2): before sending, the plugin says the resolution one request
would see it at and offers full resolution; full resolution segments the box tile by tile and pastes
one exact label. A real viewer under Xvfb, real broker and stand-in worker processes, a synthetic
object whose right answer is known (tests/support/box_objects.py)."""

from __future__ import annotations

import numpy as np

from plugin.jobs.box_tiles import FULL, ONE
from plugin.jobs.controller import BOX
from plugin.view.layers import BOUNDING_BOX, BOX_MASK
from protocol.ops.tiled_box import BoxView
from tests.support.box_objects import BOX as BOX_RECT
from tests.support.box_objects import large_object
from tests.support.marks import GUI_TEST_MARKS
from tests.support.plugin_helpers import dock_widget
from tests.support.standin_backend import SERVICE, StandinBackend

pytestmark = GUI_TEST_MARKS

TIMEOUT_MS = 60_000


def draw_box(widget, qtbot, rect: list[float]) -> None:
    previous = widget.controller.applied.get(BOX)
    widget.start_box()
    r0, c0, r1, c1 = rect
    widget.viewer.layers[BOUNDING_BOX].add_rectangles(np.array([[r0, c0], [r1, c1]]))
    qtbot.waitUntil(lambda: widget.controller.applied.get(BOX) not in (None, previous), timeout=TIMEOUT_MS)


def test_a_large_box_is_offered_full_resolution_and_comes_back_exact(
    make_napari_viewer, spawn, qtbot, monkeypatch
) -> None:
    backend = StandinBackend(spawn, 2)
    image, truth = large_object()
    viewer = make_napari_viewer()
    viewer.add_image(image)
    widget = dock_widget(viewer, qtbot, monkeypatch, backend.frontend, SERVICE)
    widget.encode_box.prefetch.setChecked(False)
    notes: list[tuple[str, str]] = []
    widget.controller.notify = lambda level, message: notes.append((level, message))
    asked: list[BoxView] = []
    answers = [ONE, FULL]
    widget.controller.prompts.box_tiles.choose = lambda view: asked.append(view) or answers.pop(0)  # type: ignore[func-returns-value]

    draw_box(widget, qtbot, BOX_RECT)  # one request: asked first, told 1/3, coarse
    assert len(asked) == 1 and asked[0].factor == 3 and asked[0].tiles == 16
    assert any("1/3 resolution" in m and "Sent as one request" in m for _level, m in notes), notes
    coarse = viewer.layers[BOX_MASK].data > 0
    assert coarse.any() and not np.array_equal(coarse, truth)

    viewer.layers[BOX_MASK].data = np.zeros_like(viewer.layers[BOX_MASK].data)
    widget.controller.new_object()
    draw_box(widget, qtbot, BOX_RECT)  # full resolution: 16 tiles, one exact label
    assert len(asked) == 2
    labels = viewer.layers[BOX_MASK].data
    ids = set(np.unique(labels)) - {0}
    assert len(ids) == 1
    np.testing.assert_array_equal(labels > 0, truth)
    assert widget.controller.applied[BOX].label_ids == tuple(ids)

    small = [1000.0, 1000.0, 1400.0, 1500.0]  # a box one request sees at native resolution: not asked
    widget.controller.new_object()
    draw_box(widget, qtbot, small)
    assert len(asked) == 2
