"""plugin.view.long_lived: frozen objects stay out of full collections, and removed layers still go."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from napari.components import ViewerModel
from napari.layers import Labels

from plugin.view.long_lived import ENV_SWITCH, LongLivedObjects


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ViewerModel, LongLivedObjects, list]]:
    monkeypatch.delenv(ENV_SWITCH, raising=False)
    viewer = ViewerModel()
    queued: list[Callable[[], None]] = []
    long_lived = LongLivedObjects(viewer, queued.append)
    try:
        yield viewer, long_lived, queued
    finally:
        long_lived.close()
        gc.collect()


def add_labels_in_a_cycle(viewer: ViewerModel, name: str) -> tuple[Labels, weakref.ref]:
    """Add a labels layer whose data only the layer holds, in a reference cycle, then another layer
    (napari's selection keeps the newest layer as its "current" one, even once removed)."""
    data = np.zeros((256, 256), np.uint32)
    layer = Labels(data, name=name)
    layer.metadata["me"] = layer  # a cycle: only the cyclic collector can free it
    viewer.add_layer(layer)
    viewer.add_labels(np.zeros((4, 4), np.uint32), name=f"after {name}")
    return layer, weakref.ref(data)


def test_freezing_takes_the_objects_out_of_full_collections(frozen) -> None:
    viewer, long_lived, _ = frozen
    gc.collect()
    walked_before = len(gc.get_objects())  # what a full collection walks
    long_lived.freeze()
    assert long_lived.active and gc.get_freeze_count() > 10_000
    gc.collect()
    assert len(gc.get_objects()) < walked_before / 10  # the frozen ones are not walked any more
    long_lived.close()
    assert gc.get_freeze_count() == 0 and not long_lived.active
    long_lived.freeze()  # after close: nothing is frozen again
    assert gc.get_freeze_count() == 0


def test_a_frozen_layer_removed_is_collected_on_the_next_turn_and_the_rest_frozen_again(frozen) -> None:
    viewer, long_lived, queued = frozen
    layer, data = add_labels_in_a_cycle(viewer, "frozen one")
    long_lived.freeze()
    assert layer in long_lived.frozen_layers
    viewer.layers.remove(layer)
    del layer
    gc.collect()
    assert data() is not None  # frozen: a full collection does not see the cycle
    assert len(queued) == 1
    queued.pop()()  # the next event-loop turn
    assert data() is None  # thawed and collected
    assert long_lived.thaws == 1 and gc.get_freeze_count() > 10_000


def test_a_layer_made_after_the_freeze_is_collected_as_usual(frozen) -> None:
    viewer, long_lived, queued = frozen
    long_lived.freeze()
    layer, data = add_labels_in_a_cycle(viewer, "new one")
    viewer.layers.remove(layer)
    del layer
    gc.collect()
    assert data() is None and queued == [] and long_lived.thaws == 0


def test_the_switch_turns_it_off(frozen, monkeypatch: pytest.MonkeyPatch) -> None:
    _, long_lived, _ = frozen
    monkeypatch.setenv(ENV_SWITCH, "0")
    long_lived.freeze()
    assert not long_lived.active and gc.get_freeze_count() == 0
