"""The body codec: round trips for every dtype, and each validation rule
rejecting its bad input with a clear message before anything is allocated."""

from __future__ import annotations

import json
import pickle

import blosc2
import numpy as np
import pytest
import zmq
from blake3 import blake3
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from protocol.wire import codec
from protocol.wire.errors import CodecError
from protocol.wire.image_key import image_key

BASE = {"op": "segment", "request_id": "req-1"}


def _header(**fields: object) -> bytes:
    return json.dumps({"v": 1, **BASE, **fields}).encode()


@pytest.mark.parametrize("dtype", sorted(codec.ALLOWED_DTYPES))
@pytest.mark.parametrize("shape", [(0,), (7,), (64, 48), (33, 20, 3), (2, 3, 4, 5)])
def test_round_trip_every_dtype(dtype: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(1)
    array = (rng.random(shape) * 200).astype(dtype)
    frames = codec.encode(BASE, {"image": array})
    message = codec.decode([bytes(f) for f in frames])
    out = message.arrays["image"]
    assert out.dtype == array.dtype and out.shape == array.shape
    np.testing.assert_array_equal(out, array)
    assert message.header["arrays"][0]["dtype"] == dtype


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.uint16, np.int16, np.int32, np.uint32, np.float32, np.bool_]),
        shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=12),
    )
)
def test_round_trip_property(array: np.ndarray) -> None:
    message = codec.decode(codec.encode(BASE, {"a": array}))
    np.testing.assert_array_equal(message.arrays["a"], array)


def test_large_arrays_are_blosc2_with_item_typesize() -> None:
    image = np.arange(256 * 256, dtype=np.uint16).reshape(256, 256)
    frames = codec.encode(BASE, {"image": image})
    spec = json.loads(frames[0])["arrays"][0]
    assert spec["codec"] == "blosc2"
    nbytes, cbytes, _ = blosc2.get_cbuffer_sizes(bytes(frames[1]))
    assert nbytes == image.nbytes and cbytes == len(frames[1]) < image.nbytes


def test_non_contiguous_and_big_endian_inputs_are_normalised() -> None:
    base = np.arange(100, dtype=">i4").reshape(10, 10)
    out = codec.decode(codec.encode(BASE, {"a": base[:, ::2]})).arrays["a"]
    np.testing.assert_array_equal(out, base[:, ::2])
    assert out.dtype == np.dtype("int32")


def test_encode_rejects_disallowed_dtype_and_nan_header() -> None:
    with pytest.raises(CodecError, match="float64 is not allowed"):
        codec.encode(BASE, {"a": np.zeros(3)})
    with pytest.raises(CodecError, match="not plain JSON"):
        codec.encode({**BASE, "params": {"x": float("nan")}})


def _one_array(spec: dict, frame: bytes) -> list[bytes]:
    return [_header(arrays=[spec]), frame]


GOOD_SPEC = {"name": "image", "dtype": "uint8", "shape": [4, 4], "codec": "raw"}


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([], "empty body"),
        ([b"\xff\xfe"], "not UTF-8 JSON"),
        ([json.dumps(BASE).encode("utf-16")], "not UTF-8 JSON"),  # json.loads(bytes) would take it
        ([b"[1, 2]"], "must be a JSON object"),
        ([b'{"v": 1, "op": "segment", "request_id": "r", "params": {"x": NaN}}'], "NaN"),
        ([json.dumps({**BASE, "v": 2}).encode()], "unsupported protocol version"),
        ([json.dumps({"v": 1, "op": "Bad Op!", "request_id": "r"}).encode()], "'op'"),
        ([json.dumps({"v": 1, "op": "info", "request_id": "x" * 65}).encode()], "'request_id'"),
        (
            [json.dumps({"v": 1, "op": "info", "request_id": "r", "image_key": "../etc"}).encode()],
            "image_key",
        ),
        ([_header(params=[1])], "'params' must be a JSON object"),
        ([_header(arrays=[GOOD_SPEC])], "lists 1 arrays but 0 array frames"),
        ([_header(), b"extra"], "lists 0 arrays but 1 array frames"),
        (_one_array({**GOOD_SPEC, "dtype": "float64"}, bytes(128)), "dtype 'float64' is not allowed"),
        (_one_array({**GOOD_SPEC, "dtype": "object"}, bytes(16)), "is not allowed"),
        (_one_array({**GOOD_SPEC, "codec": "pickle"}, bytes(16)), "codec 'pickle'"),
        (_one_array({**GOOD_SPEC, "shape": [4, "4"]}, bytes(16)), "list of integers"),
        (_one_array({**GOOD_SPEC, "shape": [4, -4]}, bytes(16)), "each axis"),
        (_one_array({**GOOD_SPEC, "shape": [1, 1, 1, 1, 1]}, bytes(1)), "5 dimensions"),
        (_one_array({**GOOD_SPEC, "shape": [65536, 65536]}, bytes(16)), "limit is"),
        (_one_array({**GOOD_SPEC, "name": "Image"}, bytes(16)), "name must match"),
        (_one_array(GOOD_SPEC, bytes(15)), "raw frame has 15 bytes, header promised 16"),
        (_one_array({**GOOD_SPEC, "codec": "blosc2"}, b"short"), "truncated"),
        (_one_array({**GOOD_SPEC, "codec": "blosc2"}, bytes(64)), "blosc2"),
    ],
)
def test_each_validation_rule_rejects_with_clear_message(frames: list[bytes], message: str) -> None:
    with pytest.raises(CodecError, match=message):
        codec.decode(frames)


def test_duplicate_names_and_too_many_arrays_rejected() -> None:
    spec = {**GOOD_SPEC, "shape": [1]}
    with pytest.raises(CodecError, match="appears twice"):
        codec.decode([_header(arrays=[spec, spec]), b"\0", b"\0"])
    limits = codec.Limits(max_arrays=2)
    specs = [{**spec, "name": f"a{i}"} for i in range(3)]
    with pytest.raises(CodecError, match="3 arrays, limit is 2"):
        codec.decode([_header(arrays=specs), b"\0", b"\0", b"\0"], limits)


def test_header_size_limit() -> None:
    with pytest.raises(CodecError, match="header is .* bytes, limit is 100"):
        codec.decode([_header(params={"pad": "x" * 200})], codec.Limits(max_header_bytes=100))


def test_total_bytes_limit_checked_before_decompressing() -> None:
    limits = codec.Limits(max_total_bytes=100)
    spec = {**GOOD_SPEC, "shape": [8, 8]}
    specs = [spec, {**spec, "name": "b"}]
    with pytest.raises(CodecError, match="total more than 100"):
        codec.decode([_header(arrays=specs), bytes(64), bytes(64)], limits)


def test_blosc2_chunk_that_promises_other_size_is_refused() -> None:
    """A decompression bomb: the chunk inflates to more than the header said."""
    bomb = blosc2.compress2(np.zeros(1 << 20, np.uint8), typesize=1)
    assert len(bomb) < 10_000
    spec = {"name": "image", "dtype": "uint8", "shape": [16, 16], "codec": "blosc2"}
    with pytest.raises(CodecError, match="decompresses to 1048576 bytes, header promised 256"):
        codec.decode(_one_array(spec, bomb))


def test_blosc2_chunk_with_wrong_length_is_refused() -> None:
    chunk = blosc2.compress2(np.arange(1000, dtype=np.uint16), typesize=2)
    spec = {"name": "image", "dtype": "uint16", "shape": [1000], "codec": "blosc2"}
    with pytest.raises(CodecError, match="chunk says"):
        codec.decode(_one_array(spec, chunk + b"junk"))
    with pytest.raises(CodecError, match="chunk says"):
        codec.decode(_one_array(spec, chunk[:-5]))


def test_corrupted_blosc2_chunks_give_errors_not_crashes() -> None:
    rng = np.random.default_rng(3)
    image = (rng.random((64, 64)) * 1000).astype(np.uint16)
    chunk = bytearray(codec.encode(BASE, {"image": image})[1])
    spec = {"name": "image", "dtype": "uint16", "shape": [64, 64], "codec": "blosc2"}
    outcomes = {"error": 0, "decoded": 0}
    for _ in range(300):
        bad = bytearray(chunk)
        for _ in range(4):
            bad[int(rng.integers(0, len(bad)))] = int(rng.integers(0, 256))
        try:
            codec.decode(_one_array(spec, bytes(bad)))
            outcomes["decoded"] += 1
        except CodecError:
            outcomes["error"] += 1
    assert outcomes["error"] > 0  # still alive: every corruption gave a result or a CodecError


def test_pickled_payload_is_rejected_without_unpickling(tmp_path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    payload = pickle.dumps(Exploit())
    for frames in ([payload], [_header(arrays=[{**GOOD_SPEC, "shape": [len(payload)]}]), payload]):
        try:
            message = codec.decode(frames)
        except CodecError:
            continue
        # Accepted only as inert uint8 bytes, never as an object.
        assert message.arrays["image"].dtype == np.uint8
    assert not marker.exists()


def test_reply_helpers_echo_only_safe_fields() -> None:
    header = codec.reply_header(
        {"op": "segment", "request_id": "abc", "image_key": "img-1"}, "ok", result={"a": 1}
    )
    assert header == {
        "v": 1,
        "status": "ok",
        "op": "segment",
        "request_id": "abc",
        "image_key": "img-1",
        "result": {"a": 1},
    }
    body = codec.error_body({"op": "<script>", "request_id": 5}, "bad_request", "nope")
    decoded = codec.decode(body)
    assert decoded.status == "error" and decoded.op == "unknown" and decoded.request_id == "unknown"
    assert decoded.header["error"] == {"code": "bad_request", "message": "nope"}
    assert codec.peek_header(b"\x00not json") == {}
    assert codec.peek_header(b"x" * 100, max_bytes=10) == {}
    assert codec.peek_header(b'{"request_id": "r", "x": NaN}') == {}
    assert codec.peek_header(zmq.Frame(b'{"request_id": "r"}')) == {"request_id": "r"}


def test_image_key_changes_with_pixels_preparation_and_model() -> None:
    image = np.zeros((8, 8), np.uint16)
    key = image_key(image, (0, 100), "m")
    assert key == image_key(image.copy(), (0.0, 100.0), "m")
    changed = image.copy()
    changed[3, 3] = 1
    keys = {
        key,
        image_key(changed, (0, 100), "m"),
        image_key(image, (0, 99), "m"),
        image_key(image, (0, 100), "other"),
        image_key(image.astype(np.int32), (0, 100), "m"),
    }
    assert len(keys) == 5


def test_image_key_is_blake3_of_the_documented_bytes() -> None:
    image = np.arange(64, dtype=np.uint16).reshape(8, 8)
    prep = b'{"contrast_limits": [0.0, 100.0], "dtype": "uint16", "model": "m", "shape": [8, 8]}'
    expected = "img-" + blake3(prep + image.tobytes()).hexdigest(length=16)
    assert image_key(image, (0, 100), "m") == expected
    strided = np.zeros((16, 16), np.uint16)
    strided[::2, ::2] = image  # a view with strides hashes as its C-order pixels
    assert image_key(strided[::2, ::2], (0, 100), "m") == expected
