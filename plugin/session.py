"""Requests to the SAM2 service, off the GUI thread, newest-only per channel.

No Qt and no napari here. A :class:`Session` talks to one broker and one
model. Each *channel* (one per result layer: ``Points_mask``, ``Box_mask``,
``AutoSeg_mask``) has its own :class:`protocol.client.LatestOnly` runner and
its own :class:`protocol.client.SamClient` (used only by that runner's jobs,
one at a time), so at most one request per channel is in flight and a newer
submission supersedes an older one. Results are handed to ``dispatch``
(which runs a function on the GUI thread) and checked *again* there: a reply
whose request was superseded while it waited in the GUI queue is dropped.

Every call is recorded in the session's :class:`plugin.events_log.EventLog`
(op, request id, duration, error) for the events panel.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from plugin.events_log import ERROR, REQUEST, EventLog
from plugin.image_slice import WireImage, WireStack
from plugin.prompts import Prompt
from protocol.client import ClientConfig, LatestOnly, SamClient
from protocol.codec import Message
from protocol.errors import ClientError, ProtocolError, RemoteError, Superseded

T = TypeVar("T")
Dispatch = Callable[[Callable[[], None]], None]

LOGITS_SHAPE = (1, 256, 256)


@dataclass(frozen=True)
class SegmentAnswer:
    """The worker's answer to a ``segment`` op.

    Attributes:
        mask: (H, W) bool, the best mask, in the sent slice's pixels.
        logits: (1, 256, 256) float32 low-res logits of that mask (for ``mask_input``), or None.
        scores: predicted IoU of each candidate mask.
        prompt: the prompt as the worker received it (``result["prompt"]``).
    """

    mask: np.ndarray = field(repr=False)
    logits: np.ndarray | None = field(repr=False)
    scores: tuple[float, ...]
    prompt: dict[str, Any]


@dataclass(frozen=True)
class AutoAnswer:
    """The worker's answer to an ``auto`` op: (H, W) uint32 ``labels`` (0 = background, 1..n)."""

    labels: np.ndarray = field(repr=False)
    num_objects: int


def segment(
    client: SamClient, image: WireImage, prompt: Prompt, mask_input: np.ndarray | None = None
) -> SegmentAnswer:
    """Run ``segment`` for ``prompt`` on ``image`` (blocking; call from a worker thread).

    ``multimask`` is asked for only when the prompt is ambiguous (one point,
    no box, no previous mask), SAM's own recommendation.
    """
    params: dict[str, Any] = {**prompt.params(), "return_logits": True}
    params["multimask"] = len(prompt.points) == 1 and prompt.box is None and mask_input is None
    arrays = {} if mask_input is None else {"mask_input": mask_input}
    reply = client.call("segment", params, arrays, image=image.pixels, contrast_limits=image.contrast_limits)
    mask = reply.arrays.get("mask")
    if mask is None or mask.shape != image.size:
        got = None if mask is None else mask.shape
        raise ProtocolError(f"segment answered a mask of shape {got}, expected {image.size}")
    logits = reply.arrays.get("logits")
    if logits is not None and logits.shape != LOGITS_SHAPE:
        logits = None
    result = reply.header.get("result") or {}
    scores = tuple(float(s) for s in result.get("scores", ()))
    return SegmentAnswer(mask.astype(bool, copy=False), logits, scores, dict(result.get("prompt") or {}))


def auto(
    client: SamClient,
    image: WireImage,
    params: Mapping[str, Any],
    on_progress: Callable[[Message], None] | None = None,
    cancel: threading.Event | None = None,
    timeout_s: float | None = None,
) -> AutoAnswer:
    """Run ``auto`` (automatic masks) on ``image`` (blocking; call from a worker thread).

    ``timeout_s`` is the silence allowed (the worker is quiet while it
    computes, which takes minutes on a CPU), default the client's.
    """
    reply = client.call(
        "auto",
        dict(params),
        image=image.pixels,
        contrast_limits=image.contrast_limits,
        timeout_s=timeout_s,
        on_partial=on_progress,
        cancel=cancel,
    )
    labels = reply.arrays.get("labels")
    if labels is None or labels.shape != image.size:
        got = None if labels is None else labels.shape
        raise ProtocolError(f"auto answered labels of shape {got}, expected {image.size}")
    result = reply.header.get("result") or {}
    return AutoAnswer(labels, int(result.get("num_objects", int(labels.max()))))


@dataclass(frozen=True)
class PropagatedSlice:
    """One slice of a ``propagate`` answer (a PARTIAL reply).

    Attributes:
        frame_index: the slice (0..Z-1 of the sent stack).
        done, total: progress of the propagation, in slices.
        mask: (H, W) bool, the object on that slice.
    """

    frame_index: int
    done: int
    total: int
    mask: np.ndarray = field(repr=False)


DIRECTIONS = ("both", "forward", "backward")


@dataclass(frozen=True)
class PropagateAnswer:
    """The FINAL of ``propagate``: ``frames`` slices produced, ``cancelled`` if the backend stopped early."""

    frames: int
    cancelled: bool


def propagate(
    client: SamClient,
    stack: WireStack,
    mask: np.ndarray,
    frame_index: int,
    direction: str,
    on_slice: Callable[[PropagatedSlice], None],
    cancel: threading.Event | None = None,
    timeout_s: float | None = None,
) -> PropagateAnswer:
    """Run ``propagate`` (blocking; call from a worker thread); ``on_slice`` gets each slice as it comes.

    Args:
        client: the channel's client.
        stack: (Z, H, W[, C]) slices, one set of contrast limits.
        mask: (H, W) bool, the object on slice ``frame_index``.
        frame_index: k, the slice the mask is on.
        direction: ``both``, ``forward`` (k, k+1, ...) or ``backward`` (k, k-1, ...).
        on_slice: called on this thread for each PARTIAL (slice k comes first).
        cancel: set it to stop (the call raises :class:`protocol.errors.Superseded`).
        timeout_s: silence allowed between slices (default the client's).

    Returns:
        How many slices the worker produced, and whether it stopped early.

    Raises:
        ProtocolError: a slice that is not a bool (H, W) mask of a slice of the stack.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if mask.shape != stack.size:
        raise ValueError(f"mask {mask.shape} must have the slices' shape {stack.size}")

    def partial(message: Message) -> None:
        result = message.header.get("result") or {}
        got = message.arrays.get("mask")
        try:
            index, done, total = int(result["frame_index"]), int(result["done"]), int(result["total"])
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"propagate sent a slice without frame_index/done/total: {result}") from e
        if got is None or got.shape != stack.size or not 0 <= index < stack.frames:
            shape = None if got is None else got.shape
            raise ProtocolError(f"propagate sent slice {index} with mask {shape}, expected {stack.size}")
        on_slice(PropagatedSlice(index, done, total, got.astype(bool, copy=False)))

    reply = client.call(
        "propagate",
        {"frame_index": int(frame_index), "direction": direction},
        {"stack": stack.pixels, "mask": np.ascontiguousarray(mask, dtype=bool)},
        contrast_limits=stack.contrast_limits,
        timeout_s=timeout_s,
        on_partial=partial,
        cancel=cancel,
    )
    result = reply.header.get("result") or {}
    return PropagateAnswer(int(result.get("frames", 0)), bool(result.get("cancelled", False)))


def partial_fraction(message: Message) -> float | None:
    """Progress in [0, 1] from a PARTIAL reply (``progress`` or ``done``/``total``), if it says."""
    result = message.header.get("result") or {}
    try:
        if "progress" in result:
            return min(max(float(result["progress"]), 0.0), 1.0)
        if "done" in result and "total" in result and float(result["total"]) > 0:
            return min(max(float(result["done"]) / float(result["total"]), 0.0), 1.0)
    except (TypeError, ValueError):
        return None
    return None


class LoggedClient(SamClient):
    """A :class:`SamClient` that records each call (op, request id, duration, outcome) in an event log."""

    def __init__(self, endpoint: str, service: str, *, config: ClientConfig, log: EventLog) -> None:
        super().__init__(endpoint, service, config=config)
        self.log = log

    def call(self, op: str, *args: Any, **kwargs: Any) -> Message:
        started = time.perf_counter()

        def elapsed_ms() -> float:
            return (time.perf_counter() - started) * 1000.0

        try:
            reply = super().call(op, *args, **kwargs)
        except Superseded:
            self.log.record(REQUEST, op, duration_ms=elapsed_ms(), detail="cancelled")
            raise
        except RemoteError as e:
            request_id = str(getattr(e, "request_id", None) or "")
            self.log.record(ERROR, op, request_id, elapsed_ms(), detail=f"{e.code}: {e.message}")
            raise
        except (ClientError, ProtocolError) as e:
            self.log.record(ERROR, op, duration_ms=elapsed_ms(), detail=f"{type(e).__name__}: {e}")
            raise
        self.log.record(REQUEST, op, reply.request_id, elapsed_ms(), detail=str(reply.status))
        return reply


class Session:
    """One broker endpoint + one model, with newest-only channels.

    Args:
        endpoint: broker frontend, e.g. ``"tcp://127.0.0.1:5555"``.
        model: service name, e.g. ``"sam2.1_hiera_tiny"``.
        dispatch: runs a zero-argument function on the GUI thread.
        config: client timeouts and retries.
        log: where calls are recorded (a fresh log by default).
    """

    def __init__(
        self,
        endpoint: str,
        model: str,
        dispatch: Dispatch,
        config: ClientConfig | None = None,
        log: EventLog | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.model = model
        self.config = config or ClientConfig()
        self.log = log if log is not None else EventLog()
        self._dispatch = dispatch
        self._runners: dict[str, LatestOnly[Any]] = {}
        self._clients: dict[str, SamClient] = {}
        self._closed = False

    def runner(self, channel: str) -> LatestOnly[Any]:
        if channel not in self._runners:
            self._runners[channel] = LatestOnly(name=f"sam2-{channel}")
        return self._runners[channel]

    def _client(self, channel: str) -> SamClient:
        # Only ever called from the channel's runner thread, one job at a time.
        client = self._clients.get(channel)
        if client is None:
            client = LoggedClient(self.endpoint, self.model, config=self.config, log=self.log)
            self._clients[channel] = client
        return client

    def submit(
        self,
        channel: str,
        job: Callable[[SamClient], T],
        on_result: Callable[[T], None],
        on_error: Callable[[Exception], None],
    ) -> int:
        """Run ``job(client)`` on ``channel``'s thread; deliver on the GUI thread if still newest.

        Returns:
            The submission's generation number on that channel.
        """
        if self._closed:
            raise RuntimeError("session is closed")
        runner = self.runner(channel)
        generation = 0

        def deliver(callback: Callable[[Any], None], value: Any) -> None:
            if not self._closed and runner.is_current(generation):
                callback(value)

        generation = runner.submit(
            lambda: job(self._client(channel)),
            lambda value: self._dispatch(lambda: deliver(on_result, value)),
            lambda error: self._dispatch(lambda: deliver(on_error, error)),
        )
        return generation

    def is_current(self, channel: str, generation: int) -> bool:
        return channel in self._runners and self._runners[channel].is_current(generation)

    def busy(self, channel: str) -> bool:
        return channel in self._runners and self._runners[channel].busy

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until no channel has work (tests, shutdown)."""
        return all(r.wait_idle(timeout_s) for r in list(self._runners.values()))

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop delivering results; close the sockets of idle channels."""
        self._closed = True
        for channel, runner in list(self._runners.items()):
            if runner.wait_idle(timeout_s) and channel in self._clients:
                self._clients.pop(channel).close()
