"""Work on a whole stack: propagate labels through z or time, AUTO-SEGMENT every slice.

napari layer models only (no Qt). :class:`StackJobs` is what the widgets use:
the runs (:mod:`plugin.jobs.stack_runs`: one per kind, one undo step each, cancel),
propagation (:mod:`plugin.jobs.propagate`), Divide here (:mod:`plugin.jobs.divide`) and AUTO-SEGMENT STACK
(:mod:`plugin.jobs.auto_stack`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from plugin.jobs.auto import AutoJobs
from plugin.jobs.auto_stack import AutoStack
from plugin.jobs.context import JobContext
from plugin.jobs.divide import Division
from plugin.jobs.propagate import Propagation
from plugin.jobs.stack_runs import AUTO_STACK, PROPAGATE, Done, Progress, StackRun, StackRuns

if TYPE_CHECKING:
    from napari.layers import Labels

__all__ = ["AUTO_STACK", "PROPAGATE", "Done", "Progress", "StackJobs", "StackRun"]


class StackJobs:
    """Propagation and AUTO-SEGMENT STACK of the current image.

    Args:
        ctx: the jobs' shared state.
        runs: the stack runs (shared with single-slice AUTO-SEGMENT, which checks them).
        auto: single-slice AUTO-SEGMENT (AUTO-SEGMENT STACK waits for it).
    """

    def __init__(self, ctx: JobContext, runs: StackRuns, auto: AutoJobs) -> None:
        self._runs = runs
        self._propagation = Propagation(ctx, runs)
        self._division = Division(ctx, runs)
        self._auto_stack = AutoStack(ctx, runs, auto)
        # The operations the widgets call, each documented where it lives.
        self.propagate = self._propagation.propagate
        self.propagate_labels = self._propagation.propagate_labels
        self.divide_here = self._division.divide_here
        self.auto_stack = self._auto_stack.run

    @property
    def runs(self) -> dict[str, StackRun]:
        """kind -> the newest run of that kind."""
        return self._runs.runs

    def running(self, kind: str) -> bool:
        return self._runs.running(kind)

    def cancel(self, kind: str | None = None) -> None:
        """Stop a running job (``None``: all)."""
        self._runs.cancel(kind)

    def forget(self, layer: Labels) -> None:
        """``layer`` was removed from the viewer: stop the jobs writing it and drop their records."""
        self._runs.forget(layer)

    def abandon(self) -> None:
        """End every running job now (its session is gone): what was written stays, as one step."""
        self._runs.abandon()
