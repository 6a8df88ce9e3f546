"""A stand-in's replies and the two ways a request ends early (bad request, cancelled)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Reply:
    """One reply (the fields ``workers.worker`` reads from a handler's replies)."""

    status: str
    result: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    error: tuple[str, str] | None = None
    image_key: str | None = None


class BadRequest(Exception):
    """The request is malformed; the message goes back to the client as ``bad_request``."""


class Cancelled(Exception):
    """The request's cancel event was set (the broker connection it came on is gone)."""
