"""The prompts kept per label and slice for Propagate's corrections : pure logic."""

from __future__ import annotations

from plugin.jobs.slice_prompts import SlicePrompts
from plugin.view.coords import SlicePlane
from plugin.view.image_slice import plane_on
from plugin.view.prompts import Prompt
from protocol.wire.propagate import SlicePrompt

TZYX = SlicePlane((4, 30, 64, 64), 2, 3, (1, 0, None, None))
"""A (T, Z, Y, X) layer seen at t = 1, z = 0: its stack runs along T (axis 0)."""


def on(t: int, z: int = 0) -> SlicePlane:
    return plane_on(plane_on(TZYX, 0, t), 1, z)


def point(plane: SlicePlane, row: float, col: float, label: int = 1) -> Prompt:
    return Prompt(plane, ((row, col),), (label,))


def test_newest_prompt_per_slice_goes_along_and_the_layer_forgets() -> None:
    store = SlicePrompts()
    store.record("layer", 3, point(on(2), 10.5, 11.5))
    store.record("layer", 3, point(on(2), 20.5, 21.5))  # newer on the same slice: replaces it
    store.record("layer", 3, Prompt(on(3), box=(1.0, 2.0, 30.0, 40.0)))
    store.record("layer", 3, point(on(0), 5.5, 5.5))
    store.record("layer", 3, point(on(1), 7.5, 7.5))  # slice k itself: never sent
    store.record("layer", 3, point(on(2, z=4), 9.5, 9.5))  # another z: another stack
    store.record("layer", 4, point(on(3), 50.5, 50.5, label=0))
    store.record("layer", 0, point(on(3), 1.5, 1.5))  # not a label: not kept
    store.record("other", 3, point(on(2), 60.5, 60.5))

    assert [e.prompt.points for e in store.entries("layer", 3) if e.plane == on(2)] == [((20.5, 21.5),)]
    assert store.entries("layer", 0) == []
    both = store.corrections("layer", [3, 4], TZYX, 0, "both")
    assert both == [
        SlicePrompt(0, 3, ((5.5, 5.5),), (1,)),
        SlicePrompt(2, 3, ((20.5, 21.5),), (1,)),
        SlicePrompt(3, 3, box=(1.0, 2.0, 30.0, 40.0)),
        SlicePrompt(3, 4, ((50.5, 50.5),), (0,)),
    ]
    assert [p.frame_index for p in store.corrections("layer", [3], TZYX, 0, "forward")] == [2, 3]
    assert [p.frame_index for p in store.corrections("layer", [3], TZYX, 0, "backward")] == [0]
    assert store.corrections("layer", [5], TZYX, 0, "both") == []
    assert [p.to_wire()["frame_index"] for p in store.corrections("layer", [4], TZYX, 0, "both")] == [3]

    store.forget_layer("layer")
    assert store.corrections("layer", [3, 4], TZYX, 0, "both") == []
    assert store.entries("layer", 3) == []
    assert len(store.corrections("other", [3], TZYX, 0, "both")) == 1


def test_a_merged_label_takes_the_newest_prompt_of_each_slice() -> None:
    store = SlicePrompts()
    store.record("layer", 3, point(on(2), 1.5, 1.5))
    store.record("layer", 9, point(on(2), 2.5, 2.5))  # newer than 3's on slice 2
    store.record("layer", 9, point(on(3), 3.5, 3.5))
    store.record("layer", 3, point(on(3), 4.5, 4.5))  # newer than 9's on slice 3
    store.merge("layer", [9], 3)
    assert [(p.frame_index, p.points) for p in store.corrections("layer", [3], TZYX, 0, "both")] == [
        (2, ((2.5, 2.5),)),
        (3, ((4.5, 4.5),)),
    ]
    assert len(store.entries("layer", 9)) == 2  # an undo of the merge brings 9 back with its prompts
