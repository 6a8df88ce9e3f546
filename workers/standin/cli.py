"""Command line of a stand-in worker, reached through the worker command's family dispatch::

    python -m workers --model standin-blobs --connect tcp://127.0.0.1:5556 \
        [--delay-s 0.05] [--encode-delay-s 0.5] [--cache-entries 8] [--drain-grace-s 0]

(``sam2-worker --model standin-blobs`` is the same.) No torch, no checkpoint:
see ``workers/standin/__init__.py``. ``--delay-s`` is slept per
``segment``/``auto`` request and per ``propagate`` slice, ``--encode-delay-s``
per new image, to emulate model time in benchmarks and demos.

SIGTERM or SIGINT: drain as a SAM2 worker does (``workers/worker.py``): finish
the request held if it is expected to end within ``--drain-grace-s``, else
hand it back at once; send DISCONNECT, exit 0. The default grace is 0 s: the
request held goes back at once (stand-ins serve tests and demos, where
waiting only slows the run); a second SIGINT stops at once.
"""

from __future__ import annotations

import argparse
import logging
import signal
import time
from collections.abc import Sequence

from protocol.runtime import cli
from protocol.runtime.cli import non_negative_float, positive_int
from protocol.runtime.parent import watch_parent
from protocol.wire.codec import Limits
from protocol.wire.mdp import DEFAULT_BACKEND
from workers.standin import DEFAULT_MODEL, FAMILY, MODELS
from workers.standin.service import CACHE_ENTRIES, OPS, StandinService
from workers.worker import Worker, WorkerConfig

LOG_FORMAT = "%(asctime)s.%(msecs)03d standin[%(process)d] %(levelname)s %(name)s: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    """Every option of a stand-in worker, with its default and meaning."""
    parser = argparse.ArgumentParser(
        prog="python -m workers --model standin-blobs",
        description="A deterministic stand-in worker (labels bright blobs; its answers are not SAM's).",
    )
    parser.add_argument("--connect", default=DEFAULT_BACKEND, help="broker backend endpoint")
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=list(MODELS), help="model = service name")
    parser.add_argument(
        "--delay-s", type=non_negative_float, default=0.0, help="seconds per segment/auto request"
    )
    parser.add_argument(
        "--encode-delay-s", type=non_negative_float, default=0.0, help="seconds per new image"
    )
    parser.add_argument(
        "--cache-entries", type=positive_int, default=CACHE_ENTRIES, help="images kept cached"
    )
    parser.add_argument(
        "--without-op",
        action="append",
        default=[],
        choices=[op for op in OPS if op != "info"],
        help="serve without this op (repeatable): try a client against a model that lacks it",
    )
    cli.add_worker_heartbeat_options(parser)
    cli.add_drain_grace_option(parser, 0.0)
    cli.add_parent_pid_option(parser)
    cli.add_log_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one stand-in worker until SIGTERM/SIGINT; return the process exit code."""
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.log_level, args.log_file, LOG_FORMAT, "%Y-%m-%d %H:%M:%S")
    watch_parent(args.parent_pid)
    logging.getLogger("workers.standin").info(
        "model=%s family=%s (deterministic stand-in, not SAM; no torch)", args.model, FAMILY
    )
    service = StandinService(
        args.model, args.delay_s, args.encode_delay_s, args.cache_entries, frozenset(args.without_op)
    )
    config = WorkerConfig(
        connect=args.connect,
        service=args.model,
        device_name=FAMILY,
        heartbeat_interval_s=args.heartbeat_interval_s,
        heartbeat_liveness=args.heartbeat_liveness,
        limits=Limits(),
        drain_grace_s=args.drain_grace_s,
    )
    worker = Worker(config, service)
    signal.signal(signal.SIGTERM, lambda *_: worker.drain())
    signal.signal(signal.SIGINT, lambda *_: worker.stop() if worker.draining else worker.drain())
    worker.run()
    time.sleep(0.05)
    return 0
