"""Two services of different families behind one real broker: what ``info``, ``mmi.services``
and ``sam2-batch --list-models`` say about each (issue 24).

A real SAM2 tiny worker (random weights, loaded from a checkpoint file, so it has a SHA-256) and
the deterministic stand-in (family ``standin``), both real processes on real sockets.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from protocol.wire.client import ClientConfig, SamClient
from tests.support.backend import Backend
from tests.support.processes import PYTHON, REPO_ROOT, ProcessSpawner, log_text, wait_until

pytestmark = pytest.mark.model

MODEL = "sam2.1_hiera_tiny"
STANDIN = "standin-blobs"


@pytest.fixture
def two_families(spawn: ProcessSpawner, random_checkpoint: Path, tmp_path: Path) -> Backend:
    backend = Backend(spawn, random_checkpoint, heartbeat_interval_s=0.5)
    backend.add_worker(threads=2)
    standin = spawn(
        [PYTHON, "-m", "workers", "--model", STANDIN, "--connect", backend.backend],
        "standin",
    )
    with SamClient(backend.frontend, MODEL, config=ClientConfig(timeout_s=5.0, retries=0)) as client:
        assert wait_until(lambda: client.services().get(STANDIN, {}).get("workers") == 1, 30), log_text(
            standin
        )
    return backend


def test_info_services_and_list_models_describe_both_families(
    two_families: Backend, random_checkpoint: Path
) -> None:
    frontend = two_families.frontend
    with SamClient(frontend, MODEL, config=ClientConfig(timeout_s=30.0, retries=0)) as client:
        before = client.services()
        assert before[MODEL]["workers"] == 1 and before[STANDIN]["workers"] == 1
        assert "family" not in before[MODEL] and "described" not in before[MODEL]  # nobody asked info yet

        info = client.call("info").header["result"]
        assert (
            info["family"] == "sam2" and info["preprocessing"] == "sam2" and info["licence"] == "Apache-2.0"
        )
        assert info["checkpoint"] == random_checkpoint.name
        assert info["checkpoint_sha256"] == hashlib.sha256(random_checkpoint.read_bytes()).hexdigest()
        assert {"info", "embed", "segment", "auto", "propagate"} <= set(info["ops"])

        described = client.describe_services()  # asks the stand-in's info: the broker learns it on the way
    assert described[STANDIN]["family"] == "standin" and "stand-in" in described[STANDIN]["description"]

    with SamClient(frontend, MODEL, config=ClientConfig(timeout_s=5.0, retries=0)) as fresh:
        listing = fresh.services()  # a new client: only the broker's own memory answers
    sam2, standin = listing[MODEL], listing[STANDIN]
    assert sam2["family"] == "sam2" and sam2["licence"] == "Apache-2.0" and sam2["described"] == 1
    assert sam2["description"].startswith("Meta SAM 2.1 Hiera tiny") and "propagate" in sam2["ops"]
    assert standin["family"] == "standin" and standin["preprocessing"] == "none"
    assert "propagate" in standin["ops"] and "concept" in standin["ops"] and "concept" not in sam2["ops"]

    done = subprocess.run(
        [PYTHON, "-m", "batch", "--list-models", "--broker", frontend],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"{MODEL}  [sam2, preprocessing sam2]  workers=1" in out
    assert f"{STANDIN}  [standin, preprocessing none]  workers=1" in out
    assert "licence: Apache-2.0\n" in out and "licence: BSD-3-Clause (this project)" in out
    assert "ops: auto, concept, embed, info, propagate, segment, sleep" in out  # the stand-in
    assert "ops: auto, echo, embed, info, propagate, segment, sleep" in out  # SAM2: no concept


def test_list_models_without_a_broker_exits_2(tmp_path: Path) -> None:
    from tests.support.processes import free_endpoint

    done = subprocess.run(
        [PYTHON, "-m", "batch", "--list-models", "--broker", free_endpoint(), "--timeout-s", "1"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "no broker answered" in done.stderr
