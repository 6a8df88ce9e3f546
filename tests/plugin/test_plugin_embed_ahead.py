"""Embeddings ahead of clicks: prefetch under the view and Encode stack, against real broker
and stand-in worker processes (``python -m workers --model standin-blobs``) in a real viewer under Xvfb.

The stand-in counts, per worker, the requests by op, the images it received and its encoder runs; a
click whose image was embedded ahead goes with its key only, so ``images_received`` does not move.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from bench.discs import disc_image
from plugin._qt.widget import SamWidget
from plugin.jobs.controller import Applied
from plugin.jobs.encode_plan import FIT, EncodePlan
from protocol.geometry.windows import window_for_prompt
from tests.support.marks import GUI_TEST_MARKS
from tests.support.plugin_helpers import click_point, dock_widget
from tests.support.processes import ProcessSpawner
from tests.support.standin_backend import SERVICE, StandinBackend

pytestmark = GUI_TEST_MARKS

TIMEOUT_MS = 30_000


@pytest.fixture
def viewer_on(make_napari_viewer, spawn: ProcessSpawner, qtbot, monkeypatch) -> Callable[..., tuple]:
    """Factory: a viewer showing ``data``, a stand-in backend, a connected SAM2 widget, and its notes."""

    def factory(data: Any, workers: int = 1, worker_args: tuple[str, ...] = (), **kwargs: Any) -> tuple:
        backend = StandinBackend(spawn, workers, worker_args=worker_args)
        viewer = make_napari_viewer()
        viewer.add_image(data, **kwargs)
        widget = dock_widget(viewer, qtbot, monkeypatch, backend.frontend, SERVICE, timeout_ms=TIMEOUT_MS)
        qtbot.waitUntil(lambda: widget.encode_box.encode_button.isEnabled(), timeout=TIMEOUT_MS)
        notes: list[tuple[str, str]] = []
        widget.controller.notify = lambda level, message: notes.append((level, message))
        return viewer, widget, backend, notes

    return factory


def click(widget: SamWidget, qtbot, position: list[float]) -> Applied:
    """Add a prompt point (image data coordinates) and wait for its answer and an idle session."""
    return click_point(widget, qtbot, position, wait_idle_s=5, settle_ms=0, timeout_ms=TIMEOUT_MS)


def counters(backend: StandinBackend) -> dict[str, int]:
    """Every worker's counters, summed (``embed``: embed requests)."""
    total: dict[str, int] = {}
    infos = backend.infos()
    assert len(infos) == len(backend.workers)
    for info in infos.values():
        for name, value in info["counters"].items():
            if name == "by_op":
                total["embed"] = total.get("embed", 0) + int(value.get("embed", 0))
            else:
                total[name] = total.get(name, 0) + int(value)
    return total


def look_at(viewer: Any, row: float, col: float) -> None:
    viewer.camera.center = (row, col)


def test_prefetch_embeds_the_window_a_click_there_then_uses(viewer_on, qtbot) -> None:
    shape = (3000, 3000)
    image, truth = disc_image(shape, np.array([[2300.0, 2310.0]]), np.array([10.0]))
    viewer, widget, backend, _notes = viewer_on(image, scale=(0.5, 0.5))
    prefetcher = widget.encode_box.prefetcher
    assert widget.encode_box.prefetch.isChecked()  # on by default
    # Connected, the view the user already looks at is embedded without any move.
    qtbot.waitUntil(lambda: len(prefetcher.sent) == 1 and not prefetcher.busy, timeout=TIMEOUT_MS)
    centre = window_for_prompt(shape, [(1500.5, 1500.5)])
    assert prefetcher.sent[0][-5:] == (*centre.bbox, centre.factor)
    look_at(viewer, 2300 * 0.5, 2310 * 0.5)  # world coordinates of pixel (2300, 2310)
    qtbot.waitUntil(lambda: len(prefetcher.sent) == 2 and not prefetcher.busy, timeout=TIMEOUT_MS)
    before = counters(backend)
    assert (before["embed"], before["images_received"], before["encoder_runs"]) == (2, 2, 2)
    applied = click(widget, qtbot, [2300.0, 2310.0])
    assert applied.window == window_for_prompt(shape, [(2300.5, 2310.5)])
    assert prefetcher.sent[1][-5:] == (*applied.window.bbox, applied.window.factor)  # the same window
    after = counters(backend)
    assert after["images_received"] == 2 and after["encoder_runs"] == 2  # the click sent only the key
    assert applied.label_ids and int((np.asarray(viewer.layers["Points_mask"].data) > 0).sum()) == int(
        (truth > 0).sum()
    )
    # Settling there again sends nothing more: the place is known.
    look_at(viewer, 2301 * 0.5, 2310 * 0.5)
    qtbot.wait(1200)
    assert counters(backend)["embed"] == 2


def test_moving_the_view_drops_the_older_prefetch_and_prefetch_off_sends_nothing(viewer_on, qtbot) -> None:
    image = np.full((2, 256, 256), 20, dtype=np.uint8)
    image[:, 100:140, 100:140] = 200
    image[1] += 1  # another image on slice 1
    viewer, widget, backend, _notes = viewer_on(image, worker_args=("--encode-delay-s", "3"))
    prefetcher = widget.encode_box.prefetcher
    qtbot.waitUntil(lambda: len(prefetcher.sent) == 1 and not prefetcher.busy, timeout=TIMEOUT_MS)
    assert prefetcher.sent[0][-1] == 0  # the slice in view when the backend connected
    viewer.dims.set_point(0, 1)
    qtbot.waitUntil(lambda: prefetcher.busy, timeout=TIMEOUT_MS)  # slice 1's embed is being encoded
    viewer.dims.set_point(0, 0)  # the view moves back (to a known slice) before it is done

    def cancelled() -> int:
        return sum("cancelled" in e.detail for e in widget.controller.events.recent() if e.op == "embed")

    qtbot.waitUntil(lambda: cancelled() == 1 and not prefetcher.busy, timeout=TIMEOUT_MS)
    assert len(prefetcher.sent) == 1  # slice 0 only: slice 1's embed was cancelled, not finished
    # A click for another place drops the prefetch in flight and does not wait for it.
    viewer.dims.set_point(0, 1)
    qtbot.waitUntil(lambda: prefetcher.busy, timeout=TIMEOUT_MS)
    started = time.monotonic()
    click(widget, qtbot, [0.0, 120.0, 120.0])
    assert time.monotonic() - started < 2.5  # slice 1's encoding takes 3 s
    qtbot.waitUntil(lambda: not prefetcher.busy, timeout=TIMEOUT_MS)
    events = [e for e in widget.controller.events.recent() if e.op == "embed"]
    assert sum("cancelled" in e.detail for e in events) == 2 and len(prefetcher.sent) == 1
    # Off: nothing is sent, whatever the view does.
    widget.encode_box.prefetch.setChecked(False)
    embeds = counters(backend)["embed"]
    viewer.dims.set_point(0, 1)
    qtbot.wait(1500)
    assert not prefetcher.busy and len(prefetcher.sent) == 1 and counters(backend)["embed"] == embeds


def test_encode_stack_embeds_every_slice_on_both_workers_then_clicks_send_no_image(viewer_on, qtbot) -> None:
    slices = [
        disc_image((200, 200), np.array([[100.0, 60.0 + 10 * z]]), np.array([12.0]))[0] for z in range(6)
    ]
    viewer, widget, backend, notes = viewer_on(np.stack(slices), workers=2)
    box = widget.encode_box
    box.prefetch.setChecked(False)
    steps: list[tuple[float | None, float | None]] = []
    step = box.encode_task.step
    box.encode_task.step = lambda done, total, text: (steps.append((done, total)), step(done, total, text))  # type: ignore[method-assign]
    box.toggle_encode()
    qtbot.waitUntil(lambda: not box.encode_task.running, timeout=TIMEOUT_MS)
    assert (0, 6) in steps and (6, 6) in steps and len(steps) >= 7
    assert any("encoded 6 slices on 2 workers" in message for _level, message in notes), notes
    assert not any(level == "warning" for level, _message in notes), notes  # 8 entries each: room for all
    infos = backend.infos()
    assert all(int(info["counters"]["by_op"].get("embed", 0)) >= 1 for info in infos.values())  # both used
    before = counters(backend)
    assert before["embed"] == 6 and before["encoder_runs"] == 6
    for z in (5, 0, 3):
        widget.controller.new_object()
        applied = click(widget, qtbot, [float(z), 100.0, 60.0 + 10 * z])
        assert applied.label_ids
    after = counters(backend)
    assert after["images_received"] == before["images_received"] and after["encoder_runs"] == 6


def test_encode_stack_can_be_cancelled_and_says_when_the_caches_are_too_small(viewer_on, qtbot) -> None:
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 255, (12, 64, 64), dtype=np.uint8)
    args = ("--encode-delay-s", "0.3", "--cache-entries", "2")
    viewer, widget, backend, notes = viewer_on(stack, workers=2, worker_args=args)
    box = widget.encode_box
    box.prefetch.setChecked(False)
    asked: list[EncodePlan] = []
    box.encoder.choose = lambda plan: asked.append(plan) or FIT  # type: ignore[func-returns-value]
    box.toggle_encode()
    qtbot.waitUntil(lambda: box.encode_bar.value() > 0, timeout=TIMEOUT_MS)
    box.toggle_encode()  # the button reads "Cancel Encode stack" now
    qtbot.waitUntil(lambda: not box.encode_task.running, timeout=TIMEOUT_MS)
    assert any("Encode stack cancelled" in message for _level, message in notes), notes
    qtbot.wait(500)
    assert counters(backend)["embed"] < 12
    notes.clear()
    box.toggle_encode()
    qtbot.waitUntil(lambda: not box.encode_task.running, timeout=TIMEOUT_MS)
    plan = asked[-1]  # asked before encoding: it does not fit
    assert plan.kept == 4 and plan.here == f"slice {viewer.dims.current_step[0]}"
    messages = [message for _level, message in notes]
    assert messages[0] == (
        f"Encode stack: the 2 workers' caches hold about 4 of 12 slices; encoding the 4 nearest {plan.here}."
    )
    assert f"encoded 4 of 12 slices (those nearest {plan.here})" in messages[-1], messages
    assert "need no encoding now" not in messages[-1]


def test_encode_stack_says_before_what_fits_and_after_what_is_kept(viewer_on, qtbot) -> None:
    """Issue 23, item 1: 3 of 8 slices fit one worker's cache: said before encoding; the 3 encoded
    (nearest the current slice) are clicked without encoding, a slice outside them is encoded."""
    slices = [disc_image((96, 96), np.array([[48.0, 20.0 + 7 * z]]), np.array([8.0]))[0] for z in range(8)]
    viewer, widget, backend, notes = viewer_on(np.stack(slices), worker_args=("--cache-entries", "3"))
    viewer.dims.set_point(0, 4)
    box = widget.encode_box
    box.prefetch.setChecked(False)
    embeds_when_asked: list[int] = []

    def choose(plan: EncodePlan) -> str:
        embeds_when_asked.append(counters(backend)["embed"])
        assert plan.images == 8 and plan.kept == 3 and plan.here == "slice 4"
        return FIT

    box.encoder.choose = choose
    box.toggle_encode()
    qtbot.waitUntil(lambda: not box.encode_task.running, timeout=TIMEOUT_MS)
    assert embeds_when_asked == [1]  # only the nearest slice was encoded before the question
    messages = [message for _level, message in notes]
    assert messages[0] == (
        "Encode stack: the worker's cache holds about 3 of 8 slices; encoding the 3 nearest slice 4."
    )
    assert messages[-1].endswith(
        "They are kept in the worker's cache: clicks on them need no encoding; "
        "a click on one of the other 5 is encoded when made."
    )
    before = counters(backend)
    assert before["embed"] == 3 and before["encoder_runs"] == 3
    for z in (4, 3, 5):  # what it said is kept: no encoding
        widget.controller.new_object()
        assert click(widget, qtbot, [float(z), 48.0, 20.0 + 7 * z]).label_ids
    assert counters(backend)["encoder_runs"] == 3
    widget.controller.new_object()
    assert click(widget, qtbot, [0.0, 48.0, 20.0]).label_ids  # outside: encoded when clicked, as said
    assert counters(backend)["encoder_runs"] == 4


def test_encode_stack_refuses_without_an_image_or_a_connection(viewer_on, qtbot) -> None:
    viewer, widget, _backend, notes = viewer_on(np.zeros((3, 32, 32), dtype=np.uint8))
    viewer.layers.clear()
    widget.encode_box.toggle_encode()
    assert not widget.encode_box.encode_task.running
    assert notes and "Choose the image" in notes[-1][1]
    session, widget.controller.session = widget.controller.session, None
    try:
        widget.encode_box.toggle_encode()
        assert "Not connected" in notes[-1][1]
    finally:
        widget.controller.session = session
