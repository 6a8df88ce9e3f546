#!/usr/bin/env python
"""Fuzz soak: hostile MDP messages to a real broker and a real SAM2 worker; print the figures.

N random and mutated multipart messages (``bench/fuzzing.py``) go to the
broker's frontend and backend and to a real SAM2 worker (random weights unless
``--checkpoint``) that is connected to a fake broker run by this script;
health checks (a valid request through the broker, and straight to the
worker) every ``--check-every`` messages. Printed: messages sent per target,
worker REQUESTs answered exactly once, health checks, crashes (target 0), RSS
of each process before and after::

    python scripts/soak_fuzz.py --messages 100000

Logs of every process go to ``--log-dir`` (default: a new temporary folder).
Faults (workers SIGKILLed under load) are the other soak, ``scripts/soak_faults.py``.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import zmq

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench import fuzzing  # noqa: E402
from bench.common import MODEL, Processes, ensure_checkpoint, start_broker, start_sam_worker  # noqa: E402
from bench.raw_peers import RawClient, RawPeer, ThreadedWorker, echo_handler, request_body  # noqa: E402
from protocol.runtime.processes import free_endpoint, rss_bytes, wait_until  # noqa: E402
from protocol.wire import codec, mdp  # noqa: E402


def run(args: argparse.Namespace, procs: Processes, work_dir: Path) -> int:
    """The fuzz soak; exit status 0 only when nothing crashed, nothing was unpickled, every worker
    REQUEST got exactly one FINAL and every health check passed."""
    checkpoint = args.checkpoint or ensure_checkpoint(MODEL)
    context: zmq.Context[Any] = zmq.Context()
    marker = work_dir / "unpickled"
    frontend, backend, broker = start_broker(
        procs, options=["--heartbeat-interval-s", "0.25", "--service-wait-s", "0.5"]
    )
    check_worker = ThreadedWorker(context, backend, fuzzing.CHECK_SERVICE, echo_handler("check"))
    fake = fuzzing.FakeBroker.bind(context, free_endpoint())
    worker = start_sam_worker(procs, fake.endpoint, checkpoint, name="fuzzed-worker", threads=1, wait=False)

    def worker_registered() -> bool:
        fake.pump(0.05)
        return fake.worker is not None

    if not wait_until(worker_registered, 180, 0.1):
        raise SystemExit("fuzz: timed out waiting for the fuzzed worker")
    client_fuzzer, worker_fuzzer = RawPeer(context, frontend), RawPeer(context, backend)
    checks = Counter[str]()

    def health_check(label: str) -> None:
        client = RawClient(context, frontend)
        try:
            client.request(fuzzing.CHECK_SERVICE, request_body(f"check-{label}"))
            _, final = client.final(10.0)
            checks[
                "broker ok" if codec.decode(final).request_id == f"check-{label}" else "broker FAILED"
            ] += 1
        except AssertionError:
            checks["broker FAILED"] += 1
        finally:
            client.close()
        envelope = f"check-{label}".encode()
        fake.pump(0)
        if fake.worker is not None:
            fake.socket.send_multipart(
                [
                    fake.worker,
                    mdp.WORKER_HEADER,
                    mdp.W_REQUEST,
                    envelope,
                    b"",
                    *request_body(f"check-{label}"),
                ]
            )
        finals = fake.final_for(envelope, 10.0)
        checks["worker ok" if len(finals) == 1 else "worker FAILED"] += 1

    def drain(peer: Any) -> None:
        while peer.socket.poll(0):
            peer.socket.recv_multipart()

    health_check("warm-up")
    rss_before = {"broker": rss_bytes(broker.pid) / 2**20, "fuzzed worker": rss_bytes(worker.pid) / 2**20}
    rng = random.Random(args.seed)
    sent = Counter[str]()
    answered = Counter[str]()
    crashes: list[str] = []
    started = time.monotonic()
    for index in range(args.messages):
        draw = rng.random()
        if draw < 0.7:
            peer, target = (
                (client_fuzzer, "broker frontend") if draw < 0.4 else (worker_fuzzer, "broker backend")
            )
            generate = fuzzing.client_message if draw < 0.4 else fuzzing.worker_message
            frames: list[bytes] = []
            while not frames:  # a multipart message has at least one frame
                frames = generate(rng, str(marker))
            peer.send(frames)
            sent[target] += 1
        else:
            fake.pump(0)
            client = b"f-%d" % index
            frames = []
            while not frames:
                frames = fuzzing.to_worker_message(rng, client, str(marker))
            if fake.worker is not None:
                fake.socket.send_multipart([fake.worker, *frames])
            sent["worker"] += 1
            if len(frames) >= 4 and frames[1] == mdp.W_REQUEST and frames[2] and frames[3] == b"":
                finals = fake.final_for(client, 10.0)
                answered[{0: "no FINAL", 1: "exactly one FINAL"}.get(len(finals), "more than one FINAL")] += 1
        if index % 200 == 0:
            drain(client_fuzzer)
            drain(worker_fuzzer)
        if (index + 1) % args.check_every == 0:
            health_check(str(index + 1))
            for name, proc in (("broker", broker), ("fuzzed worker", worker)):
                if proc.poll() is not None:
                    crashes.append(f"{name} exited with {proc.returncode} after {index + 1} messages")
            if crashes:
                break
            if (index + 1) % (args.check_every * 10) == 0:
                rate = (index + 1) / (time.monotonic() - started)
                print(f"fuzz: {index + 1}/{args.messages} messages, {rate:.0f}/s", flush=True)
    health_check("final")
    elapsed = time.monotonic() - started
    for name, proc in (("broker", broker), ("fuzzed worker", worker)):
        if proc.poll() is not None and not any(c.startswith(name) for c in crashes):
            crashes.append(f"{name} exited with {proc.returncode}")
    rss_after = {
        "broker": rss_bytes(broker.pid) / 2**20 if broker.poll() is None else float("nan"),
        "fuzzed worker": rss_bytes(worker.pid) / 2**20 if worker.poll() is None else float("nan"),
    }
    check_worker.stop()
    for peer in (client_fuzzer, worker_fuzzer):
        peer.close()
    fake.socket.close(linger=0)
    context.destroy(linger=0)

    total = sum(sent.values())
    print()
    print(f"fuzz: {total} messages in {elapsed:.0f} s ({total / max(elapsed, 1e-9):.0f}/s), seed {args.seed}")
    for target in ("broker frontend", "broker backend", "worker"):
        print(f"  sent to {target:<16} {sent[target]}")
    for outcome in ("exactly one FINAL", "no FINAL", "more than one FINAL"):
        print(f"  worker REQUESTs, {outcome:<20} {answered[outcome]}")
    print(f"  health checks              {', '.join(f'{k}: {v}' for k, v in sorted(checks.items()))}")
    print(f"  crashes                    {len(crashes)}")
    for crash in crashes:
        print(f"  ! {crash}")
    for name in rss_before:
        print(f"  RSS {name:<14} before {rss_before[name]:.1f} MiB, after {rss_after[name]:.1f} MiB")
    print(f"  pickles unpickled          {'YES' if marker.exists() else 0}")
    ok = not crashes and not marker.exists() and answered["no FINAL"] == answered["more than one FINAL"] == 0
    ok = ok and not any("FAILED" in k for k in checks)
    print(f"fuzz: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--messages", type=int, default=100_000, help="hostile messages (%(default)s)")
    parser.add_argument("--check-every", type=int, default=2000, help="messages between health checks")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: build a random-weight one")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="sam2-fuzz-logs-"))
    with tempfile.TemporaryDirectory(prefix="sam2-fuzz-") as tmp, Processes(log_dir) as procs:
        return run(args, procs, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
