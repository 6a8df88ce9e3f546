"""``scripts/start_all.sh`` keeps the backend up: real script, real broker and SAM2 worker (random weights).

A SIGKILLed worker is restarted (the broker and, with a viewer, napari keep
running); SIGTERM to the script or closing the viewer stops every child.
The viewer is a stand-in process (``SAM2_VIEWER_CMD``) so no napari starts.
The SAM2 worker is restarted and serves again in the first test; the tests of
what the supervisor does around it (the viewer, the restart limit) run the
deterministic stand-in model (``--model standin-blobs``), which starts in
seconds where SAM2 takes many: the supervision is the same for every worker.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from protocol.wire.client import ClientConfig, SamClient
from protocol.wire.errors import ClientError
from tests.support.processes import MODEL, REPO_ROOT, alive, free_endpoint, wait_until
from workers.standin import DEFAULT_MODEL as STANDIN

pytestmark = [pytest.mark.model, pytest.mark.timeout(900)]

READY_TIMEOUT_S = 400


class StartAll:
    """``scripts/start_all.sh`` in its own session, its output collected line by line."""

    def __init__(self, tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.frontend, self.backend = free_endpoint(), free_endpoint()
        self.log_dir = tmp_path / "logs"
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            ["scripts/start_all.sh", "--random-weights", "--gpus", "none", "--frontend", self.frontend,
             "--backend", self.backend, "--log-dir", str(self.log_dir), *extra],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace"))

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def pid_of(self, name: str) -> int:
        """The pid of the newest process called ``name`` (from "started/restarted NAME (pid N")."""
        if name == "napari":
            pattern = r"napari running \(pid (\d+)"
        else:
            pattern = rf"(?:re)?started {re.escape(name)} \(pid (\d+)"
        pids = re.findall(pattern, self.output)
        assert pids, self.output
        return int(pids[-1])

    def wait_for(self, text: str, timeout_s: float) -> None:
        assert wait_until(lambda: text in self.output, timeout_s, 0.2), f"no {text!r} in:\n{self.output}"

    def workers(self) -> int:
        with SamClient(self.frontend, config=ClientConfig(timeout_s=2.0, retries=0)) as client:
            return int(client.services(timeout_s=2.0).get(MODEL, {}).get("workers", 0))

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def test_no_viewer_restarts_a_killed_worker_and_sigterm_stops_everything(tmp_path) -> None:
    run = StartAll(tmp_path, "--no-viewer")
    try:
        run.wait_for("backend ready", READY_TIMEOUT_S)
        broker, worker = run.pid_of("broker"), run.pid_of("worker-cpu")
        assert run.workers() == 1

        os.kill(worker, signal.SIGKILL)
        run.wait_for("exited with status", 10)
        assert re.search(r"worker-cpu \(pid \d+\) exited with status 137; restarting it in 1 s", run.output)
        run.wait_for("restarted worker-cpu", 10)
        new_worker = run.pid_of("worker-cpu")
        assert new_worker != worker and alive(new_worker)
        # the new worker registers and the broker drops the dead one: one worker again, the new one
        worker_log = run.log_dir / "worker-cpu.log"
        assert wait_until(lambda: worker_log.read_text().count("worker ready") == 2, READY_TIMEOUT_S, 0.5)
        assert wait_until(lambda: run.workers() == 1, 30, 0.5)
        config = ClientConfig(timeout_s=60, retries=0)
        with SamClient(run.frontend, MODEL, config=config) as client:
            assert client.call("info").header["result"]["pid"] == new_worker
        assert run.pid_of("worker-cpu") == new_worker, run.output  # restarted once only
        assert run.pid_of("broker") == broker and alive(broker)
        assert run.proc.poll() is None  # server mode keeps running
        assert "restarted worker-cpu" in (run.log_dir / "start_all.log").read_text()

        os.kill(run.proc.pid, signal.SIGTERM)  # the script only, as a service manager would
        assert run.proc.wait(timeout=30) == 0
        assert wait_until(lambda: not alive(broker) and not alive(new_worker), 15)
    finally:
        run.kill()
    with pytest.raises(ClientError):
        run.workers()


def test_viewer_survives_a_worker_crash_and_closing_it_stops_the_backend(tmp_path) -> None:
    # the stand-in viewer records the broker address start_all.sh gives napari, then waits
    address_file = tmp_path / "viewer_saw"
    viewer_cmd = f'echo "$SAM2_BROKER_ADDRESS $SAM2_EMBEDDED" > {address_file}; exec sleep 600'
    run = StartAll(tmp_path, "--model", STANDIN, env={"SAM2_VIEWER_CMD": viewer_cmd})
    try:
        run.wait_for("napari running", READY_TIMEOUT_S)
        viewer, broker, worker = run.pid_of("napari"), run.pid_of("broker"), run.pid_of("worker-standin")
        assert wait_until(address_file.exists, 10)
        assert address_file.read_text().split() == [run.frontend, "0"]

        os.kill(worker, signal.SIGKILL)
        run.wait_for("restarted worker-standin", 15)
        new_worker = run.pid_of("worker-standin")
        time.sleep(1.0)
        assert alive(viewer) and alive(broker) and alive(new_worker) and run.proc.poll() is None
        assert "stopping everything" not in run.output

        os.kill(viewer, signal.SIGTERM)  # the user closes napari
        assert run.proc.wait(timeout=30) == 0
        assert "napari closed; stopping the backend" in run.output
        assert wait_until(lambda: not alive(broker) and not alive(new_worker), 15)
    finally:
        run.kill()


def test_a_process_past_its_restart_limit_is_left_down_loudly_and_the_rest_keeps_running(tmp_path) -> None:
    run = StartAll(tmp_path, "--no-viewer", "--max-restarts", "0", "--model", STANDIN)
    try:
        run.wait_for("backend ready", READY_TIMEOUT_S)
        broker, worker = run.pid_of("broker"), run.pid_of("worker-standin")
        os.kill(worker, signal.SIGKILL)
        run.wait_for("NOT restarting it again", 10)
        pattern = r"ERROR: worker-standin \(pid \d+\) exited with status 137 after 0 restarts"
        assert re.search(pattern, run.output)
        assert "NOT restarting" in (run.log_dir / "start_all.log").read_text()
        time.sleep(2.0)
        assert "restarted worker-standin" not in run.output
        assert alive(broker) and run.proc.poll() is None  # the broker keeps serving (clients get no_worker)
        # with nothing left to supervise, server mode ends with an error
        os.kill(broker, signal.SIGKILL)
        assert run.proc.wait(timeout=15) == 1
        assert "every backend process was given up" in run.output
    finally:
        run.kill()
