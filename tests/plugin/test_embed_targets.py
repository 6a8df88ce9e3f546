"""What is embedded ahead of clicks (plugin/jobs/embed_targets.py) and what Encode stack says (pure logic)."""

from __future__ import annotations

import numpy as np

from plugin.jobs.embed_targets import prompt_target, stack_targets, target_at
from plugin.jobs.encode_stack import EncodeReport, cache_warning, summary
from plugin.view.coords import SlicePlane
from protocol.geometry.windows import click_windows, window_for_prompt
from protocol.ops.embed_many import CacheRoom, EmbedManyResult


def test_a_stack_of_large_slices_lists_every_slice_times_every_click_window() -> None:
    plane = SlicePlane((2, 3, 2000, 1500), 2, 3, (1, 0, None, None))
    targets = stack_targets(plane)
    windows = click_windows((2000, 1500))
    assert len(targets) == 2 * 3 * len(windows) and len(windows) > 1
    assert {t.plane.index for t in targets} == {(t, z, None, None) for t in range(2) for z in range(3)}
    assert len({t.place for t in targets}) == len(targets)
    small = SlicePlane((4, 300, 200), 1, 2, (2, None, None))
    assert [t.window for t in stack_targets(small)] == [None] * 4  # small slices: whole, one per slice


def test_the_view_centre_and_a_click_there_get_the_same_window() -> None:
    plane = SlicePlane((3000, 2600), 0, 1, (None, None))
    at_view = target_at(plane, (2300.5, 1200.5))
    clicked = prompt_target(plane, np.array([[2300.5, 1200.5]]), None)
    assert at_view == clicked and at_view.window == window_for_prompt((3000, 2600), [(2300.5, 1200.5)])
    assert target_at(plane, (-50.0, 9000.0)).window == window_for_prompt((3000, 2600), [(0.5, 2599.5)])
    small = SlicePlane((5, 500, 400), 1, 2, (3, None, None))
    assert target_at(small, (10.0, 10.0)).window is None and target_at(small, (1.0, 1.0)).place == small.key


def test_encode_stack_says_what_it_did_and_when_the_caches_are_too_small() -> None:
    result = EmbedManyResult(done=40, cached=0, total=40, in_flight=3, seconds=12.2, cancelled=False)
    report = EncodeReport(40, 40, result, CacheRoom(workers=3, answered=3, capacity=24))
    assert summary(report).startswith("Encode stack: encoded 40 slices on 3 workers in 12 s.")
    assert cache_warning(report) == (
        "Encode stack: the 3 workers' caches hold about 24 of 40 slices; "
        "the first ones will be encoded again when clicked."
    )
    windows = EncodeReport(2, 60, result, CacheRoom(workers=1, answered=1, capacity=64))
    assert "2 slices (60 windows)" in summary(windows) and cache_warning(windows) is None
    assert cache_warning(EncodeReport(2, 60, result, None)) is None
