"""The batch CLI: input discovery, output names, summary and resume without a backend;
then ``python -m batch`` end to end against a real broker and two deterministic stand-in workers
(what is checked here is files, rows, logs and resume; ``python -m batch`` against real SAM2
workers is run by test_batch_replay.py, tests/system/test_slurm.py and test_thin_install.py).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from batch.__main__ import main
from batch.inputs import ReadError, UsageError, discover, output_names, read_image
from batch.outputs import Row, merge_rows, read_summary, write_summary
from protocol.runtime.atomic import atomic_file
from protocol.wire.wire_image import stack_contrast_limits
from tests.support.processes import REPO_ROOT, ProcessSpawner, free_endpoint, log_text
from tests.support.standin_backend import SERVICE, StandinBackend

SIZE = 64


def _grey(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (SIZE, SIZE)).astype(np.uint8)
    image[16:40, 20:44] += 150
    return image


def _make_folder(folder: Path) -> None:
    """3 single images (grey PNG, RGB PNG, uint16 TIFF), a 3-page TIFF, a corrupt PNG and a text file."""
    folder.mkdir()
    iio.imwrite(folder / "a_grey.png", _grey(1))
    iio.imwrite(folder / "b_rgb.png", np.stack([_grey(2), _grey(3), _grey(4)], axis=-1))
    tifffile.imwrite(folder / "c_16bit.tif", _grey(5).astype(np.uint16) * 200)
    tifffile.imwrite(folder / "d_stack.tif", np.stack([_grey(6 + z) for z in range(3)]).astype(np.uint16))
    (folder / "e_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (folder / "notes.txt").write_text("not an image")


# ----------------------------------------------------------------------------
# without a backend


def test_discover_and_output_names(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    _make_folder(folder)
    files = discover([folder])
    assert [p.name for p in files] == [
        "a_grey.png",
        "b_rgb.png",
        "c_16bit.tif",
        "d_stack.tif",
        "e_broken.png",
    ]
    assert discover([folder / "b_rgb.png", folder])[0].name == "b_rgb.png"  # given order, no duplicates
    assert len(discover([folder / "b_rgb.png", folder])) == 5
    names = output_names(files)
    assert names[folder / "d_stack.tif"] == "d_stack_labels.tif"
    with pytest.raises(UsageError, match="no such file"):
        discover([tmp_path / "missing"])
    with pytest.raises(UsageError, match="not a supported"):
        discover([folder / "notes.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no images"):
        discover([tmp_path / "empty"])
    # Same stem, other suffix: the suffix joins the name. Same name in two folders: refused.
    assert output_names([Path("x/a.png"), Path("x/a.tif")]) == {
        Path("x/a.png"): "a_png_labels.tif",
        Path("x/a.tif"): "a_tif_labels.tif",
    }
    with pytest.raises(UsageError, match="same label file"):
        output_names([Path("x/a.png"), Path("y/a.png")])


def test_read_image_tells_images_from_stacks(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    _make_folder(folder)
    grey = read_image(folder / "a_grey.png")
    assert (
        grey.stack_shape is None and grey.slices.shape == (1, SIZE, SIZE) and grey.label_shape == (SIZE, SIZE)
    )
    rgb = read_image(folder / "b_rgb.png")
    assert rgb.stack_shape is None and rgb.slices.shape == (1, SIZE, SIZE, 3)
    stack = read_image(folder / "d_stack.tif")
    assert (
        stack.stack_shape == (3,)
        and stack.slices.shape == (3, SIZE, SIZE)
        and stack.slices.dtype == np.uint16
    )
    assert stack.label_shape == (3, SIZE, SIZE)
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((8, 9, 3), np.uint8), photometric="rgb")
    assert read_image(tmp_path / "rgb.tif").slices.shape == (1, 8, 9, 3)
    tifffile.imwrite(tmp_path / "tz.tif", np.zeros((2, 3, 8, 9), np.float64))
    tz = read_image(tmp_path / "tz.tif")
    assert tz.stack_shape == (2, 3) and tz.slices.shape == (6, 8, 9) and tz.slices.dtype == np.float32
    with pytest.raises(ReadError, match="cannot read e_broken.png"):
        read_image(folder / "e_broken.png")
    assert stack_contrast_limits(stack.slices) is not None
    assert stack_contrast_limits(grey.slices) is None  # uint8 is sent as is


def test_summary_merge_and_atomic_writes(tmp_path: Path) -> None:
    path = tmp_path / "summary.csv"
    first = [Row("a.png", objects="3", seconds="1.000"), Row("s.tif", "1", "2"), Row("s.tif", "0", "1")]
    write_summary(path, merge_rows([], first, set()))
    rows = read_summary(path)
    assert [(r.file, r.slice) for r in rows] == [("a.png", ""), ("s.tif", "0"), ("s.tif", "1")]
    # A later run redoes a.png and skips s.tif (its labels exist): s.tif keeps its rows.
    merged = merge_rows(rows, [Row("a.png", objects="5")], {"s.tif"})
    assert [(r.file, r.slice, r.objects) for r in merged] == [
        ("a.png", "", "5"),
        ("s.tif", "0", "1"),
        ("s.tif", "1", "2"),
    ]
    # Rows of files that are no longer inputs go.
    assert merge_rows(rows, [], set()) == []
    with pytest.raises(RuntimeError), atomic_file(tmp_path / "x.tif") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash while writing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.csv"]  # no half-written file, no temp


def test_usage_and_connection_errors_exit_2(tmp_path: Path) -> None:
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    image = tmp_path / "a.png"
    iio.imwrite(image, _grey(1))
    started = time.monotonic()
    assert (
        main([str(image), "--out", str(tmp_path / "out"), "--broker", free_endpoint(), "--no-progress"]) == 2
    )
    assert time.monotonic() - started < 15
    assert main([str(image), "--out", str(tmp_path / "out"), "--contrast-limits", "5", "1"]) == 2
    with pytest.raises(SystemExit) as caught:
        main([str(image)])  # --out is required
    assert caught.value.code == 2


# ----------------------------------------------------------------------------
# through a real broker and two stand-in workers


def _batch(*args: str, timeout_s: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batch", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def test_batch_end_to_end_with_resume(tmp_path: Path, spawn: ProcessSpawner) -> None:
    # 0.3 s per image, as a model would take a while: the batch's requests overlap, so both workers work.
    backend = StandinBackend(spawn, workers=2, delay_s=0.3)
    folder, out, log_file = tmp_path / "in", tmp_path / "out", tmp_path / "logs" / "batch.log"
    _make_folder(folder)
    args = [str(folder), "--out", str(out), "--broker", backend.frontend, "--model", SERVICE]
    args += ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]
    args += ["--timeout-s", "120", "--log-file", str(log_file), "--no-progress"]

    first = _batch(*args)
    assert first.returncode == 1, first.stderr  # the corrupt file failed, the rest went through
    labels = {name: tifffile.imread(out / f"{name}_labels.tif") for name in ("a_grey", "b_rgb", "c_16bit")}
    for name, image in labels.items():
        assert image.dtype == np.uint16 and image.shape == (SIZE, SIZE), name  # Fiji-ready: ImageJ 16-bit
    stack = tifffile.imread(out / "d_stack_labels.tif")
    assert stack.dtype == np.uint16 and stack.shape == (3, SIZE, SIZE)
    assert not (out / "e_broken_labels.tif").exists()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no temporary files left

    with (out / "summary.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["file"].rsplit("/", 1)[-1], r["slice"], r["status"]) for r in rows] == [
        ("a_grey.png", "", "ok"),
        ("b_rgb.png", "", "ok"),
        ("c_16bit.tif", "", "ok"),
        ("d_stack.tif", "0", "ok"),
        ("d_stack.tif", "1", "ok"),
        ("d_stack.tif", "2", "ok"),
        ("e_broken.png", "", "error"),
    ]
    for row in rows[:-1]:
        assert (
            int(row["objects"]) >= 0 and float(row["seconds"]) > 0 and row["request_id"] and not row["error"]
        )
    assert int(rows[0]["objects"]) == int(labels["a_grey"].max()) == 1  # the stand-in sees the bright square
    assert "cannot read e_broken.png" in rows[-1]["error"]

    # Every process logged with timestamps, its role and the request ids.
    batch_log = log_file.read_text()
    assert "batch[" in batch_log and "unreadable file=" in batch_log
    request_id = rows[0]["request_id"]
    assert f"request_id={request_id}" in batch_log
    assert any(f"request_id={request_id} op=auto status=ok" in log_text(w) for w in backend.workers)
    # Several requests were in flight: both workers worked.
    assert all("op=auto status=ok" in log_text(w) for w in backend.workers)

    # A second run skips every input that has its labels; only the corrupt file fails again.
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*_labels.tif")}
    second = _batch(*args)
    assert second.returncode == 1, second.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*_labels.tif")} == mtimes
    assert log_file.read_text().count("skip file=") == 4
    with (out / "summary.csv").open(newline="") as handle:
        assert list(csv.DictReader(handle)) == rows

    # Without the corrupt file everything is done: exit 0, nothing recomputed.
    os.remove(folder / "e_broken.png")
    third = _batch(*args)
    assert third.returncode == 0, third.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*_labels.tif")} == mtimes
    with (out / "summary.csv").open(newline="") as handle:
        assert list(csv.DictReader(handle)) == rows[:-1]
