"""Encode stack: embed every slice (every window of a large slice) ahead, over all workers.

napari glue without Qt widgets. The images are those clicks would send
(:func:`plugin.jobs.embed_targets.stack_targets`: each slice along every
non-displayed axis, and on a large slice each window a click gets), sent as
``embed`` with as many in flight as the broker has workers
(:func:`protocol.ops.embed_many.embed_many`), each read only in the thread that
sends it. The clients share the session's known keys, so every later click
on the stack sends only its key and costs a decoder call. Progress and
cancel as AUTO-SEGMENT STACK (:mod:`plugin.jobs.stack_runs`); at the end a
summary, and a warning when the workers' caches cannot hold every
embedding (:func:`protocol.ops.embed_many.cache_room`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from plugin.jobs.context import JobContext
from plugin.jobs.embed_targets import EmbedTarget, stack_targets
from plugin.jobs.stack_runs import Done, Progress
from plugin.view.coords import OutsideImage
from plugin.view.layers import base_data, plane_of, spatial_shape
from plugin.wording import plural
from protocol.ops.embed_many import CacheRoom, EmbedManyResult, cache_room, embed_many
from protocol.ops.fan_out import worker_count
from protocol.wire.errors import Superseded
from protocol.wire.wire_image import WireImage

ENCODE_STACK = "encode_stack"
"""The session channel the run is driven from (its requests go on clients of their own)."""
EMBED_TIMEOUT_S = 300.0
"""Silence allowed per ``embed`` (a busy worker on a CPU takes seconds per image)."""
MAX_IMAGES = 100_000
"""Most slices or windows one Encode stack sends (far past any workers' caches)."""


@dataclass(frozen=True)
class EncodeReport:
    """How an Encode stack run ended (for the summary and tests).

    Attributes:
        slices: slices of the stack.
        images: images sent (slices, or windows of large slices).
        result: what :func:`protocol.ops.embed_many.embed_many` did.
        room: how many embeddings the workers' caches hold (None: unknown or cancelled).
    """

    slices: int
    images: int
    result: EmbedManyResult
    room: CacheRoom | None


def summary(report: EncodeReport) -> str:
    """One line: what was encoded, on how many workers, in how long."""
    result = report.result
    what = plural(report.slices, "slice")
    if report.images != report.slices:
        what = f"{what} ({plural(report.images, 'window')})"
    cached = f"; {result.cached} were already cached" if result.cached else ""
    return (
        f"Encode stack: encoded {what} on {plural(result.in_flight, 'worker')} "
        f"in {result.seconds:.0f} s{cached}. Clicks on them need no encoding now."
    )


def cache_warning(report: EncodeReport) -> str | None:
    """The warning when the workers' caches cannot hold every embedding, else None."""
    room = report.room
    if room is None or room.capacity >= report.images:
        return None
    unit = "slices" if report.images == report.slices else "windows"
    workers = "worker's cache holds" if room.workers == 1 else f"{room.workers} workers' caches hold"
    return (
        f"Encode stack: the {workers} about {room.capacity} of {report.images} {unit}; "
        "the first ones will be encoded again when clicked."
    )


class EncodeStack:
    """Runs Encode stack for the current image; one run at a time.

    Args:
        host: the jobs' shared state (viewer, session, notifications, GUI-thread dispatch).
    """

    def __init__(self, host: JobContext) -> None:
        self.c = host
        self._cancel: threading.Event | None = None
        self._on_done: Done = lambda _completed: None
        self.last: EncodeReport | None = None

    @property
    def running(self) -> bool:
        return self._cancel is not None

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.set()

    def abandon(self) -> None:
        """The session is gone (its answers will not come): stop now; what was encoded stays cached."""
        cancel, self._cancel = self._cancel, None
        if cancel is not None:
            cancel.set()
            self._on_done(False)

    def start(self, on_progress: Progress, on_done: Done) -> bool:
        """Embed every slice (or window) of the current image's stack; False if it could not start."""
        if self.running:
            self.c.results.notify("warning", "Encode stack is already running; cancel it first.")
            return False
        image = self.c.ready()
        if image is None:
            return False
        session = self.c.session
        assert session is not None
        try:
            plane = plane_of(self.c.viewer, image, spatial_shape(image))
        except (ValueError, OutsideImage) as e:
            self.c.results.notify("warning", f"Encode stack: {e}")
            return False
        data, rgb, limits = base_data(image), bool(image.rgb), tuple(image.contrast_limits)
        cancel = threading.Event()
        self._cancel = cancel
        self._on_done = on_done
        dispatch = self.c.dispatch

        def source(target: EmbedTarget) -> Callable[[], WireImage]:
            return lambda: target.wire(data, rgb, limits)

        def progress(done: int, total: int) -> None:
            text = f"Encode stack: {done} of {total} encoded…"
            dispatch(lambda: on_progress(done, total, text))

        def job(_client: Any) -> EncodeReport:
            started = time.monotonic()
            targets = stack_targets(plane)
            if len(targets) > MAX_IMAGES:
                raise ValueError(
                    f"this image has {len(targets)} slices or windows to encode, more than {MAX_IMAGES}; "
                    "prefetch encodes the place you look at instead"
                )
            progress(0, len(targets))
            with session.new_client() as probe:
                workers = worker_count(probe)
            result = embed_many(
                [source(t) for t in targets],
                session.new_client,
                in_flight=workers,
                on_progress=progress,
                cancel=cancel,
                timeout_s=EMBED_TIMEOUT_S,
            )
            if result.cancelled:
                raise Superseded("Encode stack was cancelled")
            room = cache_room(session.new_client, workers)
            result = replace(result, seconds=time.monotonic() - started)
            slices = len({t.plane.key for t in targets})
            return EncodeReport(slices, len(targets), result, room)

        def finished(report: EncodeReport) -> None:
            if self._cancel is not cancel:
                return  # abandoned
            self._cancel = None
            self.last = report
            self.c.results.notify("info", summary(report))
            warning = cache_warning(report)
            if warning is not None:
                self.c.results.notify("warning", warning)
            on_done(True)

        def failed(error: Exception) -> None:
            if self._cancel is not cancel:
                return  # abandoned
            self._cancel = None
            if isinstance(error, Superseded):
                self.c.results.notify("info", "Encode stack cancelled; what was encoded stays cached.")
            elif isinstance(error, ValueError):
                self.c.results.notify("error", f"Encode stack: {error}")
            else:
                self.c.results.report_error(error)
            on_done(False)

        on_progress(0, 0, "Encode stack: listing the slices…")
        session.submit(ENCODE_STACK, job, finished, failed)
        return True
