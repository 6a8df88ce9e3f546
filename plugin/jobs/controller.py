"""The plugin's jobs for one viewer, put together: what the widgets call.

No Qt widgets here (napari layer models and events only); the widget sets
the state (image, mode, refine target, connection) and calls the actions.
The controller only wires the jobs to each other and to the viewer; each job
lives in its own module and gets what it needs explicitly (the shared
:class:`plugin.jobs.context.JobContext`), never the controller:

* :mod:`plugin.jobs.prompt_layers`: the ``Prompt Points`` / ``Bounding Box`` layers
  (polarity, new object, undo keys);
* :mod:`plugin.jobs.segment`: point and box prompts -> one object's label;
* :mod:`plugin.jobs.auto`: AUTO-SEGMENT of a slice (tiled on a large slice);
* :mod:`plugin.jobs.find_all`: Find all (``concept``: every instance of a text prompt);
* :mod:`plugin.jobs.stacks`: propagation and AUTO-SEGMENT STACK;
* :mod:`plugin.jobs.submit`: the one path every job's request and answer take;
* :mod:`plugin.jobs.results`: ids, pastes, undo steps and notifications.

Per channel (``points`` -> ``Points_mask``, ``box`` -> ``Box_mask``,
``auto`` -> ``AutoSeg_mask``) at most one request is in flight and only the
newest prompt's answer is used (:class:`plugin.connection.session.Session`).
Each answer is one undo step of its labels layer (:mod:`plugin.labels.history`:
``Ctrl+Z`` / ``Ctrl+Shift+Z`` on the labels layer, or on the prompt layers
for the layer written last); the plugin's own edits of prompt layers never
trigger requests. Backend events are kept in :attr:`Controller.events` for the events panel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from plugin.connection.session import Session
from plugin.events_log import EventLog
from plugin.jobs.auto import AutoJobs, OnProgress
from plugin.jobs.auto_settings import AutoSettings
from plugin.jobs.context import Dispatch, JobContext, same_layer
from plugin.jobs.delegate import Delegated
from plugin.jobs.find_all import FindAllJobs
from plugin.jobs.prompt_layers import PromptLayers
from plugin.jobs.results import Notify, Results, napari_notify
from plugin.jobs.segment import ActiveObject, PromptJobs
from plugin.jobs.slice_prompts import SlicePrompts
from plugin.jobs.stack_runs import StackRuns
from plugin.jobs.stacks import StackJobs
from plugin.jobs.submit import AUTO, BOX, POINTS, Answers, Applied
from plugin.labels.history import Histories
from plugin.labels.ops import LabelIdTracker, LabelMode
from plugin.view.layers import size_warning

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Labels, Points, Shapes

    from plugin.jobs.prefetch import Prefetcher

__all__ = ["AUTO", "BOX", "POINTS", "Applied", "AutoSettings", "Controller", "napari_notify", "same_layer"]


class Controller:
    """The plugin's jobs for one viewer: prompts, AUTO-SEGMENT, stack jobs, and what they share.

    Args:
        viewer: the napari viewer.
        dispatch: runs a zero-argument function on the GUI thread (later).
        notify: user notifications (default: napari's).

    Attributes:
        context: the state every job reads (:class:`plugin.jobs.context.JobContext`).
        prompt_layers: the prompt layers (:class:`plugin.jobs.prompt_layers.PromptLayers`).
        prompts: point and box prompts (:class:`plugin.jobs.segment.PromptJobs`).
        auto: AUTO-SEGMENT of a slice (:class:`plugin.jobs.auto.AutoJobs`).
        find_all: Find all, every instance of a concept (:class:`plugin.jobs.find_all.FindAllJobs`).
        stack: propagation and AUTO-SEGMENT STACK (:class:`plugin.jobs.stacks.StackJobs`).
        answers: the newest answer applied per channel, and its listeners.
        events: backend events for the events panel.
    """

    def __init__(self, viewer: napari.Viewer, dispatch: Dispatch, notify: Notify | None = None) -> None:
        self.context = ctx = JobContext(viewer, dispatch, notify or napari_notify)
        self.answers = Answers()
        self.events = EventLog()
        self.prompt_layers = PromptLayers(ctx, self.segment_points, self.segment_box, self.new_object)
        self.prompts = PromptJobs(ctx, self.prompt_layers, self.answers)
        runs = StackRuns(ctx)
        self.auto = AutoJobs(ctx, self.answers, runs)
        self.find_all = FindAllJobs(ctx, self.answers)
        self.stack = StackJobs(ctx, runs, self.auto)
        self.histories.before_change.append(self.new_object)
        viewer.layers.events.removed.connect(self._on_removed)

    def close(self) -> None:
        """Stop following the viewer's layer list (the widget is closing)."""
        self.viewer.layers.events.removed.disconnect(self._on_removed)

    def _on_removed(self, event: Any) -> None:
        layer = getattr(event, "value", None)
        if layer is not None:
            self.forget(layer)

    def forget(self, layer: Any) -> None:
        """Drop everything held for ``layer``, removed from the viewer, so its memory can go.

        Its undo history, id counter, stored logits, current objects, the
        prompts kept for Propagate, the stack jobs writing it (cancelled) and
        the last answers written to it.
        """
        ctx = self.context
        ctx.results.forget(layer)
        ctx.slice_prompts.forget_layer(layer.unique_id)
        self.prompt_layers.watched.discard(layer.unique_id)
        self.prompts.forget(layer)
        self.answers.forget(layer.name)
        if same_layer(ctx.image, layer):
            ctx.image = None
            self.prompts.objects.clear()
        self.stack.forget(layer)

    # -- the shared state (plugin.jobs.context) ---------------------------------------------

    viewer: Delegated[napari.Viewer] = Delegated("context")
    dispatch: Delegated[Dispatch] = Delegated("context")
    results: Delegated[Results] = Delegated("context")
    session: Delegated[Session | None] = Delegated("context", writable=True)
    """The connection to the broker (set by the widget; None: not connected)."""
    unavailable: Delegated[str | None] = Delegated("context", writable=True)
    """Set by the widget while the backend cannot segment (no worker): prompts are refused at once."""
    auto_settings: Delegated[AutoSettings] = Delegated("context", writable=True)
    mode: Delegated[LabelMode] = Delegated("context")
    slice_prompts: Delegated[SlicePrompts] = Delegated("context")
    """The newest Point/Box prompt applied to each label on each slice (Propagate sends them)."""
    notify: Delegated[Notify] = Delegated("results", writable=True)
    """User notifications: ``notify(level, message)``."""
    histories: Delegated[Histories] = Delegated("results")
    """The undo history of each labels layer."""
    tracker: Delegated[LabelIdTracker] = Delegated("results")
    """The next free label id of each labels layer."""
    last_written: Delegated[Labels | None] = Delegated("results")
    """The labels layer the plugin wrote last."""
    applied: Delegated[dict[str, Applied]] = Delegated("answers")
    """channel -> the newest answer applied on it."""
    listeners: Delegated[list[Callable[[Applied], None]]] = Delegated("answers")
    """Called with each answer applied (GUI thread)."""
    objects: Delegated[dict[str, ActiveObject]] = Delegated("prompts")
    """channel -> the object its prompts refine now."""
    prefetch: Delegated[Prefetcher | None] = Delegated("prompts", writable=True)
    """Embeds the image under the view ahead of clicks (set by the widget; see jobs.prefetch)."""

    # -- state set by the widget ------------------------------------------------

    @property
    def image(self) -> Image | None:
        """The image prompts go to."""
        return self.context.image

    @image.setter
    def image(self, layer: Image | None) -> None:
        if same_layer(layer, self.context.image):
            return
        self.context.image = layer
        self.prompts.objects.clear()
        if layer is not None:
            self.prompt_layers.refit(layer)
            warning = size_warning(layer)
            if warning is not None:
                self.notify("warning", warning)
            if self.prefetch is not None:
                self.prefetch.poke()  # the view now shows another image

    def set_mode(self, mode: LabelMode, refine_layer: Labels | None = None, refine_id: int = 0) -> None:
        """Change the labeling mode / refine target; the next prompt starts a new object."""

        def target(m: LabelMode, layer: Labels | None, label_id: int) -> tuple[Any, ...]:
            return (m,) if m is LabelMode.ADD else (m, layer, label_id)  # Add ignores the refine target

        prompts = self.prompts
        changed = target(mode, refine_layer, refine_id) != target(
            self.mode, prompts.refine_layer, prompts.refine_id
        )
        self.context.mode = mode
        prompts.refine_layer, prompts.refine_id = refine_layer, int(refine_id)
        if changed:
            self.new_object()

    def set_negative(self, negative: bool) -> None:
        """The "negative points" toggle: new points are negative (a modifier key inverts it)."""
        self.prompt_layers.set_negative(negative)

    # -- actions ----------------------------------------------------------------------

    def points_layer(self) -> Points | None:
        """The ``Prompt Points`` layer, created and wired on demand (None without an image)."""
        return self.prompt_layers.points_layer()

    def box_layer(self) -> Shapes | None:
        """The ``Bounding Box`` layer, created and wired on demand (None without an image)."""
        return self.prompt_layers.box_layer()

    def prepare_result_layer(self, channel: str) -> Labels | None:
        """Create ``channel``'s result layer for the current image ahead of its first answer (Add mode)."""
        return self.prompts.prepare_result_layer(channel)

    def new_object(self) -> None:
        """Finish the current objects: the next prompt makes a new one; prompt points are cleared."""
        self.prompts.new_object()
        self.prompt_layers.clear_points()

    def segment_points(self, layer: Points, newest: bool = True) -> None:
        """Send the points of the newest point's slice (or the current object's) as one prompt."""
        self.prompts.segment_points(layer, newest)

    def segment_box(self, layer: Shapes, index: int, fresh: bool) -> None:
        """Send box ``index`` of a shapes layer (its bounding box on its slice) as a prompt."""
        self.prompts.segment_box(layer, index, fresh)

    def undo_last(self, redo: bool = False) -> bool:
        """Undo (or redo) one step of the labels layer the plugin wrote last."""
        return self.prompt_layers.undo_last(redo)

    def ready(self) -> Image | None:
        """The image to segment, or None after telling the user why nothing can be segmented now."""
        return self.context.ready()

    def run_auto(self, on_progress: OnProgress, on_done: Callable[[bool], None]) -> bool:
        """AUTO-SEGMENT the current slice into ``AutoSeg_mask``; False if it could not start."""
        return self.auto.run(on_progress, on_done)

    def cancel_auto(self) -> None:
        """Stop the single-slice AUTO-SEGMENT in flight, if any."""
        self.auto.cancel()

    @property
    def auto_running(self) -> bool:
        """Whether a single-slice AUTO-SEGMENT is in flight (AUTO-SEGMENT STACK waits for it)."""
        return self.auto.running
