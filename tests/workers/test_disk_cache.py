"""The on-disk embedding cache (workers/disk_cache.py): real files, real processes.

Entries here are small synthetic tensors with the shapes' structure of a SAM2
entry (an image embedding and two high-resolution feature maps); the worker
test at the end uses the real SAM2 tiny model (random weights).
"""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from protocol.ops.embed_many import disk_capacity
from protocol.wire.client import ClientConfig, SamClient
from tests.support.backend import Backend
from tests.support.processes import PYTHON, REPO_ROOT, ProcessSpawner, log_text, wait_until
from workers.cache import EmbeddingEntry
from workers.disk_cache import SUFFIX, DiskEmbeddingCache, namespace

SPACE = namespace("sam2.1_hiera_tiny", "ab" * 32, "sam2", "float32")


def entry(seed: int, dtype: torch.dtype = torch.float32) -> EmbeddingEntry:
    gen = torch.Generator().manual_seed(seed)
    return EmbeddingEntry(
        torch.randn(1, 8, 4, 4, generator=gen).to(dtype),
        (
            torch.randn(1, 2, 16, 16, generator=gen).to(dtype),
            torch.randn(1, 4, 8, 8, generator=gen).to(dtype),
        ),
        (30 + seed, 40),
    )


def same(a: EmbeddingEntry, b: EmbeddingEntry) -> bool:
    tensors = zip((a.image_embed, *a.high_res_feats), (b.image_embed, *b.high_res_feats), strict=True)
    return a.orig_hw == b.orig_hw and all(x.dtype == y.dtype and torch.equal(x, y) for x, y in tensors)


def test_an_entry_written_by_one_cache_is_found_by_another_and_only_in_its_namespace(tmp_path: Path) -> None:
    writer = DiskEmbeddingCache(tmp_path, 2**20, SPACE)
    for dtype in (torch.float32, torch.bfloat16):
        original = entry(1, dtype)
        assert writer.put(f"key-{dtype}", original)
        reader = DiskEmbeddingCache(tmp_path, 2**20, SPACE)  # another worker, same host
        found = reader.get(f"key-{dtype}")
        assert found is not None and same(found, original)
        assert reader.counters.hits == 1 and reader.counters.misses == 0
    other = DiskEmbeddingCache(tmp_path, 2**20, namespace("sam2.1_hiera_tiny", "cd" * 32, "sam2", "float32"))
    assert other.get("key-torch.float32") is None and other.counters.misses == 1  # other weights: a miss
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))  # no temporary files left


@pytest.mark.parametrize("damage", ["flip_payload_byte", "truncate", "garbage", "empty", "bad_header_length"])
def test_a_damaged_entry_is_a_miss_and_is_deleted(tmp_path: Path, damage: str) -> None:
    cache = DiskEmbeddingCache(tmp_path, 2**20, SPACE)
    assert cache.put("k", entry(2))
    path = cache.path_for("k")
    data = bytearray(path.read_bytes())
    if damage == "flip_payload_byte":
        data[-100] ^= 0x01
    elif damage == "truncate":
        data = data[: len(data) - 4096]
    elif damage == "garbage":
        data = bytearray(b"not an entry at all" * 10)
    elif damage == "empty":
        data = bytearray()
    else:
        data[8:12] = (2**31).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    assert cache.get("k") is None
    assert cache.counters.corrupt == 1 and cache.counters.misses == 1 and not path.exists()
    assert cache.put("k", entry(2)) and cache.get("k") is not None  # recomputed and stored again


def test_eviction_keeps_the_bound_and_deletes_the_least_recently_used(tmp_path: Path) -> None:
    probe = DiskEmbeddingCache(tmp_path / "probe", 2**20, SPACE)
    probe.put("x", entry(0))
    size = probe.path_for("x").stat().st_size
    cache = DiskEmbeddingCache(tmp_path / "c", int(2.5 * size), SPACE)
    for i in range(2):
        assert cache.put(f"k{i}", entry(i))
        os.utime(cache.path_for(f"k{i}"), ns=(10**18 + i, 10**18 + i))  # a clear order of use
    assert cache.get("k0") is not None  # k0 is now the most recently used
    assert cache.put("k2", entry(2))
    files = sorted(p.name for p in (tmp_path / "c").glob(f"*{SUFFIX}"))
    assert len(files) == 2 and not cache.path_for("k1").exists()
    assert cache.counters.evictions == 1
    assert sum(p.stat().st_size for p in (tmp_path / "c").iterdir()) <= int(2.5 * size)
    tiny = DiskEmbeddingCache(tmp_path / "t", size // 2, SPACE)
    assert not tiny.put("big", entry(3)) and not list((tmp_path / "t").iterdir())  # larger than the bound


def test_a_starting_worker_reads_the_recent_entries_of_its_namespace_most_recent_first(
    tmp_path: Path,
) -> None:
    cache = DiskEmbeddingCache(tmp_path, 2**30, SPACE)
    other = DiskEmbeddingCache(tmp_path, 2**30, namespace("sam2.1_hiera_large", None, "sam2", "float32"))
    for i in range(4):
        assert cache.put(f"k{i}", entry(i))
        os.utime(cache.path_for(f"k{i}"), ns=(10**18 + i, 10**18 + i))
    assert other.put("newest-of-another-model", entry(9))  # newer than all, but not this namespace
    (tmp_path / f"{'0' * 40}{SUFFIX}").write_bytes(b"not an entry")  # skipped, left alone
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    fresh = DiskEmbeddingCache(tmp_path, 2**30, SPACE)
    recent = fresh.recent(2)
    assert [key for key, _ in recent] == ["k3", "k2"]
    assert all(same(got, entry(int(key[1]))) for key, got in recent)
    assert fresh.counters.preloaded == 2 and fresh.counters.hits == 0 and fresh.counters.misses == 0
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == mtimes  # recency unchanged
    assert [key for key, _ in fresh.recent(10)] == ["k3", "k2", "k1", "k0"]
    assert fresh.recent(0) == []


def test_entries_map_onto_the_bytes_read_and_older_unaligned_files_still_read(tmp_path: Path) -> None:
    cache = DiskEmbeddingCache(tmp_path, 2**30, SPACE)
    assert cache.put("k", entry(1))
    raw = cache.path_for("k").read_bytes()
    header_len = int.from_bytes(raw[8:12], "little")
    assert (12 + header_len) % 64 == 0  # the payload starts aligned
    got = cache.get("k")
    assert got is not None and same(got, entry(1))
    # the tensors lie one after another in the one buffer read (no copy per tensor)
    tensors = (got.image_embed, *got.high_res_feats)
    starts = [t.data_ptr() for t in tensors]
    assert [b - a for a, b in zip(starts[:-1], starts[1:], strict=True)] == [t.nbytes for t in tensors[:-1]]
    # a file written before the padding (header without trailing spaces) reads the same
    header = raw[12 : 12 + header_len].rstrip(b" ")
    cache.path_for("k").write_bytes(
        raw[:8] + len(header).to_bytes(4, "little") + header + raw[12 + header_len :]
    )
    old = DiskEmbeddingCache(tmp_path, 2**30, SPACE).get("k")
    assert old is not None and same(old, entry(1))


WRITER = textwrap.dedent(
    """
    import sys, torch
    from workers.cache import EmbeddingEntry
    from workers.disk_cache import DiskEmbeddingCache
    directory, space, limit, who = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    cache = DiskEmbeddingCache(directory, limit, space)
    bad = 0
    for i in range(60):
        key = f"k{i % 6}"
        g = torch.Generator().manual_seed(i % 6)
        e = EmbeddingEntry(torch.randn(1, 8, 32, 32, generator=g), (torch.randn(1, 2, 64, 64, generator=g),
                           torch.randn(1, 4, 32, 32, generator=g)), (i % 6 + 1, 7))
        cache.put(key, e)
        got = cache.get(f"k{(i + who) % 6}")
        if got is not None and got.orig_hw != ((i + who) % 6 + 1, 7):
            bad += 1
    print("corrupt", cache.counters.corrupt, "bad", bad, "hits", cache.counters.hits)
    """
)


def test_two_writer_processes_never_see_a_half_written_entry(tmp_path: Path) -> None:
    probe = DiskEmbeddingCache(tmp_path / "probe", 2**30, SPACE)
    probe.put(
        "x",
        EmbeddingEntry(
            torch.zeros(1, 8, 32, 32), (torch.zeros(1, 2, 64, 64), torch.zeros(1, 4, 32, 32)), (1, 1)
        ),
    )
    size = probe.path_for("x").stat().st_size
    limit = 4 * size  # 6 keys, room for 4: the writers also evict each other's entries
    directory = tmp_path / "shared"
    procs = [
        subprocess.Popen(
            [PYTHON, "-c", WRITER, str(directory), SPACE, str(limit), str(who)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for who in (1, 2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    for out in outputs:
        assert "corrupt 0 bad 0" in out, out
    assert sum(p.stat().st_size for p in directory.glob(f"*{SUFFIX}")) <= limit
    assert not list(directory.glob("*.tmp"))


@pytest.mark.model
def test_a_restarted_worker_answers_from_the_disk_cache_without_encoding(
    spawn: ProcessSpawner, random_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = tmp_path / "embeddings"
    monkeypatch.setenv("SAM2_DISK_CACHE_DIR", str(disk))
    monkeypatch.setenv("SAM2_DISK_CACHE_GIB", "1")
    backend = Backend(spawn, random_checkpoint, heartbeat_interval_s=0.5)
    first = backend.add_worker(threads=2)
    rng = np.random.default_rng(5)
    older, newer = (rng.integers(0, 256, (200, 300), dtype=np.uint8) for _ in range(2))
    params = {"points": [[100, 150]], "point_labels": [1]}
    with SamClient(
        backend.frontend, "sam2.1_hiera_tiny", config=ClientConfig(timeout_s=60.0, retries=0)
    ) as client:
        before = [client.call("segment", params, image=image) for image in (older, newer)]
        assert wait_until(lambda: len(list(disk.glob(f"*{SUFFIX}"))) == 2, 30)
        os.kill(first.pid, signal.SIGKILL)  # no goodbye: the broker drops it at its liveness timeout
        first.wait(10)
        # preloads the most recently used entry (``newer``) at start; ``older`` is read when asked for
        second = backend.add_worker(threads=2, extra=["--disk-cache-preload", "1"])
        assert wait_until(lambda: client.services().get("sam2.1_hiera_tiny", {}).get("workers") == 1, 30)
        started = time.perf_counter()
        # the client knows the keys: only the keys travel
        after = [client.call("segment", params, image=image) for image in (newer, older)][::-1]
        elapsed_s = time.perf_counter() - started
        info = client.call("info").header["result"]
    assert info["pid"] == second.pid, log_text(second)
    assert info["counters"]["encoder_runs"] == 0 and info["counters"]["images_received"] == 0
    assert info["disk_cache"]["preloaded"] == 1, info["disk_cache"]
    assert info["disk_cache"]["hits"] == 1 and info["disk_cache"]["corrupt"] == 0, info["disk_cache"]
    assert info["cache"]["misses"] == 1, info["cache"]  # only older was not in memory
    text = log_text(second)  # the decoder is warmed up on the compute thread before READY
    assert 0 <= text.find("decoder warmed up in") < text.find("worker ready"), text
    assert "1 embeddings read from the disk cache" in text
    # what Encode stack reads from a real worker's info to say how much its disk cache keeps
    entry_bytes = info["cache"]["bytes"] // info["cache"]["entries"]
    assert disk_capacity(info) == (str(disk), (1 << 30) // entry_bytes)
    for was, now in zip(before, after, strict=True):
        assert np.array_equal(was.arrays["mask"], now.arrays["mask"])
        # the same embedding; the decoder's float sums may differ in the last bits between processes
        assert now.header["result"]["scores"] == pytest.approx(was.header["result"]["scores"], rel=1e-5)
    assert elapsed_s < 30.0
