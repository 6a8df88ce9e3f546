"""Benchmark 5: blosc2 codec, filter and level on real images and on masks.

Data: scikit-image's bundled samples (``cell``: phase-contrast microscopy,
``immunohistochemistry``: bright-field IHC microscopy, ``retina``: fundus
photograph), a noisy 16-bit synthetic fluorescence stack (Gaussian cells,
Poisson shot noise, camera offset and read noise; one 2048² slice and an
8 x 1024² stack) and what workers send back: a SAM-like boolean mask
(1024², 2048²) and an automatic-segmentation label image (uint32, 2048²).

For every (codec, filter, level): compression ratio, compression and
decompression speed (GB/s of uncompressed data, decompressing into a
preallocated buffer, as ``protocol.wire.codec`` does), and the time to move the
data set over a link: compress + transfer + decompress, at 10 Gbit/s, 1 Gbit/s
and 100 Mbit/s. Then ``protocol.wire.codec``'s defaults end to end and what
zero-copy frames save on large messages.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import blosc2
import numpy as np
import zmq

from bench.common import BenchResult, Table, Target, fmt, quick_main
from protocol.wire import codec

LINKS_GBIT = (10.0, 1.0, 0.1)
# A default is justified when no setting beats it on every link by more than this factor.
DOMINANCE = 1.2
FILTERS = {
    "noshuffle": [blosc2.Filter.NOFILTER],
    "shuffle": [blosc2.Filter.SHUFFLE],
    "bitshuffle": [blosc2.Filter.BITSHUFFLE],
    "shuffle+bytedelta": [blosc2.Filter.SHUFFLE, blosc2.Filter.BYTEDELTA],
}
CODECS = {
    "blosclz": blosc2.Codec.BLOSCLZ,
    "lz4": blosc2.Codec.LZ4,
    "lz4hc": blosc2.Codec.LZ4HC,
    "zstd": blosc2.Codec.ZSTD,
}


@dataclass(frozen=True)
class Config:
    """One blosc2 setting."""

    codec: str
    filter: str
    clevel: int

    @property
    def label(self) -> str:
        return f"{self.codec} {self.filter} {self.clevel}"


@dataclass(frozen=True)
class Measurement:
    """One setting on one array."""

    nbytes: int
    cbytes: int
    compress_s: float
    decompress_s: float

    @property
    def ratio(self) -> float:
        return self.nbytes / self.cbytes

    def link_s(self, gbit: float) -> float:
        """Compress, send the compressed bytes at ``gbit`` Gbit/s, decompress."""
        return self.compress_s + self.cbytes * 8 / (gbit * 1e9) + self.decompress_s


# ----------------------------------------------------------------------------
# data


def synthetic_stack(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A noisy 16-bit fluorescence-like stack: Gaussian cells, shot noise, offset, read noise.

    Returns:
        uint16 array of ``shape`` (Z, Y, X), values roughly 90..4000 (12-bit camera).
    """
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    depth, height, width = shape
    density = np.zeros(shape, dtype=np.float32)
    cells = max(1, height * width // 4000)
    for z in range(depth):
        rows = rng.integers(0, height, cells)
        cols = rng.integers(0, width, cells)
        np.add.at(density[z], (rows, cols), rng.uniform(400, 2500, cells).astype(np.float32) * 60)
    density = gaussian_filter(density, sigma=(1.0, 5.0, 5.0))
    photons = rng.poisson(density + 20.0).astype(np.float32)
    image = 100.0 + photons + rng.normal(0.0, 3.0, shape).astype(np.float32)
    return np.clip(image, 0, 4095).astype(np.uint16)


def sam_like_mask(size: int, seed: int = 0) -> np.ndarray:
    """A single smooth blob covering ~5 % of a (size, size) image, as SAM answers a click."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = np.arctan2(rows - 0.45, cols - 0.55)
    radius = 0.12 * (1 + 0.15 * np.sin(3 * angle + rng.uniform(0, 6)) + 0.05 * np.sin(7 * angle))
    return np.hypot(rows - 0.45, cols - 0.55) < radius


def auto_labels(size: int, seed: int = 0) -> np.ndarray:
    """An automatic-segmentation answer: many objects with ids 1..n (uint32)."""
    from skimage.data import binary_blobs
    from skimage.measure import label

    blobs = binary_blobs(length=size, blob_size_fraction=0.02, volume_fraction=0.3, rng=seed)
    return label(blobs).astype(np.uint32)


Group = tuple[str, list[tuple[str, np.ndarray]]]


def datasets(quick: bool) -> list[Group]:
    """Named arrays as they cross the wire, grouped the way the codec chooses settings (by dtype).

    Only scikit-image's bundled samples are used (nothing is downloaded).
    """
    from skimage import data

    uint8 = [
        ("cell (660x550 uint8, phase contrast)", data.cell()),
        ("immunohistochemistry (512² RGB uint8)", data.immunohistochemistry()),
    ]
    if quick:
        return [
            ("uint8 images", uint8),
            (
                "uint16 images",
                [("noisy fluorescence slice (512² uint16)", synthetic_stack((1, 512, 512))[0])],
            ),
            ("bool masks", [("SAM mask (512² bool)", sam_like_mask(512))]),
            (
                "uint32",
                [
                    ("auto labels (512² uint32)", auto_labels(512)),
                    (
                        "noisy slice stored as uint32 (512²)",
                        synthetic_stack((1, 512, 512))[0].astype(np.uint32),
                    ),
                ],
            ),
        ]
    uint8.append(("retina (1411² RGB uint8)", data.retina()))
    uint16 = [
        ("noisy fluorescence slice (2048² uint16)", synthetic_stack((1, 2048, 2048), seed=1)[0]),
        ("noisy fluorescence stack (8x1024² uint16)", synthetic_stack((8, 1024, 1024))),
    ]
    masks = [
        ("SAM mask (1024² bool)", sam_like_mask(1024)),
        ("SAM mask (2048² bool)", sam_like_mask(2048, 1)),
    ]
    uint32 = [
        ("auto labels (2048² uint32)", auto_labels(2048)),
        ("noisy fluorescence slice stored as uint32 (2048²)", uint16[0][1].astype(np.uint32)),
    ]
    return [("uint8 images", uint8), ("uint16 images", uint16), ("bool masks", masks), ("uint32", uint32)]


# ----------------------------------------------------------------------------
# measuring


def measure(array: np.ndarray, config: Config, repeats: int) -> Measurement:
    """Median compress and decompress time of ``array`` with ``config``."""
    compress_s, decompress_s = [], []
    chunk = b""
    warmup = 1 if array.nbytes < (4 << 20) else 0  # small arrays: the first call is much slower
    for i in range(repeats + warmup):
        started = time.perf_counter()
        chunk = blosc2.compress2(
            array,
            typesize=array.itemsize,
            clevel=config.clevel,
            codec=CODECS[config.codec],
            filters=FILTERS[config.filter],
        )
        if i >= warmup:
            compress_s.append(time.perf_counter() - started)
    out = np.empty_like(array)
    for i in range(repeats + warmup):
        started = time.perf_counter()
        blosc2.decompress2(chunk, dst=out)
        if i >= warmup:
            decompress_s.append(time.perf_counter() - started)
    if not np.array_equal(out, array):
        raise RuntimeError(f"{config.label}: round trip changed the data")
    return Measurement(array.nbytes, len(chunk), float(np.median(compress_s)), float(np.median(decompress_s)))


def configs(quick: bool) -> list[Config]:
    """Settings to measure. zstd and lz4hc stop at level 5: at 9 they compress below 0.05 GB/s."""
    if quick:
        return [Config(c, f, 5) for c in ("lz4", "zstd") for f in ("noshuffle", "shuffle", "bitshuffle")] + [
            Config("zstd", "shuffle", 1)
        ]
    levels = {"blosclz": (1, 5, 9), "lz4": (1, 5, 9), "lz4hc": (1, 5), "zstd": (1, 5)}
    return [Config(c, f, level) for c in CODECS for f in FILTERS for level in levels[c]]


def default_config(array: np.ndarray) -> Config:
    """The setting ``protocol.wire.codec.encode`` uses for ``array``."""
    codec_id, filters, clevel = codec.compression_for(array, codec.DEFAULT_COMPRESSION)
    names = {v: k for k, v in CODECS.items()}
    filter_names = {tuple(v): k for k, v in FILTERS.items()}
    return Config(names[codec_id], filter_names[tuple(filters)], clevel)


Row = tuple[float, float, float, list[float]]


def group_rows(
    named: list[tuple[str, np.ndarray]], results: dict[tuple[str, Config], Measurement]
) -> dict[Config, Row]:
    """Per setting, over the arrays of one group: geo-mean ratio, compress and decompress GB/s,
    and the seconds to move them all at each of ``LINKS_GBIT``."""
    total_bytes = sum(array.nbytes for _, array in named)
    rows = {}
    for config in {config for _, config in results}:
        ms = [results[(name, config)] for name, _ in named]
        rows[config] = (
            math.exp(sum(math.log(m.ratio) for m in ms) / len(ms)),
            total_bytes / sum(m.compress_s for m in ms) / 1e9,
            total_bytes / sum(m.decompress_s for m in ms) / 1e9,
            [sum(m.link_s(g) for m in ms) for g in LINKS_GBIT],
        )
    return rows


def ranked(rows: dict[Config, Row], link: int) -> list[Config]:
    """Settings from fastest to slowest on link number ``link`` of ``LINKS_GBIT``."""
    return sorted(rows, key=lambda config: rows[config][3][link])


def worst_slowdown(rows: dict[Config, Row], config: Config) -> float:
    """``config``'s largest time / best time over the links."""
    return max(rows[config][3][i] / min(r[3][i] for r in rows.values()) for i in range(len(LINKS_GBIT)))


def compromise(rows: dict[Config, Row]) -> Config:
    """The setting whose worst slowdown over the links is smallest (no link is badly served)."""
    return min(rows, key=lambda c: worst_slowdown(rows, c))


def group_table(
    group: str, named: list[tuple[str, np.ndarray]], rows: dict[Config, Row], default: Config, top: int
) -> Table:
    """The ``top`` settings at 1 Gbit/s, the best at each link, and the default, for one group."""
    by_link = [ranked(rows, i) for i in range(len(LINKS_GBIT))]
    shown = list(
        dict.fromkeys([*by_link[1][:top], *(order[0] for order in by_link), compromise(rows), default])
    )
    table = Table(
        f"{group}: {'; '.join(name for name, _ in named)}",
        [
            "codec filter level",
            "rank @ 10 / 1 / 0.1 Gbit/s",
            "ratio (geo-mean)",
            "compress GB/s",
            "decompress GB/s",
            *(f"move all, ms @ {g:g} Gbit/s" for g in LINKS_GBIT),
        ],
    )
    for config in shown:
        ratio, c_gbs, d_gbs, links = rows[config]
        ranks = " / ".join(str(order.index(config) + 1) for order in by_link)
        label = config.label + (" (default)" if config == default else "")
        table.add(label, ranks, fmt(ratio), fmt(c_gbs), fmt(d_gbs), *(fmt(v * 1000, 1) for v in links))
    raw = [sum(a.nbytes for _, a in named) * 8 / (g * 1e9) for g in LINKS_GBIT]
    table.add("raw (no compression)", "-", "1.00", "-", "-", *(fmt(v * 1000, 1) for v in raw))
    table.note = (
        f"{len(rows)} settings measured; shown: the {top} fastest at 1 Gbit/s, the fastest per link, "
    )
    table.note += "the best compromise (smallest worst-link slowdown) and the default."
    return table


def end_to_end_table(named: list[tuple[str, np.ndarray]], repeats: int) -> Table:
    """``protocol.wire.codec.encode`` / ``decode`` with the defaults (validation included)."""
    table = Table(
        "protocol.wire.codec with its defaults, end to end (validation, header, blosc2)",
        ["data", "MB", "encode ms", "decode ms", "wire MB"],
    )
    for name, array in named:
        header = {"op": "echo", "request_id": "bench"}
        encode_s, decode_s = [], []
        frames: list[bytes | memoryview] = []
        for _ in range(repeats):
            started = time.perf_counter()
            frames = codec.encode(header, {"image": array})
            encode_s.append(time.perf_counter() - started)
        for _ in range(repeats):
            started = time.perf_counter()
            codec.decode(frames)
            decode_s.append(time.perf_counter() - started)
        wire = sum(memoryview(f).nbytes for f in frames)
        table.add(
            name,
            fmt(array.nbytes / 1e6, 1),
            fmt(float(np.median(encode_s)) * 1000),
            fmt(float(np.median(decode_s)) * 1000),
            fmt(wire / 1e6, 2),
        )
    return table


def zero_copy_table(sizes_mib: Sequence[int], repeats: int) -> Table:
    """What one large frame costs the sending and the receiving thread, copying or not."""
    table = Table(
        "One large frame over loopback TCP: time in the application thread (ms, median)",
        ["MiB", "send copy=True", "send copy=False", "recv copy=True", "recv copy=False"],
    )
    context = zmq.Context()
    push, pull = context.socket(zmq.PUSH), context.socket(zmq.PULL)
    for sock in (push, pull):
        sock.linger = 0
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push.connect(f"tcp://127.0.0.1:{port}")
    try:
        for mib in sizes_mib:
            payload = np.random.default_rng(0).integers(0, 255, mib << 20, dtype=np.uint8)
            send_s: dict[bool, list[float]] = {True: [], False: []}
            recv_s: dict[bool, list[float]] = {True: [], False: []}
            for i in range(repeats + 1):
                for copy in (True, False):
                    started = time.perf_counter()
                    push.send(payload.data, 0, copy)
                    sent = time.perf_counter() - started
                    if not pull.poll(30_000):
                        raise RuntimeError("frame not delivered within 30 s")
                    started = time.perf_counter()
                    pull.recv(copy=copy)
                    received = time.perf_counter() - started
                    if i:  # the first round warms the connection up
                        send_s[copy].append(sent)
                        recv_s[copy].append(received)
            table.add(
                mib,
                *(fmt(float(np.median(samples)) * 1000, 2) for samples in (send_s[True], send_s[False])),
                *(fmt(float(np.median(samples)) * 1000, 2) for samples in (recv_s[True], recv_s[False])),
            )
    finally:
        context.destroy(linger=0)
    table.note = (
        "copy=True costs a memcpy of the whole frame in the calling thread (holding the GIL) on each side. "
        "wire.client, the broker and the worker send and receive with copy=False, so large frames are "
        "never copied by pyzmq (it copies frames below zmq.COPY_THRESHOLD, 64 KiB, anyway)."
    )
    return table


def run(quick: bool = False) -> BenchResult:
    """Run benchmark 5 and return its tables and target."""
    result = BenchResult("codec", "5. Codec: blosc2 settings on images and masks")
    groups = datasets(quick)
    repeats = 2 if quick else 3
    all_configs = configs(quick)
    results: dict[tuple[str, Config], Measurement] = {}
    for _, named in groups:
        for name, array in named:
            for config in all_configs:
                results[(name, config)] = measure(array, config, repeats)

    verdicts = Table(
        "protocol.wire.codec's defaults against the settings measured (time to compress, move and decompress "
        "each group; slowdown = time / fastest time for that link)",
        [
            "data",
            "default",
            *(f"@ {g:g} Gbit/s: fastest; default's slowdown" for g in LINKS_GBIT),
            "best compromise (worst slowdown)",
            "default's worst slowdown",
        ],
    )
    dominated: dict[str, list[Config]] = {}
    for group, named in groups:
        rows = group_rows(named, results)
        default = default_config(named[0][1])
        if default not in rows:  # the quick run measures few settings
            rows.update(group_rows(named, {(n, default): measure(a, default, repeats) for n, a in named}))
        result.tables.append(group_table(group, named, rows, default, top=3 if quick else 6))
        cells = []
        for i in range(len(LINKS_GBIT)):
            fastest = ranked(rows, i)[0]
            cells.append(f"{fastest.label}; {rows[default][3][i] / rows[fastest][3][i]:.2f}")
        best = compromise(rows)
        dominated[group] = [
            c
            for c in rows
            if all(rows[c][3][i] * DOMINANCE < rows[default][3][i] for i in range(len(LINKS_GBIT)))
        ]
        verdicts.add(
            group,
            default.label,
            *cells,
            f"{best.label} ({worst_slowdown(rows, best):.2f})",
            f"{worst_slowdown(rows, default):.2f}",
        )
    verdicts.note = (
        "Loopback TCP moves about 10 Gbit/s here (last table), so 10 Gbit/s stands for a local backend, "
        f"1 Gbit/s for a lab network, 0.1 Gbit/s for a remote server. blosc2 uses {blosc2.nthreads} threads."
    )
    result.tables.append(verdicts)
    everything = [item for _, named in groups for item in named]
    result.tables.append(end_to_end_table(everything, repeats))
    result.tables.append(zero_copy_table((8,) if quick else (8, 64, 256), repeats))
    for group, better in dominated.items():
        example = f" (e.g. {min(better, key=lambda c: c.label).label})" if better else ""
        result.targets.append(
            Target(
                f"codec: {group}: settings faster than the default on every link by > "
                f"{DOMINANCE - 1:.0%} (timing noise here)",
                f"{len(better)}{example}",
                "0",
                not better,
            )
        )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    return quick_main(run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
