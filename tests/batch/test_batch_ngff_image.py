"""``--format ome-zarr``: the source image at the root, the labels under ``labels/`` (issue 23, item 9).

Opening the root with ome-zarr's ``Reader`` (what napari-ome-zarr uses) finds
the image and its labels; ``ome-zarr-models`` validates the store as an NGFF
0.4 image with labels. Both ways of writing are covered: from memory (a small
TIFF) and chunk by chunk (a lazy OME-Zarr input whose labels pass
``--max-in-memory-mib``). ``--no-image`` writes the labels only and says so.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from bench.discs import disc_image, scattered_discs
from protocol.formats.geometry import Geometry
from protocol.formats.ngff_image import write_image_pyramid
from tests.batch.test_batch_tracing import write_ome_zarr
from tests.support.processes import REPO_ROOT, ProcessSpawner
from tests.support.standin_backend import SERVICE, StandinBackend


def _root_nodes(store: Path) -> list[Any]:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    location = parse_url(str(store))
    assert location is not None, store
    return list(Reader(location)())


def _check_image_and_labels(store: Path, image: np.ndarray, truth_shape: tuple[int, ...]) -> None:
    """The root is a valid NGFF image (ome-zarr-models) holding ``image`` at s0, with one label image."""
    import zarr
    from ome_zarr_models.v04.image import Image

    root: Any = zarr.open_group(str(store), mode="r")
    model = Image.from_zarr(root)
    assert model.labels is not None and len(model.labels.attributes.labels) == 1
    levels = model.attributes.multiscales[0].datasets
    label_name = model.labels.attributes.labels[0]
    label_levels = root[f"labels/{label_name}"].attrs["multiscales"][0]["datasets"]
    assert [d.path for d in levels] == [d["path"] for d in label_levels]
    for level, label_level in zip(levels, label_levels, strict=True):  # image and labels line up
        transforms = [t.model_dump() for t in level.coordinateTransformations]
        assert transforms == label_level["coordinateTransformations"]
    np.testing.assert_array_equal(np.asarray(root["s0"][:]), image)

    nodes = _root_nodes(store)
    specs = [{type(spec).__name__ for spec in node.specs} for node in nodes]
    assert "Multiscales" in specs[0] and "Label" not in specs[0], specs  # the root: the image
    np.testing.assert_array_equal(np.asarray(nodes[0].data[0]), image)
    (label_node,) = [node for node, kinds in zip(nodes, specs, strict=True) if "Label" in kinds]
    assert tuple(label_node.data[0].shape) == truth_shape


def _batch(backend: StandinBackend, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "batch", "--broker", backend.frontend, "--model", SERVICE, "--no-progress",
         "--format", "ome-zarr", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_ome_zarr_output_holds_the_image_at_its_root_and_the_labels_under_labels(
    tmp_path: Path, spawn: ProcessSpawner
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    centres, radii = scattered_discs((1500, 1500), spacing=60, radius_range=(6.0, 10.0), seed=5)
    large, _ = disc_image((1500, 1500), centres, radii)
    write_ome_zarr(folder / "large.ome.zarr", large)  # labels 9 MiB > 1 MiB: written chunk by chunk
    small = (large[:600, :700].astype(np.uint16) * 40).astype(np.uint16)
    tifffile.imwrite(folder / "small.tif", small)
    backend = StandinBackend(spawn, 2)

    out = tmp_path / "out"
    _batch(backend, str(folder), "--out", str(out), "--max-in-memory-mib", "1")
    _check_image_and_labels(out / "small_labels.ome.zarr", small, small.shape)
    _check_image_and_labels(out / "large_labels.ome.zarr", large[None], (1, *large.shape))

    labels_only = tmp_path / "labels_only"
    proc = _batch(backend, str(folder / "small.tif"), "--out", str(labels_only), "--no-image")
    assert "holds the labels only" in proc.stderr
    import zarr

    root: Any = zarr.open_group(str(labels_only / "small_labels.ome.zarr"), mode="r")
    assert "multiscales" not in root.attrs and list(root.group_keys()) == ["labels"]
    assert not list(root.array_keys())


@pytest.mark.parametrize("stack_shape", [(), (2, 3)])
def test_image_pyramid_of_a_colour_stack_has_a_channel_axis(
    tmp_path: Path, stack_shape: tuple[int, ...]
) -> None:
    import zarr
    from ome_zarr_models.v04.image import Image

    rng = np.random.default_rng(0)
    count = int(np.prod(stack_shape)) if stack_shape else 1
    slices = rng.integers(0, 255, (count, 600, 520, 3), dtype=np.uint8)
    geometry = Geometry.plain(len(stack_shape) + 2)
    root: Any = zarr.open_group(str(tmp_path / "rgb.zarr"), mode="w", zarr_format=2)
    write_image_pyramid(root, slices, stack_shape, geometry, [2], name="rgb")
    model = Image.from_zarr(root)
    axes = "".join(axis.name for axis in model.attributes.multiscales[0].axes)
    assert axes == {(): "cyx", (2, 3): "tczyx"}[stack_shape]
    level0 = np.moveaxis(np.asarray(root["s0"][:]), axes.index("c"), -1).reshape(slices.shape)
    np.testing.assert_array_equal(level0, slices)
    level1 = np.moveaxis(np.asarray(root["s1"][:]), axes.index("c"), -1).reshape(count, 300, 260, 3)
    np.testing.assert_array_equal(level1, slices[:, ::2, ::2])
