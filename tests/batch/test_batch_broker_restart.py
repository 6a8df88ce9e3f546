"""``sam2-batch`` across a broker crash and restart (issue 23, item 12).

The broker is SIGKILLed mid-batch (the requests it held are gone) and started
again on the same ports 3 s later. The batch notices the lost connection
(protocol/README.md, "Lost connections") and sends what it had in flight again
at once, instead of waiting out ``--timeout-s``: every output is there within
the undisturbed run time + the heartbeat interval x liveness + 5 s after the
restart; each resend is in the log with its request id and in ``summary.csv``'s
``retries``.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tifffile

from bench.discs import disc_image, scattered_discs
from tests.support.processes import REPO_ROOT, ProcessSpawner, wait_until
from tests.support.standin_backend import HEARTBEAT_INTERVAL_S, HEARTBEAT_LIVENESS, SERVICE, StandinBackend

IMAGES = 16
DELAY_S = 1.0  # per request: 16 images on 2 workers take ~8 s undisturbed
OUTAGE_S = 3.0


def _batch(backend: StandinBackend, folder: Path, out: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "batch", str(folder), "--out", str(out), "--broker", backend.frontend,
             "--model", SERVICE, "--no-progress"],
            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


def test_batch_resends_at_once_what_a_restarted_broker_lost(tmp_path: Path, spawn: ProcessSpawner) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    centres, radii = scattered_discs((256, 256), spacing=60, radius_range=(6.0, 10.0), seed=1)
    image, _ = disc_image((256, 256), centres, radii)
    for k in range(IMAGES):  # each its own image key: one request per image, no "need image" round
        tifffile.imwrite(folder / f"img{k:02d}.tif", np.roll(image, k, axis=1))
    backend = StandinBackend(spawn, 2, delay_s=DELAY_S)

    started = time.monotonic()
    undisturbed = _batch(backend, folder, tmp_path / "undisturbed", tmp_path / "undisturbed.log")
    assert undisturbed.wait(timeout=300) == 0, (tmp_path / "undisturbed.log").read_text()[-4000:]
    undisturbed_s = time.monotonic() - started

    out = tmp_path / "out"
    log_path = tmp_path / "batch.log"
    proc = _batch(backend, folder, out, log_path)
    # Mid-batch: some labels written, requests in flight at the broker.
    assert wait_until(lambda: len(list(out.glob("*_labels.tif"))) >= 2, 120), log_path.read_text()[-4000:]
    backend.kill_broker()
    time.sleep(OUTAGE_S)
    backend.start_broker()
    restarted = time.monotonic()
    allowed_s = undisturbed_s + HEARTBEAT_INTERVAL_S * HEARTBEAT_LIVENESS + 5.0
    try:
        code = proc.wait(timeout=allowed_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(
            f"the batch did not finish within {allowed_s:.1f} s of the restart "
            f"(undisturbed run {undisturbed_s:.1f} s): {log_path.read_text()[-4000:]}"
        ) from None
    log = log_path.read_text()
    assert code == 0, log[-4000:]
    assert time.monotonic() - restarted <= allowed_s
    assert len(list(out.glob("*_labels.tif"))) == IMAGES

    resent = re.findall(r"request ([0-9a-f]{32}) \(auto\): the connection to the broker .* dropped", log)
    assert resent, f"nothing was resent: {log[-4000:]}"
    with (out / "summary.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert all(row["status"] == "ok" for row in rows), rows
    retried = {row["request_id"]: int(row["retries"]) for row in rows if row["retries"]}
    assert set(resent) <= set(retried), (resent, retried)
    assert sum(retried.values()) >= len(set(resent))
