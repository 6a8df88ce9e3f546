"""Running a batch: ``auto`` on every slice of every input, many requests in flight.

Each in-flight request has its own :class:`protocol.wire.client.SamClient` (one
per thread of a pool; a SamClient is not thread-safe), so the broker sees
several clients and hands their requests to all idle workers at once. The
default number in flight is the one the plugin's tiled AUTO uses too
(:func:`protocol.ops.fan_out.requests_in_flight`: two per worker the broker
reports): while a worker computes one request, the next one is already
queued for it. Files are read one at a time, only when their first
slice is about to be sent, so memory holds a few images, not the folder.

Images larger than the model's input (``tile_size``) are segmented as tiles
with a halo, stitched (:func:`protocol.ops.tiled.tiled_auto_stack`, the
same in-flight count), after the small ones; inputs larger than the memory
budget are read lazily and their labels written tile by tile
(:mod:`batch.large`). The slices of a stack are linked by overlap so an
object keeps one id through z/t (along the flattened slice order), unless
``link_slices`` is off.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from batch.concept import ask_slice, require_op
from batch.inputs import InputImage, ReadError, input_geometry, is_zarr_input, output_names, read_image
from batch.interrupt import DeferredInterrupt
from batch.large import (
    input_bytes,
)
from batch.outputs import (
    FORMAT_OME_ZARR,
    STATUS_ERROR,
    STATUS_OK,
    STATUS_SKIPPED,
    SUMMARY_NAME,
    Row,
    merge_rows,
    output_path,
    pixel_size_text,
    read_summary,
    write_output,
    write_summary,
)
from batch.provenance import service_info
from batch.settings import BatchReport, BatchSettings, ConnectionFailure, broker_workers
from batch.tiled_files import TiledFiles
from protocol.geometry.link import StackLinker
from protocol.ops.fan_out import requests_in_flight
from protocol.wire.client import ClientConfig, SamClient
from protocol.wire.errors import (
    AnswerError,
    ClientError,
    ProtocolError,
    RemoteError,
    Superseded,
)
from protocol.wire.wire_image import WireImage, stack_contrast_limits

log = logging.getLogger(__name__)

# BatchSettings, BatchReport and ConnectionFailure live in batch.settings; callers import them from here too.
__all__ = ["BatchReport", "BatchRunner", "BatchSettings", "ConnectionFailure", "broker_workers", "run_batch"]

_WAKE_S = 0.2
"""The main thread looks for a Ctrl-C request at least this often while requests run."""


@dataclass
class _FileJob:
    """One input being segmented: its slices' results arrive in any order."""

    path: Path
    output: Path
    image: InputImage
    contrast_limits: tuple[float, float] | None
    labels: np.ndarray
    rows: list[Row | None]
    remaining: int
    started_s: float = field(default_factory=time.perf_counter)
    scores: dict[int, np.ndarray] = field(default_factory=dict)
    """``concept``: each slice's scores (slice ids, before linking), by slice index."""


@dataclass(frozen=True)
class _SliceOutcome:
    labels: np.ndarray | None
    objects: int
    seconds: float
    error: str
    request_id: str
    resends: int = 0
    scores: np.ndarray | None = None
    """``concept``: float32 (n,), the score of the slice's label ``i`` at ``i - 1``."""


class _Clients:
    """One SamClient per pool thread, all closed at the end."""

    def __init__(self, settings: BatchSettings) -> None:
        self._settings = settings
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[SamClient] = []

    def get(self) -> SamClient:
        client: SamClient | None = getattr(self._local, "client", None)
        if client is None:
            config = ClientConfig(timeout_s=self._settings.timeout_s, retries=1)
            client = SamClient(self._settings.broker, self._settings.model, config=config)
            self._local.client = client
            with self._lock:
                self._all.append(client)
        return client

    def close_all(self) -> None:
        with self._lock:
            for client in self._all:
                client.close()
            self._all.clear()


class BatchRunner(TiledFiles):
    """Segments ``files`` into ``out_dir``; see :func:`run_batch`."""

    def __init__(self, files: Sequence[Path], out_dir: Path, settings: BatchSettings) -> None:
        self.out_dir = out_dir
        self.settings = settings
        # Label file names are chosen over the whole set, so a shard writes what a single run would.
        self.outputs = {
            path: output_path(out_dir / name, settings.output_format)
            for path, name in output_names(list(files)).items()
        }
        shard = settings.shard
        self.files = shard.select(files) if shard is not None else list(files)
        self.summary_path = out_dir / (shard.summary_name if shard is not None else SUMMARY_NAME)
        self.report = BatchReport(files=len(self.files), summary=self.summary_path)
        self._rows: list[Row] = []
        self._skipped: set[str] = set()
        self._cancel = threading.Event()
        self._interrupt = DeferredInterrupt(self._cancel)
        self._clients = _Clients(settings)
        self._progress: object = None
        self._tiled: list[tuple[Path, InputImage | None]] = []
        self._info: dict[str, Any] = {}

    def run(self) -> BatchReport:
        """Run the batch; the summary is written even when interrupted.

        Raises:
            ConnectionFailure: no broker, or no worker for the model.
        """
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        started = time.perf_counter()
        previous = read_summary(self.summary_path)
        known = {row.file for row in previous}
        todo = [p for p in self.files if self.settings.overwrite or not self._done(p)]
        for path in self.files:
            if path not in todo:
                self._skip(path, known)
        if todo:
            workers = broker_workers(self.settings)
            self._info = service_info(self.settings.broker, self.settings.model)
            require_op(self._info, self.settings.op, self.settings.model)
            self.report.in_flight = self.settings.in_flight or requests_in_flight(workers)
            log.info(
                "batch: %d inputs%s (%d skipped: labels exist), model=%s workers=%d in_flight=%d out=%s",
                len(self.files),
                f" (shard {self.settings.shard})" if self.settings.shard is not None else "",
                self.report.skipped,
                self.settings.model,
                workers,
                self.report.in_flight,
                self.out_dir,
            )
            if self.settings.output_format == FORMAT_OME_ZARR and not self.settings.root_image:
                log.info("--no-image: each OME-Zarr output holds the labels only (under labels/), no image")
        progress = tqdm(
            total=len(self.files),
            initial=self.report.skipped,
            unit="image",
            desc="sam2-batch",
            disable=None if self.settings.progress else True,
        )
        try:
            with logging_redirect_tqdm(), progress, self._interrupt.installed():
                self._progress = progress
                if todo:
                    self._run_all(todo)
        finally:
            self._clients.close_all()
            self.report.seconds = time.perf_counter() - started
            write_summary(self.summary_path, merge_rows(previous, self._rows, self._skipped))
        return self.report

    # -- scheduling -------------------------------------------------------------

    def _run_all(self, todo: list[Path]) -> None:
        tasks = self._slice_tasks(todo)
        pending: dict[Future[_SliceOutcome], tuple[_FileJob, int]] = {}
        with ThreadPoolExecutor(self.report.in_flight, thread_name_prefix="sam2-batch") as pool:
            try:
                while True:
                    while len(pending) < self.report.in_flight:
                        task = next(tasks, None)
                        if task is None:
                            break
                        job, index = task
                        future = pool.submit(self._segment, job, index)
                        pending[future] = (job, index)
                    if not pending:
                        break
                    done, _ = wait(pending, timeout=_WAKE_S, return_when=FIRST_COMPLETED)
                    self._interrupt.check()
                    for future in done:
                        job, index = pending.pop(future)
                        self._record(job, index, future.result())
            except BaseException:
                self._cancel.set()  # in-flight calls raise Superseded at once (and cancel at the broker)
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        for path, image in self._tiled:
            self._interrupt.check()
            self._run_tiled(path, image)
        # A Ctrl-C during the last write that reached no safe point: that file is whole and kept,
        # but the batch was asked to stop, so it says so (exit 130), not "finished".
        self._interrupt.check()

    def _slice_tasks(self, todo: list[Path]) -> Iterator[tuple[_FileJob, int]]:
        """Yield (job, slice index) for every slice, reading each file when it is first needed."""
        for path in todo:
            if self._lazy(path):
                self._tiled.append((path, None))
                continue
            try:
                image = read_image(path)
            except ReadError as e:
                log.error("unreadable file=%s: %s", path, e)
                self._rows.append(Row(str(path), status=STATUS_ERROR, error=str(e)))
                self.report.failed += 1
                self._advance()
                continue
            if self._needs_tiles(image.slices.shape[1:3]):
                self._tiled.append((path, image))
                continue
            count = image.slices.shape[0]
            limits = self.settings.contrast_limits
            if limits is None and image.is_stack:
                limits = stack_contrast_limits(image.slices)
            job = _FileJob(
                path,
                self.outputs[path],
                image,
                limits,
                np.zeros((count, *image.slices.shape[1:3]), np.uint32),
                [None] * count,
                count,
            )
            self.report.slices += count
            for index in range(count):
                yield job, index

    def _lazy(self, path: Path) -> bool:
        """Read ``path`` lazily: an OME-Zarr folder, or a TIFF larger than the memory budget."""
        return is_zarr_input(path) or input_bytes(path) > self.settings.max_in_memory_bytes

    # -- one slice ----------------------------------------------------------------

    def _segment(self, job: _FileJob, index: int) -> _SliceOutcome:
        """Run ``auto`` on slice ``index`` of ``job`` (in a pool thread)."""
        image = WireImage(job.image.slices[index], job.contrast_limits)
        started = time.perf_counter()
        client = self._clients.get()
        resends_before = client.resends
        outcome = self._auto(client, image, started)
        return dataclasses.replace(outcome, resends=client.resends - resends_before)

    def _auto(self, client: SamClient, image: WireImage, started: float) -> _SliceOutcome:
        """``auto`` on one slice; every failure becomes the outcome's error."""
        try:
            answer = ask_slice(
                client, image, self.settings.op, self.settings.auto_params(), cancel=self._cancel
            )
        except RemoteError as e:
            return _SliceOutcome(None, 0, time.perf_counter() - started, str(e), e.request_id or "")
        except Superseded as e:
            return _SliceOutcome(None, 0, time.perf_counter() - started, "interrupted", e.request_id or "")
        except ClientError as e:
            elapsed = time.perf_counter() - started
            return _SliceOutcome(None, 0, elapsed, f"{type(e).__name__}: {e}", e.request_id or "")
        except AnswerError as e:
            elapsed = time.perf_counter() - started
            return _SliceOutcome(None, 0, elapsed, f"bad labels in the reply: {e}", e.request_id or "")
        except ProtocolError as e:
            return _SliceOutcome(None, 0, time.perf_counter() - started, f"{type(e).__name__}: {e}", "")
        seconds = time.perf_counter() - started
        scores = getattr(answer, "scores", None)  # a ConceptAnswer's
        return _SliceOutcome(answer.labels, answer.num_objects, seconds, "", answer.request_id, scores=scores)

    def _record(self, job: _FileJob, index: int, outcome: _SliceOutcome) -> None:
        slice_name = str(index) if job.image.is_stack else ""
        if outcome.labels is not None:
            job.labels[index] = outcome.labels
            if outcome.scores is not None:
                job.scores[index] = outcome.scores
            status, error = STATUS_OK, ""
            log.info(
                "slice file=%s slice=%s objects=%d ms=%.0f request_id=%s",
                job.path,
                slice_name or "-",
                outcome.objects,
                1000 * outcome.seconds,
                outcome.request_id,
            )
        else:
            status, error = STATUS_ERROR, outcome.error
            self.report.failed_slices += 1
            log.error(
                "slice failed file=%s slice=%s request_id=%s: %s",
                job.path,
                slice_name or "-",
                outcome.request_id or "-",
                outcome.error,
            )
        job.rows[index] = Row(
            str(job.path),
            slice_name,
            str(outcome.objects) if status == STATUS_OK else "",
            f"{outcome.seconds:.3f}",
            status,
            error,
            outcome.request_id,
            str(outcome.resends) if outcome.resends else "",
        )
        job.remaining -= 1
        if job.remaining == 0:
            self._finish(job)

    def _finish(self, job: _FileJob) -> None:
        rows = [row for row in job.rows if row is not None]
        failed = [row for row in rows if row.status != STATUS_OK]
        if not failed:
            scores = self._link(job)
            labels = job.labels.reshape(job.image.label_shape)
            geometry = input_geometry(job.path, labels.ndim)
            log.info("pixel size file=%s: %s", job.path, pixel_size_text(geometry))
            names = [row.slice for row in rows]
            provenance = self._provenance(job.path)
            try:
                table = self._instance_rows(job.labels, names, scores, geometry)
                write_output(
                    job.output,
                    labels,
                    self.settings.output_format,
                    geometry,
                    self.settings.coordinates,
                    job.image.slices if self.settings.root_image else None,
                    provenance,
                    metadata=self._label_metadata(scores),
                )
                self._write_instances(job.output, table, provenance)
            except (OSError, ValueError) as e:
                message = f"cannot write {job.output}: {e}"
                log.error("%s", message)
                rows = [dataclasses.replace(r, objects="", status=STATUS_ERROR, error=message) for r in rows]
                failed = rows
        self._rows += rows
        if failed:
            self.report.failed += 1
            log.error(
                "failed file=%s: %d of %d slices failed, no label file written",
                job.path,
                len(failed),
                len(rows),
            )
        else:
            self.report.processed += 1
            log.info(
                "done file=%s slices=%d objects=%d seconds=%.1f labels=%s",
                job.path,
                len(rows),
                sum(int(r.objects) for r in rows),
                time.perf_counter() - job.started_s,
                job.output,
            )
        self._advance()

    def _link(self, job: _FileJob) -> list[dict[int, float]]:
        """Link a stack's slices in place (when asked); each slice's ``{final id: score}`` (concept)."""
        linker = StackLinker(link=job.image.is_stack and self.settings.link_slices)
        scores: list[dict[int, float]] = []
        for index, plane in enumerate(job.labels):
            if linker.link:
                linker.add(plane, plane)
            scores.append(linker.final_scores(job.scores.get(index, ())))
        return scores

    def _skip(self, path: Path, known: set[str]) -> None:
        """Count ``path`` as done earlier; its earlier summary rows stay (a row says so if there are none)."""
        self.report.skipped += 1
        self._skipped.add(str(path))
        log.info("skip file=%s: %s exists (use --overwrite to redo)", path, self.outputs[path])
        if str(path) not in known:
            self._rows.append(Row(str(path), status=STATUS_SKIPPED))

    def _advance(self) -> None:
        update = getattr(self._progress, "update", None)
        if update is not None:
            update(1)


def run_batch(files: Sequence[Path], out_dir: Path, settings: BatchSettings) -> BatchReport:
    """Segment every slice of ``files`` with ``auto``; write label TIFFs and ``summary.csv`` to ``out_dir``.

    Raises:
        UsageError: two inputs would write the same label file.
        ConnectionFailure: no broker, or no worker for the model.
    """
    return BatchRunner(files, out_dir, settings).run()
