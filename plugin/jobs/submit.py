"""The one path from a job to the labels: ask off the GUI thread, answer on it, paste, record.

napari layer models only (no Qt). Every job that asks the workers for something
takes this path: points and boxes (:mod:`plugin.jobs.segment`), AUTO-SEGMENT
(:mod:`plugin.jobs.auto`), propagation and AUTO-SEGMENT STACK (:mod:`plugin.jobs.stacks`).
A job is two functions:

* ``ask(client) -> answer`` runs on the session's thread for its channel
  (:meth:`plugin.connection.session.Session.submit`): it reads what it sends from
  the layer's data (only the window it needs) and makes the request;
* ``paste(answer)`` runs on the GUI thread: it writes the answer into its labels
  layer through :class:`plugin.jobs.results.Results` (new ids, only background
  where asked), as one undo step, and records what it did (:class:`Applied`).

Per channel at most one request is in flight and only the newest is answered;
a failure goes to the job's ``failed`` or becomes a notification
(:meth:`plugin.jobs.results.Results.report_error`; superseded requests are silent).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from plugin.jobs.context import JobContext
from plugin.view.coords import SlicePlane
from protocol.geometry.windows import Window

A = TypeVar("A")

POINTS, BOX, AUTO = "points", "box", "auto"
"""The channels of single answers: ``points`` -> ``Points_mask``, ``box`` -> ``Box_mask``,
``auto`` -> ``AutoSeg_mask``."""


@dataclass(frozen=True)
class Applied:
    """What the newest answer of a channel did (status line, tests).

    Attributes:
        channel: ``points``, ``box`` or ``auto``.
        layer_name: the labels layer written.
        label_ids: ids written (empty when the answer was empty).
        plane: the slice written.
        pixels: pixels changed.
        sent: the prompt's wire parameters (``segment``) or ``{}`` (``auto``).
        echo: the prompt as the worker received it (``result["prompt"]``).
        mask_input: whether previous logits were sent.
        answer: the worker's mask (segment, bool (H, W)) or labels (auto, (H, W));
            on a large slice the mask cropped to its bounding box, at ``offset``.
        offset: (row0, col0) of ``answer[0, 0]`` in the slice.
        window: the window of the slice that was sent (large slices), else None.
    """

    channel: str
    layer_name: str
    label_ids: tuple[int, ...]
    plane: SlicePlane
    pixels: int
    sent: dict[str, Any]
    echo: dict[str, Any]
    mask_input: bool = False
    answer: np.ndarray | None = field(default=None, repr=False)
    offset: tuple[int, int] = (0, 0)
    window: Window | None = None


class Answers:
    """The newest :class:`Applied` of each channel, and who is told of each (the widget's status line).

    Attributes:
        applied: channel -> the newest answer applied on it.
        listeners: called with each :class:`Applied` on the GUI thread.
    """

    def __init__(self) -> None:
        self.applied: dict[str, Applied] = {}
        self.listeners: list[Callable[[Applied], None]] = []

    def record(self, applied: Applied) -> None:
        self.applied[applied.channel] = applied
        for listener in list(self.listeners):
            listener(applied)

    def forget(self, layer_name: str) -> None:
        """Drop the answers written to the layer named ``layer_name`` (removed from the viewer)."""
        self.applied = {c: a for c, a in self.applied.items() if a.layer_name != layer_name}


def submit(
    ctx: JobContext,
    channel: str,
    ask: Callable[[Any], A],
    paste: Callable[[A], None],
    failed: Callable[[Exception], None] | None = None,
) -> None:
    """Send a job on the session's ``channel``: ``ask(client)`` off the GUI thread, ``paste(answer)`` on it.

    Args:
        ctx: the jobs' shared state (its session must be connected: see
            :meth:`plugin.jobs.context.JobContext.ready`).
        channel: the session channel (one request in flight, the newest wins).
        ask: makes the request (blocking); its return value is the answer.
        paste: writes the answer (GUI thread); checks that its layer is still there.
        failed: called with the error on the GUI thread (default: a notification).
    """
    ctx.connected().submit(channel, ask, paste, failed or ctx.results.report_error)
