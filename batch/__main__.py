"""Command line: ``python -m batch`` (installed as ``sam2-batch``).

Automatic segmentation (op ``auto``) of a folder of images, single images,
multi-page TIFFs or other stacks (every 2D slice), through a running broker::

    sam2-batch data/plates/ --out results/ --points-per-side 32
    sam2-batch embryo.tif --out results/ --broker tcp://gpu-server:5555
    sam2-batch slide.ome.tif --out results/ --format ome-zarr   # tiled, any size
    sam2-batch slides/ --out nuclei/ --model sam3 --concept "nucleus" --concept-threshold 0.6

Images larger than ``--tile-size`` are segmented as tiles at native
resolution, stitched; stacks keep one id per object through the slices.
``--concept TEXT`` asks a SAM 3 model for every instance of TEXT instead of
automatic masks (:mod:`batch.concept`), tiled and written the same way.

Writes ``<stem>_labels.tif`` (uint32; one page per slice for a stack; or
with ``--format ome-zarr`` an OME-Zarr ``<stem>_labels.ome.zarr`` holding the
source image at its root and the NGFF labels under ``labels/``, ``--no-image``
the labels only; with
``--format geojson`` polygons ``<stem>_labels.geojson``) and ``summary.csv``
(file, slice, objects, seconds, status, error, request_id, retries) into ``--out``.
Inputs whose label file (in the chosen format) exists are skipped, so an
interrupted run continues where it stopped (``--overwrite`` redoes them).
Unreadable files are logged and recorded in the summary; the rest is still
processed.

Many client processes (e.g. a SLURM array) can share one broker's workers:
``--shard I/N`` (or ``--shard auto`` in a SLURM array) does only every N-th
input, writes ``summary.shard-I-of-N.csv``, and ``sam2-batch
--merge-summaries DIR`` merges the shards' summaries into ``summary.csv``
once all have finished (:mod:`batch.shards`)::

    sbatch --array=1-4 --wrap "sam2-batch data/ --out results/ --shard auto"
    sam2-batch --merge-summaries results/
 Exit codes: 0 all done, 1 some inputs failed, 2 bad usage or no
broker/worker, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from batch import list_models
from batch.concept import parse_concept
from batch.inputs import UsageError, discover
from batch.large import DEFAULT_MAX_IN_MEMORY_BYTES
from batch.outputs import COORDINATES, FORMAT_TIFF, OUTPUT_FORMATS
from batch.runner import BatchSettings, ConnectionFailure, run_batch
from batch.shards import ShardError, merge_summaries, parse_shard
from protocol.geometry.grid import DEFAULT_HALO, DEFAULT_TILE_SIZE
from protocol.ops.concept import DEFAULT_SCORE_THRESHOLD
from protocol.runtime import cli
from protocol.runtime.checkpoints import DEFAULT_MODEL
from protocol.runtime.cli import positive_float, positive_int
from protocol.wire.automask import AutoMaskParams
from protocol.wire.errors import SecurityError
from protocol.wire.mdp import DEFAULT_FRONTEND

log = logging.getLogger("batch")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
MERGE_SUMMARIES = "--merge-summaries"
"""Given first: merge the shard summaries of a folder instead of running a batch."""
LOG_FORMAT = "%(asctime)s.%(msecs)03d batch[%(process)d] %(levelname)s %(name)s: %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def build_parser() -> argparse.ArgumentParser:
    """Every option of the batch command, with its default and meaning."""
    parser = argparse.ArgumentParser(
        prog="sam2-batch",
        description="Automatic SAM2 segmentation of many images through the broker: "
        "label TIFFs and a summary.csv.",
    )
    parser.add_argument(
        "inputs", nargs="+", type=Path, help="image files (tif, tiff, png, jpg) and/or folders of them"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the label TIFFs and summary.csv")
    parser.add_argument("--broker", default=DEFAULT_FRONTEND, help="broker client endpoint (%(default)s)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model = service name (%(default)s)")
    defaults = AutoMaskParams()  # the one set of defaults the plugin and the worker share
    parser.add_argument(
        "--list-models",
        action="store_true",
        help="print the broker's models (family, preprocessing, ops, licence, description) and exit",
    )
    parser.add_argument(
        "--concept",
        default=None,
        metavar="TEXT",
        help='find every instance of TEXT ("nucleus") with the concept op (SAM 3 models) instead of '
        "automatic masks; large images go tile by tile the same way",
    )
    parser.add_argument(
        "--concept-threshold",
        type=float,
        default=None,
        metavar="SCORE",
        help=f"with --concept: leave out instances scoring below SCORE, 0..1 ({DEFAULT_SCORE_THRESHOLD})",
    )
    parser.add_argument(
        "--points-per-side",
        type=positive_int,
        default=defaults.points_per_side,
        help="auto's prompt grid per side (%(default)s)",
    )
    parser.add_argument(
        "--pred-iou-thresh",
        type=float,
        default=defaults.pred_iou_thresh,
        help="keep masks whose predicted quality is at least this, 0..1 (%(default)s)",
    )
    parser.add_argument(
        "--stability-score-thresh",
        type=float,
        default=defaults.stability_score_thresh,
        help="keep masks at least this stable, 0..1 (%(default)s)",
    )
    parser.add_argument(
        "--in-flight",
        type=positive_int,
        default=None,
        help="requests at once (default: 2 x the workers the broker reports)",
    )
    parser.add_argument(
        "--timeout-s",
        type=positive_float,
        default=600.0,
        help="silence allowed per request before it is retried once, then failed (%(default)s)",
    )
    parser.add_argument(
        "--contrast-limits",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        default=None,
        help="map LOW..HIGH to black..white for non-uint8 images "
        "(default: each image's 1st-99th percentiles, a stack's over all its slices)",
    )
    parser.add_argument(
        "--format",
        dest="output_format",
        choices=list(OUTPUT_FORMATS),
        default=FORMAT_TIFF,
        help="label files: tiff (uint32 TIFF), ome-zarr (the image + NGFF labels) or geojson (polygons) "
        "(%(default)s)",
    )
    parser.add_argument(
        "--coordinates",
        choices=list(COORDINATES),
        default=COORDINATES[0],
        help="geojson: pixel coordinates, as QuPath expects, or physical ones (the input TIFF's "
        "pixel size x pixel; pixels when it has none) (%(default)s)",
    )
    parser.add_argument(
        "--tile-size",
        type=positive_int,
        default=DEFAULT_TILE_SIZE,
        help="images larger than this are segmented as tiles of this side, natively (%(default)s)",
    )
    parser.add_argument(
        "--tile-halo",
        type=non_negative_int,
        default=DEFAULT_HALO,
        help="overlap of neighbouring tiles in px, above the largest object radius (%(default)s)",
    )
    parser.add_argument(
        "--no-tiling",
        action="store_true",
        help="send every slice whole (the model then sees large images downsampled)",
    )
    parser.add_argument(
        "--per-slice-ids",
        action="store_true",
        help="stacks: number each slice's objects 1..n (default: one id per object through z/t)",
    )
    parser.add_argument(
        "--max-in-memory-mib",
        type=positive_int,
        default=DEFAULT_MAX_IN_MEMORY_BYTES >> 20,
        help="inputs and label images larger than this are read lazily and written tile by tile "
        "(tiff: a tiled BigTIFF; ome-zarr: chunk by chunk) (%(default)s)",
    )
    parser.add_argument(
        "--no-image",
        action="store_true",
        help="ome-zarr: write the labels only (default: the source image too, at the store's root, "
        "so viewers opening the root show image and labels)",
    )
    parser.add_argument(
        "--replay",
        type=Path,
        default=None,
        metavar="FILE",
        help="re-run the prompts recorded in FILE (any label file we wrote, or its .provenance.json) "
        "on the one input image with --model; writes NAME_replay in --format",
    )
    parser.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="do only shard I of N (1..N) of the inputs, for N processes sharing the workers; 'auto': "
        "from the SLURM array task (SLURM_ARRAY_TASK_ID/_MIN/_COUNT); summary: summary.shard-I-of-N.csv",
    )
    parser.add_argument("--overwrite", action="store_true", help="redo inputs whose label file exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    cli.add_log_options(parser)
    return parser


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def merge_main(argv: Sequence[str]) -> int:
    """``sam2-batch --merge-summaries DIR``: the shards' summaries into ``DIR/summary.csv`` (0 ok, 2 not)."""
    parser = argparse.ArgumentParser(
        prog=f"sam2-batch {MERGE_SUMMARIES}",
        description="Merge the summary.shard-I-of-N.csv files of a sharded batch into summary.csv.",
    )
    parser.add_argument("folder", type=Path, help="the --out folder the shards wrote to")
    cli.add_log_options(parser, log_file=False)
    args = parser.parse_args(argv)
    setup_logging(args.log_level, None)
    try:
        merge_summaries(args.folder)
    except ShardError as e:
        log.error("%s", e)
        return EXIT_USAGE
    return EXIT_OK


def setup_logging(level: str, log_file: Path | None) -> None:
    """Timestamped log lines naming the role (``batch``) and process id, to stderr and optionally a file."""
    cli.setup_logging(level, log_file, LOG_FORMAT, LOG_DATE_FORMAT)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one batch; return the exit code (0 ok, 1 some failed, 2 usage/connection, 130 interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--list-models" in argv:  # needs neither inputs nor --out
        return list_models.main(argv)
    if argv and argv[0] == MERGE_SUMMARIES:
        return merge_main(argv[1:])
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_file)
    try:
        shard = parse_shard(args.shard)
    except ShardError as e:
        log.error("%s", e)
        return EXIT_USAGE
    if not args.no_tiling and args.tile_size <= 2 * args.tile_halo:
        log.error(
            "--tile-size must be more than twice --tile-halo, got %d and %d", args.tile_size, args.tile_halo
        )
        return EXIT_USAGE
    if args.contrast_limits is not None and not args.contrast_limits[0] < args.contrast_limits[1]:
        log.error("--contrast-limits needs LOW < HIGH, got %s", args.contrast_limits)
        return EXIT_USAGE
    try:
        auto_mask = AutoMaskParams(
            points_per_side=args.points_per_side,
            pred_iou_thresh=args.pred_iou_thresh,
            stability_score_thresh=args.stability_score_thresh,
        )
    except ValueError as e:
        log.error("--points-per-side / --pred-iou-thresh / --stability-score-thresh: %s", e)
        return EXIT_USAGE
    try:
        concept = parse_concept(args.concept, args.concept_threshold)
    except UsageError as e:
        log.error("%s", e)
        return EXIT_USAGE
    settings = BatchSettings(
        broker=args.broker,
        model=args.model,
        auto_mask=auto_mask,
        in_flight=args.in_flight,
        timeout_s=args.timeout_s,
        contrast_limits=tuple(args.contrast_limits) if args.contrast_limits else None,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        output_format=args.output_format,
        coordinates=args.coordinates,
        tiling=not args.no_tiling,
        tile_size=args.tile_size,
        tile_halo=args.tile_halo,
        link_slices=not args.per_slice_ids,
        max_in_memory_bytes=args.max_in_memory_mib << 20,
        root_image=not args.no_image,
        shard=shard,
        concept=concept,
    )
    if args.replay is not None:
        return run_replay(args)
    try:
        files = discover(args.inputs)
        report = run_batch(files, args.out, settings)
    except (UsageError, ConnectionFailure, SecurityError) as e:
        log.error("%s", e)
        return EXIT_USAGE
    except KeyboardInterrupt:
        log.warning("interrupted: finished inputs are kept; run the same command again to continue")
        return EXIT_INTERRUPTED
    log.info(
        "batch finished: %d done, %d skipped, %d failed of %d inputs "
        "(%d slices, %d failed) in %.1f s; summary %s",
        report.processed,
        report.skipped,
        report.failed,
        report.files,
        report.slices,
        report.failed_slices,
        report.seconds,
        report.summary,
    )
    return EXIT_OK if report.ok else EXIT_FAILED


def run_replay(args: argparse.Namespace) -> int:
    """``--replay FILE IMAGE``: one image, the record's prompts sent again (:mod:`batch.replay`)."""
    from batch.inputs import ReadError
    from batch.replay import ReplayError, replay
    from protocol.wire.errors import AnswerError, ClientError

    if len(args.inputs) != 1 or not args.inputs[0].is_file():
        log.error("--replay takes exactly one input image file, got %s", [str(p) for p in args.inputs])
        return EXIT_USAGE
    try:
        report = replay(
            args.replay, args.inputs[0], args.out, args.broker, args.model, args.output_format, args.timeout_s
        )
    except (ReplayError, ReadError) as e:
        log.error("%s", e)
        return EXIT_USAGE
    except (ClientError, AnswerError) as e:
        log.error("replay failed, nothing written: %s", e)
        return EXIT_FAILED
    log.info(
        "replay done: %d labels from %d prompts -> %s (not replayable: %s)",
        len(report.labels),
        report.requests,
        report.output,
        list(report.not_replayable) or "none",
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
