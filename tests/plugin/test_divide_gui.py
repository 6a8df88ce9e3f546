"""Divide here in a real viewer (issue 25's round trip): prompts -> Propagate -> Divide here -> Tracks
layer -> CTC and GEFF exported -> read back right; the division is one undo step, lineage included.

Real viewer under Xvfb, real broker and the deterministic stand-in worker on the synthetic division
movie of :mod:`tests.support.timelapse` (label 2 divides on frame 5 into the discs of labels 3 and 4),
so every frame's right answer is known.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Labels, Tracks

from plugin._qt.propagate_widget import ALL_ON_SLICE
from plugin._qt.tracks_widget import DAUGHTERS_SUFFIX, DIVIDE_TEXT
from plugin.labels.lineage import lineage_from_metadata
from plugin.tracks import tracks_layer_name
from protocol.formats.ctc import read_ctc
from protocol.formats.geff_tracks import read_geff
from tests.support import timelapse
from tests.support.marks import GUI_TEST_MARKS
from tests.support.plugin_helpers import dock_widget
from tests.support.processes import ProcessSpawner
from tests.support.standin_backend import SERVICE, StandinBackend

pytestmark = GUI_TEST_MARKS

TIMEOUT_MS = 60_000
DIVISION_FRAME = 5


def propagate_forward(
    viewer: Any, backend: StandinBackend, start: np.ndarray, name: str, qtbot: Any, monkeypatch: Any
) -> tuple[Any, Labels]:
    """Dock the widget on ``viewer`` (its movie added), add ``start`` as the (T, H, W) labels layer
    ``name``, and propagate all its labels on frame 0 forward; returns (widget, labels layer)."""
    widget = dock_widget(viewer, qtbot, monkeypatch, backend.frontend, SERVICE)
    labels = viewer.add_labels(start, name=name, axis_labels=("t", "y", "x"))
    widget.tabs.setCurrentIndex(1)
    widget.labels.layer_combo.set_layer(labels)
    qtbot.wait(120)
    viewer.dims.set_point(0, 0)
    propagate = widget.propagate_box
    propagate.which.setCurrentText(ALL_ON_SLICE)
    propagate.direction.setCurrentText("forward")
    propagate.button.click()
    qtbot.waitUntil(lambda: not propagate.task.running, timeout=TIMEOUT_MS)
    return widget, labels


def test_divide_here_propagates_daughters_with_new_ids_as_one_undo_step_and_exports_tracks(
    make_napari_viewer, spawn: ProcessSpawner, qtbot, monkeypatch, tmp_path
) -> None:
    truth = timelapse.timelapse()
    truth[truth == 5] = 0  # the gap disc is exercised elsewhere (tests/protocol: CTC gaps)
    movie = np.where(truth > 0, 200, 20).astype(np.uint8)
    start = np.zeros(truth.shape, np.uint16)
    start[0] = truth[0]  # the prompts' result on frame 0: labels 1 and 2
    viewer = make_napari_viewer()
    viewer.add_image(movie, name="movie", axis_labels=("t", "y", "x"))
    backend = StandinBackend(spawn, 1)
    widget, labels = propagate_forward(viewer, backend, start, "cells", qtbot, monkeypatch)
    assert (labels.data[:DIVISION_FRAME] == 2).any(axis=(1, 2)).all()

    # Divide here: the parent selected, frame 5 shown, one click in each daughter, press again
    box, history = widget.tracks_box, widget.controller.histories(labels)
    widget.labels.refresh()
    widget.labels.select(2)
    viewer.dims.set_point(0, DIVISION_FRAME)
    box.divide_button.click()
    points = viewer.layers["cells" + DAUGHTERS_SUFFIX]
    centres = timelapse.centres(DIVISION_FRAME)
    points.add([[DIVISION_FRAME, *centres[3]], [DIVISION_FRAME, *centres[4]]])
    before = labels.data.copy(), lineage_from_metadata(labels.metadata)
    depth = history.undo_depth
    box.divide_button.click()
    assert box.divide_button.text() == DIVIDE_TEXT and points not in viewer.layers
    run = widget.controller.stack.runs["propagate"]
    qtbot.waitUntil(lambda: run.finished, timeout=TIMEOUT_MS)
    first, second = run.label_ids
    assert first > 2 and second == first + 1
    data = labels.data
    assert not (data[DIVISION_FRAME:] == 2).any() and (data[DIVISION_FRAME - 1] == 2).any()
    np.testing.assert_array_equal(data[DIVISION_FRAME:] == first, truth[DIVISION_FRAME:] == 3)
    np.testing.assert_array_equal(data[DIVISION_FRAME:] == second, truth[DIVISION_FRAME:] == 4)
    assert lineage_from_metadata(labels.metadata) == {first: 2, second: 2}
    after = labels.data.copy()

    # one undo step: pixels and lineage go back together, and come back on redo
    assert history.undo_depth == depth + 1
    history.undo()
    np.testing.assert_array_equal(labels.data, before[0])
    assert lineage_from_metadata(labels.metadata) == before[1]
    history.redo()
    np.testing.assert_array_equal(labels.data, after)
    assert lineage_from_metadata(labels.metadata) == {first: 2, second: 2}

    # the Tracks layer shows the division; CTC and GEFF read back the tracks that were built
    name = tracks_layer_name("cells")
    box.refresh()
    qtbot.waitUntil(lambda: name in viewer.layers and len(viewer.layers[name].graph) == 2, timeout=TIMEOUT_MS)
    assert isinstance(viewer.layers[name], Tracks)
    assert viewer.layers[name].graph == {first: [2], second: [2]}
    expected = {1: (0, 9, 0), 2: (0, 4, 0), first: (5, 9, 2), second: (5, 9, 2)}
    widget.export_box.set_choice("ctc")
    [folder] = widget.export_box.export(labels, tmp_path / "cells_ctc")
    ctc = read_ctc(folder)
    found = {
        t.label_id: (t.begin, t.end, ctc.tracks.by_id()[t.parent].label_id if t.parent else 0)
        for t in ctc.tracks.tracks
    }
    assert found == expected
    widget.export_box.set_choice("geff")
    written = widget.export_box.export(labels, tmp_path / "cells")
    geff = read_geff(written[0])
    assert {t.track_id: (t.begin, t.end, t.parent) for t in geff.tracks.tracks} == expected
    assert geff.labels is not None and isinstance(labels, Labels)
    np.testing.assert_array_equal(geff.labels, labels.data)


def test_a_real_crop_stack_goes_prompts_propagate_tracks_and_exports(
    make_napari_viewer, spawn: ProcessSpawner, qtbot, monkeypatch, tmp_path
) -> None:
    """A time-lapse cut from a real image (scikit-image's ``coins``, shipped with it: ``cells3d`` and
    ``human_mitosis`` need a download), the crop moving 3 px right per frame: every coin moves 3 px
    left, so each frame's right answer is the first frame's objects shifted."""
    from scipy import ndimage
    from skimage.data import coins

    frames, step = 6, 3
    image = coins()
    movie = np.stack([image[40:240, 20 + step * t : 220 + step * t] for t in range(frames)])
    components, _ = ndimage.label(movie[0] >= 128)
    boxes = ndimage.find_objects(components)
    inside = [
        k + 1
        for k, (rows, cols) in enumerate(boxes)
        if rows.start > 0 and rows.stop < movie.shape[1] and cols.start > step * frames and cols.stop < 200
    ]
    sizes = {k: int((components == k).sum()) for k in inside}
    chosen = sorted(sorted(sizes, key=sizes.get)[-3:])  # the three largest coins that stay inside
    assert len(chosen) == 3 and min(sizes[k] for k in chosen) > 200
    start = np.zeros(movie.shape, np.uint16)
    for label, k in enumerate(chosen, start=1):
        start[0][components == k] = label  # what a click on each coin gives on frame 0
    viewer = make_napari_viewer()
    viewer.add_image(movie, name="coins", axis_labels=("t", "y", "x"), contrast_limits=(0, 255))
    backend = StandinBackend(spawn, 1)
    widget, labels = propagate_forward(viewer, backend, start, "coins labels", qtbot, monkeypatch)
    for t in range(frames):
        shifted = np.zeros_like(start[0])
        shifted[:, : 200 - step * t] = start[0][:, step * t :]
        np.testing.assert_array_equal(labels.data[t], shifted)

    name = tracks_layer_name("coins labels")
    widget.tracks_box.refresh()
    qtbot.waitUntil(
        lambda: name in viewer.layers and len(viewer.layers[name].data) == 3 * frames, timeout=TIMEOUT_MS
    )
    tracks = viewer.layers[name].data
    for label in (1, 2, 3):
        cols = tracks[tracks[:, 0] == label][:, 3]
        np.testing.assert_allclose(np.diff(cols), -step, atol=1e-9)
    widget.export_box.set_choice("ctc")
    [folder] = widget.export_box.export(labels, tmp_path / "coins_ctc")
    ctc = read_ctc(folder)
    assert {(t.label_id, t.begin, t.end, t.parent) for t in ctc.tracks.tracks} == {
        (i, 0, frames - 1, 0) for i in (1, 2, 3)
    }
    np.testing.assert_array_equal(ctc.labels, labels.data)
    widget.export_box.set_choice("geff")
    geff = read_geff(widget.export_box.export(labels, tmp_path / "coins")[0])
    assert {(t.track_id, t.begin, t.end, t.parent) for t in geff.tracks.tracks} == {
        (i, 0, frames - 1, 0) for i in (1, 2, 3)
    }
