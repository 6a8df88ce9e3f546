"""The stand-in model ``standin-blobs``: served by the worker command itself, without torch.

The worker runs with ``torch`` and ``sam2`` made unimportable (``sys.modules[name] = None``
makes every ``import`` of them raise ``ImportError``), as on a machine without the
``worker`` extra, behind a real broker; it must register and answer like a worker.
"""

from __future__ import annotations

import numpy as np

from bench.discs import disc_image
from protocol.ops import requests as ops
from protocol.wire.client import ClientConfig, SamClient
from tests.support.processes import PYTHON, ProcessSpawner, free_endpoint, log_text, wait_until
from workers.standin import DEFAULT_MODEL, FAMILY
from workers.standin.service import ENTRY_BYTES

# ``python -m workers ARGS`` with torch and sam2 unimportable.
WITHOUT_TORCH = (
    "import sys; sys.modules['torch'] = None; sys.modules['sam2'] = None; sys.argv[0] = 'workers'; "
    "from workers.__main__ import main; sys.exit(main())"
)


def test_worker_command_serves_standin_blobs_without_torch(spawn: ProcessSpawner) -> None:
    frontend, backend = free_endpoint(), free_endpoint()
    broker = spawn([PYTHON, "-m", "broker", "--frontend", frontend, "--backend", backend], "broker")
    assert wait_until(lambda: "broker ready" in log_text(broker), 30), log_text(broker)
    worker = spawn(
        [PYTHON, "-c", WITHOUT_TORCH, "--model", DEFAULT_MODEL, "--connect", backend, "--cache-entries", "2"],
        "standin",
    )
    assert wait_until(lambda: "worker ready" in log_text(worker) or worker.poll() is not None, 60)
    assert worker.poll() is None, log_text(worker)

    image, truth = disc_image((200, 300), np.array([[60.0, 80.0], [140.0, 220.0]]), np.array([20.0, 25.0]))
    with SamClient(frontend, DEFAULT_MODEL, config=ClientConfig(timeout_s=30.0, retries=0)) as client:
        reply = client.call("segment", {"points": [[140.0, 220.0]], "point_labels": [1]}, image=image)
        info = ops.info(client, timeout_s=10.0)
    assert np.array_equal(reply.arrays["mask"], truth == 2)
    assert (info["model"], info["family"]) == (DEFAULT_MODEL, FAMILY)
    assert (info["cache"]["entries"], info["cache"]["limit_bytes"]) == (1, 2 * ENTRY_BYTES)
    assert "Traceback" not in log_text(worker)


def test_an_unknown_standin_option_is_a_usage_error(spawn: ProcessSpawner) -> None:
    proc = spawn([PYTHON, "-m", "workers", "--model", DEFAULT_MODEL, "--checkpoint", "x.pt"], "bad")
    assert proc.wait(timeout=60) == 2
    assert "unrecognized arguments: --checkpoint" in log_text(proc)


def test_help_of_the_standin_shows_its_own_options_without_torch(spawn: ProcessSpawner) -> None:
    proc = spawn([PYTHON, "-c", WITHOUT_TORCH, "--model", DEFAULT_MODEL, "--help"], "help")
    assert proc.wait(timeout=60) == 0
    assert "--delay-s" in log_text(proc) and "--encode-delay-s" in log_text(proc)
