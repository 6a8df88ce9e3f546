"""What is embedded ahead of clicks (plugin/jobs/embed_targets.py) and what Encode stack says (pure logic)."""

from __future__ import annotations

import numpy as np

from plugin.jobs.embed_targets import prompt_target, stack_targets, target_at
from plugin.jobs.encode_plan import ALL, FIT, EncodePlan, EncodeReport, nearest_first, summary
from plugin.view.coords import SlicePlane
from protocol.geometry.windows import click_windows, window_for_prompt
from protocol.ops.embed_many import CacheRoom, EmbedManyResult, disk_capacity


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


def plan_of(slices: int, capacity: int | None, workers: int = 3, here: int = 0) -> EncodePlan:
    plane = SlicePlane((slices, 300, 200), 1, 2, (here, None, None))
    room = None if capacity is None else CacheRoom(workers=workers, answered=workers, capacity=capacity)
    return EncodePlan(tuple(nearest_first(stack_targets(plane), plane)), workers, room, f"slice {here}")


def test_encode_stack_never_says_clicks_need_no_encoding_when_the_caches_keep_less() -> None:
    """Issue 23, item 1: 16 of 90 kept is said before and after, never "clicks need no encoding now"."""
    plan = plan_of(90, 16, workers=2, here=45)
    assert not plan.fits and plan.kept == 16
    assert [t.plane.index[0] for t in plan.chosen(FIT)][:3] == [45, 44, 46]  # nearest the current slice
    assert len(plan.chosen(FIT)) == 16 and len(plan.chosen(ALL)) == 90
    assert plan.before(FIT) == (
        "Encode stack: the 2 workers' caches hold about 16 of 90 slices; encoding the 16 nearest slice 45."
    )
    assert "only about the last 16 will stay cached" in plan.before(ALL)
    assert "hold about 16 of the stack's 90 slices" in plan.question()
    result = EmbedManyResult(done=16, cached=0, total=16, in_flight=2, seconds=12.2, cancelled=False)
    fit = summary(EncodeReport(plan, FIT, result, plan.room))
    assert fit == (
        "Encode stack: encoded 16 of 90 slices (those nearest slice 45) on 2 workers in 12 s. "
        "They are kept in the 2 workers' caches: clicks on them need no encoding; "
        "a click on one of the other 74 is encoded when made."
    )
    everything = EmbedManyResult(done=90, cached=0, total=90, in_flight=2, seconds=50.0, cancelled=False)
    text = summary(EncodeReport(plan, ALL, everything, plan.room))
    assert text.startswith("Encode stack: encoded 90 slices on 2 workers in 50 s. ")
    assert "keep only about the last 16 encoded" in text and "need no encoding now" not in text


def test_encode_stack_that_fits_says_all_are_kept() -> None:
    plan = plan_of(40, 64)
    assert plan.fits and plan.before(FIT) == ""
    result = EmbedManyResult(done=40, cached=3, total=40, in_flight=3, seconds=12.2, cancelled=False)
    assert summary(EncodeReport(plan, FIT, result, plan.room)) == (
        "Encode stack: encoded 40 slices on 3 workers in 12 s (3 already cached). "
        "All 40 are kept in the 3 workers' caches: clicks on them need no encoding now."
    )
    unknown = plan_of(40, None)
    assert "did not say how large their caches are" in summary(EncodeReport(unknown, FIT, result, None))
    large = SlicePlane((2, 2000, 1500), 1, 2, (0, None, None))
    windows = EncodePlan(tuple(stack_targets(large)), 1, CacheRoom(1, 1, 4), "slice 0")
    assert windows.unit(windows.images).endswith("windows") and "of " in windows.before(FIT)


def test_a_worker_info_gives_its_disk_cache_folder_and_room() -> None:
    entry = 16 << 20  # one 1024² SAM2 embedding in float32
    info = {
        "cache": {"entries": 2, "bytes": 2 * entry, "limit_bytes": 16 * entry},
        "disk_cache": {"dir": "/scratch/emb", "limit_bytes": 100 * entry, "hits": 0, "misses": 3},
    }
    assert disk_capacity(info) == ("/scratch/emb", 100)
    assert disk_capacity({**info, "disk_cache": None}) is None  # the worker runs without one
    assert (
        disk_capacity({**info, "cache": {"entries": 0, "bytes": 0, "limit_bytes": 1}}) is None
    )  # cannot say


def test_encode_stack_says_what_the_disk_cache_keeps_beyond_the_memory_caches() -> None:
    """Issue 23 item 1 / issue 24 §3: 16 of 90 fit the memory caches, the disk cache holds the rest:
    nothing is asked, all 90 are encoded, and both messages say how many are where and that clicks
    need no re-encoding; with a disk cache too small for the stack the question and summary say so."""
    plane = SlicePlane((90, 300, 200), 1, 2, (45, None, None))
    targets = tuple(nearest_first(stack_targets(plane), plane))
    room = CacheRoom(workers=2, answered=2, capacity=16, disk=200, disk_dirs=("/scratch/emb",))
    plan = EncodePlan(targets, 2, room, "slice 45")
    assert plan.fits and (plan.in_memory, plan.on_disk, plan.kept) == (16, 90, 90)
    assert len(plan.chosen(FIT)) == 90
    assert plan.before(FIT) == (
        "Encode stack: the 2 workers' caches hold about 16 of 90 slices in memory; the disk cache "
        "(/scratch/emb) holds all 90: encoding all 90, so that clicks on any of them need no re-encoding."
    )
    done = EmbedManyResult(done=90, cached=0, total=90, in_flight=2, seconds=50.0, cancelled=False)
    assert summary(EncodeReport(plan, FIT, done, room)) == (
        "Encode stack: encoded 90 slices on 2 workers in 50 s. The 2 workers' caches keep about 16 in "
        "memory and the disk cache (/scratch/emb) keeps 90: clicks on them need no re-encoding "
        "(an embedding on disk is read back in milliseconds)."
    )
    small_disk = CacheRoom(workers=2, answered=2, capacity=16, disk=50, disk_dirs=("/scratch/emb",))
    plan = EncodePlan(targets, 2, small_disk, "slice 45")
    assert not plan.fits and plan.kept == 50 and len(plan.chosen(FIT)) == 50
    assert "hold about 50 of the stack's 90 slices (16 in memory, 50 in the disk cache" in plan.question()
    fifty = EmbedManyResult(done=50, cached=0, total=50, in_flight=2, seconds=30.0, cancelled=False)
    assert summary(EncodeReport(plan, FIT, fifty, small_disk)).endswith(
        "keeps 50: clicks on them need no re-encoding (an embedding on disk is read back in "
        "milliseconds); a click on one of the other 40 is encoded when made."
    )
