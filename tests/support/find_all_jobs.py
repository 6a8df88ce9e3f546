"""The plugin's jobs without a window, for Find all tests: a viewer model, a Controller on a GUI-thread
stand-in (:class:`tests.support.pump.Pump`) and a Session to a broker, closed at the end."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from napari.components import ViewerModel

from plugin.connection.session import Session
from plugin.jobs.controller import Controller
from plugin.jobs.find_all import FindAllRequest
from tests.support.pump import Pump


@dataclass
class FindAllJobs:
    """A headless controller with one image layer ``slide``; ``notes``: the ``(level, text)`` it told."""

    viewer: ViewerModel
    pump: Pump
    controller: Controller
    notes: list[tuple[str, str]] = field(default_factory=list)

    def find_all(
        self,
        request: FindAllRequest,
        on_progress: Callable[[float | None, str], None] | None = None,
        timeout_s: float = 120.0,
    ) -> list[bool]:
        """Run Find all to its end on the GUI-thread stand-in; its outcome (``[True]``: written)."""
        outcome: list[bool] = []
        started = self.controller.find_all.run(request, on_progress or (lambda *_: None), outcome.append)
        assert started, self.notes
        self.pump.until(lambda: bool(outcome), timeout_s=timeout_s)
        return outcome


@contextmanager
def find_all_jobs(
    image: np.ndarray, frontend: str, service: str, **auto_settings: Any
) -> Iterator[FindAllJobs]:
    """A :class:`FindAllJobs` on ``image`` connected to ``frontend``'s ``service``; ``auto_settings``:
    AUTO's settings to change (``tile_size``, ``tile_halo``). The session is closed on exit."""
    viewer, pump = ViewerModel(), Pump()
    notes: list[tuple[str, str]] = []
    controller = Controller(viewer, pump.dispatch, lambda level, text: notes.append((level, text)))
    controller.image = viewer.add_image(image, name="slide")
    if auto_settings:
        controller.auto_settings = replace(controller.auto_settings, **auto_settings)
    controller.session = Session(frontend, service, pump.dispatch)
    try:
        yield FindAllJobs(viewer, pump, controller, notes)
    finally:
        controller.session.close(timeout_s=1.0)
