"""A broker and deterministic stand-in workers (``python -m workers --model standin-blobs``) as processes."""

from __future__ import annotations

from collections.abc import Sequence

from protocol.ops import requests as ops
from protocol.ops.fan_out import fan_out
from protocol.wire.client import ClientConfig, SamClient
from tests.support.processes import PYTHON, ProcessSpawner, free_endpoint, log_text, wait_until
from workers.standin import DEFAULT_MODEL as SERVICE


class StandinBackend:
    """``python -m broker`` and ``n`` stand-in worker processes."""

    def __init__(
        self, spawn: ProcessSpawner, workers: int, delay_s: float = 0.0, worker_args: Sequence[str] = ()
    ) -> None:
        """``worker_args``: more options of each stand-in (``--encode-delay-s``, ``--cache-entries``)."""
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
                    "workers",
                    "--model",
                    SERVICE,
                    "--connect",
                    self.backend,
                    "--heartbeat-interval-s",
                    "0.25",
                    "--heartbeat-liveness",
                    "4",
                    "--delay-s",
                    str(delay_s),
                    *worker_args,
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

    def infos(self, tries: int = 5) -> dict[int, dict]:
        """``info`` of every stand-in worker, by pid (simultaneous requests reach different idle workers)."""
        found: dict[int, dict] = {}
        for _ in range(tries):
            fan_out(
                list(range(len(self.workers))),
                self.client,
                lambda client, _i, _halt: ops.info(client, timeout_s=10.0),
                lambda _i, info: found.__setitem__(int(info["pid"]), info),
                in_flight=len(self.workers),
            )
            if len(found) == len(self.workers):
                break
        return found
