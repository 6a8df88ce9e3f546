"""The "Embeddings ahead" box: prefetch under the view (on/off) and the Encode stack button.

Thin: :class:`plugin.jobs.prefetch.Prefetcher` and :class:`plugin.jobs.encode_stack.EncodeStack`
do the work. The button starts Encode stack and, while it runs, cancels it;
progress shows in the box and in napari's activity dock. When the stack does
not fit the workers' caches, a question says so before encoding and offers
the images nearest the current slice (the default), all of them, or cancel. The prefetch
switch is kept between napari runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtWidgets import QCheckBox, QFormLayout, QGroupBox, QMessageBox, QWidget

from plugin._qt.qt_helpers import Coalescer, TaskProgress
from plugin.jobs.encode_plan import ALL, FIT, EncodePlan
from plugin.jobs.encode_stack import EncodeStack
from plugin.jobs.prefetch import PREFETCH_DELAY_MS, Prefetcher
from plugin.user_settings import load, save

if TYPE_CHECKING:
    from plugin.jobs.controller import Controller

PREFETCH_KEY = "embed/prefetch"
PREFETCH_TIP = (
    "When the view stays still, an idle worker encodes what a click at its centre would send "
    "(the slice, or the window of a large slice), so the first click there is quick"
)
ENCODE_TIP = (
    "Encode every slice of the current image (every window of a large slice) on all workers, "
    "so that every later click is quick; says when the workers' caches cannot hold them all"
)


class EncodeBox(QGroupBox):
    """Prefetch switch, Encode stack button and its progress."""

    def __init__(self, controller: Controller, parent: QWidget | None = None) -> None:
        super().__init__("Embeddings ahead", parent)
        self.controller = controller
        self.prefetcher = Prefetcher(controller.context, Coalescer(PREFETCH_DELAY_MS, self))
        controller.prefetch = self.prefetcher
        self.encoder = EncodeStack(controller.context)
        self.encoder.choose = self.ask_what_fits
        form = QFormLayout(self)
        self.prefetch = QCheckBox("Prefetch under the view")
        self.prefetch.setToolTip(PREFETCH_TIP)
        self.prefetch.setChecked(load(PREFETCH_KEY, True))
        self.prefetcher.enabled = self.prefetch.isChecked()
        self.prefetch.toggled.connect(self._set_prefetch)
        form.addRow(self.prefetch)
        self.encode_task = TaskProgress.in_form(form, "Encode stack", self.toggle_encode, ENCODE_TIP)
        self.encode_button, self.encode_bar = self.encode_task.button, self.encode_task.bar
        self._connected = False

    def _set_prefetch(self, on: bool) -> None:
        self.prefetcher.set_enabled(bool(on))
        save(PREFETCH_KEY, bool(on))

    def toggle_encode(self) -> None:
        """Start Encode stack, or cancel the running one."""
        if self.encode_task.running:
            self.encoder.cancel()
            return
        self.encode_task.start("Encode stack", self.encoder.cancel)
        if not self.encoder.start(self.encode_task.step, self._done):
            self._done(False)

    def ask_what_fits(self, plan: EncodePlan) -> str | None:
        """The stack does not fit the caches: encode what they keep (default), all, or nothing."""
        box = QMessageBox(QMessageBox.Icon.Question, "Encode stack", plan.question(), parent=self)
        fit = box.addButton(f"Encode the {plan.kept} nearest", QMessageBox.ButtonRole.AcceptRole)
        everything = box.addButton(f"Encode all {plan.images}", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(fit)
        box.exec()
        clicked = box.clickedButton()
        return FIT if clicked is fit else ALL if clicked is everything else None

    def _done(self, _completed: bool) -> None:
        self.encode_task.finish()
        self.set_connected(self._connected)

    def set_connected(self, connected: bool) -> None:
        """Enable starting only while a worker answers; a run whose backend was lost ends now."""
        if connected and not self._connected:
            self.prefetcher.poke()  # the view a user already looks at is worth embedding now
        self._connected = connected
        if not connected and self.encoder.running:
            self.encoder.abandon()
        self.encode_button.setEnabled(connected or self.encode_task.running)

    def shutdown(self) -> None:
        self.encoder.abandon()
        self.encode_task.finish()
        self.prefetcher.close()
        self.controller.prefetch = None
