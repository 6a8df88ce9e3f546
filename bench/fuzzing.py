"""Hostile MDP messages for fuzzing the broker and the workers (this module holds no tests).

Used by ``tests/protocol/test_fuzz_wire.py`` (driven by hypothesis) and by
``scripts/soak_fuzz.py --messages N`` (driven by a seeded ``random.Random``). Every
generator takes a ``random.Random`` and returns the frames of one multipart
message as ``bytes``. The corpus mixes pure noise with mutations of valid
messages, so most messages get past the first check and reach a deeper one:
wrong protocol headers and commands, truncated and extra frames, oversized
envelope frames, invalid JSON headers, wrong field types, disallowed dtypes,
shape/size mismatches, corrupt and lying blosc2 chunks (decompression
bombs), pickles, NaN and out-of-range prompts, unknown ops and services.

Nothing here produces a request that is both valid and expensive (no image
for the SAM2 ops, no long ``sleep``), so a fuzz run measures robustness,
not model speed.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import blosc2
import numpy as np
import zmq

from protocol.wire import codec, mdp

# A service name the fuzzer never produces: health checks use it.
CHECK_SERVICE = b"fuzz.check"

SERVICES = [b"sam2.1_hiera_tiny", b"echo", b"mmi.service", b"mmi.services", b"mmi.x", b"nobody", b"\xff\xfe"]
DTYPES = ["uint8", "float32", "float64", "object", "<f4", ">u2", "bool", "complex64", "int8", "", 7, None]
OPS = ["echo", "info", "segment", "embed", "auto", "frobnicate", "", "ECHO", "sleep"]


class PickleBomb:
    """Unpickling this writes the file ``path``: proof that something unpickled it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str, str]]:
        return (open, (self.path, "w"))


def pickle_payload(marker_path: str) -> bytes:
    return pickle.dumps(PickleBomb(marker_path))


def _valid_templates() -> list[list[bytes]]:
    """Cheap valid bodies to mutate (no image for the SAM2 ops, no sleep)."""
    small = np.arange(24, dtype=np.uint16).reshape(4, 6)
    big = np.zeros((64, 64), dtype=np.float32)
    templates = [
        codec.encode({"op": "echo", "request_id": "t-echo", "params": {"a": 1}}, {"x": small}),
        codec.encode({"op": "echo", "request_id": "t-echo2"}, {"img": big}),
        codec.encode({"op": "info", "request_id": "t-info", "params": {}}),
        codec.encode(
            {
                "op": "segment",
                "request_id": "t-seg",
                "image_key": "k" * 40,
                "params": {"points": [[1.5, 2.0]], "point_labels": [1]},
            }
        ),
        codec.encode({"op": "segment", "request_id": "t-seg2", "params": {"box": [0, 0, 5, 5]}}),
    ]
    return [[bytes(frame) for frame in body] for body in templates]


TEMPLATES = _valid_templates()
_BOMB = blosc2.compress2(np.zeros(1 << 20, np.uint8), typesize=1)


def noise(rng: random.Random, max_frames: int = 6, max_size: int = 64) -> list[bytes]:
    """Random frames of random bytes."""
    return [rng.randbytes(rng.randint(0, max_size)) for _ in range(rng.randint(0, max_frames))]


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    """Flip, insert, delete or truncate a few bytes."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        if not buf or choice < 0.25:
            buf[rng.randint(0, len(buf)) : rng.randint(0, len(buf))] = rng.randbytes(rng.randint(1, 8))
        elif choice < 0.6:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif choice < 0.8:
            del buf[rng.randrange(len(buf))]
        else:
            del buf[rng.randint(0, len(buf)) :]
    return bytes(buf)


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def bad_header(rng: random.Random) -> bytes:
    """A header frame that is JSON, or almost, and wrong in one way."""
    base: dict[str, Any] = {"v": 1, "op": rng.choice(OPS), "request_id": f"f-{rng.randrange(10**6)}"}
    kind = rng.randrange(12)
    if kind == 0:
        return mutate_bytes(rng, _json(base))
    if kind == 1:
        base["v"] = rng.choice([0, 2, "1", None, 1.0])
    elif kind == 2:
        base["request_id"] = rng.choice(["", "x" * 65, "a b", 5, None, "\u00e9"])
    elif kind == 3:
        base["params"] = rng.choice([[], "x", 3, None, {"seconds": float("nan")}])
    elif kind == 4:
        base["arrays"] = rng.choice([{}, "x", [1], [{"name": "x"}], [None]])
    elif kind == 5:
        base["arrays"] = [{"name": "image", "dtype": rng.choice(DTYPES), "shape": [4, 4], "codec": "raw"}]
    elif kind == 6:
        shape = rng.choice([[-1], [70000], [2**40], [1.5], ["4"], [1, 1, 1, 1, 1], [2**20, 2**20]])
        base["arrays"] = [{"name": "image", "dtype": "uint8", "shape": shape, "codec": "raw"}]
    elif kind == 7:
        base["image_key"] = rng.choice(["", "k" * 200, "../../etc/passwd", 4])
    elif kind == 8:
        return b'{"v": 1, "op": "echo", "request_id": "nan", "params": {"x": NaN}}'
    elif kind == 9:
        return b"x" * rng.choice([65 * 1024, 70 * 1024])  # past the 64 KiB header limit
    elif kind == 10:
        return rng.choice([b"[]", b"null", b"\xff\xfe{}", b"{", b"", b'"v"', b"1e999"])
    else:
        base["params"] = {
            "points": rng.choice([[[float("nan"), 1]], [[1e30, -1e30]], [[1]], "x", [[1, 2, 3]]]),
            "point_labels": rng.choice([[1], [7], [], "1", [True]]),
            "box": rng.choice([[0, 0, -5, -5], [1, 2], [float("inf")] * 4, None]),
        }
        return json.dumps(base, allow_nan=True).encode()
    return _json(base)


def bad_body(rng: random.Random, marker_path: str = os.devnull) -> list[bytes]:
    """Body frames wrong in one way: header, array frames, or both."""
    kind = rng.randrange(10)
    if kind == 0:
        return [bad_header(rng), *noise(rng, 2)]
    if kind == 1:  # a valid template with one frame mutated, dropped or duplicated
        body = list(rng.choice(TEMPLATES))
        i = rng.randrange(len(body))
        op = rng.randrange(3)
        if op == 0:
            body[i] = mutate_bytes(rng, body[i])
        elif op == 1:
            del body[i]
        else:
            body.insert(i, body[i])
        return body
    if kind == 2:  # shape/size mismatch: raw frame of the wrong length
        spec = {"name": "image", "dtype": "uint16", "shape": [8, 8], "codec": "raw"}
        return [
            _json({"v": 1, "op": "echo", "request_id": "mismatch", "arrays": [spec]}),
            bytes(rng.randrange(200)),
        ]
    if kind == 3:  # decompression bomb: a tiny chunk that inflates to 1 MiB, header promises 256 bytes
        spec = {"name": "image", "dtype": "uint8", "shape": [16, 16], "codec": "blosc2"}
        return [_json({"v": 1, "op": "echo", "request_id": "bomb", "arrays": [spec]}), _BOMB]
    if kind == 4:  # lying blosc2 chunk: corrupt bytes after a plausible header
        spec = {"name": "image", "dtype": "uint8", "shape": [1024], "codec": "blosc2"}
        chunk = bytearray(blosc2.compress2(bytes(rng.randbytes(1024)), typesize=1))
        chunk = bytearray(mutate_bytes(rng, bytes(chunk)))
        return [_json({"v": 1, "op": "echo", "request_id": "corrupt", "arrays": [spec]}), bytes(chunk)]
    if kind == 5:  # a pickle as header, or as an array frame
        payload = pickle_payload(marker_path)
        spec = {"name": "image", "dtype": "uint8", "shape": [len(payload)], "codec": "raw"}
        header = _json({"v": 1, "op": "echo", "request_id": "pickle", "arrays": [spec]})
        return rng.choice([[payload], [header, payload], [bad_header(rng), payload]])
    if kind == 6:  # too many arrays
        specs = [{"name": f"a{i}", "dtype": "uint8", "shape": [1], "codec": "raw"} for i in range(12)]
        return [_json({"v": 1, "op": "echo", "request_id": "many", "arrays": specs}), *[b"\x00"] * 12]
    if kind == 7:  # unknown op, NaN-free but out-of-range params
        header = {"v": 1, "op": rng.choice(["frobnicate", "auto", "embed", "segment"]), "request_id": "u"}
        header["params"] = {"points_per_side": rng.choice([0, 10**9, -1, "8"]), "seconds": 1e9}
        return [_json(header)]
    if kind == 8:
        return noise(rng, 4, 256)
    return []  # no body at all


def client_message(rng: random.Random, marker_path: str = os.devnull) -> list[bytes]:
    """Frames a hostile client sends to the broker's frontend (DEALER view)."""
    kind = rng.randrange(8)
    if kind == 0:
        return noise(rng)
    header = rng.choice([mdp.CLIENT_HEADER] * 6 + [b"MDPC01", mdp.WORKER_HEADER, b"", b"MDPC02\x00"])
    command = rng.choice(
        [mdp.C_REQUEST] * 6 + [mdp.C_PARTIAL, mdp.C_FINAL, b"\x00", b"\x09", b"", b"\x01\x01"]
    )
    service = rng.choice(SERVICES + [rng.randbytes(rng.randint(0, 8)), b"s" * 300])
    if kind == 1:
        return [header, command]  # truncated
    if kind == 2:  # oversized envelope frames
        return [header, command, b"s" * rng.choice([256, 2000, 70000]), *bad_body(rng, marker_path)]
    prefix = [b""] if rng.random() < 0.1 else []  # MDP/0.1 style now and then
    return [*prefix, header, command, service, *bad_body(rng, marker_path)]


def worker_message(rng: random.Random, marker_path: str = os.devnull) -> list[bytes]:
    """Frames a hostile worker sends to the broker's backend (DEALER view)."""
    kind = rng.randrange(8)
    if kind == 0:
        return noise(rng)
    header = rng.choice([mdp.WORKER_HEADER] * 6 + [b"MDPW01", mdp.CLIENT_HEADER, b""])
    command = rng.choice(list(mdp.WORKER_COMMAND_NAMES) + [b"\x00", b"\x07", b"", b"\x05\x05"])
    if kind == 1:
        return [header, command, *noise(rng, 3)]
    if kind == 2:
        return [header, mdp.W_READY, rng.choice(SERVICES + [b"", b"s" * 300]), *noise(rng, 1)]
    client = rng.choice([b"", b"\x00\x6b\x8b\x45\x67", rng.randbytes(5), b"c" * 2000])
    return [header, command, client, rng.choice([b"", b"x"]), *bad_body(rng, marker_path)]


def to_worker_message(rng: random.Random, client: bytes, marker_path: str = os.devnull) -> list[bytes]:
    """Frames a hostile broker sends to a worker (DEALER view, after the ROUTER identity).

    Mostly REQUESTs with a valid envelope (``client``) and a bad body, which
    the worker must answer with exactly one FINAL; the rest is noise and
    odd commands. Never DISCONNECT (that only makes the worker reconnect).
    """
    kind = rng.randrange(10)
    if kind == 0:
        return noise(rng)
    if kind == 1:
        command = rng.choice([mdp.W_READY, mdp.W_PARTIAL, mdp.W_FINAL, mdp.W_HEARTBEAT, b"\x09", b""])
        return [rng.choice([mdp.WORKER_HEADER, b"MDPW01", b""]), command, *noise(rng, 3)]
    if kind == 2:  # REQUEST with a broken envelope
        return [
            mdp.WORKER_HEADER,
            mdp.W_REQUEST,
            *rng.choice([[], [client], [b"", b""], [client, b"x", b"{}"]]),
        ]
    return [mdp.WORKER_HEADER, mdp.W_REQUEST, client, b"", *bad_body(rng, marker_path)]


@dataclass
class FakeBroker:
    """A ROUTER the real worker connects to: we are its broker, and a hostile one."""

    socket: zmq.Socket[bytes]
    endpoint: str
    worker: bytes | None = None
    finals: dict[bytes, list[list[bytes]]] = field(default_factory=dict)
    heartbeat_at: float = 0.0
    sent_requests: int = 0
    examples: int = 0

    @classmethod
    def bind(cls, context: zmq.Context[Any], endpoint: str) -> FakeBroker:
        socket: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.bind(endpoint)
        return cls(socket, endpoint)

    def pump(self, timeout_s: float) -> None:
        """Receive for ``timeout_s``: learn the worker's identity, collect FINALs, heartbeat."""
        deadline = time.monotonic() + timeout_s
        while True:
            now = time.monotonic()
            if self.worker is not None and now >= self.heartbeat_at:
                self.socket.send_multipart([self.worker, mdp.WORKER_HEADER, mdp.W_HEARTBEAT])
                self.heartbeat_at = now + 0.2
            left = deadline - now
            if not self.socket.poll(int(max(0.0, min(left, 0.05)) * 1000)):
                if left <= 0:
                    return
                continue
            identity, *frames = self.socket.recv_multipart()
            message = mdp.parse_worker(frames)
            if message.command == mdp.W_READY:
                self.worker = identity
            elif message.command == mdp.W_FINAL:
                self.finals.setdefault(message.client, []).append(list(message.body))

    def final_for(self, client: bytes, timeout_s: float) -> list[list[bytes]]:
        deadline = time.monotonic() + timeout_s
        while client not in self.finals and time.monotonic() < deadline:
            self.pump(0.02)
        return self.finals.get(client, [])
