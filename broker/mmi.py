"""Majordomo Management Interface (ZeroMQ RFC 8 style), answered by the broker.

``mmi.service``  body ``[name]`` -> ``[b"200"]`` if ``name`` has at least one
                 registered worker, else ``[b"404"]``.
``mmi.services`` -> ``[json]``: ``{"services": {name: {"workers": n,
                 "idle": n, "queued": n, ...}}}``; once a
                 worker of the service has answered an ``info`` request
                 through this broker, also ``described`` (n), ``family``, ``description``,
                 ``licence``, ``preprocessing`` (from its latest ``info``)
                 and ``ops`` (the union over its live workers that
                 answered ``info``). ``described`` counts those workers.
                 RFC 18's READY carries only the service name, so the
                 broker learns these from ``info`` FINALs it forwards
                 (:func:`describe_from_info`); a client that finds them
                 missing asks ``info`` once (``SamClient.describe_services``).
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
from typing import Any

from broker.records import ServiceRecord
from protocol.wire.codec import MAX_REQUEST_ID_CHARS, REQUEST_ID_PATTERN, STATUS_OK, peek_header
from protocol.wire.mdp import MMI_PREFIX, MMI_SERVICE, MMI_SERVICES, SERVICE_FIELDS, Frame

STATUS_FOUND = b"200"
STATUS_NOT_FOUND = b"404"
STATUS_NOT_IMPLEMENTED = b"501"
MAX_FIELD_CHARS = 300  # longest description/licence kept from a worker's info
MAX_OPS = 64
MAX_OP_CHARS = 64

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


def describe_from_info(header_frame: Frame) -> dict[str, Any] | None:
    """The ``SERVICE_FIELDS`` of a worker's ``info`` FINAL (body frame 0), or None.

    Network input: only short strings (and an ``ops`` list of short strings)
    are kept; anything else is left out, never an error.
    """
    header = peek_header(header_frame)
    result = header.get("result")
    if header.get("status") != STATUS_OK or not isinstance(result, dict):
        return None
    described: dict[str, Any] = {}
    for name in SERVICE_FIELDS:
        value = result.get(name)
        if name == "ops":
            if isinstance(value, list) and len(value) <= MAX_OPS:
                ops = [op for op in value if isinstance(op, str) and 0 < len(op) <= MAX_OP_CHARS]
                described["ops"] = ops
        elif isinstance(value, str) and len(value) <= MAX_FIELD_CHARS:
            described[name] = value
    return described or None


def _service_listing(record: ServiceRecord) -> dict[str, Any]:
    listing: dict[str, Any] = {
        "workers": len(record.workers),
        "idle": len(record.idle),
        "queued": len(record.requests),
    }
    described = [w.described for w in record.workers.values() if w.described]
    if not described:  # RFC 8 style listing as before until a worker has described itself
        return listing
    listing["described"] = len(described)
    for fields in described:  # the latest-registered worker's answer wins for the text fields
        listing.update({k: v for k, v in fields.items() if k != "ops"})
    if any("ops" in fields for fields in described):
        listing["ops"] = sorted({op for fields in described for op in fields.get("ops", [])})
    return listing


def mmi_reply(service: bytes, body: Sequence[Frame], services: Mapping[bytes, ServiceRecord]) -> list[bytes]:
    """Body of the FINAL that answers the MMI request ``service`` with ``body``."""
    if service == MMI_SERVICE:
        name = bytes(body[0]) if body else b""
        record = services.get(name)
        return [STATUS_FOUND if record is not None and record.workers else STATUS_NOT_FOUND]
    if service == MMI_SERVICES:
        listing = {
            record.name.decode("utf-8", "replace"): _service_listing(record) for record in services.values()
        }
        return [json.dumps({"services": listing}, sort_keys=True).encode()]
    return [STATUS_NOT_IMPLEMENTED]
