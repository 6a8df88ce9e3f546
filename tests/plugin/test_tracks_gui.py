"""Time-lapse in a real viewer: Propagate on a time axis shows a Tracks layer; the Export box writes CTC
with the widget's provenance; napari opens the CTC folder as labels + tracks.

Real viewer under Xvfb, real broker and the deterministic stand-in worker (it tracks each object as the
bright component overlapping it on the previous frame, so the tracks are known).
"""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Labels, Tracks
from qtpy.QtCore import QItemSelectionModel

from plugin._qt.propagate_widget import ALL_ON_SLICE
from plugin.labels.lineage import LINEAGE_KEY, lineage_from_metadata
from plugin.tracks import tracks_layer_name
from protocol.formats.ctc import read_ctc
from protocol.formats.provenance_files import read_provenance
from tests.support.marks import GUI_TEST_MARKS
from tests.support.plugin_helpers import dock_widget
from tests.support.processes import ProcessSpawner
from tests.support.standin_backend import SERVICE, StandinBackend
from tests.support.timelapse import MOVIE_FRAMES as FRAMES
from tests.support.timelapse import MOVIE_SIDE as SIZE
from tests.support.timelapse import movie_disc as disc

pytestmark = GUI_TEST_MARKS

TIMEOUT_MS = 60_000


def centre_a(t: int) -> tuple[float, float]:
    return (30.0, 20.0 + 6 * t)


def centre_b(t: int) -> tuple[float, float]:
    return (68.0, 60.0 - 4 * t)


@pytest.fixture
def setup(make_napari_viewer, spawn: ProcessSpawner, qtbot, monkeypatch):
    backend = StandinBackend(spawn, 1)
    movie = np.full((FRAMES, SIZE, SIZE), 20, np.uint8)
    for t in range(FRAMES):
        movie[t][disc(centre_a(t))] = 200
        movie[t][disc(centre_b(t))] = 200
    viewer = make_napari_viewer()
    viewer.add_image(movie, name="movie", axis_labels=("t", "y", "x"))
    widget = dock_widget(viewer, qtbot, monkeypatch, backend.frontend, SERVICE)
    start = np.zeros(movie.shape, np.uint32)
    start[0][disc(centre_a(0))] = 3
    start[0][disc(centre_b(0))] = 8
    labels = viewer.add_labels(start, name="cells", axis_labels=("t", "y", "x"))
    widget.tabs.setCurrentIndex(1)
    widget.labels.layer_combo.set_layer(labels)
    qtbot.wait(120)
    viewer.dims.set_point(0, 0)
    return viewer, widget, labels


def test_propagate_on_time_shows_tracks_and_exports_ctc_with_provenance(setup, qtbot, tmp_path) -> None:
    viewer, widget, labels = setup
    box = widget.propagate_box
    box.which.setCurrentText(ALL_ON_SLICE)
    box.direction.setCurrentText("forward")
    box.button.click()
    qtbot.waitUntil(lambda: not box.task.running, timeout=TIMEOUT_MS)
    name = tracks_layer_name("cells")
    qtbot.waitUntil(lambda: name in viewer.layers, timeout=TIMEOUT_MS)
    tracks = viewer.layers[name]
    assert isinstance(tracks, Tracks)
    for label, centre in ((3, centre_a), (8, centre_b)):
        rows = tracks.data[tracks.data[:, 0] == label]
        assert rows[:, 1].tolist() == list(range(FRAMES))
        np.testing.assert_allclose(rows[:, 2:], [centre(t) for t in range(FRAMES)], atol=0.5)

    # a division recorded in the metadata reaches the CTC export, with the widget's provenance
    labels.data[3:][labels.data[3:] == 8] = 0
    labels.data[3:][np.stack([disc((60.0, 40.0), 5)] * 2)] = 9
    labels.metadata[LINEAGE_KEY] = {"9": 8}
    widget.export_box.set_choice("ctc")
    [folder] = widget.export_box.export(labels, tmp_path / "cells_ctc")
    back = read_ctc(folder)
    by_id = back.tracks.by_id()
    assert (by_id[8].begin, by_id[8].end, by_id[9].begin, by_id[9].parent) == (0, 2, 3, 8)
    record = read_provenance(folder)
    assert record is not None and record.model == SERVICE and record.operation == "interactive"
    assert record.parameters["contrast_limits"] == [float(v) for v in viewer.layers["movie"].contrast_limits]
    assert set(record.not_replayable) == {3, 8, 9}  # propagated and painted here: no prompts recorded

    opened = viewer.open(str(folder), plugin="napari-sam2-broker")
    kinds = {type(layer) for layer in opened}
    assert kinds == {Labels, Tracks}
    reopened = next(layer for layer in opened if isinstance(layer, Labels))
    assert lineage_from_metadata(reopened.metadata) == {9: 8}
    reopened_tracks = next(layer for layer in opened if isinstance(layer, Tracks))
    assert reopened_tracks.graph == {9: [8]}


def two_tracks(labels: Labels) -> np.ndarray:
    """Give ``labels`` disc 3 along ``centre_a`` and disc 8 along ``centre_b`` on every frame; return a copy
    (napari keeps the array it is given: the copy stays the truth)."""
    full = np.zeros(labels.data.shape, np.uint32)
    for t in range(FRAMES):
        full[t][disc(centre_a(t))] = 3
        full[t][disc(centre_b(t))] = 8
    labels.data = full.copy()
    return full


def test_tracks_box_breaks_marks_a_division_and_fills_the_table(setup, qtbot) -> None:
    viewer, widget, labels = setup
    full = two_tracks(labels)
    box = widget.tracks_box
    history = widget.controller.histories(labels)
    depth = history.undo_depth
    widget.labels.refresh()
    widget.labels.select(8)
    viewer.dims.set_point(0, 3)
    box.break_here()
    assert not (labels.data[3:] == 8).any()
    np.testing.assert_array_equal(labels.data[3:] == 9, full[3:] == 8)
    assert history.undo_depth == depth + 1
    widget.labels.refresh()
    widget.labels.select(8)
    table, model = widget.labels.table, widget.labels.model
    flags = QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows
    table.selectionModel().select(model.index(model.row_of(9), 0), flags)  # a ctrl-click on 9
    assert widget.labels.selected_ids() == [8, 9]
    box.mark_division()
    assert lineage_from_metadata(labels.metadata) == {9: 8}
    follower = box.followers[labels.unique_id]
    qtbot.waitUntil(lambda: not follower.busy and box.model.rowCount() == 3, timeout=TIMEOUT_MS)
    rows = {row.track_id: row for row in box.model.rows}
    assert (rows[8].first, rows[8].last, rows[9].first, rows[9].parent) == (0, 2, 3, 8)
    assert rows[3].displacement == pytest.approx(6 * (FRAMES - 1), abs=0.5)
    assert viewer.layers[tracks_layer_name("cells")].graph == {9: [8]}
    box._on_row(box.model.index(list(rows).index(9), 0))
    assert viewer.dims.current_step[0] == 3 and widget.labels.selected_ids() == [9]


def test_the_tracks_layer_follows_edits_and_undo_reading_only_the_frames_touched(setup, qtbot) -> None:
    viewer, widget, labels = setup
    two_tracks(labels)
    box, name = widget.tracks_box, tracks_layer_name("cells")
    box.refresh()
    follower = box.followers[labels.unique_id]
    qtbot.waitUntil(lambda: not follower.busy and name in viewer.layers, timeout=TIMEOUT_MS)
    tracks = viewer.layers[name]
    assert follower.frames_read == FRAMES
    # each track has its label's colour
    for label in (3, 8):
        colours = tracks.track_colors[tracks.data[:, 0] == label]
        np.testing.assert_allclose(colours, np.repeat([labels.get_color(label)], len(colours), 0), atol=1e-6)

    # a delete on frames 3-4 (a plugin edit, one undo step): only those frames are read again
    history = widget.controller.histories(labels)
    with history.edit():
        found = np.nonzero(labels.data[3:] == 8)
        labels.data_setitem((found[0] + 3, *found[1:]), 0)
    qtbot.waitUntil(lambda: not follower.busy and follower.frames_read == FRAMES + 2, timeout=TIMEOUT_MS)
    qtbot.waitUntil(
        lambda: tracks.data[tracks.data[:, 0] == 8][:, 1].tolist() == [0, 1, 2], timeout=TIMEOUT_MS
    )

    # undo brings the track back, reading the same two frames
    history.undo()
    qtbot.waitUntil(lambda: not follower.busy and follower.frames_read == FRAMES + 4, timeout=TIMEOUT_MS)
    qtbot.waitUntil(
        lambda: tracks.data[tracks.data[:, 0] == 8][:, 1].tolist() == list(range(FRAMES)), timeout=TIMEOUT_MS
    )
    # a relabel (8 becomes 12 from frame 2 on) shows as a new track
    with history.edit():
        found = np.nonzero(labels.data[2:] == 8)
        labels.data_setitem((found[0] + 2, *found[1:]), 12)
    qtbot.waitUntil(lambda: 12 in set(tracks.data[:, 0].astype(int).tolist()), timeout=TIMEOUT_MS)
    assert tracks.data[tracks.data[:, 0] == 12][:, 1].tolist() == [2, 3, 4]

    # a merge from the label table (12 into 8): one track 8 over every frame again, and 12 is gone
    table = widget.labels
    table.refresh()
    table.select(12)
    table.merge_target.setValue(8)
    table.merge_selected()
    qtbot.waitUntil(lambda: 12 not in set(tracks.data[:, 0].astype(int).tolist()), timeout=TIMEOUT_MS)
    qtbot.waitUntil(
        lambda: tracks.data[tracks.data[:, 0] == 8][:, 1].tolist() == list(range(FRAMES)), timeout=TIMEOUT_MS
    )
    centres = tracks.data[tracks.data[:, 0] == 8][:, 2:]
    np.testing.assert_allclose(centres, [centre_b(t) for t in range(FRAMES)], atol=0.5)
    # a delete from the label table ends track 3; undo of the delete brings it back
    table.refresh()
    table.select(3)
    table.delete_selected()
    qtbot.waitUntil(lambda: 3 not in set(tracks.data[:, 0].astype(int).tolist()), timeout=TIMEOUT_MS)
    history.undo()
    qtbot.waitUntil(
        lambda: tracks.data[tracks.data[:, 0] == 3][:, 1].tolist() == list(range(FRAMES)), timeout=TIMEOUT_MS
    )
