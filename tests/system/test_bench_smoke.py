"""The cheap benchmarks run in quick mode and report sane tables (correctness only, never speed)."""

from __future__ import annotations

import pytest

from bench import bench_broker, bench_codec, bench_large
from bench.common import BenchResult, Table, Target


def _check(result: BenchResult) -> None:
    assert result.tables and all(table.rows for table in result.tables)
    for table in result.tables:
        assert all(len(row) == len(table.columns) for row in table.rows)
        assert "|" in table.to_markdown() and table.title in table.to_text()
    assert result.targets and all(target.measured for target in result.targets)
    again = BenchResult.from_json(result.to_json())
    assert again.tables[0].rows == result.tables[0].rows and again.targets == result.targets


def test_codec_quick_mode_round_trips_every_setting() -> None:
    result = bench_codec.run(quick=True)  # measure() checks every round trip is lossless
    _check(result)
    labels = {row[0].removesuffix(" (default)") for table in result.tables[:4] for row in table.rows}
    assert "lz4 noshuffle 5" in labels  # the default for bool masks is measured and shown


@pytest.mark.timeout(120)
def test_broker_quick_mode_measures_every_path() -> None:
    result = bench_broker.run(quick=True)
    _check(result)
    latency, python_cost, throughput = result.tables
    assert [row[0] for row in latency.rows] == [name for name, _ in bench_broker.SIZES]
    for row in latency.rows:  # every path answered: medians are positive numbers of microseconds
        assert all(float(cell.split()[0].replace(",", "")) > 0 for cell in row[1:-4])
        low, high = (float(value) for value in row[-2].split(" to "))
        assert low <= high
        assert float(row[-1].replace(",", "")) >= 0  # our broker's page faults per round trip (Linux)
    (cost_row,) = python_cost.rows  # the in-process broker and the bare forwarder both served
    assert all(float(cell.split()[0]) > 0 for cell in cost_row[:2])
    assert all(float(cell.replace(",", "")) > 0 for row in throughput.rows for cell in row[2:-2])
    assert all(row[-1].startswith(">= ") and float(row[-1][3:]) > 0 for row in throughput.rows)  # CPU us
    throughput_claims = [t.claim for t in result.targets if "throughput" in t.claim]
    assert throughput_claims == ["broker: throughput vs libzmq C proxy, 1 in flight per client (worst N)"]


@pytest.mark.timeout(300)
def test_large_quick_mode_measures_clicks_tiles_stitching_and_halo() -> None:
    result = bench_large.run(quick=True)
    _check(result)
    clicks, scaling, halo, stitching = result.tables
    assert [row[0] for row in clicks.rows] == ["first (new embedding)", "repeat nearby (same window)"]
    assert [row[0] for row in scaling.rows] == ["1", "2"] and scaling.rows[0][4] == "1.00"
    for row in halo.rows:  # the stand-in's discs come back once and whole with every halo measured
        assert row[3] == "100.0%" and row[5] == "0" and row[6] == "0"
    assert all(float(row[1]) > 0 for row in stitching.rows)
    assert len(result.targets) == 3 and all(t.met is not None for t in result.targets)


def test_table_refuses_a_row_of_the_wrong_width() -> None:
    table = Table("t", ["a", "b"])
    with pytest.raises(ValueError):
        table.add(1)
    assert Target("c", "1", "<= 2", True).met is True


def test_client_split_times_every_stage_of_both_clients_and_puts_them_back() -> None:
    """One stand-in worker, fast tiles: the stand-ins start (the --client run's path), both clients stitch
    their 8 tiles, every stage is timed, and the timed functions are the originals again afterwards."""
    from bench import client_split

    before = [getattr(owner, attr) for _, owner, attr in client_split.stages()]
    result = client_split.run_split(workers=1, delay_s=0.02, repeats=1)
    assert [getattr(owner, attr) for _, owner, attr in client_split.stages()] == before
    (table,) = result.tables
    rows = {row[0]: row for row in table.rows}
    for stage in ("to_wire", "SamClient.call", "stitch: prepare", "stitch: add_prepared", "stitch: finish"):
        assert float(rows[stage][1]) > 0 and float(rows[stage][2]) > 0, stage
    assert float(rows["sam2-batch: write labels"][1]) > 0 and rows["sam2-batch: write labels"][2] == "0.00"
    again = BenchResult.from_json(result.to_json())
    assert again.tables[0].rows == table.rows
