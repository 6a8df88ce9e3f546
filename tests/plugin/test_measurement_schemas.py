"""Measurements CSV schemas (issue 23, item 5): one documented column set for 2D labels, one for 3D,
fixed by the labels' axes and never by their content, so CSVs concatenate."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from protocol.formats.geometry import Geometry
from protocol.formats.measure import (
    COLUMNS_2D,
    COLUMNS_3D,
    COLUMNS_PLANES,
    COLUMNS_TIMELAPSE,
    schema_for,
    write_measurements,
)
from protocol.formats.tracks import build_tracks

NAMES = {4: "nucleus"}


def read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def plane(objects: int) -> np.ndarray:
    data = np.zeros((30, 40), np.uint16)
    for k in range(objects):
        data[2 + 6 * k : 6 + 6 * k, 3:9] = k + 4
    return data


def test_a_2d_csv_has_no_z_volume_or_slice_column_and_no_empty_cell(tmp_path: Path) -> None:
    geometry = Geometry.from_layer(2, (0.5, 0.5), None, ("um", "um"))
    image = np.random.default_rng(0).random((30, 40))
    header, rows = read(write_measurements(tmp_path / "a.csv", plane(2), NAMES, geometry, image))
    assert header == [*COLUMNS_2D, "mean_intensity"]
    assert not {"slice", "volume", "centroid_z", "bbox_min_z", "bbox_max_z"} & set(header)
    assert len(rows) == 2 and all(value != "" for row in rows for key, value in row.items() if key != "name")
    assert float(rows[0]["area"]) == pytest.approx(24 * 0.25)  # 4 x 6 pixels of 0.5 um


def test_columns_never_shift_with_content(tmp_path: Path) -> None:
    """Empty labels, more objects, with or without an image: one header per schema."""
    geometry = Geometry.plain(2)
    headers = {
        tuple(
            read(write_measurements(tmp_path / f"{n}-{with_image}.csv", plane(n), NAMES, geometry, image))[0]
        )
        for n in (0, 1, 3)
        for with_image, image in ((True, np.ones((30, 40))), (False, None))
    }
    assert headers == {(*COLUMNS_2D, "mean_intensity")}
    stack_geometry = Geometry.from_layer(3, (2.0, 0.5, 0.5), None, ("um",) * 3)
    stacks = [np.zeros((3, 30, 40), np.uint16), np.stack([plane(0), plane(1), plane(3)])]
    headers = {
        tuple(read(write_measurements(tmp_path / f"s{i}.csv", s, NAMES, stack_geometry))[0])
        for i, s in enumerate(stacks)
    }
    assert headers == {(*COLUMNS_3D, "mean_intensity")}


def test_a_3d_csv_fills_z_and_volume_on_plane_rows_and_they_add_up(tmp_path: Path) -> None:
    data = np.zeros((3, 30, 40), np.uint16)
    data[0, 5:10, 5:10] = 4
    data[1, 5:12, 5:10] = 4
    geometry = Geometry.from_layer(3, (2.0, 0.5, 0.25), (10.0, 0.0, 0.0), ("um",) * 3)
    header, rows = read(write_measurements(tmp_path / "z.csv", data, NAMES, geometry))
    assert header == [*COLUMNS_3D, "mean_intensity"]
    planes = [r for r in rows if r["slice"] != "all"]
    (whole,) = [r for r in rows if r["slice"] == "all"]
    assert [r["slice"] for r in planes] == ["0", "1"]
    assert [(r["bbox_min_z"], r["bbox_max_z"]) for r in planes] == [("0", "1"), ("1", "2")]
    assert [float(r["centroid_z"]) for r in planes] == [11.0, 13.0]
    assert sum(float(r["volume"]) for r in planes) == pytest.approx(float(whole["volume"]))
    assert float(whole["volume"]) == pytest.approx(60 * 2.0 * 0.5 * 0.25)
    assert whole["area"] == ""  # the one cell an `all` row leaves empty: a volume has no plane area
    assert all(r[c] != "" for r in planes for c in COLUMNS_3D if c != "name")


def test_the_schema_follows_the_axes() -> None:
    assert schema_for("yx").columns == COLUMNS_2D
    assert schema_for("zyx").columns == schema_for("tzyx").columns == COLUMNS_3D
    assert schema_for("cyx").columns == schema_for("tcyx").columns == COLUMNS_PLANES
    assert schema_for("tyx").columns == COLUMNS_TIMELAPSE


def test_a_time_lapse_csv_has_frame_and_track_id_numbered_as_the_ctc_export(tmp_path: Path) -> None:
    """Label 4 is on frames 0-1 and 3 (a gap: its later run is a new track), 5 divides into 6 and 7."""
    stack = np.zeros((4, 30, 40), np.uint16)
    stack[[0, 1, 3], 2:6, 3:9] = 4
    stack[:2, 20:26, 20:30] = 5
    stack[2:, 20:26, 20:24] = 6
    stack[2:, 20:26, 26:30] = 7
    lineage = {6: 5, 7: 5}
    geometry = Geometry.from_layer(3, (1.0, 0.5, 0.5), None, ("s", "um", "um"), ("t", "y", "x"))
    assert geometry.axes == "tyx"
    header, rows = read(write_measurements(tmp_path / "t.csv", stack, NAMES, geometry, lineage=lineage))
    assert header == [*COLUMNS_TIMELAPSE, "mean_intensity"]
    assert "slice" not in header
    found = {(int(r["frame"]), int(r["id"])): int(r["track_id"]) for r in rows}
    tracks = build_tracks(stack, lineage)  # what the CTC and GEFF exports number
    expected = {
        (t, track.label_id): track.track_id
        for track in tracks.tracks
        for t in range(track.begin, track.end + 1)
    }
    assert found == expected
    assert found[(3, 4)] != 4 and found[(0, 4)] == 4  # the run after the gap is a track of its own
    assert all(r["area"] != "" and r["frame"] != "" for r in rows)
