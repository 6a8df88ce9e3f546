"""The napari side of a click, without a window: slice, key, and writing the mask.

The plugin's per-click work on a large stack (``plugin/`` functions, the
same calls the controller makes): take the displayed slice of a (Z, Y, X)
uint16 image, convert it for the wire, compute its image key (what
``SamClient.call`` hashes on every call), plan the edit of the labels slice
from the mask (``compute_edit``, bounding box only) and write the changed
pixels into a napari ``Labels`` layer (``data_setitem``, as
``plugin.view.layers.write_edit`` does). Next to it, the naive way: rewriting the
whole slice of the labels array. No target in the issue beyond "nothing
slow on the napari side"; these are the numbers behind that claim.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from bench.common import BenchResult, Stats, Table, fmt_range, quick_main, timed


def run(quick: bool = False) -> BenchResult:
    """Time each step of the plugin's per-click work on a large stack."""
    from bench.bench_codec import sam_like_mask
    from plugin.labels.ops import LabelMode, compute_edit
    from plugin.view.coords import plane_at
    from plugin.view.image_slice import extract_slice
    from protocol.runtime.checkpoints import DEFAULT_MODEL
    from protocol.wire.image_key import image_key
    from protocol.wire.wire_image import to_wire

    result = BenchResult("napari", "Client side: the plugin's per-click work on a large stack")
    depth, side = (4, 1024) if quick else (32, 2048)
    repeats = 5 if quick else 20
    rng = np.random.default_rng(0)
    image = rng.integers(100, 4000, (depth, side, side), dtype=np.uint16)
    labels = np.zeros((depth, side, side), dtype=np.uint32)
    mask = sam_like_mask(side)
    plane = plane_at((depth // 2, side / 2, side / 2), image.shape, (1, 2))
    table = Table(
        f"Per click on a {depth} x {side}² uint16 stack with a uint32 labels layer (ms, median [p10-p90])",
        ["step", "ms"],
    )
    steps: list[tuple[str, list[float]]] = []
    wire = to_wire(extract_slice(image, plane, rgb=False), (100.0, 4000.0))
    steps.append(
        (
            "take the slice and convert it for the wire",
            timed(lambda: to_wire(extract_slice(image, plane, rgb=False), (100.0, 4000.0)), repeats),
        )
    )
    steps.append(
        (
            "image key of the slice (client, every call)",
            timed(lambda: image_key(wire.pixels, wire.contrast_limits, DEFAULT_MODEL), repeats),
        )
    )
    labels2d = labels[plane.numpy_index()]
    steps.append(
        (
            "plan the edit: new object (bounding box only)",
            timed(lambda: compute_edit(labels2d, mask, 7, LabelMode.ADD), repeats),
        )
    )
    first, cumulative = compute_edit(labels2d, mask, 7, LabelMode.ADD)
    first.apply(labels2d)
    shifted = np.roll(mask, 25, axis=1)
    steps.append(
        (
            "plan the edit: refine the same object",
            timed(lambda: compute_edit(labels2d, shifted, 7, LabelMode.ADD, cumulative), repeats),
        )
    )
    try:
        from napari.layers import Labels

        layer = Labels(labels)
        indices = plane.nd_indices(first.rows, first.cols)
        values = first.new.astype(np.uint32)
        steps.append(
            (
                f"napari Labels.data_setitem of the {first.size:,} changed pixels",
                timed(lambda: layer.data_setitem(indices, values), repeats),
            )
        )
    except ImportError:
        result.notes.append("napari is not installed: Labels.data_setitem not measured")

    def naive() -> None:
        labels[depth // 2] = np.where(mask, np.uint32(7), labels[depth // 2])

    steps.append(("for comparison: rewrite the whole labels slice (np.where)", timed(naive, repeats)))
    for name, samples in steps:
        table.add(name, fmt_range(Stats.of(samples).scaled(1000), 2))
    table.note = f"Mask: one SAM-like object covering {mask.mean():.1%} of the slice. No GUI, no rendering."
    result.tables.append(table)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    return quick_main(run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
