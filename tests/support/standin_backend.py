"""A broker and deterministic stand-in workers (``python -m workers --model standin-blobs``) as processes."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from protocol.ops import requests as ops
from protocol.ops.fan_out import fan_out
from protocol.wire.client import ClientConfig, SamClient
from protocol.wire.errors import RequestTimeout
from tests.support.processes import PYTHON, ProcessSpawner, free_endpoint, log_text, wait_until
from workers.standin import DEFAULT_MODEL as SERVICE

HEARTBEAT_INTERVAL_S = 0.25
HEARTBEAT_LIVENESS = 4
"""Broker and stand-ins notice a lost peer after interval x liveness = 1 s."""


class StandinBackend:
    """``python -m broker`` and ``n`` stand-in worker processes."""

    def __init__(
        self,
        spawn: ProcessSpawner,
        workers: int,
        delay_s: float = 0.0,
        worker_args: Sequence[str] = (),
        broker_args: Sequence[str] = (),
    ) -> None:
        """``worker_args``: more options of each stand-in (``--encode-delay-s``, ``--cache-entries``);
        ``broker_args``: more options of the broker (``--log-level DEBUG``)."""
        self.frontend, self.backend = free_endpoint(), free_endpoint()
        self._spawn = spawn
        self._broker_args = list(broker_args)
        self.broker: subprocess.Popen[bytes] | None = None
        self.brokers: list[subprocess.Popen[bytes]] = []
        """Every broker process started, the first and each restart (own log each)."""
        self.start_broker()
        self._delay_s = delay_s
        self._worker_args = list(worker_args)
        self.workers: list[subprocess.Popen[bytes]] = []
        for k in range(workers):
            self.start_worker(name=f"standin{k}", wait=False)
        for proc in self.workers:
            assert wait_until(lambda p=proc: "worker ready" in log_text(p), 60), log_text(proc)  # type: ignore[misc]
        if workers:
            assert self.wait_workers(workers, 10), f"{workers} workers did not register"

    def start_worker(
        self, extra_args: Sequence[str] = (), name: str | None = None, wait: bool = True
    ) -> subprocess.Popen[bytes]:
        """Start one more stand-in (this backend's ``delay_s`` and ``worker_args``, then ``extra_args``,
        which win); with ``wait``, return once its log says it sent READY."""
        proc = self._spawn(
            [
                PYTHON, "-m", "workers", "--model", SERVICE, "--connect", self.backend,
                "--heartbeat-interval-s", str(HEARTBEAT_INTERVAL_S),
                "--heartbeat-liveness", str(HEARTBEAT_LIVENESS),
                "--delay-s", str(self._delay_s), *self._worker_args, *extra_args,
            ],
            name or f"standin{len(self.workers)}",
        )  # fmt: skip
        self.workers.append(proc)
        if wait:
            assert wait_until(lambda: "worker ready" in log_text(proc), 60), log_text(proc)
        return proc

    def start_broker(self) -> subprocess.Popen[bytes]:
        """Start the broker on this backend's ports (again after :meth:`kill_broker`); wait until ready."""
        broker = self._spawn(
            [PYTHON, "-m", "broker", "--frontend", self.frontend, "--backend", self.backend,
             "--heartbeat-interval-s", str(HEARTBEAT_INTERVAL_S),
             "--heartbeat-liveness", str(HEARTBEAT_LIVENESS), *self._broker_args],
            "broker" if self.broker is None else f"broker-restart{len(self.brokers)}",
        )  # fmt: skip
        assert wait_until(lambda: "broker ready" in log_text(broker), 30), log_text(broker)
        self.broker = broker
        self.brokers.append(broker)
        return broker

    def kill_broker(self) -> None:
        """SIGKILL the broker: the requests it held are lost, as in a crash."""
        assert self.broker is not None
        self.broker.kill()
        self.broker.wait(timeout=10)

    def wait_workers(self, workers: int, timeout_s: float) -> bool:
        """Wait until the broker lists ``workers`` stand-ins (a busy machine may miss a probe or two)."""

        def registered() -> bool:
            try:
                return client.services().get(SERVICE, {}).get("workers") == workers
            except RequestTimeout:
                return False

        with self.client() as client:
            return wait_until(registered, timeout_s)

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
