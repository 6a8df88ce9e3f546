"""Command line: ``python -m broker`` (installed as ``sam2-broker``).

Binds loopback by default; binding an address other machines can reach
logs a warning unless CurveZMQ is on (``--curve-dir``, keys from
``scripts/curve_keys.py``). SIGINT/SIGTERM: DISCONNECT to every worker,
close the sockets, exit 0. Logs ``broker ready frontend=... backend=...``
once both sockets are bound. ``--parent-pid PID``: stop the same way once
that process is gone (an embedded broker never outlives its napari). Exit
codes: 0 after a signal, 1 when a socket cannot bind, 2 for bad settings or
unusable CURVE keys.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import zmq

from broker.broker import Broker
from broker.config import BrokerConfig
from protocol.runtime import cli
from protocol.runtime.memory import reuse_freed_memory
from protocol.runtime.parent import watch_parent
from protocol.wire.errors import SecurityError

LOG_FORMAT = "%(asctime)s broker %(levelname)s %(message)s"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; defaults come from :class:`BrokerConfig`."""
    defaults = BrokerConfig()
    parser = argparse.ArgumentParser(prog="sam2-broker", description="MDP/0.2 (ZeroMQ RFC 18) broker")
    parser.add_argument("--frontend", default=defaults.frontend, help="client endpoint to bind (%(default)s)")
    parser.add_argument("--backend", default=defaults.backend, help="worker endpoint to bind (%(default)s)")
    cli.add_log_options(parser)
    parser.add_argument(
        "--heartbeat-interval-s",
        type=float,
        default=defaults.heartbeat_interval_s,
        help="seconds between heartbeats to each worker (%(default)s)",
    )
    parser.add_argument(
        "--heartbeat-liveness",
        type=int,
        default=defaults.heartbeat_liveness,
        help="heartbeat intervals of silence before a worker is dropped (%(default)s)",
    )
    parser.add_argument(
        "--max-attempts",
        type=int,
        default=defaults.max_attempts,
        help="workers a request may lose before the client gets worker_lost (%(default)s)",
    )
    parser.add_argument(
        "--service-wait-s",
        type=float,
        default=defaults.service_wait_s,
        help="seconds a request waits for a worker of its service (%(default)s)",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=defaults.max_queue,
        help="queued requests per service before busy (%(default)s)",
    )
    parser.add_argument(
        "--max-message-bytes",
        type=int,
        default=defaults.max_message_bytes,
        help="ZMQ_MAXMSGSIZE of both sockets: largest frame accepted, bytes (%(default)s)",
    )
    parser.add_argument(
        "--max-queued-bytes",
        type=int,
        default=defaults.max_queued_bytes,
        help="bytes of queued requests in the whole broker before busy (%(default)s)",
    )
    parser.add_argument(
        "--max-body-frames",
        type=int,
        default=defaults.max_body_frames,
        help="body frames in one request; more gets bad_request (%(default)s)",
    )
    parser.add_argument(
        "--curve-dir",
        default=None,
        help="CurveZMQ on both sockets with the keys in this directory (made by scripts/curve_keys.py): "
        "encrypted, and only keys in authorized_clients/ and authorized_workers/ get in",
    )
    cli.add_parent_pid_option(parser)
    return parser.parse_args(argv)


def setup_logging(level: str, log_file: Path | str | None) -> None:
    """Log to stderr (and ``log_file``) with timestamps and the role ``broker``."""
    cli.setup_logging(level, log_file, LOG_FORMAT)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the broker until SIGINT/SIGTERM; returns the exit status."""
    args = parse_args(argv)
    setup_logging(args.log_level, args.log_file)
    log = logging.getLogger("broker")
    watch_parent(args.parent_pid)
    try:
        config = BrokerConfig(
            frontend=args.frontend,
            backend=args.backend,
            heartbeat_interval_s=args.heartbeat_interval_s,
            heartbeat_liveness=args.heartbeat_liveness,
            max_attempts=args.max_attempts,
            service_wait_s=args.service_wait_s,
            max_queue=args.max_queue,
            max_message_bytes=args.max_message_bytes,
            max_queued_bytes=args.max_queued_bytes,
            max_body_frames=args.max_body_frames,
            curve_dir=args.curve_dir,
        )
    except ValueError as e:
        log.error("invalid settings: %s", e)
        return 2
    for endpoint in config.exposed_endpoints():
        if config.curve_dir is None:
            log.warning(
                "binding %s, which is reachable from other machines, with no authentication: "
                "anyone who reaches it can send requests or register as a worker, and the "
                "traffic is not encrypted; use --curve-dir (see README) or an SSH tunnel",
                endpoint,
            )
        else:
            log.info("binding %s with CurveZMQ: encrypted, authorised keys only", endpoint)
    reuse_freed_memory()
    try:
        broker = Broker(config)
    except SecurityError as e:
        log.error("cannot use the CURVE keys: %s", e)
        return 2

    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        broker.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        broker.bind()
    except zmq.ZMQError as e:
        log.error("cannot bind frontend=%s backend=%s: %s", config.frontend, config.backend, e)
        broker.close()
        return 1
    try:
        broker.run()
    finally:
        if received:
            log.info("received %s, stopping", signal.Signals(received[0]).name)
        broker.close()
    log.info("broker stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
