"""Cell Tracking Challenge export: masks + ``L B E P`` table, written atomically, read back right."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from protocol.formats.ctc import ID_MAP, TRACK_TABLE, CtcIdError, is_ctc, read_ctc, write_ctc
from protocol.formats.provenance import Provenance
from protocol.formats.tracks import build_tracks
from tests.support.timelapse import EXPECTED, LATER_RUN, LINEAGE, N_FRAMES, timelapse


def _by_label(tracks):
    found: dict[int, list] = {}
    for t in tracks.tracks:
        found.setdefault(t.label_id, []).append(t)
    return found


def test_every_track_begin_end_and_parent_after_read_back(tmp_path):
    stack = timelapse()
    written = write_ctc(tmp_path / "movie", stack, LINEAGE)
    back = read_ctc(tmp_path / "movie")
    assert back.labels.dtype == np.uint16
    assert back.labels.shape == stack.shape
    assert sorted(p.name for p in (tmp_path / "movie").glob("man_track*.tif")) == [
        f"man_track{t:03d}.tif" for t in range(N_FRAMES)
    ]
    assert back.tracks == written
    by_label = _by_label(back.tracks)
    by_id = back.tracks.by_id()
    for label, (begin, end, parent_label) in EXPECTED.items():
        first = by_label[label][0]
        assert (first.track_id, first.begin, first.end) == (label, begin, end)
        assert (by_id[first.parent].label_id if first.parent else 0) == parent_label
        # the masks hold the track's id exactly on its frames
        frames = [t for t in range(N_FRAMES) if (back.labels[t] == first.track_id).any()]
        assert frames == list(range(begin, end + 1))
    others = {f.name for f in (tmp_path / "movie").iterdir() if not f.name.endswith(".tif")}
    assert others == {ID_MAP, TRACK_TABLE}


def test_a_gap_splits_the_track_and_the_later_part_points_to_the_earlier(tmp_path):
    stack = timelapse()
    write_ctc(tmp_path / "movie", stack, LINEAGE)
    back = read_ctc(tmp_path / "movie")
    runs = _by_label(back.tracks)[5]
    assert [(r.begin, r.end) for r in runs] == [(0, 2), LATER_RUN]
    later = runs[1]
    assert later.track_id not in EXPECTED and later.parent == 5
    # the later run's pixels carry the new id, the earlier run's the label's
    assert not (back.labels[LATER_RUN[0] :] == 5).any()
    np.testing.assert_array_equal(back.labels[LATER_RUN[0] :] == later.track_id, stack[LATER_RUN[0] :] == 5)
    table = (tmp_path / "movie" / TRACK_TABLE).read_text().splitlines()
    assert f"{later.track_id} {LATER_RUN[0]} {LATER_RUN[1]} 5" in table


def test_ids_above_16_bits_are_renumbered_with_a_mapping_file(tmp_path):
    stack = timelapse().astype(np.uint32)
    big = {1: 70_000, 2: 80_000, 3: 90_000}
    for old, new in big.items():
        stack[stack == old] = new
    lineage = {90_000: 80_000, 4: 80_000}
    tracks = write_ctc(tmp_path / "movie", stack, lineage)
    assert max(t.track_id for t in tracks.tracks) <= len(tracks.tracks)
    back = read_ctc(tmp_path / "movie")
    by_label = _by_label(back.tracks)
    by_id = back.tracks.by_id()
    assert by_id[by_label[90_000][0].parent].label_id == 80_000
    assert by_id[by_label[4][0].parent].label_id == 80_000
    for label, (begin, end, _) in EXPECTED.items():
        original = big.get(label, label)
        first = by_label[original][0]
        assert (first.begin, first.end) == (begin, end)
        np.testing.assert_array_equal(back.labels[begin] == first.track_id, stack[begin] == original)
    mapping = (tmp_path / "movie" / ID_MAP).read_text().splitlines()
    assert mapping[0] == "ctc_id,label_id,begin,end"
    assert any(line.endswith(",70000,0,9") for line in mapping)


def test_ids_above_16_bits_refused_with_the_count_when_asked_and_nothing_written(tmp_path):
    stack = timelapse().astype(np.uint32)
    stack[stack == 1] = 70_000
    stack[stack == 2] = 70_001
    # 70000, 70001 and the new id of label 5's later run (the next id after them)
    with pytest.raises(CtcIdError, match="3 track ids are above 65535"):
        write_ctc(tmp_path / "movie", stack, renumber=False)
    assert list(tmp_path.iterdir()) == []


def test_provenance_sidecar_round_trip(tmp_path):
    record = Provenance("propagate", model="sam2.1_hiera_tiny", parameters={"direction": "forward"})
    write_ctc(tmp_path / "movie", timelapse(), LINEAGE, provenance=record)
    back = read_ctc(tmp_path / "movie")
    assert back.provenance == record
    assert json.loads((tmp_path / "movie" / "provenance.json").read_text())["model"] == "sam2.1_hiera_tiny"


def test_rewrite_replaces_the_folder_whole(tmp_path):
    stack = timelapse()
    write_ctc(tmp_path / "movie", stack, LINEAGE)
    write_ctc(tmp_path / "movie", stack[:4])
    back = read_ctc(tmp_path / "movie")
    assert back.labels.shape[0] == 4
    assert len(list((tmp_path / "movie").glob("*.tif"))) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["movie"]


def test_a_folder_written_by_another_tool_reads_and_bad_tables_say_why(tmp_path):
    folder = tmp_path / "gt"
    folder.mkdir()
    for t in range(3):
        frame = np.zeros((8, 8), np.uint16)
        frame[2:4, 2:4] = 1 if t < 2 else 2
        tifffile.imwrite(folder / f"man_track{t:03d}.tif", frame)
    (folder / TRACK_TABLE).write_text("1 0 1 0\n2 2 2 1\n")
    assert is_ctc(folder)
    back = read_ctc(folder)
    assert back.tracks.parents() == {2: 1}
    (folder / TRACK_TABLE).write_text("1 0 1 0\n2 2 2 7\n")
    with pytest.raises(ValueError, match=r"parents \[7\]"):
        read_ctc(folder)
    (folder / TRACK_TABLE).write_text("1 0 x 0\n")
    with pytest.raises(ValueError, match="line 1"):
        read_ctc(folder)
    (folder / "man_track001.tif").unlink()
    (folder / TRACK_TABLE).write_text("1 0 1 0\n")
    with pytest.raises(ValueError, match=r"frames \[1\] are missing"):
        read_ctc(folder)


def test_a_parent_missing_from_the_stack_is_reported_not_invented():
    tracks = build_tracks(timelapse(), {3: 2, 4: 2, 1: 99})
    assert tracks.orphans == (1,)
    assert tracks.by_id()[1].parent == 0
