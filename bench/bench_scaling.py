"""Benchmark 4: throughput of N workers serving an operation of fixed duration.

Workers are the light MDP workers of ``bench/peers.py`` (``mdp-sleep``):
they decode each request with ``protocol.wire.codec`` and serve the diagnostic op
``sleep``, which waits without using the CPU, exactly like the SAM2
worker's ``sleep`` op but without loading a model (16 SAM2 workers would need
~8 GB of RAM and would fight over 2 cores while loading). One client keeps
``2 N`` requests in flight through ``python -m broker`` and counts how long
``K N`` requests take. Target: throughput >= 0.9 x N x (one worker's).
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

import zmq

from bench.common import (
    BenchResult,
    Processes,
    Table,
    Target,
    fmt,
    quick_main,
    start_broker,
    start_peer,
    wait_for_workers,
)
from protocol.runtime.processes import wait_for_log
from protocol.wire import codec, mdp

SERVICE = "sleep"


def drive(frontend: str, requests: int, in_flight: int, sleep_s: float) -> float:
    """Send ``requests`` sleep requests keeping ``in_flight`` outstanding; return requests per second."""
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(frontend)

    def send_one() -> None:
        header = {"op": "sleep", "request_id": uuid.uuid4().hex, "params": {"seconds": sleep_s}}
        frames: list[Any] = [mdp.CLIENT_HEADER, mdp.C_REQUEST, SERVICE.encode(), *codec.encode(header)]
        sock.send_multipart(frames, copy=False)

    try:
        started = time.perf_counter()
        sent = 0
        for _ in range(min(in_flight, requests)):
            send_one()
            sent += 1
        done = 0
        while done < requests:
            if not sock.poll(30_000):
                raise RuntimeError(f"no reply within 30 s ({done}/{requests} done)")
            frames = sock.recv_multipart(copy=False)
            reply = codec.decode(frames[3:])
            if reply.status != codec.STATUS_OK:
                raise RuntimeError(f"sleep failed: {reply.header}")
            done += 1
            if sent < requests:
                send_one()
                sent += 1
        return requests / (time.perf_counter() - started)
    finally:
        context.destroy(linger=0)


def run(quick: bool = False) -> BenchResult:
    """Run benchmark 4 and return its table and target."""
    result = BenchResult("scaling", "4. Scaling: N workers, an operation of fixed duration")
    counts = (1, 2, 4) if quick else (1, 2, 4, 8, 16)
    sleep_s = 0.05
    per_worker = 6 if quick else 40
    table = Table(
        f"Throughput with N light workers serving `sleep` ({sleep_s * 1000:.0f} ms, no CPU)",
        ["N workers", "requests", "req/s", "ideal N / duration", "vs N x one worker", "target >= 0.9"],
    )
    worst = None
    with Processes() as procs:
        frontend, backend, _ = start_broker(procs)
        workers: list[Any] = []
        single = None
        for n in counts:
            while len(workers) < n:
                workers.append(
                    start_peer(
                        procs,
                        "mdp-sleep",
                        "--connect",
                        backend,
                        "--service",
                        SERVICE,
                        name=f"sleep{len(workers)}",
                    )
                )
            for proc in workers:
                wait_for_log(proc, "ready", 60)
            wait_for_workers(frontend, SERVICE, n)
            drive(frontend, n, n, 0.0)  # warm-up: every worker once
            requests = per_worker * n
            rate = drive(frontend, requests, 2 * n, sleep_s)
            single = rate if single is None else single
            efficiency = rate / (n * single)
            worst = efficiency if worst is None else min(worst, efficiency)
            table.add(n, requests, fmt(rate, 1), fmt(n / sleep_s, 1), f"{efficiency:.2f}", efficiency >= 0.9)
    table.note = (
        f"One client keeps 2 N requests in flight; {per_worker} requests per worker. "
        "Workers: bench/peers.py mdp-sleep (protocol.wire.codec decode + time.sleep), one process each."
    )
    result.tables.append(table)
    result.targets.append(
        Target(
            f"scaling: throughput / (N x one worker), N = {', '.join(map(str, counts))} (worst)",
            f"{worst:.2f}",
            ">= 0.90",
            worst is not None and worst >= 0.9,
        )
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    return quick_main(run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
