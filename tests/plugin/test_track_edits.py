"""Track corrections (break, link, swap, division) on a real napari Labels layer, one undo step each."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Labels

from plugin.labels.history import LabelHistory
from plugin.labels.lineage import LINEAGE_KEY, lineage_from_metadata, lineage_metadata
from plugin.labels.track_edits import break_track, divide, link_tracks, record_division, swap_tracks
from tests.support.timelapse import LINEAGE, timelapse


@pytest.fixture
def history():
    layer = Labels(timelapse(), metadata={LINEAGE_KEY: lineage_metadata(LINEAGE)})
    return LabelHistory(layer, bind_keys=False)


def test_break_gives_the_rest_a_new_id_with_the_daughters_and_undoes_in_one_step(history):
    before = history.layer.data.copy()
    changed = break_track(history, 2, 3, 20)
    data = history.layer.data
    assert changed == int((before[3:] == 2).sum())
    assert not (data[3:] == 2).any() and (data[:3] == 2).any()
    np.testing.assert_array_equal(data[3:] == 20, before[3:] == 2)
    assert lineage_from_metadata(history.layer.metadata) == {3: 20, 4: 20}
    assert history.undo_depth == 1
    history.undo()
    np.testing.assert_array_equal(history.layer.data, before)
    with pytest.raises(ValueError, match="in use"):
        break_track(history, 2, 3, 1)


def test_link_makes_one_id_and_refuses_two_objects_on_one_frame(history):
    before = history.layer.data.copy()
    with pytest.raises(ValueError, match="both on frames"):
        link_tracks(history, 1, 2)
    link_tracks(history, 2, 3)  # 3 starts after 2 ends: one track
    assert not (history.layer.data == 3).any()
    np.testing.assert_array_equal(history.layer.data == 2, (before == 2) | (before == 3))
    assert lineage_from_metadata(history.layer.metadata) == {4: 2}
    assert history.undo_depth == 1


def test_swap_trades_ids_from_a_frame_on_in_one_step(history):
    before = history.layer.data.copy()
    swap_tracks(history, 3, 4, 7)
    data = history.layer.data
    np.testing.assert_array_equal(data[7:] == 3, before[7:] == 4)
    np.testing.assert_array_equal(data[7:] == 4, before[7:] == 3)
    np.testing.assert_array_equal(data[:7], before[:7])
    assert history.undo_depth == 1
    history.undo()
    np.testing.assert_array_equal(history.layer.data, before)


def test_a_division_is_recorded_in_the_lineage(history):
    record_division(history, 1, [5])
    assert lineage_from_metadata(history.layer.metadata) == {**LINEAGE, 5: 1}
    with pytest.raises(ValueError, match="daughters"):
        record_division(history, 1, [1])


def _undo_redo(history, edit) -> None:
    """``edit()`` is one step; undo brings pixels and lineage back, redo brings the edit back."""
    before = history.layer.data.copy(), lineage_from_metadata(history.layer.metadata)
    edit()
    after = history.layer.data.copy(), lineage_from_metadata(history.layer.metadata)
    assert history.undo_depth == 1
    assert history.undo()
    np.testing.assert_array_equal(history.layer.data, before[0])
    assert lineage_from_metadata(history.layer.metadata) == before[1]
    assert history.redo()
    np.testing.assert_array_equal(history.layer.data, after[0])
    assert lineage_from_metadata(history.layer.metadata) == after[1]
    history.undo()  # and napari's own undo (its menu) does it too
    history.layer.redo()
    assert lineage_from_metadata(history.layer.metadata) == after[1]
    history.layer.undo()
    assert lineage_from_metadata(history.layer.metadata) == before[1]


def test_undo_and_redo_of_a_break_carry_the_lineage(history):
    _undo_redo(history, lambda: break_track(history, 2, 3, 20))
    assert lineage_from_metadata(history.layer.metadata) == LINEAGE


def test_undo_and_redo_of_a_link_carry_the_lineage(history):
    _undo_redo(history, lambda: link_tracks(history, 2, 3))


def test_undo_and_redo_of_a_swap_restore_pixels_and_keep_the_lineage(history):
    _undo_redo(history, lambda: swap_tracks(history, 3, 4, 7))
    assert lineage_from_metadata(history.layer.metadata) == LINEAGE


def test_a_divide_ends_the_parent_and_undoes_with_its_lineage_in_one_step(history):
    def edit() -> None:
        divide(history, 1, [5], 6)  # (a made-up division: 1 ends at 5, 5 is its daughter)
        assert not (history.layer.data[6:] == 1).any() and (history.layer.data[5] == 1).any()
        assert lineage_from_metadata(history.layer.metadata) == {**LINEAGE, 5: 1}

    _undo_redo(history, edit)
    assert lineage_from_metadata(history.layer.metadata) == LINEAGE
