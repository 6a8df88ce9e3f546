"""Tracks of a time-lapse labels layer (napari Tracks data, track table) and the CTC/GEFF reader/writers."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Labels

from plugin.io_hooks import get_reader, write_ctc_layer, write_geff_layer
from plugin.labels.lineage import LINEAGE_KEY, lineage_from_metadata, lineage_metadata
from plugin.tracks import is_time_lapse, napari_tracks, track_rows
from tests.support.timelapse import LATER_RUN, LINEAGE, N_FRAMES, centres, timelapse


def test_tracks_data_are_centroids_per_frame_with_divisions_and_gaps_in_the_graph():
    tracks = napari_tracks(timelapse(), LINEAGE)
    later = next(t.track_id for t in tracks.tracks.tracks if t.label_id == 5 and t.begin == LATER_RUN[0])
    assert tracks.graph == {3: [2], 4: [2], later: [5]}
    for label in (1, 2, 3, 4):
        rows = tracks.data[tracks.data[:, 0] == label]
        frames = [t for t in range(N_FRAMES) if label in centres(t)]
        assert rows[:, 1].tolist() == frames
        np.testing.assert_allclose(rows[:, 2:], [centres(t)[label] for t in frames], atol=1e-6)
    assert tracks.label_of[later] == 5


def test_track_table_rows_give_frames_parent_displacement_and_speed_in_physical_units():
    tracks = napari_tracks(timelapse(), LINEAGE)
    rows = {r.track_id: r for r in track_rows(tracks, {1: "mover"}, (0.5, 0.5))}
    mover = rows[1]
    assert (mover.name, mover.first, mover.last, mover.parent) == ("mover", 0, N_FRAMES - 1, 0)
    assert mover.displacement == pytest.approx(6 * (N_FRAMES - 1) * 0.5)
    assert mover.mean_speed == pytest.approx(3.0)  # 6 px per frame x 0.5 units per px
    assert rows[3].parent == 2 and rows[3].first == 5
    assert rows[5].mean_speed == 0.0  # still


def test_a_layer_is_a_time_lapse_when_its_first_axis_is_time():
    assert is_time_lapse(Labels(timelapse(), axis_labels=("t", "y", "x")))
    assert is_time_lapse(Labels(timelapse(), units=("second", "micrometer", "micrometer")))
    assert not is_time_lapse(Labels(timelapse()))  # zyx by default
    assert not is_time_lapse(Labels(timelapse()[0]))


@pytest.mark.parametrize("suffix", [".ctc", ".geff"])
def test_the_reader_opens_what_the_writers_wrote_as_labels_and_tracks(tmp_path, suffix):
    meta = {
        "name": "movie",
        "scale": (1.0, 0.5, 0.5),
        "axis_labels": ("t", "y", "x"),
        "metadata": {"label_names": {"1": "mover"}, LINEAGE_KEY: lineage_metadata(LINEAGE)},
    }
    writer = write_ctc_layer if suffix == ".ctc" else write_geff_layer
    [written] = writer(str(tmp_path / f"movie{suffix}"), timelapse(), meta)
    reader = get_reader(written)
    assert reader is not None
    (labels, labels_kwargs, kind), (tracks, tracks_kwargs, tracks_kind) = reader(written)
    assert (kind, tracks_kind) == ("labels", "tracks")
    assert labels.shape == timelapse().shape
    lineage = lineage_from_metadata(labels_kwargs["metadata"])
    assert lineage[3] == 2 and lineage[4] == 2
    assert {3: [2], 4: [2]}.items() <= tracks_kwargs["graph"].items()
    assert set(np.unique(tracks[:, 0]).astype(int)) >= {1, 2, 3, 4, 5}
    if suffix == ".geff":
        assert labels_kwargs["metadata"]["label_names"] == {1: "mover"}
        assert labels_kwargs["scale"] == (1.0, 0.5, 0.5)
    assert get_reader(str(tmp_path)) is None
