"""Propagate with corrections on later slices, through the dock widget, against the stand-in worker.

The stand-in (``python -m workers --model standin-blobs``) tracks each object as the bright
component overlapping it on the previous slice, and a prompt on a later slice
restarts the object there, so the right answer is known: disc A is on slices
0..2 and gone after; disc D (a different object) appears on slice 5 and
drifts. Plain propagation from slice 0 stops label 3 at slice 2; once the
user has refined label 3 with a point on D on slice 5, propagation from
slice 0 sends that prompt along and label 3 follows D on slices 6 and 7.
Real viewer under Xvfb, real broker and stand-in worker processes.
"""

from __future__ import annotations

import numpy as np
import pytest

from plugin._qt.propagate_widget import SELECTED
from plugin._qt.widget import SamWidget
from plugin.jobs.stacks import PROPAGATE
from plugin.view.layers import PROMPT_POINTS
from tests.support import timelapse
from tests.support.marks import GUI_TEST_MARKS
from tests.support.plugin_helpers import click_point, dock_widget, wait_for_redraws
from tests.support.processes import ProcessSpawner
from tests.support.standin_backend import SERVICE, StandinBackend

pytestmark = GUI_TEST_MARKS

TIMEOUT_MS = 60_000
SIZE = 96
FRAMES = 8
LABEL = 3


def disc(centre: tuple[float, float], radius: float = 8.0) -> np.ndarray:
    """A bool (SIZE, SIZE) disc at ``centre`` (row, col)."""
    return timelapse.disc((SIZE, SIZE), centre, radius)


def vanish_then_appear() -> tuple[np.ndarray, dict[int, np.ndarray], dict[int, np.ndarray]]:
    """(8, 96, 96) uint8: disc A on slices 0..2 (then gone), disc D elsewhere on slices 5..7 (drifting)."""
    stack = np.full((FRAMES, SIZE, SIZE), 20, np.uint8)
    a = {z: disc((28, 24 + 3 * z)) for z in range(3)}
    d = {z: disc((66, 50 + 4 * (z - 5))) for z in range(5, FRAMES)}
    for z, mask in (*a.items(), *d.items()):
        stack[z][mask] = 200
    return stack, a, d


def expected(mask: np.ndarray | None) -> np.ndarray:
    out = np.zeros((SIZE, SIZE), np.uint32)
    if mask is not None:
        out[mask] = LABEL
    return out


@pytest.fixture
def setup(make_napari_viewer, spawn: ProcessSpawner, qtbot, monkeypatch):
    backend = StandinBackend(spawn, 1)
    stack, a, d = vanish_then_appear()
    viewer = make_napari_viewer()
    viewer.add_image(stack, name="discs")
    widget = dock_widget(viewer, qtbot, monkeypatch, backend.frontend, SERVICE)
    start = np.zeros(stack.shape, np.uint32)
    start[0][a[0]] = LABEL
    labels = viewer.add_labels(start, name="tracked")
    widget.labels.layer_combo.set_layer(labels)
    wait_for_redraws(qtbot, widget)
    return viewer, widget, labels, a, d


def propagate_forward_from_slice_0(viewer, widget: SamWidget, qtbot) -> list[str]:
    """Propagate label 3 forward from slice 0; the progress texts shown."""
    viewer.dims.set_point(0, 0)
    widget.tabs.setCurrentIndex(1)
    widget.labels.select(LABEL)
    box = widget.propagate_box
    box.which.setCurrentText(SELECTED)
    box.direction.setCurrentText("forward")
    texts: list[str] = []
    step = box.task.step
    box.task.step = lambda done, total, text: (texts.append(text), step(done, total, text))  # type: ignore[method-assign]
    box.button.click()
    qtbot.waitUntil(lambda: not box.task.running, timeout=TIMEOUT_MS)
    assert widget.controller.stack.runs[PROPAGATE].completed
    return texts


def test_a_point_on_a_later_slice_corrects_the_propagation(setup, qtbot) -> None:
    viewer, widget, labels, a, d = setup
    controller = widget.controller

    # without a correction: label 3 stops where disc A vanishes
    texts = propagate_forward_from_slice_0(viewer, widget, qtbot)
    assert not any("correction" in t for t in texts)
    for z in range(1, FRAMES):
        np.testing.assert_array_equal(labels.data[z], expected(a.get(z)), err_msg=f"slice {z}")

    # the user refines label 3 with a point on disc D on slice 5 (union)
    widget.tabs.setCurrentIndex(0)
    widget.refine_radio.setChecked(True)
    widget.refine_op.setCurrentText("union")
    widget.refine_layer.set_layer(labels)
    widget.refine_id.setValue(LABEL)
    viewer.dims.set_point(0, 5)
    click_point(widget, qtbot, [5, 66, 50])
    np.testing.assert_array_equal(labels.data[5], expected(d[5]))
    kept = controller.slice_prompts.entries(labels.unique_id, LABEL)
    assert [(e.plane.index[0], e.prompt.points) for e in kept] == [(5, ((66.5, 50.5),))]
    widget.add_radio.setChecked(True)  # a new object: the prompt point is cleared
    assert len(viewer.layers[PROMPT_POINTS].data) == 0

    # with it: the correction goes along and SAM2 (the stand-in) tracks D from slice 5 on
    texts = propagate_forward_from_slice_0(viewer, widget, qtbot)
    assert "Propagate: 1 label from slice 0, with corrections on slice 5: sending 8 slices…" in texts
    assert any(t.startswith("Propagate: slice") and t.endswith("with corrections on slice 5") for t in texts)
    for z in range(1, FRAMES):
        np.testing.assert_array_equal(labels.data[z], expected(a.get(z, d.get(z))), err_msg=f"slice {z}")

    # removing the layer forgets its prompts
    viewer.layers.remove(labels)
    assert controller.slice_prompts.entries(labels.unique_id, LABEL) == []
