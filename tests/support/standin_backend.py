"""A broker with deterministic stand-in workers (``tests/support/standin_worker.py``) as real subprocesses."""

from __future__ import annotations

from protocol.client import ClientConfig, SamClient
from tests.support.processes import PYTHON, ProcessSpawner, free_endpoint, log_text, wait_until

SERVICE = "standin"


class StandinBackend:
    """``python -m broker`` and ``n`` stand-in worker processes."""

    def __init__(self, spawn: ProcessSpawner, workers: int, delay_s: float = 0.0) -> None:
        self.frontend, self.backend = free_endpoint(), free_endpoint()
        broker = spawn(
            [PYTHON, "-m", "broker", "--frontend", self.frontend, "--backend", self.backend,
             "--heartbeat-interval-s", "0.25", "--heartbeat-liveness", "4"],
            "broker",
        )  # fmt: skip
        assert wait_until(lambda: "broker ready" in log_text(broker), 30), log_text(broker)
        self.workers = [
            spawn(
                [
                    PYTHON,
                    "-m",
                    "tests.support.standin_worker",
                    "--connect",
                    self.backend,
                    "--service",
                    SERVICE,
                    "--heartbeat-interval-s",
                    "0.25",
                    "--heartbeat-liveness",
                    "4",
                    "--delay-s",
                    str(delay_s),
                ],
                f"standin{k}",
            )  # fmt: skip
            for k in range(workers)
        ]
        for proc in self.workers:
            assert wait_until(lambda p=proc: "worker ready" in log_text(p), 60), log_text(proc)  # type: ignore[misc]
        with self.client() as client:
            assert wait_until(lambda: client.services().get(SERVICE, {}).get("workers") == workers, 10)

    def client(self, service: str = SERVICE) -> SamClient:
        return SamClient(self.frontend, service, config=ClientConfig(timeout_s=60.0, retries=0))
