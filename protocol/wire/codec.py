"""The application body carried inside MDP REQUEST / PARTIAL / FINAL.

Frame layout of one body::

    frame 0      UTF-8 JSON header (at most ``Limits.max_header_bytes``)
    frame 1..n   one frame per entry of ``header["arrays"]``, in order

Header fields (requests and replies)::

    v           int     protocol version, currently 1
    op          str     operation: info | embed | segment | auto | propagate | echo | sleep
    request_id  str     client-chosen id (<= 64 chars), echoed in every reply
    image_key   str     optional, content key of the image (see image_key.py)
    params      object  request only: operation parameters (JSON values)
    status      str     reply only: ok | partial | error | need_image
    result      object  reply only: operation results (JSON values)
    error       object  reply with status "error": {"code": str, "message": str}
    arrays      list    one spec per array frame:
                        {"name": str, "dtype": str, "shape": [int, ...],
                         "codec": "blosc2" | "raw"}

Array frames are C-ordered, little-endian. ``codec`` "blosc2" is a single
blosc2 chunk made by ``blosc2.compress2`` with ``typesize`` = item size;
"raw" is the plain bytes. Operations and their params are documented in
``protocol/README.md``.

Validation happens before anything is allocated or decompressed: header
size, JSON shape, allowed dtypes, number of dimensions, elements and bytes
per array and in total, frame count; then each blosc2 chunk must announce
exactly the promised number of bytes and its own length. Only then is a
buffer of that size allocated and decompressed into. No pickle anywhere.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import blosc2
import numpy as np

from protocol.wire.errors import CodecError

PROTOCOL_VERSION = 1

ALLOWED_DTYPES: frozenset[str] = frozenset({"bool", "uint8", "uint16", "int16", "int32", "uint32", "float32"})
CODECS = ("blosc2", "raw")

STATUS_OK = "ok"
STATUS_PARTIAL = "partial"
STATUS_ERROR = "error"
STATUS_NEED_IMAGE = "need_image"

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
# A request id: client-chosen, echoed in every reply, named by ``mmi.cancel``.
MAX_REQUEST_ID_CHARS = 64
REQUEST_ID_PATTERN = rf"[A-Za-z0-9_.:-]{{1,{MAX_REQUEST_ID_CHARS}}}"
_ID_RE = re.compile(f"^{REQUEST_ID_PATTERN}$")
_KEY_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")

# blosc2 refuses chunks past this many bytes of uncompressed data.
_BLOSC2_MAX_NBYTES = blosc2.MAX_BUFFERSIZE

# Compress and decompress without holding the GIL: filling the fresh buffer of a large array
# takes seconds (page faults), during which a worker must keep heartbeating and a GUI keep drawing.
blosc2.set_releasegil(True)


@dataclass(frozen=True)
class Limits:
    """Bounds enforced on every decoded body, before allocation.

    Attributes:
        max_header_bytes: size of the JSON header frame.
        max_arrays: number of array frames in one body.
        max_ndim: dimensions per array.
        max_side: length of any one axis.
        max_array_bytes: uncompressed bytes of one array.
        max_total_bytes: uncompressed bytes of all arrays of one body.
    """

    max_header_bytes: int = 64 * 1024
    max_arrays: int = 8
    max_ndim: int = 4
    max_side: int = 65536
    max_array_bytes: int = 1 << 30
    max_total_bytes: int = 1 << 30


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class CompressionParams:
    """blosc2 settings used when encoding, by dtype (chosen from ``bench/bench_codec.py``'s
    measurements, see ``bench/RESULTS.md``).

    Attributes:
        codec: a ``blosc2.Codec``.
        clevel: 0..9.
        filter: shuffle filter for multi-byte items (uint16 images, uint32 labels, float32 logits).
        byte_filter: filter for other 1-byte items (uint8 images).
        bool_filter: filter for bool masks.
        min_bytes: arrays smaller than this are sent "raw".
    """

    codec: blosc2.Codec = blosc2.Codec.LZ4
    clevel: int = 5
    filter: blosc2.Filter = blosc2.Filter.SHUFFLE
    byte_filter: blosc2.Filter = blosc2.Filter.BITSHUFFLE
    bool_filter: blosc2.Filter = blosc2.Filter.NOFILTER
    min_bytes: int = 256


DEFAULT_COMPRESSION = CompressionParams()


@dataclass(frozen=True)
class ArraySpec:
    """What the header promises about one array frame."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    codec: str

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "codec": self.codec}


@dataclass
class Message:
    """A decoded body: the JSON header and the arrays by name.

    ``header["arrays"]`` is kept as received; ``arrays`` maps each name to a
    freshly allocated, writable numpy array of the promised dtype and shape.
    """

    header: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def op(self) -> str:
        return str(self.header.get("op", ""))

    @property
    def request_id(self) -> str:
        return str(self.header.get("request_id", ""))

    @property
    def status(self) -> str:
        return str(self.header.get("status", ""))


# ----------------------------------------------------------------------------
# encoding


def _byte_view(array: np.ndarray) -> memoryview:
    """Flat uint8 view of a C-contiguous array, without copying (works for empty arrays)."""
    return array.reshape(-1).view(np.uint8).data


def compression_for(
    array: np.ndarray, params: CompressionParams = DEFAULT_COMPRESSION
) -> tuple[blosc2.Codec, list[blosc2.Filter], int]:
    """The blosc2 ``(codec, filters, clevel)`` that :func:`encode` uses for ``array`` (by its dtype)."""
    if array.dtype == np.bool_:
        filt = params.bool_filter
    elif array.itemsize == 1:
        filt = params.byte_filter
    else:
        filt = params.filter
    return params.codec, [filt], params.clevel


def _compress(array: np.ndarray, params: CompressionParams) -> tuple[str, bytes | memoryview]:
    if array.nbytes < params.min_bytes:
        return "raw", _byte_view(array)
    codec, filters, clevel = compression_for(array, params)
    chunk = blosc2.compress2(array, typesize=array.itemsize, clevel=clevel, codec=codec, filters=filters)
    return "blosc2", chunk


def encode(
    header: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray] | None = None,
    *,
    compression: CompressionParams = DEFAULT_COMPRESSION,
) -> list[bytes | memoryview]:
    """Build body frames from a header and named arrays.

    Args:
        header: JSON-serialisable fields (``v`` is filled in; ``arrays`` is
            written here and must not be given).
        arrays: name -> numpy array of an allowed dtype; converted to
            C-contiguous little-endian before sending.
        compression: blosc2 settings.

    Returns:
        ``[header_json, frame_1, ...]``; "raw" frames are zero-copy views.

    Raises:
        CodecError: unknown dtype, bad name, or a header that is not JSON.
    """
    specs: list[dict[str, Any]] = []
    frames: list[bytes | memoryview] = []
    for name, value in (arrays or {}).items():
        if not _NAME_RE.match(name):
            raise CodecError(f"array name {name!r} must match {_NAME_RE.pattern}")
        array = np.ascontiguousarray(value)
        dtype_name = array.dtype.name
        if dtype_name not in ALLOWED_DTYPES:
            raise CodecError(f"array {name!r}: dtype {dtype_name} is not allowed ({sorted(ALLOWED_DTYPES)})")
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        codec, frame = _compress(array, compression)
        specs.append(ArraySpec(name, dtype_name, tuple(int(s) for s in array.shape), codec).to_json())
        frames.append(frame)
    full = dict(header)
    if "arrays" in full:
        raise CodecError("header must not set 'arrays'; pass arrays separately")
    full.setdefault("v", PROTOCOL_VERSION)
    full["arrays"] = specs
    try:
        head = json.dumps(full, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as e:
        raise CodecError(f"header is not plain JSON: {e}") from e
    return [head, *frames]


# ----------------------------------------------------------------------------
# decoding


def _reject_constant(name: str) -> None:
    raise CodecError(f"header contains {name}, which is not valid JSON")


# One decoder for every header: json.loads with parse_constant= builds a new
# decoder per call, which costs more than parsing a small header.
_HEADER_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _decode_header_json(frame: Any) -> Any:
    """Frame 0 as UTF-8 JSON (any value; callers check it is an object).

    Raises:
        UnicodeDecodeError: not UTF-8.
        json.JSONDecodeError: not JSON.
        CodecError: NaN or Infinity in it.
    """
    return _HEADER_DECODER.decode(bytes(frame).decode("utf-8"))


def parse_header(frame: Any, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Parse and validate frame 0 without touching any array frame.

    Raises:
        CodecError: too large, not JSON, wrong version or field types.
    """
    size = len(frame)
    if size > limits.max_header_bytes:
        raise CodecError(f"header is {size} bytes, limit is {limits.max_header_bytes}")
    try:
        header = _decode_header_json(frame)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CodecError(f"header is not UTF-8 JSON: {e}") from e
    if not isinstance(header, dict):
        raise CodecError("header must be a JSON object")
    if header.get("v") != PROTOCOL_VERSION:
        raise CodecError(f"unsupported protocol version {header.get('v')!r}, expected {PROTOCOL_VERSION}")
    op = header.get("op")
    if not isinstance(op, str) or not _NAME_RE.match(op):
        raise CodecError(f"'op' must be a short lowercase name, got {op!r}")
    request_id = header.get("request_id")
    if not isinstance(request_id, str) or not _ID_RE.match(request_id):
        raise CodecError(f"'request_id' must match {_ID_RE.pattern}, got {request_id!r}")
    image_key = header.get("image_key")
    if image_key is not None and (not isinstance(image_key, str) or not _KEY_RE.match(image_key)):
        raise CodecError(f"'image_key' must match {_KEY_RE.pattern}")
    for name in ("params", "result", "error"):
        if name in header and not isinstance(header[name], dict):
            raise CodecError(f"'{name}' must be a JSON object")
    if not isinstance(header.get("arrays", []), list):
        raise CodecError("'arrays' must be a list")
    return header


def _array_specs(header: Mapping[str, Any], limits: Limits) -> list[ArraySpec]:
    raw_specs = header.get("arrays", [])
    if len(raw_specs) > limits.max_arrays:
        raise CodecError(f"{len(raw_specs)} arrays, limit is {limits.max_arrays}")
    specs: list[ArraySpec] = []
    total = 0
    for i, raw in enumerate(raw_specs):
        if not isinstance(raw, dict):
            raise CodecError(f"arrays[{i}] must be an object")
        name, dtype, shape, codec = raw.get("name"), raw.get("dtype"), raw.get("shape"), raw.get("codec")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise CodecError(f"arrays[{i}].name must match {_NAME_RE.pattern}")
        if any(s.name == name for s in specs):
            raise CodecError(f"array name {name!r} appears twice")
        if dtype not in ALLOWED_DTYPES:
            raise CodecError(f"array {name!r}: dtype {dtype!r} is not allowed ({sorted(ALLOWED_DTYPES)})")
        if codec not in CODECS:
            raise CodecError(f"array {name!r}: codec {codec!r} is not one of {CODECS}")
        if not isinstance(shape, list) or not all(type(s) is int for s in shape):
            raise CodecError(f"array {name!r}: shape must be a list of integers")
        if len(shape) > limits.max_ndim:
            raise CodecError(f"array {name!r}: {len(shape)} dimensions, limit is {limits.max_ndim}")
        if any(s < 0 or s > limits.max_side for s in shape):
            raise CodecError(f"array {name!r}: each axis must be in 0..{limits.max_side}, got {shape}")
        spec = ArraySpec(name, dtype, tuple(shape), codec)
        if spec.nbytes > limits.max_array_bytes:
            raise CodecError(f"array {name!r}: {spec.nbytes} bytes, limit is {limits.max_array_bytes}")
        total += spec.nbytes
        if total > limits.max_total_bytes:
            raise CodecError(f"arrays total more than {limits.max_total_bytes} bytes")
        specs.append(spec)
    return specs


def _decode_array(spec: ArraySpec, frame: Any) -> np.ndarray:
    view = memoryview(frame).cast("B")
    out = np.empty(spec.shape, dtype=np.dtype(spec.dtype).newbyteorder("<"))
    if spec.codec == "raw":
        if view.nbytes != spec.nbytes:
            raise CodecError(
                f"array {spec.name!r}: raw frame has {view.nbytes} bytes, header promised {spec.nbytes}"
            )
        out.reshape(-1).view(np.uint8)[:] = np.frombuffer(view, dtype=np.uint8)
        return out
    if spec.nbytes == 0:
        raise CodecError(f"array {spec.name!r}: empty arrays must use codec 'raw'")
    if spec.nbytes > _BLOSC2_MAX_NBYTES:
        raise CodecError(f"array {spec.name!r}: too large for one blosc2 chunk")
    if view.nbytes < blosc2.MAX_OVERHEAD:
        raise CodecError(f"array {spec.name!r}: blosc2 frame of {view.nbytes} bytes is truncated")
    try:
        nbytes, cbytes, _ = blosc2.get_cbuffer_sizes(view)
    except Exception as e:  # blosc2 raises plain ValueError/RuntimeError
        raise CodecError(f"array {spec.name!r}: not a blosc2 chunk ({e})") from e
    if cbytes != view.nbytes:
        raise CodecError(f"array {spec.name!r}: blosc2 chunk says {cbytes} bytes, frame has {view.nbytes}")
    if nbytes != spec.nbytes:
        raise CodecError(
            f"array {spec.name!r}: decompresses to {nbytes} bytes, header promised {spec.nbytes}"
        )
    try:
        blosc2.decompress2(view, dst=out)
    except Exception as e:
        raise CodecError(f"array {spec.name!r}: corrupt blosc2 data ({e})") from e
    return out


def decode(frames: Sequence[Any], limits: Limits = DEFAULT_LIMITS) -> Message:
    """Validate and decode body frames into a :class:`Message`.

    Args:
        frames: ``[header_json, array_frame, ...]`` as bytes or zmq frames.
        limits: bounds checked before any allocation.

    Raises:
        CodecError: for any violation; nothing is decompressed past the first bad check.
    """
    if not frames:
        raise CodecError("empty body: expected a header frame")
    header = parse_header(frames[0], limits)
    specs = _array_specs(header, limits)
    if len(frames) - 1 != len(specs):
        raise CodecError(f"header lists {len(specs)} arrays but {len(frames) - 1} array frames follow")
    arrays = {spec.name: _decode_array(spec, frame) for spec, frame in zip(specs, frames[1:], strict=True)}
    return Message(header, arrays)


# ----------------------------------------------------------------------------
# reply helpers


def reply_header(
    request: Mapping[str, Any],
    status: str,
    *,
    result: Mapping[str, Any] | None = None,
    error: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Header of a reply to ``request`` (its op, request id and image key echoed).

    ``request`` may be a partial or invalid header; only string fields that
    are safe to echo are copied.
    """
    header: dict[str, Any] = {"v": PROTOCOL_VERSION, "status": status}
    op = request.get("op")
    header["op"] = op if isinstance(op, str) and _NAME_RE.match(op) else "unknown"
    request_id = request.get("request_id")
    header["request_id"] = (
        request_id if isinstance(request_id, str) and _ID_RE.match(request_id) else "unknown"
    )
    image_key = request.get("image_key")
    if isinstance(image_key, str) and _KEY_RE.match(image_key):
        header["image_key"] = image_key
    if result is not None:
        header["result"] = dict(result)
    if error is not None:
        header["error"] = {"code": error[0], "message": error[1]}
    return header


def error_body(request: Mapping[str, Any], code: str, message: str) -> list[bytes | memoryview]:
    """Body frames of an error FINAL for ``request``."""
    return encode(reply_header(request, STATUS_ERROR, error=(code, message)))


def peek_header(frame: Any, max_bytes: int = DEFAULT_LIMITS.max_header_bytes) -> dict[str, Any]:
    """Best-effort read of a header frame for routing and logging; never raises.

    Returns ``{}`` when the frame is too large or not a JSON object.
    """
    try:
        if len(frame) > max_bytes:
            return {}
        header = _decode_header_json(frame)
    except Exception:
        return {}
    return header if isinstance(header, dict) else {}


def echoable_request_id(request_id: object) -> bool:
    """Whether every reply to a request with this id repeats it (a valid id; others read ``unknown``)."""
    return isinstance(request_id, str) and bool(_ID_RE.match(request_id))
