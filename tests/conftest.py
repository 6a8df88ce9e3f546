"""Shared fixtures: free ports, real subprocesses that are always cleaned up,
and a random-weight SAM2 checkpoint built once per session.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import zmq

from protocol.checkpoints import DEFAULT_MODEL

if TYPE_CHECKING:
    from tests.test_broker_support import BrokerHandle, ThreadedWorker

REPO_ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

NO_DISPLAY = sys.platform.startswith("linux") and not (
    os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
)
# pytestmark of every napari test module.
GUI_TEST_MARKS = [
    pytest.mark.gui,
    pytest.mark.model,
    # napari renders with OpenGL: without an X server Qt would abort the whole session
    pytest.mark.skipif(NO_DISPLAY, reason="needs a display: run under Xvfb (scripts/test.sh does)"),
]


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_endpoint() -> str:
    return f"tcp://127.0.0.1:{free_tcp_port()}"


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout_s`` passes; return its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())


class ProcessSpawner:
    """Starts real subprocesses with a log file each and stops all of them at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def __call__(
        self, args: list[str], name: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log_path = self.log_dir / f"{name}.log"
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                args,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                start_new_session=True,
            )
        proc.log_path = log_path  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[ProcessSpawner]:
    spawner = ProcessSpawner(tmp_path)
    yield spawner
    spawner.stop_all()


def log_text(proc: subprocess.Popen[bytes]) -> str:
    return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


MODEL = DEFAULT_MODEL


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight sam2.1 tiny checkpoint in the official layout, built once.

    It is loaded through exactly the code path of a downloaded checkpoint.
    """
    out = tmp_path_factory.mktemp("ckpt") / "sam2.1_hiera_tiny_random.pt"
    subprocess.run(
        [PYTHON, "scripts/make_random_checkpoint.py", "--model", MODEL, "--out", str(out)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


class Backend:
    """A running broker plus workers, all real subprocesses.

    Attributes:
        frontend: client endpoint.
        backend: worker endpoint.
        broker: the broker process.
        workers: the worker processes.
    """

    def __init__(self, spawn: ProcessSpawner, checkpoint: Path, heartbeat_interval_s: float) -> None:
        self.spawn = spawn
        self.checkpoint = checkpoint
        self.heartbeat_interval_s = heartbeat_interval_s
        self.frontend = free_endpoint()
        self.backend = free_endpoint()
        self.broker = spawn(
            [
                PYTHON, "-m", "broker",
                "--frontend", self.frontend,
                "--backend", self.backend,
                "--heartbeat-interval-s", str(heartbeat_interval_s),
                "--heartbeat-liveness", "3",
                "--log-level", "DEBUG",
            ],
            "broker",
        )  # fmt: skip
        assert wait_until(lambda: "broker ready" in log_text(self.broker), 30), log_text(self.broker)
        self.workers: list[subprocess.Popen[bytes]] = []

    def add_worker(self, wait: bool = True) -> subprocess.Popen[bytes]:
        name = f"worker{len(self.workers)}"
        proc = self.spawn(
            [
                PYTHON, "-m", "workers",
                "--connect", self.backend,
                "--model", MODEL,
                "--checkpoint", str(self.checkpoint),
                "--device", "cpu",
                "--threads", "1",
                "--heartbeat-interval-s", str(self.heartbeat_interval_s),
                "--heartbeat-liveness", "3",
                "--log-level", "DEBUG",
            ],
            name,
        )  # fmt: skip
        self.workers.append(proc)
        if wait:
            ok = wait_until(lambda: "worker ready" in log_text(proc) or proc.poll() is not None, 180)
            assert ok and proc.poll() is None, log_text(proc)
        return proc


@pytest.fixture
def make_backend(spawn: ProcessSpawner, random_checkpoint: Path) -> Callable[..., Backend]:
    """Factory: ``make_backend(workers=1)`` starts a broker and that many workers."""

    def factory(workers: int = 1, heartbeat_interval_s: float = 0.25) -> Backend:
        backend = Backend(spawn, random_checkpoint, heartbeat_interval_s)
        procs = [backend.add_worker(wait=False) for _ in range(workers)]
        for proc in procs:
            ok = wait_until(lambda p=proc: "worker ready" in log_text(p) or p.poll() is not None, 180)
            assert ok and proc.poll() is None, log_text(proc)
        return backend

    return factory


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    """A ZeroMQ context for the test's own sockets, destroyed without lingering."""
    context: zmq.Context[Any] = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def broker(spawn: ProcessSpawner) -> BrokerHandle:
    """``python -m broker`` with the test heartbeat settings (tests/test_broker_support.py)."""
    from tests.test_broker_support import start_broker

    return start_broker(spawn)


@pytest.fixture
def workers() -> Iterator[list[ThreadedWorker]]:
    """Append in-thread MDP workers here; they are stopped after the test."""
    started: list[ThreadedWorker] = []
    yield started
    for worker in started:
        worker.stop()
