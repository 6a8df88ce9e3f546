"""Plugin export of a time-lapse (CTC, GEFF) with lineage from the layer, and the provenance record."""

from __future__ import annotations

import numpy as np

from plugin.export import CTC, GEFF, MEASUREMENTS, TIFF, export_labels
from plugin.jobs.slice_prompts import SlicePrompts
from plugin.labels.lineage import LINEAGE_KEY, lineage_from_metadata, lineage_metadata
from plugin.provenance_record import interactive_provenance
from plugin.view.coords import SlicePlane
from plugin.view.prompts import Prompt
from protocol.formats.ctc import read_ctc
from protocol.formats.geff_tracks import read_geff
from protocol.formats.provenance_files import read_provenance
from tests.support.timelapse import LINEAGE, timelapse

TYX = SlicePlane((10, 64, 96), 1, 2, (0, None, None))


def _record():
    store = SlicePrompts()
    on5 = SlicePlane(TYX.shape, 1, 2, (5, None, None))
    store.record("layer", 1, Prompt(TYX, ((12.0, 10.0),), (1,)))
    store.record("layer", 3, Prompt(on5, ((40.0, 24.0), (40.0, 36.0)), (1, 0)))
    store.record("layer", 3, Prompt(on5, box=(35.0, 19.0, 45.0, 29.0)))  # newer on the slice: replaces
    prompts = {i: [e.prompt for e in store.entries("layer", i)] for i in range(1, 6)}
    info = {"model": "sam2.1_hiera_tiny", "checkpoint": "sam2.1_hiera_tiny.pt"}
    return interactive_provenance(range(0, 6), prompts, model="ignored", info=info, source_path="/m.tif")


def test_the_record_holds_each_labels_newest_prompts_and_lists_the_rest_as_not_replayable():
    record = _record()
    assert record.model == "sam2.1_hiera_tiny" and record.checkpoint_sha256 is None
    assert record.prompts[1][0].points == ((12.0, 10.0),) and record.prompts[1][0].slice == (0, None, None)
    assert [p.box for p in record.prompts[3]] == [(35.0, 19.0, 45.0, 29.0)]
    assert record.not_replayable == (2, 4, 5)


def test_lineage_survives_metadata_and_ignores_nonsense():
    meta = {LINEAGE_KEY: {**lineage_metadata(LINEAGE), "x": 1, "7": 7}}
    assert lineage_from_metadata(meta) == LINEAGE


def test_ctc_and_geff_exports_carry_lineage_and_provenance(tmp_path):
    record = _record()
    scale = (2.0, 0.5, 0.5)
    units = ("minute", "micrometer", "micrometer")
    common = dict(scale=scale, units=units, axis_labels=("t", "y", "x"), parents=LINEAGE, provenance=record)
    [ctc] = export_labels(CTC.key, tmp_path / "movie_ctc", timelapse(), {1: "mover"}, **common)
    [geff] = export_labels(GEFF.key, tmp_path / "movie", timelapse(), {1: "mover"}, **common)
    assert read_ctc(ctc).tracks.by_id()[3].parent == 2
    back = read_geff(geff)
    assert back.tracks.by_id()[4].parent == 2 and back.names == {1: "mover"}
    for path in (ctc, geff):
        assert read_provenance(path) == record
    written = export_labels(TIFF.key, tmp_path / "movie.tif", timelapse(), {}, provenance=record)
    assert read_provenance(written[0]) == record
    csv = export_labels(MEASUREMENTS.key, tmp_path / "movie", timelapse(), {}, provenance=record)
    assert [p.name for p in csv] == ["movie.measurements.csv", "movie.measurements.provenance.json"]
    assert read_provenance(csv[0]) == record


def test_a_2d_image_cannot_be_tracks(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="time-lapse"):
        export_labels(CTC.key, tmp_path / "x", np.ones((8, 8), np.uint8), {})
