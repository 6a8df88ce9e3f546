"""Provenance: one record, validated, and present and parseable in every output format."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from protocol.formats.ctc import write_ctc
from protocol.formats.geff_tracks import write_geff
from protocol.formats.geojson import write_geojson
from protocol.formats.geometry import Geometry
from protocol.formats.imagej import write_imagej
from protocol.formats.measure import write_measurements
from protocol.formats.ngff import write_ngff_labels
from protocol.formats.provenance import (
    PROVENANCE_KEY,
    PromptRecord,
    Provenance,
    ProvenanceError,
    model_facts,
)
from protocol.formats.provenance_files import read_provenance
from tests.support.timelapse import LINEAGE, timelapse

RECORD = Provenance.from_info(
    "interactive",
    {"model": "sam2.1_hiera_tiny", "checkpoint": "/ckpt/sam2.1_hiera_tiny.pt", "sha256": "0f" * 32},
    image_key="blake3:abc",
    source_path="/data/cells.tif",
    parameters={"refine_mode": "add", "multimask": False},
    prompts={
        1: (PromptRecord((None, None), ((3.0, 4.5),), (1,)),),
        2: (
            PromptRecord((None, None), ((10.0, 10.0), (12.0, 11.0)), (1, 0)),
            PromptRecord((None, None), box=(8.0, 8.0, 16.0, 16.0)),
        ),
    },
    not_replayable=(7,),
)


def test_the_record_round_trips_through_json_and_keeps_every_field():
    back = Provenance.from_json(RECORD.to_json())
    assert back == RECORD
    assert back.checkpoint == "sam2.1_hiera_tiny.pt"  # the file name, not the server's path
    assert back.prompts[2][0].point_labels == (1, 0)
    assert json.loads(RECORD.to_json())["prompts"]["2"][1]["box"] == [8.0, 8.0, 16.0, 16.0]


def test_info_without_checkpoint_facts_gives_nulls():
    assert model_facts({"model": "m"}) == {"model": "m", "checkpoint": None, "checkpoint_sha256": None}
    assert Provenance.from_info("auto", None).to_dict()["checkpoint_sha256"] is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"operation": "magic"}, "operation"),
        ({"format": "other"}, "format"),
        ({"model": 3}, "model"),
        ({"prompts": {"1": [{"slice": [None, None], "points": [[1, 2, 3]], "point_labels": [1]}]}}, "points"),
        ({"prompts": {"1": [{"slice": [None, None], "points": [[1, 2]], "point_labels": [5]}]}}, "0 or 1"),
        ({"prompts": {"0": []}}, "positive label id"),
        ({"not_replayable": ["x"]}, "not_replayable"),
    ],
)
def test_a_bad_record_is_refused_with_the_field_named(change, message):
    data = {**RECORD.to_dict(), **change}
    with pytest.raises(ProvenanceError, match=message):
        Provenance.from_dict(data)
    with pytest.raises(ProvenanceError, match="not JSON"):
        Provenance.from_json("{")


def _labels():
    data = np.zeros((32, 40), np.uint16)
    data[4:10, 5:12] = 1
    data[20:30, 20:35] = 2
    return data


def test_every_format_carries_the_record(tmp_path):
    data, geometry = _labels(), Geometry.plain(2)
    tif = tmp_path / "a.tif"
    assert write_imagej(tif, data, {1: "a"}, geometry, {}, provenance=RECORD)
    ngff = write_ngff_labels(tmp_path / "a", data, {}, geometry, provenance=RECORD)
    geojson = write_geojson(tmp_path / "a", data, {}, geometry, provenance=RECORD)
    csv = write_measurements(tmp_path / "a", data, {}, geometry, provenance=RECORD)
    stack = timelapse()
    ctc = tmp_path / "movie_ctc"
    write_ctc(ctc, stack, LINEAGE, provenance=RECORD)
    geff = write_geff(tmp_path / "movie", stack, {}, Geometry.plain(3), LINEAGE, RECORD)
    for path in (tif, ngff, geojson, csv, ctc, geff):
        assert read_provenance(path) == RECORD, path
    assert read_provenance(tmp_path / "a.measurements.provenance.json") == RECORD
    # the ImageJ description stays ImageJ's own; the record is an ImageJ property
    with tifffile.TiffFile(tif) as handle:
        assert handle.pages.first.description.startswith("ImageJ=")
        assert json.loads(handle.imagej_metadata["Properties"][PROVENANCE_KEY]) == RECORD.to_dict()


def test_outputs_without_a_record_say_none(tmp_path):
    data, geometry = _labels(), Geometry.plain(2)
    tif = tmp_path / "a.tif"
    write_imagej(tif, data, {}, geometry, {})
    assert read_provenance(tif) is None
    assert read_provenance(write_ngff_labels(tmp_path / "a", data, {}, geometry)) is None
    assert read_provenance(write_geojson(tmp_path / "a", data, {}, geometry)) is None
