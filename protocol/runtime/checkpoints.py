"""The official SAM 2.1 checkpoints: names, sizes, where they live, how to fetch them.

Standard library only (no torch), so a thin client install has it too. Used by
the plugin (its embedded backend finds or downloads the weights), the worker
(its default ``--checkpoint``) and ``checkpoints/download.py`` (a thin command
line over :func:`main`; ``python -m protocol.runtime.checkpoints tiny`` is the same
command where there is no repository).

Where checkpoints live (:func:`checkpoint_dir`), first match wins:

1. ``$SAM2_CHECKPOINT_DIR`` when set;
2. the repository's ``checkpoints/`` when running from a source checkout
   (the folder that holds ``download.py`` next to this package);
3. a per-user cache: ``$XDG_CACHE_HOME/napari-sam2-broker/checkpoints``
   (``~/.cache/napari-sam2-broker/checkpoints`` by default; on Windows under
   ``%LOCALAPPDATA%``).

Meta publishes no checksums for these files, so a download is checked three
ways before it gets its final name: the byte count equals the server's
Content-Length, it lies in the size window known for that model, and it
starts with the zip signature of a torch checkpoint. The worker then loads it
with ``weights_only=True`` and fails loudly on missing keys. Downloads go to
``NAME.pt.part`` and are renamed only when complete.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

DEFAULT_MODEL = "sam2.1_hiera_tiny"
BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
CHECKPOINT_DIR_ENV = "SAM2_CHECKPOINT_DIR"
CACHE_SUBDIR = Path("napari-sam2-broker") / "checkpoints"
_PREFIX = "sam2.1_hiera_"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Checkpoint:
    """One official checkpoint.

    Attributes:
        model: model (service) name, e.g. ``"sam2.1_hiera_tiny"``.
        file_name: the official file name, e.g. ``"sam2.1_hiera_tiny.pt"``.
        min_mib: smallest plausible size of the file, in MiB.
        max_mib: largest plausible size of the file, in MiB.
    """

    model: str
    file_name: str
    min_mib: int
    max_mib: int

    @property
    def url(self) -> str:
        """The official download URL."""
        return BASE_URL + self.file_name


CHECKPOINTS: Mapping[str, Checkpoint] = MappingProxyType(
    {
        c.model: c
        for c in (
            Checkpoint("sam2.1_hiera_tiny", "sam2.1_hiera_tiny.pt", 140, 170),
            Checkpoint("sam2.1_hiera_small", "sam2.1_hiera_small.pt", 165, 195),
            Checkpoint("sam2.1_hiera_base_plus", "sam2.1_hiera_base_plus.pt", 290, 340),
            Checkpoint("sam2.1_hiera_large", "sam2.1_hiera_large.pt", 800, 920),
        )
    }
)


class DownloadError(RuntimeError):
    """A checkpoint that could not be downloaded or failed its checks (the message says which)."""


def resolve(name: str) -> list[str]:
    """Model names for a command-line word: ``tiny`` / ``sam2.1_hiera_tiny`` / ``all``.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if name == "all":
        return list(CHECKPOINTS)
    full = name if name.startswith(_PREFIX) else _PREFIX + name
    if full not in CHECKPOINTS:
        short = ", ".join(m.removeprefix(_PREFIX) for m in CHECKPOINTS)
        raise ValueError(f"unknown model {name!r}; choose from {short}, all")
    return [full]


def source_checkout() -> Path | None:
    """The repository root when this package runs from a source checkout, else None (a wheel)."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "checkpoints" / "download.py").is_file() else None


def user_cache_dir() -> Path:
    """The per-user cache folder for checkpoints (see the module docstring)."""
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        base = Path(os.environ["LOCALAPPDATA"])
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / CACHE_SUBDIR


def checkpoint_dir() -> Path:
    """Where checkpoints are looked for and downloaded to (it may not exist yet)."""
    configured = os.environ.get(CHECKPOINT_DIR_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    root = source_checkout()
    return root / "checkpoints" if root is not None else user_cache_dir()


def checkpoint_path(model: str, directory: Path | None = None) -> Path:
    """Where ``model``'s weights are expected (``<dir>/<model>.pt`` for a model not listed here)."""
    known = CHECKPOINTS.get(model)
    file_name = known.file_name if known is not None else f"{model}.pt"
    return (directory if directory is not None else checkpoint_dir()) / file_name


def download_command(model: str) -> str:
    """The command a user types to fetch ``model``'s checkpoint (the repo script in a checkout)."""
    if source_checkout() is not None:
        return f"python checkpoints/download.py {model}"
    return f"python -m protocol.runtime.checkpoints {model}"


def download(
    model: str,
    dest_dir: Path | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    timeout_s: float = 60.0,
) -> Path:
    """Download ``model``'s official checkpoint into ``dest_dir`` (default :func:`checkpoint_dir`).

    Args:
        model: full model name (see :func:`resolve` for short names).
        dest_dir: target folder, created when missing.
        progress: called with (bytes done, bytes expected or 0) after each MiB.
        should_stop: polled after each MiB; True abandons the download.
        timeout_s: socket timeout of each network read.

    Returns:
        The checkpoint's path (at once when the file is already there).

    Raises:
        DownloadError: unknown model, network failure, a stop, or a file that
            fails its checks; nothing is left under the final name then.
    """
    spec = CHECKPOINTS.get(model)
    if spec is None:
        raise DownloadError(f"unknown model {model!r}; known models: {', '.join(CHECKPOINTS)}")
    final = checkpoint_path(model, dest_dir)
    if final.is_file():
        return final
    part = final.with_name(final.name + ".part")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(spec.url, timeout=timeout_s) as response, open(part, "wb") as out:
            expected = int(response.headers.get("Content-Length", "0"))
            done = 0
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, expected)
                if should_stop is not None and should_stop():
                    raise DownloadError(f"the download of {spec.file_name} was stopped")
    except OSError as e:
        part.unlink(missing_ok=True)
        raise DownloadError(f"could not download {spec.url}: {e}") from e
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    problems = _check(part, spec, expected)
    if problems:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{spec.file_name}: download rejected: " + "; ".join(problems))
    os.replace(part, final)
    return final


def _check(path: Path, spec: Checkpoint, expected: int) -> list[str]:
    size = path.stat().st_size
    problems = []
    if expected and size != expected:
        problems.append(f"got {size} bytes, server announced {expected}")
    if not (spec.min_mib << 20) <= size <= (spec.max_mib << 20):
        problems.append(f"{size >> 20} MiB is outside the expected {spec.min_mib}-{spec.max_mib} MiB")
    with open(path, "rb") as f:
        if f.read(2) != b"PK":
            problems.append("not a torch checkpoint (no zip signature)")
    return problems


def _print_progress(done: int, expected: int) -> None:
    if expected:
        print(f"\r  {done >> 20} / {expected >> 20} MiB", end="", flush=True)


def main(argv: list[str]) -> int:
    """Command line: download the named checkpoints (default ``tiny``); 0 on success, 2 bad usage."""
    in_checkout = source_checkout() is not None
    parser = argparse.ArgumentParser(
        prog="python checkpoints/download.py" if in_checkout else "python -m protocol.runtime.checkpoints",
        description="Download official SAM 2.1 checkpoints (checked: size, Content-Length, zip signature) "
        f"into {checkpoint_dir()} (${CHECKPOINT_DIR_ENV} chooses another folder).",
    )
    parser.add_argument(
        "models", nargs="*", default=["tiny"], help="tiny, small, base_plus, large, all or a full model name"
    )
    args = parser.parse_args(argv)
    try:
        models = [m for name in args.models for m in resolve(name)]
    except ValueError as e:
        parser.error(str(e))
    directory = checkpoint_dir()
    for model in models:
        path = checkpoint_path(model, directory)
        if path.is_file():
            print(f"{path} already present")
            continue
        print(f"downloading {CHECKPOINTS[model].url} to {directory}")
        try:
            path = download(model, directory, progress=_print_progress)
        except DownloadError as e:
            print(
                f"\n{e}\nGet it by hand from {CHECKPOINTS[model].url} and put it in {directory}/,\n"
                "or run the backend with --random-weights (for tests only: masks are meaningless).",
                file=sys.stderr,
            )
            return 1
        print(f"\nsaved {path} ({path.stat().st_size >> 20} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
