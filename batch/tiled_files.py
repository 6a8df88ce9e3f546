"""One large image, tile by tile: the part of :class:`batch.runner.BatchRunner` for inputs that need tiles.

Inputs larger than the model's input, or than the memory budget, are segmented
as tiles with a halo and stitched (:func:`protocol.ops.tiled.tiled_auto_stack`),
their labels written through a :class:`batch.large.LabelSink` (tile by tile
when large). Mixed into the runner, whose state it reads (declared below).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from batch.inputs import InputImage, input_geometry
from batch.instances import instances_path, scores_metadata, stack_rows, write_instances
from batch.interrupt import DeferredInterrupt
from batch.large import LabelSink, StackSlices, open_lazy, sample_stack_limits
from batch.outputs import STATUS_ERROR, STATUS_OK, Row, pixel_size_text, request_ids_text
from batch.provenance import batch_provenance
from batch.settings import BatchReport, BatchSettings
from protocol.formats.geometry import Geometry
from protocol.formats.provenance import Provenance
from protocol.geometry.link import PlaneView
from protocol.ops.tiled import StackAutoResult, tiled_auto, tiled_auto_stack
from protocol.wire.client import ClientConfig, SamClient
from protocol.wire.errors import AnswerError, ClientError, ProtocolError, RemoteError, Superseded
from protocol.wire.wire_image import stack_contrast_limits

log = logging.getLogger("batch.runner")


class TiledFiles:
    """Segments large inputs tile by tile (a mixin of :class:`batch.runner.BatchRunner`)."""

    settings: BatchSettings
    report: BatchReport
    outputs: dict[Path, Path]
    _rows: list[Row]
    _cancel: threading.Event
    _interrupt: DeferredInterrupt
    _info: dict[str, Any]

    def _advance(self) -> None:
        raise NotImplementedError

    def _needs_tiles(self, slice_shape: Sequence[int]) -> bool:
        return self.settings.tiling and max(int(s) for s in slice_shape) > self.settings.tile_size

    # -- one large image, tile by tile ----------------------------------------------

    def _run_tiled(self, path: Path, image: InputImage | None) -> None:
        """Segment every slice of ``path`` tile by tile, link the slices, write the labels."""
        if self._cancel.is_set():
            return
        started = time.perf_counter()
        sink: LabelSink | None = None
        slice_names = [""]
        try:
            if image is None:
                slices, is_stack = open_lazy(path)
                stack_shape = slices.stack_shape
                limits = self.settings.contrast_limits
                if limits is None and is_stack:
                    limits = sample_stack_limits(slices)
            else:
                slices, is_stack = StackSlices(image.slices, image.slices.ndim == 4), image.is_stack
                stack_shape = image.stack_shape or ()
                limits = self.settings.contrast_limits
                if limits is None and is_stack:
                    limits = stack_contrast_limits(image.slices)
            count, height, width = slices.shape[:3]
            slice_names = [str(n) if is_stack else "" for n in range(count)]
            self.report.slices += count
            label_shape = (*stack_shape, height, width)
            sink = LabelSink(
                self.outputs[path],
                label_shape,
                self.settings.output_format,
                self.settings.max_in_memory_bytes,
                input_geometry(path, len(label_shape)),
                self.settings.coordinates,
                stop=self._interrupt.check,
                image=slices if self.settings.root_image else None,
            )
            tiled = self._needs_tiles((height, width))
            tile_size = self.settings.tile_size if tiled else max(height, width)
            halo = self.settings.tile_halo if tiled else 0
            sink.provenance = self._provenance(path, (height, width), tile_size, halo)
            log.info(
                "tiled file=%s slices=%d size=%dx%d tile=%d halo=%d labels=%s pixel size=%s",
                path,
                count,
                height,
                width,
                tile_size,
                halo,
                "on disk, tile by tile" if sink.on_disk else "in memory",
                pixel_size_text(sink.geometry),
            )
            config = ClientConfig(timeout_s=self.settings.timeout_s, retries=1)
            options: dict[str, Any] = {
                "contrast_limits": limits,
                "cancel": self._cancel,
                "tile_size": tile_size,
                "halo": halo,
                "in_flight": self.report.in_flight,
                "op": self.settings.op,
            }

            def client_factory() -> SamClient:
                return SamClient(self.settings.broker, self.settings.model, config=config)

            if count == 1:  # one slice: nothing to link; a file on disk is relabelled as it is written
                params = self.settings.auto_params()
                single = tiled_auto(
                    PlaneView(slices, 0), PlaneView(sink.array, 0), client_factory, params,
                    relabel=not sink.on_disk, **options,
                )  # fmt: skip
                sink.relabel(single.lut)
                scores = [dict(enumerate(single.scores, start=1))]
                result = StackAutoResult([single], single.num_objects, single.cancelled, scores)
            else:
                result = tiled_auto_stack(
                    slices, sink.array, client_factory, self.settings.auto_params(),
                    link=self.settings.link_slices, **options,
                )  # fmt: skip
            self._interrupt.check()
            if result.cancelled:
                raise Superseded("interrupted")
            rows = self._instance_rows(sink.labels, slice_names, result.scores, sink.geometry)
            sink.metadata = self._label_metadata(result.scores)
            log.info("writing labels file=%s (%s)", self.outputs[path], sink.describe())
            sink.commit()
            self._write_instances(self.outputs[path], rows, sink.provenance)
        except (ClientError, RemoteError, AnswerError, ProtocolError, ValueError, OSError) as e:
            if sink is not None:
                sink.discard()
            message = "interrupted" if isinstance(e, Superseded) else f"{type(e).__name__}: {e}"
            log.error("failed file=%s: %s, no label file written", path, message)
            seconds = f"{time.perf_counter() - started:.3f}"
            self._rows += [Row(str(path), name, "", seconds, STATUS_ERROR, message) for name in slice_names]
            self.report.failed += 1
            self.report.failed_slices += len(slice_names)
            self._advance()
            return
        except BaseException:
            if sink is not None:
                sink.discard()
            raise
        for name, done in zip(slice_names, result.slices, strict=True):
            request_ids = request_ids_text(done.request_ids)
            self._rows.append(
                Row(
                    str(path),
                    name,
                    str(done.num_objects),
                    f"{done.seconds:.3f}",
                    STATUS_OK,
                    "",
                    request_ids,
                    str(done.resends) if done.resends else "",
                )
            )
        self.report.processed += 1
        log.info(
            "done file=%s slices=%d tiles=%d objects=%d seconds=%.1f labels=%s request_ids=%s",
            path,
            len(slice_names),
            sum(done.tiles for done in result.slices),
            result.num_ids,
            time.perf_counter() - started,
            self.outputs[path],
            request_ids_text([i for done in result.slices for i in done.request_ids]),
        )
        self._advance()

    def _instance_rows(
        self,
        stack: Any,
        slice_names: Sequence[str],
        scores: Sequence[dict[int, float]],
        geometry: Geometry | None,
    ) -> list[dict[str, Any]] | None:
        """A concept run's table rows for the (N, H, W) labels as written (None: not a concept run)."""
        concept = self.settings.concept
        if concept is None:
            return None
        return stack_rows(stack, slice_names, scores, concept.text.strip(), geometry)

    def _label_metadata(self, scores: Sequence[dict[int, float]]) -> dict[str, Any]:
        """Facts written with the labels: a concept run's scores ({} for ``auto``)."""
        return {} if self.settings.concept is None else scores_metadata(scores)

    def _write_instances(
        self, label_path: Path, rows: list[dict[str, Any]] | None, provenance: Provenance | None
    ) -> None:
        """Write the per-instance table beside ``label_path`` (after the labels; :mod:`batch.instances`)."""
        if rows is not None:
            write_instances(instances_path(label_path), rows, provenance)
            log.info("instances file=%s rows=%d", instances_path(label_path), len(rows))

    def _done(self, path: Path) -> bool:
        """Whether an earlier run made ``path``'s label file (and, for a concept run, its table)."""
        label_path = self.outputs[path]
        if self.settings.concept is not None and not instances_path(label_path).exists():
            return False
        return label_path.exists()

    def _provenance(
        self,
        path: Path,
        slice_shape: tuple[int, int] | None = None,
        tile_size: int | None = None,
        halo: int | None = None,
    ) -> Provenance:
        """The record written with ``path``'s labels: model facts, settings, tile grid."""
        limits = self.settings.contrast_limits
        parameters: dict[str, Any] = {
            **self.settings.auto_params(),
            "contrast_limits": None if limits is None else list(limits),
            "link_slices": self.settings.link_slices,
        }
        model, worker_info = self.settings.model, self._info
        op = self.settings.op
        return batch_provenance(model, worker_info, path, parameters, slice_shape, tile_size, halo, op)
