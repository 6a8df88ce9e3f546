"""Benchmark 3: what the broker adds (latency) and how much it carries (throughput).

Latency: one client DEALER does request/reply round trips, one at a time,
through three paths measured in interleaved blocks in the same run:

* ``direct``: client DEALER <-> a ROUTER echo process (no broker at all);
* ``C proxy``: client -> ``zmq.proxy(ROUTER, DEALER)`` -> DEALER echo process;
* ``our broker``: client -> ``python -m broker`` -> MDP echo worker (``bench/peers.py``).

The added latency of the broker is ``median(broker) - median(direct)``
(target <= 100 us for small messages).

Throughput: N load-generating client processes and N echo workers (N = 1, 2,
4), each client keeping ``window`` requests in flight; our broker next to
libzmq's C proxy on the same machine (target: >= 50 % of the proxy's rate).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
import zmq

from bench.common import (
    BenchResult,
    Processes,
    Stats,
    Table,
    Target,
    base_parser,
    fmt,
    minor_faults,
    start_broker,
    start_peer,
    wait_for_workers,
)
from protocol.runtime.processes import free_endpoint, log_text, wait_for_log
from protocol.wire import codec, mdp

SMALL = 0
SIZES = (("small (header only)", SMALL), ("64 KiB", 64 * 1024), ("1 MiB", 1 << 20))


def _frames(service: str, payload_bytes: int) -> list[Any]:
    header = codec.encode({"op": "echo", "request_id": "latency", "params": {}})[0]
    frames: list[Any] = [mdp.CLIENT_HEADER, mdp.C_REQUEST, service.encode(), header]
    if payload_bytes:
        frames.append(b"\1" * payload_bytes)
    return frames


def _round_trips(sock: zmq.Socket[Any], frames: list[Any], count: int) -> list[float]:
    """Seconds of ``count`` sequential round trips."""
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        sock.send_multipart(frames, copy=False)
        if not sock.poll(5000):
            raise RuntimeError("no echo within 5 s")
        sock.recv_multipart(copy=False)
        samples.append(time.perf_counter() - started)
    return samples


def measure_latency(
    endpoints: dict[str, str], service: str, samples: int, blocks: int, pids: dict[str, int] | None = None
) -> tuple[dict[tuple[str, str], Stats], dict[tuple[str, str], list[float]], dict[tuple[str, str], float]]:
    """Round-trip latency (microseconds) per (path, size), paths measured in blocks in rotating order.

    Returns the statistics of all round trips, the median of each block, and
    for each path in ``pids`` (path -> the pid of the process serving it)
    that process's minor page faults per timed round trip (Linux; else none).
    """
    context = zmq.Context()
    socks = {}
    for path, endpoint in endpoints.items():
        sock = context.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(endpoint)
        socks[path] = sock
    results: dict[tuple[str, str], Stats] = {}
    block_medians: dict[tuple[str, str], list[float]] = {}
    faults: dict[tuple[str, str], float] = {}
    pids = pids or {}
    try:
        for size_name, size in SIZES:
            frames = _frames(service, size)
            count = samples if size < (1 << 20) else max(20, samples // 10)
            collected: dict[str, list[float]] = {path: [] for path in endpoints}
            for sock in socks.values():
                _round_trips(sock, frames, max(20, count // 10))  # warm-up
            order = list(socks)
            for block in range(blocks):  # each path leads in turn: no path always follows another
                shift = block % len(order)
                for path in order[shift:] + order[:shift]:
                    before = minor_faults(pids[path]) if path in pids else None
                    times = _round_trips(socks[path], frames, max(1, count // blocks))
                    after = minor_faults(pids[path]) if path in pids else None
                    block_medians.setdefault((path, size_name), []).append(statistics.median(times) * 1e6)
                    collected[path] += times
                    if before is not None and after is not None:
                        faults[(path, size_name)] = faults.get((path, size_name), 0.0) + after - before
            for path, values in collected.items():
                results[(path, size_name)] = Stats.of(values).scaled(1e6)
                if (path, size_name) in faults:
                    faults[(path, size_name)] /= len(values)
    finally:
        context.destroy(linger=0)
    return results, block_medians, faults


def measure_python_cost(rounds: int, count: int) -> dict[str, Stats]:
    """Microseconds of broker-process Python per small round trip, measured in this process.

    A client DEALER and an MDP echo worker's DEALER reach, over ``inproc://``
    (no I/O threads, no network),

    * ``our broker``: a real :class:`broker.broker.Broker`, one ``serve_ready``
      call per message (poll, receive, parse, queue, dispatch, send);
    * ``bare forwarding``: the fewest pyzmq calls that move the same frames
      (poll, receive each frame without a copy, swap the envelope, send),
      without MDP parsing, checks, queue or bookkeeping: the floor for any
      broker written in Python on pyzmq.

    Only the broker side is timed; one median per round of ``count`` round
    trips, the two alternating round by round.
    """
    from broker.broker import Broker
    from broker.config import BrokerConfig

    context: zmq.Context[zmq.Socket[Any]] = zmq.Context()
    broker = Broker(
        BrokerConfig(frontend="inproc://ours-front", backend="inproc://ours-back"), context=context
    )
    broker.bind()
    front, back = context.socket(zmq.ROUTER), context.socket(zmq.ROUTER)
    front.bind("inproc://bare-front")
    back.bind("inproc://bare-back")
    peers: dict[str, tuple[zmq.Socket[Any], zmq.Socket[Any]]] = {}
    for name, prefix in (("our broker", "inproc://ours"), ("bare forwarding", "inproc://bare")):
        client, worker = context.socket(zmq.DEALER), context.socket(zmq.DEALER)
        client.connect(f"{prefix}-front")
        worker.connect(f"{prefix}-back")
        worker.send_multipart(mdp.worker_message(mdp.W_READY, service=b"echo"))
        peers[name] = (client, worker)
    broker.serve_ready(1000)
    worker_id = back.recv_multipart()[0]
    request = _frames("echo", SMALL)
    items = [(front, zmq.POLLIN), (back, zmq.POLLIN)]
    nonblock, more = int(zmq.NOBLOCK), int(zmq.NOBLOCK | zmq.SNDMORE)

    def forward(source: zmq.Socket[Any], target: zmq.Socket[Any], to_worker: bool) -> None:
        zmq.zmq_poll(items, 1000)
        frame = source.recv(nonblock, copy=False)
        frames = [frame]
        while frame.more:
            frame = source.recv(nonblock, copy=False)
            frames.append(frame)
        out: list[Any]
        if to_worker:
            out = [worker_id, mdp.WORKER_HEADER, mdp.W_REQUEST, frames[0].bytes, b"", *frames[4:]]
        else:
            out = [frames[3].bytes, mdp.CLIENT_HEADER, mdp.C_FINAL, b"echo", *frames[5:]]
        for part in out[:-1]:
            target.send(part, more, copy=False)
        target.send(out[-1], nonblock, copy=False)

    def round_trip(name: str) -> float:
        client, worker = peers[name]
        client.send_multipart(request)
        started = time.perf_counter()
        if name == "our broker":
            broker.serve_ready(1000)
        else:
            forward(front, back, to_worker=True)
        spent = time.perf_counter() - started
        job = worker.recv_multipart(copy=False)
        worker.send_multipart([mdp.WORKER_HEADER, mdp.W_FINAL, job[2], b"", *job[4:]], copy=False)
        started = time.perf_counter()
        if name == "our broker":
            broker.serve_ready(1000)
        else:
            forward(back, front, to_worker=False)
        spent += time.perf_counter() - started
        client.recv_multipart(copy=False)
        return spent

    medians: dict[str, list[float]] = {name: [] for name in peers}
    try:
        for name in peers:
            for _ in range(count):  # warm-up
                round_trip(name)
        for _ in range(rounds):
            for name in peers:
                medians[name].append(statistics.median(round_trip(name) for _ in range(count)))
    finally:
        for client, worker in peers.values():
            client.close(linger=0)
            worker.close(linger=0)
        front.close(linger=0)
        back.close(linger=0)
        broker.close()
        context.term()
    return {name: Stats.of(values).scaled(1e6) for name, values in medians.items()}


def measure_throughput(
    procs: Processes, frontend: str, service: str, clients: int, window: int, seconds: float
) -> float:
    """Requests per second of ``clients`` load-generating processes against ``frontend``."""
    start_at = time.time() + 0.8 + 0.15 * clients
    runners = [
        start_peer(
            procs,
            "client",
            "--connect", frontend,
            "--service", service,
            "--start-at", f"{start_at:.3f}",
            "--seconds", str(seconds),
            "--window", str(window),
            name=f"client-{service}-{i}",
            stdout_pipe=True,
        )
        for i in range(clients)
    ]  # fmt: skip
    rate = 0.0
    for proc in runners:
        out, _ = proc.communicate(timeout=seconds + 60)
        if proc.returncode != 0:
            raise RuntimeError(f"load client failed: {log_text(proc)[-2000:]}")
        result = json.loads(out.decode().strip().splitlines()[-1])
        # A client whose first reply came after its window (a loaded machine) counted nothing.
        if result["elapsed_s"] > 0:
            rate += result["replies"] / result["elapsed_s"]
    return rate


def run(quick: bool = False, compare_tree: Path | None = None) -> BenchResult:
    """Run benchmark 3 and return its tables and targets.

    ``compare_tree``: also measure the broker of another checkout (e.g. a
    copy from before an optimisation), alternating with this one.
    """
    result = BenchResult("broker", "3. Broker overhead and throughput")
    samples = 600 if quick else 4000
    blocks = 3 if quick else 12
    counts = (1, 2) if quick else (1, 2, 4)
    windows = (1,) if quick else (1, 8)
    seconds = 0.5 if quick else 1.5
    rounds = 1 if quick else 3
    with Processes() as procs:
        ours = start_broker(procs)
        brokers = {"our broker": ours}
        if compare_tree is not None:
            brokers[f"broker of {compare_tree.name}"] = start_broker(procs, "broker-compare", compare_tree)
        broker_process = psutil.Process(ours[2].pid)
        direct = free_endpoint()
        started = [start_peer(procs, "router-echo", "--bind", direct, name="router-echo")]
        proxies: dict[int, str] = {}
        for n in counts:
            proxy_front, proxy_back = free_endpoint(), free_endpoint()
            started.append(
                start_peer(
                    procs, "proxy", "--frontend", proxy_front, "--backend", proxy_back, name=f"proxy{n}"
                )
            )
            proxies[n] = proxy_front
            for i in range(n):
                started.append(
                    start_peer(procs, "dealer-echo", "--connect", proxy_back, name=f"dealer{n}-{i}")
                )
                for b, (_, backend, _) in enumerate(brokers.values()):
                    started.append(
                        start_peer(
                            procs,
                            "mdp-echo",
                            "--connect",
                            backend,
                            "--service",
                            f"echo{n}",
                            name=f"mdp{b}-{n}-{i}",
                        )  # fmt: skip
                    )
        for proc in started:
            wait_for_log(proc, "ready", 60)
        for frontend, _, _ in brokers.values():
            for n in counts:
                wait_for_workers(frontend, f"echo{n}", n)
        time.sleep(0.5)  # let the proxies' DEALERs finish connecting to their echo workers

        paths = {"direct": direct, "C proxy": proxies[1]}
        paths.update({name: frontend for name, (frontend, _, _) in brokers.items()})
        broker_pids = {name: proc.pid for name, (_, _, proc) in brokers.items()}
        latency, block_medians, faults = measure_latency(paths, "echo1", samples, blocks, broker_pids)
        table = Table(
            "Round-trip latency, one request at a time (microseconds: median [p10-p90])",
            [
                "message",
                *(f"{p}" for p in paths),
                "our broker adds (median)",
                "of which over the C proxy",
                "adds, block by block (min-max)",
                *(f"page faults per round trip, {name}" for name in brokers),
            ],
        )
        for size_name, _ in SIZES:
            cells = [latency[(p, size_name)] for p in paths]
            added = latency[("our broker", size_name)].median - latency[("direct", size_name)].median
            over_proxy = latency[("our broker", size_name)].median - latency[("C proxy", size_name)].median
            by_block = [
                ours - direct_median
                for ours, direct_median in zip(
                    block_medians[("our broker", size_name)],
                    block_medians[("direct", size_name)],
                    strict=True,
                )
            ]
            table.add(
                size_name,
                *(f"{c.median:.0f} [{c.p10:.0f}-{c.p90:.0f}]" for c in cells),
                f"{added:+.0f}",
                f"{over_proxy:+.0f}",
                f"{min(by_block):+.0f} to {max(by_block):+.0f}",
                *(fmt(faults.get((name, size_name)), 1) for name in brokers),
            )
        table.note = (
            f"{latency[('direct', SIZES[0][0])].n} round trips per path and size (fewer for 1 MiB), "
            f"in {blocks} blocks, paths in rotating order; every peer is a separate process on loopback TCP; "
            "direct = client DEALER <-> ROUTER echo process, C proxy = zmq.proxy(ROUTER, DEALER) with a "
            "DEALER echo worker, broker = python -m broker with an MDP echo worker (bench/peers.py). "
            "Any broker adds a second network hop each way; the C proxy's numbers show what that hop costs "
            "here without any Python. Block by block: our broker's median minus direct's in each block, "
            "how far the added latency moves within one run on this machine. Page faults: minor faults of "
            "a broker's process during its timed round trips (the kernel handing it fresh zeroed pages); "
            "256 per round trip would be a whole 1 MiB buffer each time."
        )
        result.tables.append(table)
        small = SIZES[0][0]
        added = latency[("our broker", small)].median - latency[("direct", small)].median
        proxy_added = latency[("C proxy", small)].median - latency[("direct", small)].median
        cost = measure_python_cost(rounds=3 if quick else 7, count=1000 if quick else 3000)
        ours_cost, bare_cost = cost["our broker"], cost["bare forwarding"]
        python_table = Table(
            "Python in the broker process per small round trip (microseconds, in-process over inproc://)",
            ["our broker", "bare forwarding (the floor)", "our MDP logic", "C proxy adds (above)"],
        )
        python_table.add(
            f"{ours_cost.median:.1f} [{ours_cost.p10:.1f}-{ours_cost.p90:.1f}]",
            f"{bare_cost.median:.1f} [{bare_cost.p10:.1f}-{bare_cost.p90:.1f}]",
            f"{ours_cost.median - bare_cost.median:+.1f}",
            f"{proxy_added:+.0f}",
        )
        python_table.note = (
            f"Medians of {ours_cost.n} rounds, the two alternating. our broker: Broker.serve_ready for the "
            "REQUEST and for the FINAL (poll, receive, parse, queue, dispatch, send). bare forwarding: "
            "poll, receive and send the same frames with the envelope swapped and nothing else, the least "
            "any broker written in Python on pyzmq does. A broker adds the C proxy's extra hop plus its "
            f"own Python; with no logic at all that is about {proxy_added:.0f} + {bare_cost.median:.0f} us "
            "here (less the C proxy's own few us), against a target of 100 us."
        )
        result.tables.append(python_table)
        result.targets.append(
            Target(
                "broker: added round-trip latency, small message",
                f"{added:.0f} us",
                "<= 100 us",
                added <= 100,
            )
        )

        systems = {"C proxy": proxies}
        systems.update({name: {n: fe for n in counts} for name, (fe, _, _) in brokers.items()})
        rates: dict[tuple[str, int, int], list[float]] = {}
        cpu_per_request: dict[tuple[int, int], list[float]] = {}
        for _ in range(rounds):
            for window in windows:
                for n in counts:
                    for name, endpoints in systems.items():
                        cpu_before = sum(broker_process.cpu_times()[:2])
                        wall_before = time.perf_counter()
                        rate = measure_throughput(procs, endpoints[n], f"echo{n}", n, window, seconds)
                        rates.setdefault((name, n, window), []).append(rate)
                        if name == "our broker":  # its CPU over the whole run (warm-up too) per request
                            cpu = sum(broker_process.cpu_times()[:2]) - cpu_before
                            served = rate * (time.perf_counter() - wall_before)  # an upper bound
                            cpu_per_request.setdefault((n, window), []).append(cpu / max(served, 1.0))
        throughput = Table(
            "Throughput (requests/s, median of rounds; N clients and N echo workers)",
            ["N", "in flight per client", *systems, "our broker / proxy", "our broker's CPU us/request"],
        )
        worst: dict[int, float] = {}
        for window in windows:
            for n in counts:
                medians = {name: statistics.median(rates[(name, n, window)]) for name in systems}
                ratio = medians["our broker"] / medians["C proxy"]
                worst[window] = min(worst.get(window, ratio), ratio)
                cpu_us = statistics.median(cpu_per_request[(n, window)]) * 1e6
                rate_cells = [fmt(medians[name], 0) for name in systems]
                throughput.add(n, window, *rate_cells, f"{ratio:.0%}", f">= {cpu_us:.0f}")
        throughput.note = (
            f"Median of {rounds} rounds, systems alternating; in each, every client is its own process "
            f"counting replies for {seconds} s after a warm-up. The C proxy's workers are DEALERs that echo "
            "the whole message, ours are MDP/0.2 workers (bench/peers.py); an MDP worker holds one request "
            "at a time (RFC 18), a DEALER behind the proxy is sent the next ones before it answers: "
            "after each FINAL an MDP worker waits one round trip to the broker for its next REQUEST (about "
            f"the direct path's {latency[('direct', small)].median:.0f} us above plus the broker's Python), "
            "so one MDP worker serves at most about 1 / that per second however many requests wait. "
            "Clients, workers and broker share the machine's cores. CPU us/request: the broker process's "
            "CPU time during the run divided by the requests it could have served then (a lower bound); "
            "1 / that is its rate with a core of its own."
        )
        result.tables.append(throughput)
        for window, ratio in worst.items():
            result.targets.append(
                Target(
                    f"broker: throughput vs libzmq C proxy, {window} in flight per client (worst N)",
                    f"{ratio:.0%}",
                    ">= 50%",
                    ratio >= 0.5,
                )
            )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    from bench.common import finish

    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--compare-tree",
        type=Path,
        default=None,
        help="also measure the broker of this checkout (a copy of the repository), alternating",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    finish(run(quick=args.quick, compare_tree=args.compare_tree), started, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
