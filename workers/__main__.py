"""Command line of one SAM2 worker: ``python -m workers`` or ``sam2-worker``.

Example::

    python -m workers --connect tcp://127.0.0.1:5556 --model sam2.1_hiera_tiny --device auto

Models are registry entries (``protocol/runtime/models.toml``); a fine-tuned
checkpoint is one entry in a file of your own::

    python -m workers --model-file my_models.toml --model my_finetune

The checkpoint's SHA-256 is computed on first use and cached by path, size and
mtime; when the entry pins ``sha256`` and the file differs, the worker exits 2
saying so.

With a broker started with ``--curve-dir`` (CurveZMQ), give the worker its
keypair and the broker's public key (``scripts/curve_keys.py`` makes them)::

    python -m workers --connect tcp://broker-host:5556 \
        --curve-key curve/workers/gpu1.key_secret --curve-server-key curve/broker.key

``--parent-pid PID``: stop as on SIGTERM once that process is gone (an
embedded worker never outlives its napari).

SIGTERM or SIGINT (``scancel``, preemption, a SLURM time limit,
``start_all.sh`` stopping, Ctrl-C): take no new request, finish the one held
within ``--drain-grace-s`` or hand it back to the broker (at once when its op's
typical time says it cannot end within the grace: ``workers/durations.py``),
send DISCONNECT and exit 0. Repeated SIGTERMs change nothing; a second SIGINT stops at once.

A ``sam3`` model (``--model sam3``) serves ``concept`` (text and exemplar
boxes -> every instance) with Meta's SAM 3: a GPU model (it warns on a CPU),
with gated weights (README.md, "Models").

Exit codes: 0 after SIGTERM/SIGINT (DISCONNECT sent), 2 for a bad command
line, a bad model file, an unknown model, a missing, unusable or mismatching
(pinned SHA-256) checkpoint or CURVE key, or an unavailable device.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from protocol.runtime import cli
from protocol.runtime.checkpoints import DEFAULT_MODEL
from protocol.runtime.cli import non_negative_float, non_negative_int, positive_float, positive_int
from protocol.runtime.extras import exit_without_sam3_extra, exit_without_worker_extra
from protocol.runtime.parent import watch_parent
from protocol.runtime.registry import ModelEntry, RegistryError, load_registry
from protocol.wire.codec import Limits
from protocol.wire.errors import SecurityError
from protocol.wire.mdp import DEFAULT_BACKEND
from protocol.wire.security import CurveClientKeys, is_loopback_endpoint
from workers import standin

if TYPE_CHECKING:
    from workers.device import DeviceChoice
    from workers.disk_cache import DiskEmbeddingCache
    from workers.worker import RequestHandler

log = logging.getLogger("workers")

EXIT_USAGE = 2
LOG_FORMAT = "%(asctime)s.%(msecs)03d worker[%(process)d] %(levelname)s %(name)s: %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
DEFAULT_PRELOAD = 8  # disk-cache entries read into memory at start: 128 MiB of SAM2 float32 entries


def _workers_per_host_from_env() -> int:
    text = os.environ.get("SAM2_WORKERS_PER_HOST", "")
    try:
        return max(1, int(text))
    except ValueError:
        if text:
            log.warning("ignoring SAM2_WORKERS_PER_HOST=%r (not an integer)", text)
        return 1


def build_parser() -> argparse.ArgumentParser:
    """Every tunable of a SAM2 worker, with its default and meaning."""
    parser = argparse.ArgumentParser(
        prog="sam2-worker", description="One SAM2 model served as an MDP/0.2 worker behind a broker."
    )
    parser.add_argument("--connect", default=DEFAULT_BACKEND, help="broker backend endpoint")
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help="registry model name = service name (--list-models shows them)"
    )
    parser.add_argument(
        "--model-file",
        type=Path,
        action="append",
        default=[],
        help="TOML model file adding or overriding registry entries (repeatable; see "
        "protocol/runtime/models.toml for the layout)",
    )
    parser.add_argument("--list-models", action="store_true", help="print the registry's models and exit")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="checkpoint .pt file (default: the registry entry's checkpoint)",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="auto (cuda, else mps, else cpu), cpu, cuda, cuda:N, mps (default: the registry entry's, auto)",
    )
    parser.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bfloat16 autocast on CUDA, as in Meta's examples (default: the registry entry's precision, "
        "bf16 unless it says fp32; float32 elsewhere)",
    )
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="TESTS ONLY: build the model with random weights, no checkpoint; masks are meaningless",
    )
    parser.add_argument(
        "--cache-mib", type=non_negative_float, default=1024.0, help="embedding cache budget in MiB"
    )
    parser.add_argument(
        "--disk-cache-dir",
        type=Path,
        default=None,
        help="embeddings shared on disk by the workers of a host (default: $SAM2_DISK_CACHE_DIR, else "
        "~/.cache/napari-sam2-broker/embeddings)",
    )
    parser.add_argument(
        "--disk-cache-gib",
        type=non_negative_float,
        default=None,
        help="bound of the disk cache, least recently used entries deleted first; 0 turns it off "
        "(default: $SAM2_DISK_CACHE_GIB, else 4; an entry is 16 MiB for a 1024x1024 image)",
    )
    parser.add_argument(
        "--disk-cache-preload",
        type=non_negative_int,
        default=DEFAULT_PRELOAD,
        help="at start, read this many of the most recently used disk-cache entries of the model into "
        f"memory (default {DEFAULT_PRELOAD}; 0: read each when first asked for)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch CPU threads (default: CPU cores // --workers-per-host, at least 1)",
    )
    parser.add_argument(
        "--workers-per-host",
        type=positive_int,
        default=None,
        help="workers sharing this machine's cores (default: $SAM2_WORKERS_PER_HOST or 1)",
    )
    cli.add_worker_heartbeat_options(parser)
    parser.add_argument(
        "--reconnect-max-s",
        type=positive_float,
        default=2.0,
        help="longest wait between reconnection attempts while the broker is silent (starts at 0.25 s)",
    )
    cli.add_drain_grace_option(parser, 20.0)
    parser.add_argument(
        "--max-array-mib", type=positive_float, default=1024.0, help="largest array in a request"
    )
    parser.add_argument(
        "--max-total-mib", type=positive_float, default=1024.0, help="largest request in total"
    )
    parser.add_argument("--max-side", type=positive_int, default=65536, help="longest axis of any array")
    parser.add_argument(
        "--max-header-kib", type=positive_float, default=64.0, help="largest JSON header of a request"
    )
    parser.add_argument("--max-arrays", type=positive_int, default=8, help="most array frames in a request")
    parser.add_argument(
        "--max-stack-frames",
        type=positive_int,
        default=512,
        help="most slices in one propagate stack (state memory grows with each slice)",
    )
    parser.add_argument(
        "--curve-key",
        type=Path,
        default=None,
        help="this worker's CurveZMQ keypair (a .key_secret file from scripts/curve_keys.py); "
        "needs --curve-server-key",
    )
    parser.add_argument(
        "--curve-server-key", type=Path, default=None, help="the broker's public key file (broker.key)"
    )
    parser.add_argument(
        "--mdp-framing",
        choices=["rfc", "delimited"],
        default="rfc",
        help="rfc: frames exactly as RFC 18 writes them; delimited: an empty frame before every command, "
        "for brokers built on the reference libmdp or majortomo",
    )
    cli.add_parent_pid_option(parser)
    cli.add_log_options(parser)
    return parser


class _QuietSam2Root(logging.Filter):
    """Drop sam2's per-image INFO lines ("Computing image embeddings..."), logged on the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        from_sam2 = f"{os.sep}sam2{os.sep}" in record.pathname
        return not (record.name == "root" and record.levelno < logging.WARNING and from_sam2)


def setup_logging(level: str, log_file: Path | None) -> None:
    """Timestamped log lines naming the role (``worker``) and process id, to stderr and optionally a file.

    Python warnings (e.g. deprecations inside torch or sam2) go through the same log.
    """
    cli.setup_logging(level, log_file, LOG_FORMAT, LOG_DATE_FORMAT, filters=[_QuietSam2Root()])
    logging.captureWarnings(True)
    # sam2 1.1.0 builds its transforms with torch.jit.script; torch warns once per process.
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)


def _fail(message: str) -> int:
    log.error("%s", message)
    return EXIT_USAGE


def _print_models(registry: dict[str, ModelEntry]) -> None:
    for entry in registry.values():
        where = entry.checkpoint_path() or "(no weights)"
        print(f"{entry.name}  [{entry.family}, {entry.preprocessing}]  {entry.description}")
        print(f"    licence: {entry.licence}; checkpoint: {where}")


def _disk_cache(
    args: argparse.Namespace, spec: ModelEntry, sha256: str | None, dtype_name: str
) -> DiskEmbeddingCache | None:
    """The worker's disk cache, or None when its bound is 0 or its folder cannot be made."""
    from workers.disk_cache import DiskEmbeddingCache, default_dir, default_limit_gib, namespace

    gib = args.disk_cache_gib if args.disk_cache_gib is not None else default_limit_gib()
    if gib <= 0:
        log.info("disk cache: off")
        return None
    directory = args.disk_cache_dir or default_dir()
    try:
        cache = DiskEmbeddingCache(
            directory, int(gib * 2**30), namespace(spec.name, sha256, spec.preprocessing, dtype_name)
        )
    except OSError as e:
        log.warning("disk cache: off, cannot use %s: %s", directory, e)
        return None
    log.info("disk cache: %s, up to %.1f GiB", directory, gib)
    return cache


def _sam2_service(
    args: argparse.Namespace, spec: ModelEntry, checkpoint: Path | None, device: DeviceChoice, registry: dict
) -> RequestHandler:
    """Load the SAM2-family model of ``spec`` and its operations (``workers/ops.py``).

    Raises:
        CheckpointError, Sam2InternalsChanged: the worker cannot serve it (one clear line).
    """
    from workers.models import ServedModel, checkpoint_digest, load_model
    from workers.ops import Sam2Service

    sha256: str | None = None
    if not args.random_weights and checkpoint is not None and checkpoint.is_file():
        sha256 = checkpoint_digest(spec, checkpoint)  # before the (slow) load: a bad pin fails at once
    model = load_model(
        spec.name, checkpoint, device.device, random_weights=args.random_weights, registry=registry
    )
    service = Sam2Service(
        model,
        spec.name,
        device,
        int(args.cache_mib * 2**20),
        random_weights=args.random_weights,
        max_stack_frames=args.max_stack_frames,
        served=ServedModel(spec, None if args.random_weights else checkpoint, sha256),
        disk_cache=_disk_cache(args, spec, sha256, device.dtype_name),
    )
    service.preload(args.disk_cache_preload)
    return service


def _sam3_service(
    args: argparse.Namespace, spec: ModelEntry, checkpoint: Path | None, device: DeviceChoice
) -> RequestHandler:
    """The SAM 3 model of ``spec`` and its ``concept`` op (``workers/concept.py``).

    Raises:
        CheckpointError: missing (with how to get the gated weights), unreadable or mismatching checkpoint.
    """
    exit_without_sam3_extra()
    from workers.concept import load_service

    return load_service(spec, checkpoint, device, int(args.cache_mib * 2**20), args.random_weights)


def requested_model(argv: Sequence[str]) -> str:
    """The ``--model`` of a command line (the default model when absent), read before anything is loaded."""
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--model", default=DEFAULT_MODEL)
    return str(peek.parse_known_args(argv)[0].model)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one worker until SIGTERM/SIGINT; return the process exit code.

    The model's family picks the code: ``standin`` models run ``workers.standin.cli`` (no torch),
    ``sam3`` models ``workers/concept.py`` (the ``concept`` op), ``sam2`` models ``workers/ops.py``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if standin.is_standin(requested_model(argv)):
        from workers.standin.cli import main as standin_main

        return standin_main(argv)
    # A base install has no torch: say so in one line (exit 2), not in an ImportError traceback.
    exit_without_worker_extra("a SAM2 worker")
    from workers.models import CheckpointError

    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_file)
    try:
        registry = dict(load_registry(args.model_file))
    except RegistryError as e:
        return _fail(str(e))
    if args.list_models:
        _print_models(registry)
        return 0
    spec = registry.get(args.model)
    if spec is None:
        return _fail(f"unknown model {args.model!r}; known models: {', '.join(registry)}")
    if spec.family not in ("sam2", "sam3"):
        # The family hook: each family's worker code is started here (sam2, sam3 below).
        return _fail(f"model {spec.name} is of family {spec.family!r}, which this worker does not serve")
    watch_parent(args.parent_pid)  # before loading the model: a parent may die meanwhile
    curve: CurveClientKeys | None = None
    if (args.curve_key is None) != (args.curve_server_key is None):
        return _fail("--curve-key and --curve-server-key go together")
    if args.curve_key is not None:
        try:
            curve = CurveClientKeys.load(args.curve_key, args.curve_server_key)
        except SecurityError as e:
            return _fail(str(e))
        log.info("curve: on (worker key %s)", curve.keypair.public.decode())
    elif not is_loopback_endpoint(args.connect):
        log.warning(
            "connecting to %s without CurveZMQ: requests and images travel unencrypted and the broker "
            "cannot tell this worker from an impostor; see --curve-key",
            args.connect,
        )
    checkpoint = args.checkpoint if args.checkpoint is not None else spec.checkpoint_path()

    from workers.allocator import tune_for_inference
    from workers.device import configure_threads, resolve_device
    from workers.sam2_internals import Sam2InternalsChanged
    from workers.worker import Worker, WorkerConfig

    try:
        bf16 = args.bf16 if args.bf16 is not None else spec.precision == "bf16"
        device = resolve_device(args.device or spec.device, bf16=bf16)
    except ValueError as e:
        return _fail(str(e))
    workers_per_host = args.workers_per_host or _workers_per_host_from_env()
    threads = configure_threads(args.threads, workers_per_host)
    tune_for_inference()
    log.info("model=%s device=%s dtype=%s threads=%d", spec.name, device.device, device.dtype_name, threads)
    started = time.monotonic()
    try:
        if spec.family == "sam3":
            service: RequestHandler = _sam3_service(args, spec, checkpoint, device)
        else:
            service = _sam2_service(args, spec, checkpoint, device, registry)
    except (CheckpointError, Sam2InternalsChanged) as e:  # Sam2InternalsChanged: sam2 renamed what we use
        return _fail(str(e))
    log.info("model loaded in %.1fs", time.monotonic() - started)
    if args.random_weights:
        for line in (
            "*" * 78,
            "*** RANDOM WEIGHTS: this worker was started with --random-weights.",
            "*** Every mask, score and automatic segmentation it returns is MEANINGLESS.",
            "*** Use it for tests only; for real work give it a checkpoint.",
            "*" * 78,
        ):
            log.warning("%s", line)
    limits = Limits(
        max_header_bytes=int(args.max_header_kib * 1024),
        max_arrays=args.max_arrays,
        max_side=args.max_side,
        max_array_bytes=int(args.max_array_mib * 2**20),
        max_total_bytes=int(args.max_total_mib * 2**20),
    )
    config = WorkerConfig(
        connect=args.connect,
        service=spec.name,
        device_name=str(device.device),
        heartbeat_interval_s=args.heartbeat_interval_s,
        heartbeat_liveness=args.heartbeat_liveness,
        reconnect_max_s=args.reconnect_max_s,
        limits=limits,
        delimited=args.mdp_framing == "delimited",
        curve=curve,
        drain_grace_s=args.drain_grace_s,
    )
    worker = Worker(config, service)

    interrupts: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGINT:
            interrupts.append(signum)
            if len(interrupts) > 1:
                log.info("got %s again: stopping now, handing back any request held", name)
                worker.stop()
                return
        log.info("got %s: draining, then DISCONNECT and exit", name)
        worker.drain()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    clean = worker.run()
    log.info("worker stopped%s", "" if clean else " (a request still computing was abandoned)")
    # Leave without the interpreter's teardown: do not wait for an abandoned
    # request, and skip the final garbage collection of the model's objects,
    # which took 10 s on a busy CPU (longer than a scheduler's KillWait).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
