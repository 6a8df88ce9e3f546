"""Every bad input of ``docs/bad_inputs.md``, sent over the wire to a real
broker and a real SAM2 worker: each gets its documented answer, and the
service keeps serving after each one. No pickle is ever unpickled.
"""

from __future__ import annotations

import ast
import json
import pickle
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blosc2
import numpy as np
import pytest
import zmq

from bench.fuzzing import PickleBomb
from protocol.wire import codec
from protocol.wire.image_key import image_key
from tests.support.broker_peers import BrokerHandle, RawClient, request_body, start_broker, zmq_context
from tests.support.processes import MODEL, PYTHON, REPO_ROOT, ProcessSpawner, log_text, wait_until

pytestmark = pytest.mark.model

SERVICE = MODEL.encode()
IMAGE = np.full((64, 64), 100, np.uint8)
IMAGE_KEY = image_key(IMAGE, None, MODEL)


@dataclass
class Backend:
    broker: BrokerHandle
    worker: Any
    marker: Path


@pytest.fixture(scope="module")
def ctx() -> Iterator[zmq.Context[Any]]:
    with zmq_context() as context:
        yield context


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, random_checkpoint: Path) -> Iterator[Backend]:
    spawner = ProcessSpawner(tmp_path_factory.mktemp("bad-inputs"))
    broker = start_broker(spawner, service_wait_s=1.0, max_queue=100, extra_args=["--max-body-frames", "12"])
    worker = spawner(
        [
            PYTHON, "-m", "workers", "--connect", broker.backend, "--model", MODEL,
            "--checkpoint", str(random_checkpoint), "--device", "cpu", "--threads", "1",
            "--heartbeat-interval-s", "0.2",
            "--max-side", "4096", "--max-header-kib", "32", "--max-arrays", "6",
        ],
        "worker",
    )  # fmt: skip
    assert wait_until(lambda: "worker ready" in log_text(worker) or worker.poll() is not None, 120)
    yield Backend(broker, worker, tmp_path_factory.mktemp("marker") / "unpickled")
    spawner.stop_all()


def _header(op: str = "echo", **fields: Any) -> bytes:
    return json.dumps({"v": 1, "op": op, "request_id": "bad-1", **fields}).encode()


def _spec(dtype: str = "uint8", shape: list[int] | None = None, codec_name: str = "raw") -> dict[str, Any]:
    return {"name": "image", "dtype": dtype, "shape": shape or [16, 16], "codec": codec_name}


def _image_body(op: str, params: dict[str, Any], **header: Any) -> list[bytes]:
    return [
        bytes(f)
        for f in codec.encode({"op": op, "request_id": "bad-1", "params": params, **header}, {"image": IMAGE})
    ]


def _with_raw_number(body: list[bytes], old: bytes, new: bytes) -> list[bytes]:
    """``body`` with a number in its JSON header rewritten (JSON that ``json.dumps`` would not write)."""
    assert old in body[0]
    return [body[0].replace(old, new), *body[1:]]


_BOMB = blosc2.compress2(np.zeros(1 << 20, np.uint8), typesize=1)

DROPPED = "dropped"
ERROR = "error"
BAD = "bad_request"

# (case, frames: a full client message, or a body that is wrapped in a REQUEST, expected outcome)
# outcome: (DROPPED, broker log text) or (ERROR, error code, error message text)
CASES: list[tuple[str, Callable[[Path], list[bytes]], tuple[str, ...]]] = [
    ("wrong protocol header",
     lambda m: [b"MDPC01", b"\x01", SERVICE, *request_body("x")],
     (DROPPED, "bad client protocol header b'MDPC01'")),
    ("worker header on the client socket",
     lambda m: [b"MDPW02", b"\x01", SERVICE],
     (DROPPED, "bad client protocol header b'MDPW02'")),
    ("unknown command",
     lambda m: [b"MDPC02", b"\x09", SERVICE, *request_body("x")],
     (DROPPED, "unknown client command b'\\t'")),
    ("truncated frames",
     lambda m: [b"MDPC02", b"\x01"],
     (DROPPED, "client message has 2 frames, needs at least 3")),
    ("oversized envelope frame",
     lambda m: [b"MDPC02", b"\x01", b"s" * 2000, *request_body("x")],
     (DROPPED, "envelope frame of 2000 bytes")),
    ("too many body frames",
     lambda m: [b"MDPC02", b"\x01", SERVICE, *request_body("bad-1"), *[b"x"] * 12],
     (ERROR, BAD, "13 body frames; this broker accepts at most 12")),
    ("unknown service",
     lambda m: [b"MDPC02", b"\x01", b"no.such.model", *request_body("bad-1")],
     (ERROR, "no_worker", "no worker for service 'no.such.model' within 1 s")),
    ("oversized header",
     lambda m: [_header(params={"pad": "x" * 40_000})],
     (ERROR, BAD, "limit is 32768")),
    ("more arrays than --max-arrays",
     lambda m: [_header(arrays=[{**_spec(), "name": f"a{i}"} for i in range(7)]), *[bytes(256)] * 7],
     (ERROR, BAD, "7 arrays, limit is 6")),
    ("header not JSON",
     lambda m: [b"\xff\xfe not json"],
     (ERROR, BAD, "header is not UTF-8 JSON")),
    ("NaN in the header",
     lambda m: [b'{"v": 1, "op": "echo", "request_id": "bad-1", "params": {"x": NaN}}'],
     (ERROR, BAD, "header contains NaN")),
    ("wrong protocol version",
     lambda m: [_header(v=2)],
     (ERROR, BAD, "unsupported protocol version 2")),
    ("wrong dtype float64",
     lambda m: [_header(arrays=[_spec("float64")]), bytes(16 * 16 * 8)],
     (ERROR, BAD, "dtype 'float64' is not allowed")),
    ("wrong dtype object",
     lambda m: [_header(arrays=[_spec("object")]), bytes(256)],
     (ERROR, BAD, "dtype 'object' is not allowed")),
    ("big-endian dtype",
     lambda m: [_header(arrays=[_spec(">u2")]), bytes(512)],
     (ERROR, BAD, "dtype '>u2' is not allowed")),
    ("shape/size mismatch",
     lambda m: [_header(arrays=[_spec("uint16", [8, 8])]), bytes(100)],
     (ERROR, BAD, "raw frame has 100 bytes, header promised 128")),
    ("fewer frames than arrays",
     lambda m: [_header(arrays=[_spec()])],
     (ERROR, BAD, "header lists 1 arrays but 0 array frames follow")),
    ("axis past --max-side",
     lambda m: [_header(arrays=[_spec(shape=[5000, 2])]), bytes(10000)],
     (ERROR, BAD, "each axis must be in 0..4096")),
    ("array past the byte limit",
     lambda m: [_header(arrays=[_spec("float32", [4096, 4096, 20])]), b""],
     (ERROR, BAD, "bytes, limit is")),
    ("decompression bomb",
     lambda m: [_header(arrays=[_spec(codec_name="blosc2")]), _BOMB],
     (ERROR, BAD, "decompresses to 1048576 bytes, header promised 256")),
    ("corrupt blosc2 chunk",
     lambda m: [_header(arrays=[_spec(codec_name="blosc2")]), b"\x02\x01" + bytes(40)],
     (ERROR, BAD, "array 'image'")),
    ("pickle as the header",
     lambda m: [pickle.dumps(PickleBomb(str(m)))],
     (ERROR, BAD, "header is not UTF-8 JSON")),
    ("pickle as an object array",
     lambda m: [_header(arrays=[_spec("object", [1])]), pickle.dumps(PickleBomb(str(m)))],
     (ERROR, BAD, "dtype 'object' is not allowed")),
    ("point outside the image",
     lambda m: _image_body("segment", {"points": [[500, 3]], "point_labels": [1]}),
     (ERROR, BAD, "is outside the image")),
    ("infinite point (1e999)",
     lambda m: _with_raw_number(
         _image_body("segment", {"points": [[12345.0, 3]], "point_labels": [1]}), b"12345.0", b"1e999"),
     (ERROR, BAD, "finite numbers (no NaN or infinity)")),
    ("point label 7",
     lambda m: _image_body("segment", {"points": [[3, 3]], "point_labels": [7]}),
     (ERROR, BAD, "point_labels must be 0 (negative) or 1 (positive)")),
    ("inverted box",
     lambda m: _image_body("segment", {"box": [30, 30, 10, 10]}),
     (ERROR, BAD, "row_min <= row_max")),
    ("NaN in mask_input",
     lambda m: [bytes(f) for f in codec.encode(
         {"op": "segment", "request_id": "bad-1", "image_key": IMAGE_KEY, "params": {"box": [1, 1, 5, 5]}},
         {"mask_input": np.full((1, 256, 256), np.nan, np.float32)})],
     (ERROR, BAD, "mask_input contains NaN or infinity")),
    ("image key that does not match the pixels",
     lambda m: _image_body("segment", {"box": [1, 1, 5, 5]}, image_key="not-the-key"),
     (ERROR, BAD, "does not match the image sent")),
    ("sleep out of range",
     lambda m: [_header("sleep", params={"seconds": 1e9})],
     (ERROR, BAD, "param 'seconds' must be in [0.0, 60.0]")),
    ("unknown parameter",
     lambda m: [_header("info", params={"verbose": True})],
     (ERROR, BAD, "unknown params for op 'info': ['verbose']")),
    ("unknown op",
     lambda m: [_header("frobnicate")],
     (ERROR, "unknown_op", "unknown op 'frobnicate'")),
]  # fmt: skip


def _send(
    ctx: zmq.Context[Any], backend: Backend, frames: list[bytes], timeout_s: float = 8.0
) -> list[bytes] | None:
    """Send a raw message (a client body is wrapped in a REQUEST); the FINAL's body, or None."""
    client = RawClient(ctx, backend.broker.frontend)
    try:
        if frames[0] not in (b"MDPC01", b"MDPC02", b"MDPW02"):
            frames = [b"MDPC02", b"\x01", SERVICE, *frames]
        client.send(frames)
        reply = client.recv(timeout_s)
        return None if reply is None else reply[3:]
    finally:
        client.close()


def _still_serving(ctx: zmq.Context[Any], backend: Backend) -> None:
    reply = _send(ctx, backend, request_body("alive", op="info"))
    assert reply is not None, "no answer to a valid request"
    assert codec.decode(reply).status == codec.STATUS_OK


@pytest.mark.parametrize(("case", "build", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_its_documented_answer(
    ctx: zmq.Context[Any],
    backend: Backend,
    case: str,
    build: Callable[[Path], list[bytes]],
    expected: tuple[str, ...],
) -> None:
    reply = _send(ctx, backend, build(backend.marker), 1.0 if expected[0] == DROPPED else 8.0)
    if expected[0] == DROPPED:
        assert reply is None, reply
        assert wait_until(lambda: expected[1] in backend.broker.log(), 5), backend.broker.log()[-2000:]
    else:
        assert reply is not None, f"{case}: no FINAL"
        message = codec.decode(reply)
        assert message.status == codec.STATUS_ERROR, message.header
        code, text = message.header["error"]["code"], message.header["error"]["message"]
        assert code == expected[1], (code, text)
        assert expected[2] in text, text
        assert message.request_id in {"bad-1", "unknown"}
    _still_serving(ctx, backend)
    assert backend.worker.poll() is None and backend.broker.proc.poll() is None
    assert not backend.marker.exists()


def test_pickle_as_raw_bytes_is_echoed_as_inert_uint8_never_unpickled(
    ctx: zmq.Context[Any], backend: Backend
) -> None:
    """The only way a pickle gets through is as plain uint8 bytes, which nothing unpickles."""
    payload = pickle.dumps(PickleBomb(str(backend.marker)))
    header = _header(arrays=[_spec("uint8", [len(payload)])])
    reply = _send(ctx, backend, [header, payload])
    assert reply is not None
    message = codec.decode(reply)
    assert message.status == codec.STATUS_OK
    echoed = message.arrays["image"]
    assert echoed.dtype == np.uint8 and echoed.tobytes() == payload
    assert not backend.marker.exists()
    # Control: unpickling it would have created the marker.
    pickle.loads(payload)  # noqa: S301 - deliberate, in the test process only
    assert backend.marker.exists()
    backend.marker.unlink()


# Calls that unpickle (or load arbitrary objects) if they ever appear in production code.
_UNSAFE_CALLS = re.compile(
    r"^(recv_pyobj|send_pyobj|recv_serialized|pack_array|unpack_array|pack_tensor|unpack_tensor|"
    r"load_pickle|loads|load)$"
)
_UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}


def test_no_pickle_anywhere_in_the_code_that_touches_the_wire() -> None:
    problems = []
    for folder in ("protocol", "broker", "workers", "plugin"):
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                where = f"{path.relative_to(REPO_ROOT)}:{getattr(node, 'lineno', 0)}"
                if isinstance(node, ast.Import):
                    problems += [f"{where} imports {a.name}" for a in node.names if a.name in _UNSAFE_MODULES]
                elif isinstance(node, ast.ImportFrom) and node.module in _UNSAFE_MODULES:
                    problems.append(f"{where} imports from {node.module}")
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                    name, owner = node.func.attr, ast.unparse(node.func.value)
                    keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
                    if name == "load" and owner == "torch" and keywords.get("weights_only") != "True":
                        problems.append(f"{where} torch.load without weights_only=True")
                    elif (
                        name == "load" and owner in {"np", "numpy"} and keywords.get("allow_pickle") == "True"
                    ):
                        problems.append(f"{where} np.load(allow_pickle=True)")
                    elif name in {"pack", "unpack", "pack_array", "unpack_array"} and owner == "blosc2":
                        problems.append(f"{where} blosc2.{name} (pickles)")
                    elif _UNSAFE_CALLS.match(name) and owner in _UNSAFE_MODULES | {
                        "socket",
                        "sock",
                        "self.socket",
                    }:
                        problems.append(f"{where} {owner}.{name}")
                    elif name in {"recv_pyobj", "send_pyobj", "recv_serialized", "send_serialized"}:
                        problems.append(f"{where} {owner}.{name}")
    assert problems == []
