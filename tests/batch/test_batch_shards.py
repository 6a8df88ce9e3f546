"""``sam2-batch --shard I/N``: a set of inputs split across client processes that share one worker pool.

Pure logic first (parsing, the split, SLURM's variables, merging summaries), then
two shard processes run at once against one broker with stand-in workers: their
label files are exactly those of one single run, and their summaries merge into
the single run's summary.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from batch.__main__ import EXIT_USAGE, main
from batch.outputs import SUMMARY_NAME, Row, read_summary, write_summary
from batch.shards import Shard, ShardError, merge_summaries, parse_shard
from bench.discs import disc_image, scattered_discs
from tests.support.processes import REPO_ROOT, ProcessSpawner
from tests.support.standin_backend import SERVICE, StandinBackend

# ----------------------------------------------------------------------------
# without a backend


def test_shard_values_parse_or_fail_with_a_clear_message() -> None:
    assert parse_shard(None) is None
    assert parse_shard("2/4") == Shard(2, 4) and parse_shard(" 1 / 1 ") == Shard(1, 1)
    for text, message in [
        ("0/4", r"numbered 1\.\.4"),
        ("5/4", r"numbered 1\.\.4"),
        ("1/0", "at least 1"),
        ("2", "must be I/N"),
        ("a/b", "must be I/N"),
        ("-1/2", "must be I/N"),
        ("", "must be I/N"),
    ]:
        with pytest.raises(ShardError, match=message):
            parse_shard(text)


def test_shard_auto_reads_the_slurm_array_and_refuses_outside_one() -> None:
    env = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert parse_shard("auto", env) == Shard(3, 4)
    assert parse_shard("AUTO", {**env, "SLURM_ARRAY_TASK_ID": "5"}) == Shard(1, 4)
    with pytest.raises(ShardError, match="needs a SLURM job array"):
        parse_shard("auto", {})
    with pytest.raises(ShardError, match="step 1"):
        parse_shard("auto", {**env, "SLURM_ARRAY_TASK_STEP": "2"})
    with pytest.raises(ShardError, match=r"numbered 1\.\.4"):
        parse_shard("auto", {**env, "SLURM_ARRAY_TASK_ID": "9"})


def test_shards_split_the_inputs_once_each_whatever_order_they_are_given_in() -> None:
    files = [Path(f"in/{name}.tif") for name in "qwertyuiopasdfg"]
    for count in (1, 2, 3, 4, 7, 20):
        shares = [Shard(i, count).select(files) for i in range(1, count + 1)]
        assert sorted(p for share in shares for p in share) == sorted(files)  # each input exactly once
        assert max(map(len, shares)) - min(map(len, shares)) <= 1  # round robin: even shares
        for i, share in enumerate(shares, start=1):
            assert share == [p for p in files if p in share]  # the given order within a shard
            assert set(Shard(i, count).select(list(reversed(files)))) == set(share)  # order-independent


def test_bad_shard_on_the_command_line_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "a.tif"
    tifffile.imwrite(image, np.zeros((8, 8), np.uint8))
    assert main([str(image), "--out", str(tmp_path / "out"), "--shard", "3/2"]) == EXIT_USAGE
    assert "--shard 3/2: shards are numbered 1..2" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing started
    assert main(["--merge-summaries", str(tmp_path)]) == EXIT_USAGE
    assert "no shard summaries" in capsys.readouterr().err


def test_merging_needs_every_shard_and_takes_the_newest_rows_of_a_file(tmp_path: Path) -> None:
    write_summary(
        tmp_path / "summary.shard-1-of-2.csv", [Row("b.tif", objects="3"), Row("d.tif", objects="1")]
    )
    with pytest.raises(ShardError, match="shards 2 of 2 have no summary"):
        merge_summaries(tmp_path)
    write_summary(tmp_path / "summary.shard-2-of-2.csv", [Row("a.tif", "1", "2"), Row("a.tif", "0", "5")])
    time.sleep(0.01)
    # A later split with 1 shard redid d.tif: its rows win.
    write_summary(tmp_path / "summary.shard-1-of-1.csv", [Row("d.tif", objects="9")])
    target, rows = merge_summaries(tmp_path)
    assert target == tmp_path / SUMMARY_NAME and rows == 4
    merged = [(r.file, r.slice, r.objects) for r in read_summary(target)]
    assert merged == [("a.tif", "0", "5"), ("a.tif", "1", "2"), ("b.tif", "", "3"), ("d.tif", "", "9")]


# ----------------------------------------------------------------------------
# two shard processes against one broker


def _inputs(folder: Path) -> list[Path]:
    """Seven disc images: small ones, a stack, and one larger than a tile (stitched)."""
    folder.mkdir()
    paths = []
    for k in range(5):
        shape = (300 + 40 * k, 360)
        centres, radii = scattered_discs(shape, spacing=50, seed=k)
        image, _ = disc_image(shape, centres, radii)
        paths.append(folder / f"img{k}.tif")
        tifffile.imwrite(paths[-1], image)
    centres, radii = scattered_discs((256, 256), spacing=50, seed=9)
    stack = np.stack([disc_image((256, 256), centres[z:], radii[z:])[0] for z in range(3)])
    paths.append(folder / "stack.tif")
    tifffile.imwrite(paths[-1], stack)
    centres, radii = scattered_discs((1400, 1400), spacing=60, seed=10)
    paths.append(folder / "large.tif")
    tifffile.imwrite(paths[-1], disc_image((1400, 1400), centres, radii)[0])
    return paths


def _batch_command(backend: StandinBackend, folder: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "batch", str(folder), "--out", str(out), "--broker", backend.frontend,
            "--model", SERVICE, "--no-progress", *extra]  # fmt: skip


def _comparable(summary: Path) -> list[tuple[str, ...]]:
    with summary.open(newline="") as handle:
        return [(r["file"], r["slice"], r["objects"], r["status"]) for r in csv.DictReader(handle)]


def test_two_shard_processes_write_exactly_the_outputs_of_one_run(
    tmp_path: Path, spawn: ProcessSpawner
) -> None:
    folder = tmp_path / "in"
    _inputs(folder)
    backend = StandinBackend(spawn, workers=2)
    single = subprocess.run(
        _batch_command(backend, folder, tmp_path / "single"), cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]

    shards = [
        subprocess.Popen(
            _batch_command(backend, folder, tmp_path / "sharded", "--shard", f"{i}/2"),
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in (1, 2)
    ]
    logs = [proc.communicate(timeout=300)[1] for proc in shards]
    assert [proc.returncode for proc in shards] == [0, 0], "\n".join(log[-2000:] for log in logs)
    done = [
        {line.split("file=")[1].split()[0] for line in log.splitlines() if " done file=" in line}
        for log in logs
    ]
    assert done[0] and done[1] and not done[0] & done[1], done  # both worked, on different inputs

    sharded = tmp_path / "sharded"
    assert not (sharded / SUMMARY_NAME).exists()
    assert sorted(p.name for p in sharded.glob("summary*.csv")) == [
        "summary.shard-1-of-2.csv",
        "summary.shard-2-of-2.csv",
    ]
    expected = sorted(p.name for p in (tmp_path / "single").glob("*_labels.tif"))
    assert len(expected) == 7 and sorted(p.name for p in sharded.glob("*_labels.tif")) == expected
    for name in expected:
        a, b = tifffile.imread(tmp_path / "single" / name), tifffile.imread(sharded / name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name

    merged = subprocess.run(
        [sys.executable, "-m", "batch", "--merge-summaries", str(sharded)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert merged.returncode == 0, merged.stderr
    assert _comparable(sharded / SUMMARY_NAME) == _comparable(tmp_path / "single" / SUMMARY_NAME)
