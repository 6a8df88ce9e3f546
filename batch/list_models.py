"""``sam2-batch --list-models``: the services a broker serves, with what each one is.

Asks ``mmi.services`` and, for a live service the broker cannot describe yet,
one ``info`` (``SamClient.describe_services``), then prints per service its
workers, family, preprocessing, operations, licence and description.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from protocol.wire.client import SamClient
from protocol.wire.errors import ClientError, ProtocolError
from protocol.wire.mdp import DEFAULT_FRONTEND

EXIT_OK = 0
EXIT_USAGE = 2


def format_services(services: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Printable lines: one header line per service, then its licence and operations."""
    lines = []
    for name, entry in sorted(services.items()):
        family = entry.get("family", "?")
        preprocessing = entry.get("preprocessing", "?")
        lines.append(
            f"{name}  [{family}, preprocessing {preprocessing}]  workers={entry.get('workers', 0)} "
            f"idle={entry.get('idle', 0)} queued={entry.get('queued', 0)}"
        )
        lines.append(f"    {entry.get('description', '(no worker has described this service yet)')}")
        lines.append(f"    licence: {entry.get('licence', '?')}")
        lines.append(f"    ops: {', '.join(entry.get('ops', [])) or '?'}")
    return lines or ["(the broker has no services)"]


def main(argv: Sequence[str]) -> int:
    """Print the broker's models; 0 done, 2 no broker answered."""
    parser = argparse.ArgumentParser(prog="sam2-batch --list-models", description=__doc__.splitlines()[0])
    parser.add_argument("--list-models", action="store_true", required=True)
    parser.add_argument("--broker", default=DEFAULT_FRONTEND, help="broker client endpoint (%(default)s)")
    parser.add_argument("--timeout-s", type=float, default=10.0, help="longest wait for each answer")
    args, _ = parser.parse_known_args(argv)
    try:
        with SamClient(args.broker) as client:
            services = client.describe_services(timeout_s=args.timeout_s)
    except (ClientError, ProtocolError) as e:
        print(f"sam2-batch: no broker answered at {args.broker}: {e}", file=sys.stderr)
        return EXIT_USAGE
    print("\n".join(format_services(services)))
    return EXIT_OK
