"""Majordomo Management Interface (ZeroMQ RFC 8 style), answered by the broker.

``mmi.service``  body ``[name]`` -> ``[b"200"]`` if ``name`` has at least one
                 registered worker, else ``[b"404"]``.
``mmi.services`` -> ``[json]``: ``{"services": {name: {"workers": n,
                 "idle": n, "queued": n}}}``.
any other ``mmi.*`` -> ``[b"501"]``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from broker.records import ServiceRecord
from protocol.mdp import Frame

MMI_PREFIX = b"mmi."
MMI_SERVICE = b"mmi.service"
MMI_SERVICES = b"mmi.services"

STATUS_FOUND = b"200"
STATUS_NOT_FOUND = b"404"
STATUS_NOT_IMPLEMENTED = b"501"


def is_mmi(service: bytes) -> bool:
    """True for the broker's own ``mmi.*`` namespace."""
    return service.startswith(MMI_PREFIX)


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
