"""A real backend for tests: a broker subprocess and SAM2 worker subprocesses (random weights)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.support.processes import MODEL, PYTHON, ProcessSpawner, free_endpoint, log_text, wait_until


class Backend:
    """A running broker plus workers, all real subprocesses.

    Attributes:
        frontend: client endpoint.
        backend: worker endpoint.
        broker: the broker process.
        workers: the worker processes.
    """

    def __init__(
        self,
        spawn: ProcessSpawner,
        checkpoint: Path,
        heartbeat_interval_s: float,
        service_wait_s: float | None = None,
    ) -> None:
        """``service_wait_s``: the broker's ``--service-wait-s`` (None: its default)."""
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
                *(["--service-wait-s", str(service_wait_s)] if service_wait_s is not None else []),
            ],
            "broker",
        )  # fmt: skip
        assert wait_until(lambda: "broker ready" in log_text(self.broker), 30), log_text(self.broker)
        self.workers: list[subprocess.Popen[bytes]] = []

    def add_worker(
        self, wait: bool = True, threads: int = 1, extra: Sequence[str] = ()
    ) -> subprocess.Popen[bytes]:
        """Start one worker with ``threads`` torch threads (2 where it is the only busy process) and
        ``extra`` command-line options."""
        name = f"worker{len(self.workers)}"
        proc = self.spawn(
            [
                PYTHON, "-m", "workers",
                "--connect", self.backend,
                "--model", MODEL,
                "--checkpoint", str(self.checkpoint),
                "--device", "cpu",
                "--threads", str(threads),
                "--heartbeat-interval-s", str(self.heartbeat_interval_s),
                "--heartbeat-liveness", "3",
                "--log-level", "DEBUG",
                *extra,
            ],
            name,
        )  # fmt: skip
        self.workers.append(proc)
        if wait:
            wait_ready(proc)
        return proc

    def add_workers(self, workers: int) -> None:
        """Start ``workers`` workers at once and wait until each is ready; a lone worker gets two
        torch threads (the test process mostly waits on it), several share the cores (one each)."""
        threads = 2 if workers == 1 else 1
        for proc in [self.add_worker(wait=False, threads=threads) for _ in range(workers)]:
            wait_ready(proc)


def wait_ready(proc: subprocess.Popen[bytes]) -> None:
    """Wait until worker ``proc`` logs that it is ready (up to 180 s: torch import and model build)."""
    ok = wait_until(lambda: "worker ready" in log_text(proc) or proc.poll() is not None, 180)
    assert ok and proc.poll() is None, log_text(proc)


@contextlib.contextmanager
def running_backend(folder: Path, checkpoint: Path, workers: int = 1) -> Iterator[Backend]:
    """A broker (heartbeats every 0.25 s) and ``workers`` SAM2 workers (:meth:`Backend.add_workers`),
    logging under ``folder``; all stopped on exit. For module-scoped fixtures of tests that leave the
    backend as they found it."""
    spawner = ProcessSpawner(folder)
    try:
        backend = Backend(spawner, checkpoint, heartbeat_interval_s=0.25)
        backend.add_workers(workers)
        yield backend
    finally:
        spawner.stop_all()
