"""Exported label files are written atomically: a writer SIGKILLed mid-write
never leaves a truncated file under the final name.

A real subprocess calls ``plugin.export.write_labels`` in a loop (each
version of the labels distinguishable), and is killed at random moments.
Whatever is under the final names afterwards must read back completely as
one whole version.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np

from plugin.export import read_labels, sidecar_paths
from tests.support.processes import PYTHON, REPO_ROOT, wait_until

SIZE = 1200
WRITER = f"""
import sys
import numpy as np
from plugin.export import write_labels
base = np.random.default_rng(0).integers(1, 60000, ({SIZE}, {SIZE})).astype(np.uint32)
version = 0
while True:
    write_labels(sys.argv[1], base + version, {{1: f"version {{version}}"}})
    print(version, flush=True)
    version += 1
"""


def _base() -> np.ndarray:
    return np.random.default_rng(0).integers(1, 60000, (SIZE, SIZE)).astype(np.uint32)


def test_writer_killed_mid_write_leaves_only_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "cells.tif"
    json_path, csv_path = sidecar_paths(target)
    base = _base()
    rng = random.Random(1)
    for _ in range(4):
        log = tmp_path / "writer.log"
        with open(log, "wb") as out:
            writer = subprocess.Popen([PYTHON, "-c", WRITER, str(target)], cwd=REPO_ROOT, stdout=out)
        try:
            finished_one = lambda log=log: log.read_text().strip() != ""  # noqa: E731
            assert wait_until(finished_one, 60), "writer never finished a file"
            time.sleep(rng.uniform(0.0, 0.6))  # somewhere inside a later write
        finally:
            os.kill(writer.pid, signal.SIGKILL)
            writer.wait(10)
        saved = read_labels(target)
        # tifffile reads a truncated file as an empty array (a naive writer fails here 5 times in 6)
        assert saved.data.shape == (SIZE, SIZE), saved.data.shape
        offset = saved.data.astype(np.int64) - base
        version = int(offset.flat[0])
        assert (offset == version).all(), "the file mixes two versions"
        assert version >= 0
        names = json.loads(json_path.read_text())  # whole JSON, whatever its version
        assert names["label_names"]["1"].startswith("version ")
        assert csv_path.read_text().startswith("id,name,pixel_count")
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    # A killed writer may leave its temporary file; never under a final name.
    assert all(name.endswith(".tmp") for name in leftovers), leftovers
