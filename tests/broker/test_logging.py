"""Every process logs with a timestamp, its role and the request ids (``--log-file``).

A real broker and a real SAM2 worker (random weights) write their logs to
files; a request sent here must then be traceable by its id in both.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from protocol.wire.client import ClientConfig, SamClient
from protocol.wire.errors import RemoteError
from tests.support.processes import MODEL, PYTHON, ProcessSpawner, free_endpoint, log_text, wait_until

pytestmark = pytest.mark.model

TIMESTAMP = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}[.,]\d{3}"


def _entries(path: Path) -> list[str]:
    """Log entries: lines that do not continue the previous one (tracebacks, wrapped warnings)."""
    return [line for line in path.read_text().splitlines() if line and not line[0].isspace()]


def test_broker_and_worker_log_files_name_time_role_and_request_id(
    spawn: ProcessSpawner, random_checkpoint: Path, tmp_path: Path
) -> None:
    frontend, backend = free_endpoint(), free_endpoint()
    broker_log, worker_log = tmp_path / "logs" / "broker.log", tmp_path / "logs" / "worker-cpu.log"
    broker_log.parent.mkdir()
    broker = spawn(
        [PYTHON, "-m", "broker", "--frontend", frontend, "--backend", backend,
         "--log-level", "DEBUG", "--log-file", str(broker_log)],
        "broker-stderr",
    )  # fmt: skip
    worker = spawn(
        [PYTHON, "-m", "workers", "--connect", backend, "--model", MODEL,
         "--checkpoint", str(random_checkpoint), "--device", "cpu", "--threads", "1",
         "--log-level", "INFO", "--log-file", str(worker_log)],
        "worker-stderr",
    )  # fmt: skip
    assert wait_until(lambda: worker_log.exists() and "worker ready" in worker_log.read_text(), 180), (
        log_text(worker)
    )
    with SamClient(frontend, MODEL, config=ClientConfig(timeout_s=60, retries=0)) as client:
        ok_id = client.call("info").request_id
        with pytest.raises(RemoteError) as caught:
            client.call("sleep", {"seconds": 1000})
    error_id = caught.value.request_id
    assert caught.value.code == "bad_request" and error_id
    assert wait_until(lambda: f"request_id={error_id}" in broker_log.read_text(), 5), log_text(broker)

    broker_entries = _entries(broker_log)
    worker_entries = _entries(worker_log)
    assert all(re.match(rf"{TIMESTAMP} broker (DEBUG|INFO|WARNING|ERROR) ", e) for e in broker_entries), (
        broker_entries
    )
    assert all(
        re.match(rf"{TIMESTAMP} worker\[\d+\] (DEBUG|INFO|WARNING|ERROR) ", e) for e in worker_entries
    ), worker_entries
    # The broker names the request when it dispatches it and when it forwards the answer ...
    assert any(f"dispatch request_id={ok_id}" in e for e in broker_entries)
    assert any(f"final request_id={ok_id}" in e for e in broker_entries)
    # ... and the worker when it starts and finishes it, with the time it took, errors included.
    assert any(f"request_id={ok_id} op=info started" in e for e in worker_entries)
    assert any(re.search(rf"INFO .*request_id={ok_id} op=info status=ok ms=\d+", e) for e in worker_entries)
    assert any(
        re.search(rf"request_id={error_id} op=sleep status=error code=bad_request ms=\d+", e)
        for e in worker_entries
    )
