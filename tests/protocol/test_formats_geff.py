"""GEFF export: nodes per (frame, label), edges along tracks and divisions, validated and read by geff."""

from __future__ import annotations

import geff
import numpy as np
import pytest
from geff.core_io import read_to_memory
from geff.validate.data import ValidationConfig

from protocol.formats.geff_tracks import GEFF_GROUP, is_geff, read_geff, write_geff
from protocol.formats.geometry import Geometry
from protocol.formats.provenance import Provenance
from protocol.formats.tracks import build_tracks
from tests.support.timelapse import LINEAGE, N_FRAMES, centres, timelapse

GEOMETRY = Geometry("tyx", (5.0, 0.5, 0.25), (0.0, 10.0, -4.0), ("minute", "micrometer", "micrometer"))
NAMES = {1: "mover", 3: "left daughter"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    record = Provenance("propagate", model="sam2.1_hiera_tiny", checkpoint_sha256="ab" * 32)
    path = tmp_path_factory.mktemp("geff") / "movie"
    return write_geff(path, timelapse(), NAMES, GEOMETRY, LINEAGE, record)


def _node_table(graph):
    props = graph["node_props"]
    ids = np.asarray(graph["node_ids"]).tolist()
    seg = np.asarray(props["seg_id"]["values"]).tolist()
    t = np.asarray(props["t"]["values"]).tolist()
    return {(s, f): i for i, s, f in zip(ids, seg, t, strict=True)}


def test_geff_validates_and_has_one_node_per_frame_and_label_in_physical_units(store):
    assert store.name == "movie.geff.zarr"
    geff.validate_structure(str(store / GEFF_GROUP))
    graph = read_to_memory(
        str(store / GEFF_GROUP), data_validation=ValidationConfig(graph=True, lineage=True)
    )
    stack = timelapse()
    nodes = _node_table(graph)
    expected = {(label, t) for t in range(N_FRAMES) for label in centres(t)}
    assert set(nodes) == expected
    props = graph["node_props"]
    order = {node: i for i, node in enumerate(np.asarray(graph["node_ids"]).tolist())}
    for (label, t), node in nodes.items():
        i = order[node]
        row, col = centres(t)[label]
        assert props["y"]["values"][i] == pytest.approx(row * 0.5 + 10.0)
        assert props["x"]["values"][i] == pytest.approx(col * 0.25 - 4.0)
        assert props["area"]["values"][i] == pytest.approx((stack[t] == label).sum() * 0.125)
        assert props["name"]["values"][i] == NAMES.get(label, "")
    axes = {a.name: a for a in graph["metadata"].axes}
    assert axes["t"].scale == 5.0 and axes["t"].scaled_unit == "minute"
    assert axes["y"].unit == "micrometer"


def test_edges_follow_each_label_and_go_from_parent_to_daughters(store):
    graph = read_to_memory(str(store / GEFF_GROUP))
    nodes = _node_table(graph)
    edges = {tuple(e) for e in np.asarray(graph["edge_ids"]).tolist()}
    assert (nodes[(2, 4)], nodes[(3, 5)]) in edges
    assert (nodes[(2, 4)], nodes[(4, 5)]) in edges
    assert (nodes[(5, 2)], nodes[(5, 6)]) in edges  # across label 5's gap
    assert all((nodes[(1, t)], nodes[(1, t + 1)]) in edges for t in range(N_FRAMES - 1))
    # one edge per consecutive pair of each label, plus the two division edges
    per_label = sum(len([t for t in range(N_FRAMES) if label in centres(t)]) - 1 for label in range(1, 6))
    assert len(edges) == per_label + 2
    # geff's own networkx reader sees the same graph: a division has two children
    nx_graph, _ = geff.read(str(store / GEFF_GROUP))
    assert sorted(nx_graph.successors(nodes[(2, 4)])) == sorted([nodes[(3, 5)], nodes[(4, 5)]])


def test_read_back_gives_the_labels_tracks_names_and_provenance(store):
    back = read_geff(store)
    assert is_geff(store)
    np.testing.assert_array_equal(back.labels, timelapse())
    assert back.tracks == build_tracks(timelapse(), LINEAGE)
    assert back.names == NAMES
    assert back.geometry == GEOMETRY
    assert back.provenance is not None and back.provenance.checkpoint_sha256 == "ab" * 32


def test_a_stack_that_is_not_a_time_lapse_is_refused(tmp_path):
    with pytest.raises(ValueError, match="GEFF tracks need"):
        write_geff(tmp_path / "x", np.zeros((4, 4), np.uint16), {}, Geometry.plain(2))
    assert list(tmp_path.iterdir()) == []
