"""Ctrl-C during a large label write (issue 23, item 7).

``sam2-batch`` on an image whose labels exceed ``--max-in-memory-mib`` writes
them tile by tile (batch/large.py); labels that fit in memory go to OME-Zarr
chunk by chunk too (``write_ngff_labels``'s ``stop``: before, a Ctrl-C there
was ignored until the whole write had ended, and the batch then exited 0
with the file written; a second Ctrl-C landed inside zarr). SIGINT while
either runs must stop quietly:
exit 130, the one "interrupted" message, no asyncio noise ("coroutine was
never awaited", "Task was destroyed") and no traceback, and no partial label
file or temporary store left in ``--out`` (batch/interrupt.py: the stop waits
for the next tile or chunk).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import tifffile

from bench.discs import disc_image, scattered_discs
from tests.support.processes import REPO_ROOT, ProcessSpawner, wait_until
from tests.support.standin_backend import SERVICE, StandinBackend

NOISE = ("never awaited", "Task was destroyed", "Traceback", "Exception ignored")


@pytest.mark.parametrize(
    ("output_format", "budget_mib", "side"),
    [("tiff", "16", 6144), ("ome-zarr", "16", 6144), ("ome-zarr", "1024", 4096)],
    ids=["tiff-tile-by-tile", "ome-zarr-tile-by-tile", "ome-zarr-from-memory"],
)
def test_ctrl_c_during_a_large_write_stops_quietly_and_leaves_no_partial_file(
    tmp_path: Path, spawn: ProcessSpawner, output_format: str, budget_mib: str, side: int
) -> None:
    # uint32 labels: 144 MiB at 6144², written tile by tile with a 16 MiB budget; 64 MiB at 4096², in memory
    shape = (side, side)
    centres, radii = scattered_discs(shape, spacing=120, radius_range=(6.0, 10.0), seed=11)
    image, _ = disc_image(shape, centres, radii)
    tifffile.imwrite(tmp_path / "big.tif", image, tile=(512, 512), compression="zlib")
    del image
    backend = StandinBackend(spawn, 2)
    out = tmp_path / "out"
    log_path = tmp_path / "batch.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "batch", str(tmp_path / "big.tif"), "--out", str(out),
             "--broker", backend.frontend, "--model", SERVICE, "--no-progress",
             "--max-in-memory-mib", budget_mib, "--format", output_format],
            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        assert wait_until(lambda: "writing labels file=" in log_path.read_text(), 300), log_path.read_text()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log_path.read_text()
    assert code == 130, text[-4000:]
    assert "interrupted: finished inputs are kept" in text
    assert not [noise for noise in NOISE if noise in text], text[-4000:]
    left = sorted(p.name for p in out.iterdir())
    assert left == ["summary.csv"], f"a partial label file or temporary store was left: {left}"
