"""The model box says what the chosen model is and greys out operations its workers do not serve.

A real broker and a stand-in worker that serves no ``propagate`` and no ``concept`` (``--without-op``), a real
napari viewer under Xvfb.
"""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from tests.support.marks import GUI_TEST_MARKS
from tests.support.plugin_helpers import dock_widget
from tests.support.processes import ProcessSpawner
from tests.support.standin_backend import SERVICE, StandinBackend

pytestmark = GUI_TEST_MARKS


def test_model_box_describes_the_model_and_greys_out_what_no_worker_serves(
    make_napari_viewer, spawn: ProcessSpawner, qtbot, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = StandinBackend(spawn, 1, worker_args=["--without-op", "propagate", "--without-op", "concept"])
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), dtype=np.uint8))
    widget = dock_widget(viewer, qtbot, monkeypatch, backend.frontend, SERVICE)
    qtbot.waitUntil(lambda: widget.points_button.isEnabled(), timeout=30_000)
    summary = widget.model_info.text()
    assert "[standin, preprocessing none;" in summary and "stand-in" in summary
    assert "ops: embed, segment, auto]" in summary  # info, sleep: not for a user; no propagate, no concept
    assert widget.model.itemData(widget.model.currentIndex(), Qt.ItemDataRole.ToolTipRole) == summary
    assert widget.box_button.isEnabled() and widget.auto_box.auto_button.isEnabled()
    assert not widget.propagate_box.button.isEnabled()  # no worker of this model serves propagate
    assert not widget.find_all_box.find_button.isEnabled()  # nor concept (Find all)
