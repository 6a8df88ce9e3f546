"""Checks of a request's header parameters and arrays, shared by every service's operations.

Network input is validated, never asserted: each check raises
:class:`RequestError` (code ``bad_request``), which the service turns into an
error reply with the message. Used by :mod:`workers.ops` (SAM2) and
:mod:`workers.concept` (SAM 3); nothing here imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from protocol.wire.codec import Message
from workers.prep import check_contrast_limits


class RequestError(Exception):
    """A request the worker refuses; becomes an error reply with ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def bad_request(message: str) -> RequestError:
    return RequestError("bad_request", message)


def request_params(message: Message, allowed: frozenset[str]) -> dict[str, Any]:
    """The header's ``params`` object, refused when it holds a name outside ``allowed``."""
    params = message.header.get("params", {})
    if not isinstance(params, dict):
        raise bad_request("'params' must be a JSON object")
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise bad_request(f"unknown params for op {message.op!r}: {unknown}; allowed: {sorted(allowed)}")
    return params


def check_arrays(message: Message, allowed: frozenset[str]) -> None:
    """Refuse a request carrying an array whose name is not in ``allowed``."""
    unknown = sorted(set(message.arrays) - allowed)
    if unknown:
        raise bad_request(f"unexpected arrays for op {message.op!r}: {unknown}; allowed: {sorted(allowed)}")


def bool_param(params: Mapping[str, Any], name: str, default: bool) -> bool:
    value = params.get(name, default)
    if not isinstance(value, bool):
        raise bad_request(f"param {name!r} must be true or false, got {value!r}")
    return value


def float_param(params: Mapping[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad_request(f"param {name!r} must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise bad_request(f"param {name!r} must be in [{low}, {high}], got {value!r}")
    return float(value)


def contrast_limits_param(params: Mapping[str, Any]) -> tuple[float, float] | None:
    """``contrast_limits`` (low, high) of the params, None when absent (a uint8 image)."""
    try:
        return check_contrast_limits(params.get("contrast_limits"))
    except ValueError as e:
        raise bad_request(str(e)) from e
