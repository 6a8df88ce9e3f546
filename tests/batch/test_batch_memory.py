"""``--max-in-memory-mib`` bounds the batch process's memory, whatever the input's size and layout.

What is counted: the peak resident set (VmHWM) of the ``sam2-batch`` process,
which includes the interpreter and its libraries. The bound tested is
``limit + baseline + WORKING_SET_MIB``, where the baseline is the peak of a
process that only imports what the batch imports (measured in the same test)
and the working set is the tiles in flight, their answers and the stitcher's
halos. The input is an uncompressed TIFF as tifffile writes it (one strip:
its zarr view is one chunk, the whole image), several times the limit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from batch.contiguous import contiguous_tiff
from bench.discs import disc_image, disc_scores, scattered_discs
from tests.batch.test_batch_large import RUN_AND_MEASURE
from tests.support.processes import REPO_ROOT, ProcessSpawner
from tests.support.standin_backend import SERVICE, StandinBackend

LIMIT_MIB = 64
WORKING_SET_MIB = 96
"""Tiles in flight (window, wire image, answer, prepared labels: ~12 MiB each, 4 in flight and 4
answers queued), the stitcher's halos and the label store's chunk buffers."""

BASELINE = (
    "import json, re\n"
    "import batch.__main__, batch.runner, batch.large, zarr, tifffile, blosc2, tqdm, numcodecs\n"
    "hwm = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
    "print(json.dumps({'maxrss_kib': hwm}))\n"
)


def test_contiguous_pixels_read_any_window_as_stored(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for shape, colour in [((300, 200), False), ((3, 2, 120, 90), False), ((100, 80, 3), True)]:
        pixels = rng.integers(0, 60000, shape).astype(np.uint16)
        for order in "<>":
            path = tmp_path / f"c{order == '<'}{len(shape)}.tif"
            tifffile.imwrite(path, pixels.astype(pixels.dtype.newbyteorder(order)))
            read = contiguous_tiff(path, colour)
            assert read is not None and read.shape == shape and read.dtype == np.uint16
            lead = (1, 1) if len(shape) == 4 else ()
            plane = pixels[lead] if lead else pixels
            assert np.array_equal(read[(*lead, slice(10, 50), slice(5, 77))], plane[10:50, 5:77])
            assert np.array_equal(read[(*lead, slice(None, None, 7), slice(3, None, 4))], plane[::7, 3::4])
            assert read[(*lead, slice(5, 5))].shape == (0, *plane.shape[1:])
    pixels_4d = tifffile.imread(tmp_path / "cTrue4.tif")
    stack = contiguous_tiff(tmp_path / "cTrue4.tif", False)
    assert stack is not None
    assert np.array_equal(stack[0:2, 1, ::5], pixels_4d[0:2, 1, ::5])  # planes by slices, as dask reads
    with pytest.raises(IndexError, match="integers"):
        stack[0]
    with pytest.raises(IndexError, match="negative steps"):
        stack[0, 0, ::-1]
    tifffile.imwrite(tmp_path / "zlib.tif", pixels, compression="zlib")
    assert contiguous_tiff(tmp_path / "zlib.tif", True) is None  # compressed: read through zarr


def _peak_mib(args: list[str]) -> tuple[float, str]:
    proc = subprocess.run(
        [sys.executable, "-c", RUN_AND_MEASURE, *args], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["rc"] == 0, proc.stderr[-4000:]
    return result["maxrss_kib"] / 1024, proc.stderr


def test_bounded_batch_peak_rss_is_the_limit_plus_a_constant_on_an_input_several_times_larger(
    tmp_path: Path, spawn: ProcessSpawner
) -> None:
    shape = (10240, 10240)  # uint16 input: 200 MiB; uint32 labels: 400 MiB; limit: 64 MiB
    centres, radii = scattered_discs(shape, spacing=120, radius_range=(6.0, 10.0), seed=5)
    image, truth = disc_image(shape, centres, radii, background=1000, foreground=3000, dtype=np.uint16)
    tifffile.imwrite(tmp_path / "slide.tif", image)  # uncompressed, one strip
    del image
    baseline = subprocess.run(
        [sys.executable, "-c", BASELINE], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    baseline_mib = json.loads(baseline.stdout.strip().splitlines()[-1])["maxrss_kib"] / 1024
    backend = StandinBackend(spawn, workers=2)

    peak_mib, log = _peak_mib(
        [str(tmp_path / "slide.tif"), "--out", str(tmp_path / "out"), "--broker", backend.frontend,
         "--model", SERVICE, "--no-progress", "--contrast-limits", "0", "4000",
         "--max-in-memory-mib", str(LIMIT_MIB)],
    )  # fmt: skip
    assert "on disk, tile by tile" in log
    bound = LIMIT_MIB + baseline_mib + WORKING_SET_MIB
    assert peak_mib <= bound, (
        f"peak RSS {peak_mib:.0f} MiB > {LIMIT_MIB} + {baseline_mib:.0f} + {WORKING_SET_MIB}"
    )
    labels = tifffile.imread(tmp_path / "out" / "slide_labels.tif")
    iou, stray, duplicates = disc_scores(labels, truth)
    assert int(labels.max()) == int(truth.max()) and stray == 0 and duplicates == 0 and iou.min() >= 0.9
