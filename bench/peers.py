"""Light ZeroMQ peers for the broker benchmarks, each run as its own process.

``python -m bench.peers MODE [options]``; modes:

``mdp-echo``     an MDP/0.2 worker (RFC 18 framing) that answers every REQUEST
                 with a FINAL carrying the same body frames, untouched.
``mdp-sleep``    an MDP/0.2 worker that decodes each body with
                 ``protocol.wire.codec`` and serves the diagnostic ops ``sleep``
                 (``params.seconds``; waits without using the CPU) and
                 ``echo``, like ``python -m workers`` but without loading SAM2.
``mdp-tiles``    an MDP/0.2 worker that answers ``auto`` on the tiles of one known slide
                 cheaply: it finds the tile by the request's image key in
                 ``--tiles`` (a JSON ``{image_key: [r0, c0, r1, c1]}``), answers
                 that window of the true labels ``--truth`` (a uint32 ``.npy``,
                 memory-mapped; ids renumbered 1..n per tile, as a worker
                 answers) after sleeping ``--delay-s`` (the model's time, no
                 CPU). A stand-in for many fast GPU workers on a few cores.
``router-echo``  a ROUTER that sends every message back to its sender (the
                 "direct DEALER <-> ROUTER" baseline, no broker).
``dealer-echo``  a DEALER that sends every message back (a worker behind
                 libzmq's proxy: the envelope travels inside the message).
``proxy``        ``zmq.proxy(ROUTER, DEALER)``: libzmq's C request-reply proxy.
``client``       a load generator: keeps ``--window`` requests in flight for
                 ``--seconds`` from ``--start-at`` (epoch seconds) and prints
                 ``{"replies": n, "elapsed_s": s}`` as one JSON line.

Every server prints ``ready`` to stderr once its sockets are set up. MDP
workers heartbeat every ``--heartbeat-interval-s`` while idle.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from protocol.wire import codec, mdp

# Body handler of an MDP worker: request body frames -> reply body frames.
BodyHandler = Callable[[list[Any]], Sequence[Any]]


def _ready() -> None:
    print("ready", file=sys.stderr, flush=True)


def echo_body(body: list[Any]) -> Sequence[Any]:
    """The request body, unchanged (zero-copy frames are forwarded as they are)."""
    return body


def sleep_body(body: list[Any]) -> Sequence[Any]:
    """Serve ``sleep`` / ``echo`` from a ``protocol.wire.codec`` body, as the SAM2 worker would."""
    try:
        message = codec.decode(body)
    except codec.CodecError as e:
        header = codec.peek_header(body[0]) if body else {}
        return codec.error_body(header, "bad_request", str(e))
    if message.op == "sleep":
        seconds = float(message.header.get("params", {}).get("seconds", 0.0))
        started = time.perf_counter()
        time.sleep(max(0.0, min(seconds, 60.0)))
        result = {"slept_s": round(time.perf_counter() - started, 6)}
        return codec.encode(codec.reply_header(message.header, codec.STATUS_OK, result=result))
    if message.op == "echo":
        header = codec.reply_header(message.header, codec.STATUS_OK, result={"params": {}})
        return codec.encode(header, message.arrays)
    return codec.error_body(message.header, "unknown_op", f"unknown op {message.op!r}")


class TileAnswers:
    """``auto`` answered from a slide's true labels, the tile found by its image key (``mdp-tiles``)."""

    def __init__(self, truth_path: str, tiles_path: str, delay_s: float) -> None:
        import numpy as np

        self.np = np
        self.truth = np.load(truth_path, mmap_mode="r")
        with open(tiles_path) as handle:
            self.windows: dict[str, list[int]] = json.load(handle)
        self.delay_s = delay_s

    def __call__(self, body: list[Any]) -> Sequence[Any]:
        np = self.np
        header = codec.peek_header(body[0]) if body else {}
        window = self.windows.get(str(header.get("image_key")))
        if header.get("op") != "auto" or window is None:
            return codec.error_body(header, "bad_request", "mdp-tiles answers auto on known tiles only")
        r0, c0, r1, c1 = window
        truth = np.asarray(self.truth[r0:r1, c0:c1])
        counts = np.bincount(truth.ravel())
        ids = np.flatnonzero(counts[1:]) + 1
        table = np.zeros(counts.size, dtype=np.uint32)
        table[ids] = np.arange(1, ids.size + 1, dtype=np.uint32)
        labels = table[truth]
        time.sleep(self.delay_s)
        result = {"num_objects": int(ids.size), "areas": counts[ids].tolist()}
        return codec.encode(codec.reply_header(header, codec.STATUS_OK, result=result), {"labels": labels})


def run_mdp_worker(connect: str, service: str, handler: BodyHandler, heartbeat_interval_s: float) -> None:
    """Serve ``service`` at the broker backend ``connect`` forever (until killed)."""
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.rcvtimeo = max(1, int(heartbeat_interval_s * 1000))
    sock.connect(connect)
    sock.send_multipart(mdp.worker_message(mdp.W_READY, service=service.encode()))
    _ready()
    heartbeat = [mdp.WORKER_HEADER, mdp.W_HEARTBEAT]
    next_heartbeat_s = time.monotonic() + heartbeat_interval_s
    while True:
        try:
            frames = sock.recv_multipart(copy=False)
        except zmq.Again:
            frames = None
        if frames is not None and len(frames) >= 2:
            command = frames[1].bytes
            if command == mdp.W_REQUEST and len(frames) >= 4:
                reply = handler(frames[4:])
                sock.send_multipart([mdp.WORKER_HEADER, mdp.W_FINAL, frames[2], b"", *reply], copy=False)
            elif command == mdp.W_DISCONNECT:
                sock.send_multipart(mdp.worker_message(mdp.W_READY, service=service.encode()))
        now = time.monotonic()
        if now >= next_heartbeat_s:
            sock.send_multipart(heartbeat)
            next_heartbeat_s = now + heartbeat_interval_s


def run_echo(endpoint: str, socket_type: int, bind: bool) -> None:
    """Send every message back on the same socket (ROUTER: to its sender)."""
    context = zmq.Context()
    sock = context.socket(socket_type)
    sock.linger = 0
    if bind:
        sock.bind(endpoint)
    else:
        sock.connect(endpoint)
    _ready()
    while True:
        sock.send_multipart(sock.recv_multipart(copy=False), copy=False)


def run_proxy(frontend: str, backend: str) -> None:
    """libzmq's C proxy: clients' DEALERs to a ROUTER, workers' DEALERs to a DEALER."""
    context = zmq.Context()
    front = context.socket(zmq.ROUTER)
    back = context.socket(zmq.DEALER)
    for sock in (front, back):
        sock.linger = 0
    front.bind(frontend)
    back.bind(backend)
    _ready()
    zmq.proxy(front, back)


def run_client(
    connect: str, service: str, start_at: float, seconds: float, window: int, payload_bytes: int
) -> dict[str, float]:
    """Keep ``window`` requests in flight; count replies between ``start_at`` and ``+seconds``.

    Requests sent before ``start_at`` warm the path up and are not counted.
    """
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(connect)
    header = codec.encode({"op": "echo", "request_id": "load", "params": {}})[0]
    frames: list[Any] = [mdp.CLIENT_HEADER, mdp.C_REQUEST, service.encode(), header]
    if payload_bytes:
        frames.append(b"\0" * payload_bytes)
    for _ in range(window):
        sock.send_multipart(frames, copy=False)
    replies = 0
    counting = False
    stop_at = start_at + seconds
    counted_from = start_at
    while True:
        if not sock.poll(5000):
            raise RuntimeError("no reply within 5 s")
        sock.recv_multipart(copy=False)
        now = time.time()
        if not counting and now >= start_at:
            counting, replies, counted_from = True, 0, now
        if now >= stop_at:
            return {"replies": replies, "elapsed_s": now - counted_from}
        replies += 1
        sock.send_multipart(frames, copy=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "mode",
        choices=["mdp-echo", "mdp-sleep", "mdp-tiles", "router-echo", "dealer-echo", "proxy", "client"],
    )
    parser.add_argument("--connect", default="", help="endpoint to connect to")
    parser.add_argument("--bind", default="", help="endpoint to bind (router-echo)")
    parser.add_argument("--frontend", default="", help="proxy: client endpoint to bind")
    parser.add_argument("--backend", default="", help="proxy: worker endpoint to bind")
    parser.add_argument("--service", default="echo", help="MDP service name")
    parser.add_argument("--heartbeat-interval-s", type=float, default=1.0)
    parser.add_argument("--start-at", type=float, default=0.0, help="client: epoch seconds to start counting")
    parser.add_argument("--seconds", type=float, default=2.0, help="client: how long to count")
    parser.add_argument("--window", type=int, default=1, help="client: requests in flight")
    parser.add_argument("--payload-bytes", type=int, default=0, help="client: extra body frame size")
    parser.add_argument("--truth", default="", help="mdp-tiles: the slide's true labels (uint32 .npy)")
    parser.add_argument("--tiles", default="", help="mdp-tiles: JSON {image_key: [r0, c0, r1, c1]}")
    parser.add_argument("--delay-s", type=float, default=0.5, help="mdp-tiles: s per tile (%(default)s)")
    args = parser.parse_args(argv)
    if args.mode == "mdp-echo":
        run_mdp_worker(args.connect, args.service, echo_body, args.heartbeat_interval_s)
    elif args.mode == "mdp-sleep":
        run_mdp_worker(args.connect, args.service, sleep_body, args.heartbeat_interval_s)
    elif args.mode == "mdp-tiles":
        handler = TileAnswers(args.truth, args.tiles, args.delay_s)
        run_mdp_worker(args.connect, args.service, handler, args.heartbeat_interval_s)
    elif args.mode == "router-echo":
        run_echo(args.bind, zmq.ROUTER, bind=True)
    elif args.mode == "dealer-echo":
        run_echo(args.connect, zmq.DEALER, bind=False)
    elif args.mode == "proxy":
        run_proxy(args.frontend, args.backend)
    else:
        result = run_client(
            args.connect, args.service, args.start_at, args.seconds, args.window, args.payload_bytes
        )
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
