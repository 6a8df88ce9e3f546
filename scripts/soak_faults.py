#!/usr/bin/env python
"""Fault soak: real clients, broker and SAM2 workers while workers are SIGKILLed; print the figures.

Clients send mixed requests to a real broker and real SAM2 workers (random
weights unless ``--checkpoint``) while a killer SIGKILLs a random worker every
few seconds and starts a replacement::

    python scripts/soak_faults.py --requests 2000 --clients 4 --workers 2 --kill-every-s 5

Each client sends one request at a time, once (no retries, so nothing is
hidden), and waits up to ``--timeout-s`` for its FINAL. Every FINAL is
checked against the request it answers (request id, echoed nonce and array,
prompt, mask shape). Printed: requests sent / succeeded / failed with a
clear error (by code) / lost (no FINAL within the timeout), plus duplicate or
misrouted FINALs and wrong results. Exit status 0 only when lost, duplicates
and wrong results are all 0.

Logs of every process go to ``--log-dir`` (default: a new temporary folder,
printed at the start). Hostile input is the other soak, ``scripts/soak_fuzz.py``.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.common import MODEL, Processes, ensure_checkpoint, start_broker, start_sam_worker  # noqa: E402
from protocol.runtime.processes import LoggedProcess, log_text, wait_until  # noqa: E402
from protocol.wire import codec, mdp  # noqa: E402
from protocol.wire.client import MDPClient, SamClient  # noqa: E402
from protocol.wire.image_key import image_key  # noqa: E402


def checkpoint_of(path: Path | None) -> Path:
    """``path``, or a random-weight checkpoint of ``MODEL`` built once (``bench/out/ckpt``)."""
    if path is not None:
        return path
    print("soak: using a random-weight checkpoint (masks are meaningless; tests only)", flush=True)
    return ensure_checkpoint(MODEL)


def registered_workers(frontend: str) -> int:
    """Workers of ``MODEL`` the broker knows (``mmi.services``); 0 when it does not answer."""
    try:
        with SamClient(frontend, MODEL, curve=False) as client:
            return int(client.services(timeout_s=2.0).get(MODEL, {}).get("workers", 0))
    except Exception:
        return 0


@dataclass
class Tally:
    """What happened to every request (shared by the client threads)."""

    sent: int = 0
    succeeded: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    wrong: int = 0
    duplicates: int = 0
    misrouted: int = 0
    undecodable: int = 0
    by_op: Counter[str] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    rows, cols = np.mgrid[:64, :64]
    out = []
    for cx in (20, 40):
        disk = (rows - 32) ** 2 + (cols - cx) ** 2 < 12**2
        out.append((rng.integers(0, 60, (64, 64)) + 150 * disk).astype(np.uint8))
    return out


IMAGES = _images()
IMAGE_KEYS = [image_key(image, None, MODEL) for image in IMAGES]


def plan_request(
    rng: random.Random, index: int, segment_share: float
) -> tuple[str, dict[str, Any], dict[str, np.ndarray], str | None]:
    """(op, params, arrays, image_key) of request ``index``: mostly cheap ops, a few real prompts."""
    draw = rng.random()
    if draw < segment_share:
        which = rng.randrange(len(IMAGES))
        point = [rng.uniform(0, 63), rng.uniform(0, 63)]
        return (
            "segment",
            {"points": [point], "point_labels": [1]},
            {"image": IMAGES[which]},
            IMAGE_KEYS[which],
        )
    if draw < 0.55:
        shape = (rng.randint(1, 32), rng.randint(1, 32))
        array = np.random.default_rng(index).integers(0, 65535, shape, dtype=np.uint16)
        return "echo", {"nonce": index}, {"x": array}, None
    if draw < 0.85:
        return "sleep", {"seconds": round(rng.uniform(0.02, 0.3), 3)}, {}, None
    return "info", {}, {}, None


def check_result(
    op: str, params: dict[str, Any], arrays: dict[str, np.ndarray], reply: codec.Message
) -> str | None:
    """Why ``reply`` is not the answer to this request, or None when it is."""
    result = reply.header.get("result", {})
    if op == "echo":
        if result.get("params") != params:
            return f"echo params {result.get('params')} != {params}"
        echoed = reply.arrays.get("x")
        if echoed is None or not np.array_equal(echoed, arrays["x"]):
            return "echo array differs"
    elif op == "sleep":
        if float(result.get("slept_s", -1)) < params["seconds"]:
            return f"slept {result.get('slept_s')} < {params['seconds']}"
    elif op == "info":
        if result.get("model") != MODEL:
            return f"info model {result.get('model')}"
    elif op == "segment":
        mask = reply.arrays.get("mask")
        if mask is None or mask.shape != (64, 64):
            return "segment mask missing or wrong shape"
        if result.get("prompt", {}).get("points") != params["points"]:
            return f"segment prompt {result.get('prompt')} != {params['points']}"
    return None


def client_loop(
    number: int, frontend: str, next_index: Any, total: int, timeout_s: float, seed: int,
    segment_share: float, tally: Tally,
) -> None:  # fmt: skip
    """One client: requests one at a time, each sent once, until ``total`` are taken."""
    rng = random.Random(seed * 1000 + number)
    client = MDPClient(frontend, curve=False)
    finished_ids: set[str] = set()
    service = MODEL.encode()
    try:
        while True:
            index = next_index()
            if index >= total:
                break
            op, params, arrays, key = plan_request(rng, index, segment_share)
            request_id = f"soak-{number}-{index}"
            header: dict[str, Any] = {"op": op, "request_id": request_id, "params": params}
            if key is not None:
                header["image_key"] = key
            started = time.monotonic()
            client.send(service, codec.encode(header, arrays))
            with tally.lock:
                tally.sent += 1
                tally.by_op[op] += 1
            outcome = _await(client, request_id, finished_ids, timeout_s, tally)
            elapsed = time.monotonic() - started
            finished_ids.add(request_id)
            with tally.lock:
                tally.latencies_s.append(elapsed)
                if outcome is None:
                    tally.lost += 1
                    tally.problems.append(f"{request_id} ({op}): no FINAL within {timeout_s} s")
                elif outcome.status == codec.STATUS_OK:
                    why = check_result(op, params, arrays, outcome)
                    if why is None:
                        tally.succeeded += 1
                    else:
                        tally.wrong += 1
                        tally.problems.append(f"{request_id} ({op}): {why}")
                elif outcome.status == codec.STATUS_ERROR:
                    tally.errors[str(outcome.header.get("error", {}).get("code", "?"))] += 1
                else:
                    tally.errors[outcome.status] += 1
        _await(client, "", finished_ids, 2.0, tally)  # late duplicates show up here
    finally:
        client.close()


def _await(
    client: MDPClient, request_id: str, finished_ids: set[str], timeout_s: float, tally: Tally
) -> codec.Message | None:
    """The FINAL for ``request_id``; counts every other FINAL as duplicate or misrouted."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        message = client.recv(min(left, 0.5))
        if message is None or message.command != mdp.C_FINAL:
            continue
        try:
            reply = codec.decode(message.body)
        except codec.CodecError as e:
            with tally.lock:
                tally.undecodable += 1
                tally.problems.append(f"undecodable FINAL: {e}")
            continue
        if reply.request_id == request_id:
            return reply
        with tally.lock:
            if reply.request_id in finished_ids:
                tally.duplicates += 1
                tally.problems.append(f"second FINAL for {reply.request_id}")
            else:
                tally.misrouted += 1
                tally.problems.append(f"FINAL for {reply.request_id}, not ours")
    return None


def run(args: argparse.Namespace, procs: Processes) -> int:
    """The fault soak; exit status 0 only when nothing was lost, duplicated, misrouted or wrong."""
    checkpoint = checkpoint_of(args.checkpoint)
    broker_options = ["--heartbeat-interval-s", str(args.heartbeat_interval_s)]
    broker_options += ["--service-wait-s", str(args.service_wait_s)]
    frontend, backend, broker = start_broker(procs, options=broker_options)
    workers: dict[str, LoggedProcess] = {}

    def start_worker() -> str:
        name = f"worker{len(workers)}"
        workers[name] = start_sam_worker(
            procs, backend, checkpoint, name=name, threads=1, wait=False,
            options=["--heartbeat-interval-s", str(args.heartbeat_interval_s)],
        )  # fmt: skip
        return name

    alive = [start_worker() for _ in range(args.workers)]
    if not wait_until(lambda: registered_workers(frontend) == args.workers, 180, 0.1):
        raise SystemExit(f"soak: timed out waiting for {args.workers} workers")
    print(f"soak: broker and {args.workers} workers up; logs in {procs.log_dir}", flush=True)

    tally = Tally()
    counter = iter(range(10**9))
    counter_lock = threading.Lock()

    def next_index() -> int:
        with counter_lock:
            return args.requests if stop.is_set() else next(counter)

    stop = threading.Event()
    kills: list[float] = []
    rng = random.Random(args.seed)

    def ready(name: str) -> bool:
        return workers[name].poll() is None and "worker ready" in log_text(workers[name])

    def killer() -> None:
        """SIGKILL a random registered worker now and then; a replacement starts shortly after."""
        while not stop.wait(args.kill_every_s * rng.uniform(0.5, 1.5)):
            candidates = [name for name in alive if ready(name)]
            if not candidates:
                continue  # every worker is still starting: nothing to kill yet
            victim = rng.choice(candidates)
            os.killpg(workers[victim].pid, signal.SIGKILL)
            workers[victim].wait(10)  # reap it
            kills.append(time.monotonic())
            alive.remove(victim)
            if stop.wait(args.restart_delay_s):
                return
            alive.append(start_worker())

    started = time.monotonic()
    threads = [
        threading.Thread(
            target=client_loop,
            args=(
                n,
                frontend,
                next_index,
                args.requests,
                args.timeout_s,
                args.seed,
                args.segment_share,
                tally,
            ),
            name=f"client-{n}",
            daemon=True,
        )
        for n in range(args.clients)
    ]
    killer_thread = threading.Thread(target=killer, name="killer", daemon=True)
    if args.kill_every_s > 0:
        killer_thread.start()
    for thread in threads:
        thread.start()
    last_report = started
    while any(t.is_alive() for t in threads):
        time.sleep(0.5)
        if time.monotonic() - last_report >= 10:
            last_report = time.monotonic()
            with tally.lock:
                done = tally.succeeded + sum(tally.errors.values()) + tally.lost + tally.wrong
            print(
                f"soak: {done}/{args.requests} done, {len(kills)} kills, {time.monotonic() - started:.0f} s",
                flush=True,
            )
    stop.set()
    elapsed = time.monotonic() - started
    broker_alive = broker.poll() is None

    latencies = sorted(tally.latencies_s) or [0.0]
    failed = sum(tally.errors.values())
    codes = ", ".join(f"{code}: {n}" for code, n in sorted(tally.errors.items())) or "-"
    ops = ", ".join(f"{op} {n}" for op, n in sorted(tally.by_op.items()))
    print()
    print(
        f"soak: {args.requests} requests from {args.clients} clients, {args.workers} workers, "
        f"{len(kills)} SIGKILLs (every ~{args.kill_every_s:g} s), {elapsed:.0f} s"
    )
    print(f"  mix                        {ops}")
    print(f"  sent                       {tally.sent}")
    print(f"  succeeded                  {tally.succeeded}   (each checked against its own request)")
    print(f"  failed with a clear error  {failed}   ({codes})")
    print(f"  {f'lost (no FINAL in {args.timeout_s:g} s)':<27}{tally.lost}")
    print(f"  duplicate FINALs           {tally.duplicates}")
    print(f"  misrouted FINALs           {tally.misrouted}")
    print(f"  wrong results              {tally.wrong}")
    print(f"  undecodable FINALs         {tally.undecodable}")
    p50, p95 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.95)]
    print(f"  latency p50 / p95 / max    {p50:.3f} / {p95:.3f} / {latencies[-1]:.3f} s")
    print(f"  broker alive at the end    {'yes' if broker_alive else 'NO'}")
    for problem in tally.problems[:20]:
        print(f"  ! {problem}")
    accounted = tally.succeeded + failed + tally.lost + tally.wrong == tally.sent == args.requests
    ok = accounted and broker_alive and tally.lost == tally.duplicates == tally.misrouted == 0
    ok = ok and tally.wrong == tally.undecodable == 0
    print(f"soak: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--requests", type=int, default=2000, help="requests in total (%(default)s)")
    parser.add_argument("--clients", type=int, default=4, help="client threads (%(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="SAM2 workers kept running (%(default)s)")
    parser.add_argument(
        "--kill-every-s", type=float, default=5.0, help="mean seconds between SIGKILLs; 0: none"
    )
    parser.add_argument("--restart-delay-s", type=float, default=0.5, help="before a replacement starts")
    parser.add_argument(
        "--timeout-s", type=float, default=60.0, help="a request without FINAL by then is lost"
    )
    parser.add_argument("--segment-share", type=float, default=0.04, help="share of real segment prompts")
    parser.add_argument("--heartbeat-interval-s", type=float, default=0.25, help="broker and workers")
    parser.add_argument("--service-wait-s", type=float, default=20.0, help="broker's wait for a worker")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: build a random-weight one")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="sam2-soak-logs-"))
    with Processes(log_dir) as procs:
        return run(args, procs)


if __name__ == "__main__":
    sys.exit(main())
