"""Encode stack: embed every slice (every window of a large slice) ahead, over all workers.

napari glue without Qt widgets. The images are those clicks would send
(:func:`plugin.jobs.embed_targets.stack_targets`: each slice along every
non-displayed axis, and on a large slice each window a click gets), sent as
``embed`` with as many in flight as the broker has workers
(:func:`protocol.ops.embed_many.embed_many`), each read only in the thread that
sends it. The clients share the session's known keys, so every later click
on the stack sends only its key and costs a decoder call. Progress and
cancel as AUTO-SEGMENT STACK (:mod:`plugin.jobs.stack_runs`).

Two steps: first the *plan* (the images, nearest the current slice first,
and how many the workers' caches keep: :func:`protocol.ops.embed_many.cache_room`,
after embedding the nearest image on each worker when an empty cache cannot
say); when the stack does not fit, :attr:`EncodeStack.choose` is asked
(the Encode box asks the user) and the choice is said before encoding.
Then the encoding, and a summary that says what is true
(:mod:`plugin.jobs.encode_plan`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from plugin.jobs.context import DuringStoreWrites, JobContext
from plugin.jobs.embed_targets import EmbedTarget, stack_targets
from plugin.jobs.encode_plan import FIT, EncodePlan, EncodeReport, nearest_first, summary
from plugin.jobs.stack_runs import Done, Progress
from plugin.view.coords import OutsideImage
from plugin.view.layers import base_data, plane_of, spatial_shape
from plugin.wording import slice_text
from protocol.ops.embed_many import EmbedManyResult, cache_room, embed_many
from protocol.ops.fan_out import worker_count
from protocol.wire.errors import Superseded
from protocol.wire.wire_image import WireImage

ENCODE_STACK = "encode_stack"
"""The session channel the run is driven from (its requests go on clients of their own)."""
EMBED_TIMEOUT_S = 300.0
"""Silence allowed per ``embed`` (a busy worker on a CPU takes seconds per image)."""
MAX_IMAGES = 100_000
"""Most slices or windows one Encode stack sends (far past any workers' caches)."""


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
        self.choose: Callable[[EncodePlan], str | None] = lambda _plan: FIT
        """Asked (GUI thread) when the stack does not fit the caches: :data:`~plugin.jobs.encode_plan.FIT`,
        :data:`~plugin.jobs.encode_plan.ALL`, or None to cancel (the Encode box asks the user)."""

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
        """Plan, ask when the stack does not fit, then embed; False if it could not start."""
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
        started = time.monotonic()

        def source(target: EmbedTarget) -> Callable[[], WireImage]:
            return lambda: target.wire(data, rgb, limits)

        def progress(done: int, total: int) -> None:
            text = f"Encode stack: {done} of {total} encoded…"
            dispatch(DuringStoreWrites(lambda: on_progress(done, total, text)))

        def embed(
            targets: Sequence[EmbedTarget], workers: int, before: int = 0, total: int | None = None
        ) -> EmbedManyResult:
            """Embed ``targets``; progress counts ``before`` images done earlier, out of ``total``."""
            of = len(targets) + before if total is None else total
            progress(before, of)
            result = embed_many(
                [source(t) for t in targets],
                session.new_client,
                in_flight=workers,
                on_progress=lambda done, _n: progress(before + done, of),
                cancel=cancel,
                timeout_s=EMBED_TIMEOUT_S,
            )
            if result.cancelled:
                raise Superseded("Encode stack was cancelled")
            return result

        def plan_job(_client: Any) -> EncodePlan:
            targets = nearest_first(stack_targets(plane), plane)
            if len(targets) > MAX_IMAGES:
                raise ValueError(
                    f"this image has {len(targets)} slices or windows to encode, more than {MAX_IMAGES}; "
                    "prefetch encodes the place you look at instead"
                )
            with session.new_client() as probe:
                workers = worker_count(probe)
            room, ahead = cache_room(session.new_client, workers), 0
            if room is None:  # empty caches cannot say how large an entry is: fill one each, nearest first
                ahead = embed(targets[:workers], workers, total=len(targets)).done
                room = cache_room(session.new_client, workers)
            return EncodePlan(tuple(targets), workers, room, slice_text(plane), ahead)

        def encode_job(plan: EncodePlan, choice: str) -> EncodeReport:
            chosen = plan.chosen(choice)
            ahead = min(plan.ahead, len(chosen))  # the nearest ones, embedded while sizing the caches
            result = embed(chosen[ahead:], plan.workers, before=ahead)
            room = cache_room(session.new_client, plan.workers)
            seconds = time.monotonic() - started
            in_flight = max(result.in_flight, min(plan.workers, len(chosen)))
            result = replace(
                result, done=result.done + ahead, total=len(chosen), in_flight=in_flight, seconds=seconds
            )
            return EncodeReport(plan, choice, result, room)

        def planned(plan: EncodePlan) -> None:
            if self._cancel is not cancel:
                return  # abandoned
            choice = FIT if plan.fits else self.choose(plan)
            if choice is None or cancel.is_set():
                failed(Superseded("Encode stack was cancelled"))
                return
            said = plan.before(choice)
            if said:
                self.c.results.notify("info", said)
            session.submit(ENCODE_STACK, lambda _client: encode_job(plan, choice), finished, failed)

        def finished(report: EncodeReport) -> None:
            if self._cancel is not cancel:
                return  # abandoned
            self._cancel = None
            self.last = report
            self.c.results.notify("info", summary(report))
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

        on_progress(0, 0, "Encode stack: listing the slices and sizing the workers' caches…")
        session.submit(ENCODE_STACK, plan_job, planned, failed)
        return True
