"""Majordomo Management Interface (ZeroMQ RFC 8 style), answered by the broker.

``mmi.service``  body ``[name]`` -> ``[b"200"]`` if ``name`` has at least one
                 registered worker, else ``[b"404"]``.
``mmi.services`` -> ``[json]``: ``{"services": {name: {"workers": n,
                 "idle": n, "queued": n}}}``.
``mmi.cancel``   body ``[request_id]`` -> ``[b"200"]`` when a request with
                 that id from the same client was queued or being served (it
                 is then cancelled), else ``[b"404"]``. Answered by the broker
                 itself (``Broker.cancel``), which owns the queues.
any other ``mmi.*`` -> ``[b"501"]``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

from broker.records import ServiceRecord
from protocol.wire.codec import MAX_REQUEST_ID_CHARS, REQUEST_ID_PATTERN
from protocol.wire.mdp import MMI_PREFIX, MMI_SERVICE, MMI_SERVICES, Frame

STATUS_FOUND = b"200"
STATUS_NOT_FOUND = b"404"
STATUS_NOT_IMPLEMENTED = b"501"

# The codec's request id rule, as bytes.
_REQUEST_ID_RE = re.compile(REQUEST_ID_PATTERN.encode())


def is_mmi(service: bytes) -> bool:
    """True for the broker's own ``mmi.*`` namespace."""
    return service.startswith(MMI_PREFIX)


def cancel_request_id(body: Sequence[Frame]) -> str | None:
    """The request id an ``mmi.cancel`` body names, or None when the body is not one valid id."""
    if len(body) != 1 or len(body[0]) > MAX_REQUEST_ID_CHARS:
        return None
    value = bytes(body[0])
    return value.decode("ascii") if _REQUEST_ID_RE.fullmatch(value) else None


def mmi_reply(service: bytes, body: Sequence[Frame], services: Mapping[bytes, ServiceRecord]) -> list[bytes]:
    """Body of the FINAL that answers the MMI request ``service`` with ``body``."""
    if service == MMI_SERVICE:
        name = bytes(body[0]) if body else b""
        record = services.get(name)
        return [STATUS_FOUND if record is not None and record.workers else STATUS_NOT_FOUND]
    if service == MMI_SERVICES:
        listing = {
            record.name.decode("utf-8", "replace"): {
                "workers": len(record.workers),
                "idle": len(record.idle),
                "queued": len(record.requests),
            }
            for record in services.values()
        }
        return [json.dumps({"services": listing}, sort_keys=True).encode()]
    return [STATUS_NOT_IMPLEMENTED]
