"""Download official SAM 2.1 checkpoints into checkpoints/ (stdlib only).

Usage: python checkpoints/download.py [tiny|small|base_plus|large|all|MODEL_NAME ...]

Meta publishes no checksums for these files, so each download is checked
three ways before it is moved to its final name: the byte count equals the
server's Content-Length, it lies in the size window known for that model,
and it starts with the zip signature of a torch checkpoint. The worker then
loads it with ``weights_only=True`` and fails loudly on missing keys.
Downloads go to ``NAME.pt.part`` and are renamed only when complete.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
# model name -> (file name, min MiB, max MiB)
CHECKPOINTS = {
    "sam2.1_hiera_tiny": ("sam2.1_hiera_tiny.pt", 140, 170),
    "sam2.1_hiera_small": ("sam2.1_hiera_small.pt", 165, 195),
    "sam2.1_hiera_base_plus": ("sam2.1_hiera_base_plus.pt", 290, 340),
    "sam2.1_hiera_large": ("sam2.1_hiera_large.pt", 800, 920),
}
HERE = Path(__file__).resolve().parent


def resolve(name: str) -> list[str]:
    if name == "all":
        return list(CHECKPOINTS)
    full = name if name.startswith("sam2.1_hiera_") else f"sam2.1_hiera_{name}"
    if full not in CHECKPOINTS:
        raise SystemExit(f"unknown model {name!r}; choose from tiny, small, base_plus, large, all")
    return [full]


def download(model: str, dest_dir: Path = HERE) -> Path:
    file_name, min_mib, max_mib = CHECKPOINTS[model]
    final = dest_dir / file_name
    if final.exists():
        print(f"{final} already present")
        return final
    part = final.with_name(final.name + ".part")
    url = BASE_URL + file_name
    print(f"downloading {url}")
    with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
        expected = int(response.headers.get("Content-Length", "0"))
        done = 0
        while chunk := response.read(1 << 20):
            out.write(chunk)
            done += len(chunk)
            if expected:
                print(f"\r  {done >> 20} / {expected >> 20} MiB", end="", flush=True)
        print()
    size = part.stat().st_size
    problems = []
    if expected and size != expected:
        problems.append(f"got {size} bytes, server announced {expected}")
    if not (min_mib << 20) <= size <= (max_mib << 20):
        problems.append(f"{size >> 20} MiB is outside the expected {min_mib}-{max_mib} MiB")
    with open(part, "rb") as f:
        if f.read(2) != b"PK":
            problems.append("not a torch checkpoint (no zip signature)")
    if problems:
        part.unlink(missing_ok=True)
        raise SystemExit(f"{file_name}: download rejected: " + "; ".join(problems))
    os.replace(part, final)
    print(f"saved {final} ({size >> 20} MiB)")
    return final


def main(argv: list[str]) -> int:
    names = argv or ["tiny"]
    models = [m for name in names for m in resolve(name)]
    for model in models:
        try:
            download(model)
        except OSError as e:
            print(
                f"could not download {model}: {e}\n"
                f"Get it by hand from {BASE_URL}{CHECKPOINTS[model][0]} and put it in {HERE}/,\n"
                "or run the backend with --random-weights (for tests only: masks are meaningless).",
                file=sys.stderr,
            )
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
