"""Checkpoint files: where they live and how to fetch them, for the models of the registry.

Standard library only (no torch), so a thin client install has it too. Used by
the plugin (its embedded backend finds or downloads the weights), the worker
(its default ``--checkpoint``) and ``checkpoints/download.py`` (a thin command
line over :func:`main`; ``python -m protocol.runtime.checkpoints tiny`` is the same
command where there is no repository).

Where checkpoints live: :func:`checkpoint_dir` (:mod:`protocol.runtime.paths`).

Which models exist, their file names, URLs, size windows and pinned SHA-256
come from the registry (:mod:`protocol.runtime.registry`, one home). Meta
publishes no checksums for its files, so a download is checked before it gets
its final name: the byte count equals the server's Content-Length, it lies in
the entry's ``size_mib`` window when one is given, it starts with the zip
signature of a torch checkpoint, and it has the entry's ``sha256`` when
pinned. The worker then loads it with ``weights_only=True`` and fails loudly
on missing keys. Downloads go to
``NAME.pt.part`` and are renamed only when complete.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from protocol.runtime.paths import CHECKPOINT_DIR_ENV, checkpoint_dir, source_checkout, user_cache_dir
from protocol.runtime.registry import ModelEntry, RegistryError, builtin, load_registry

__all__ = ["CHECKPOINT_DIR_ENV", "checkpoint_dir", "source_checkout", "user_cache_dir"]  # re-exported

DEFAULT_MODEL = "sam2.1_hiera_tiny"
_PREFIX = "sam2.1_hiera_"
_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A checkpoint that could not be downloaded or failed its checks (the message says which)."""


def downloadable(registry: Mapping[str, ModelEntry] | None = None) -> list[str]:
    """Names of the registry entries that have a download URL and a checkpoint file."""
    models = builtin() if registry is None else registry
    return [name for name, entry in models.items() if entry.url and entry.checkpoint]


def resolve(name: str, registry: Mapping[str, ModelEntry] | None = None) -> list[str]:
    """Model names for a command-line word: ``tiny`` (= ``sam2.1_hiera_tiny``), a full name, or ``all``.

    ``all`` means every entry with a download URL.

    Raises:
        ValueError: an unknown name, or one without a URL (the message lists the known ones).
    """
    known = downloadable(registry)
    if name == "all":
        return known
    full = _PREFIX + name if name not in known and _PREFIX + name in known else name
    entry = (builtin() if registry is None else registry).get(full)
    if entry is not None and entry.checkpoint and not entry.url:
        raise ValueError(
            f"model {full!r} has no download URL: this script cannot fetch it. Its weights may be gated "
            f"(SAM 3's are: see README.md, 'Models', and the entry's licence: {entry.licence}); download "
            f"{entry.checkpoint} yourself into {checkpoint_dir()}"
        )
    if full not in known:
        short = ", ".join(m.removeprefix(_PREFIX) for m in known)
        raise ValueError(f"unknown model {name!r} (or one without a download URL); choose from {short}, all")
    return [full]


def checkpoint_path(
    model: str, directory: Path | None = None, registry: Mapping[str, ModelEntry] | None = None
) -> Path:
    """Where ``model``'s weights are expected (``<dir>/<model>.pt`` for a model not in the registry)."""
    entry = (builtin() if registry is None else registry).get(model)
    path = entry.checkpoint_path(directory) if entry is not None else None
    if path is not None:
        return path
    return (directory if directory is not None else checkpoint_dir()) / f"{model}.pt"


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
    registry: Mapping[str, ModelEntry] | None = None,
) -> Path:
    """Download ``model``'s official checkpoint into ``dest_dir`` (default :func:`checkpoint_dir`).

    Args:
        model: full model name (see :func:`resolve` for short names).
        dest_dir: target folder, created when missing.
        progress: called with (bytes done, bytes expected or 0) after each MiB.
        should_stop: polled after each MiB; True abandons the download.
        timeout_s: socket timeout of each network read.
        registry: the model registry (default: the shipped one).

    Returns:
        The checkpoint's path (at once when the file is already there).

    Raises:
        DownloadError: unknown model, network failure, a stop, or a file that
            fails its checks; nothing is left under the final name then.
    """
    models = builtin() if registry is None else registry
    spec = models.get(model)
    if spec is None or not spec.url or not spec.checkpoint:
        raise DownloadError(
            f"unknown model {model!r} or no download URL; downloadable: {', '.join(downloadable(models))}"
        )
    final = checkpoint_path(model, dest_dir, models)
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
                    raise DownloadError(f"the download of {final.name} was stopped")
    except OSError as e:
        part.unlink(missing_ok=True)
        raise DownloadError(f"could not download {spec.url}: {e}") from e
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    problems = _check(part, spec, expected)
    if problems:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{final.name}: download rejected: " + "; ".join(problems))
    os.replace(part, final)
    return final


def _check(path: Path, spec: ModelEntry, expected: int) -> list[str]:
    from protocol.runtime.digests import hash_file

    size = path.stat().st_size
    problems = []
    if expected and size != expected:
        problems.append(f"got {size} bytes, server announced {expected}")
    if spec.size_mib is not None and not (spec.size_mib[0] << 20) <= size <= (spec.size_mib[1] << 20):
        problems.append(f"{size >> 20} MiB is outside the expected {spec.size_mib[0]}-{spec.size_mib[1]} MiB")
    with open(path, "rb") as f:
        if f.read(2) != b"PK":
            problems.append("not a torch checkpoint (no zip signature)")
    if spec.sha256 and not problems and (digest := hash_file(path)) != spec.sha256:
        problems.append(f"SHA-256 {digest} is not the pinned {spec.sha256}")
    return problems


def _print_progress(done: int, expected: int) -> None:
    if expected:
        print(f"\r  {done >> 20} / {expected >> 20} MiB", end="", flush=True)


def main(argv: Sequence[str]) -> int:
    """Command line: download the named checkpoints (default ``tiny``); 0 done, 1 failed, 2 bad usage."""
    in_checkout = source_checkout() is not None
    parser = argparse.ArgumentParser(
        prog="python checkpoints/download.py" if in_checkout else "python -m protocol.runtime.checkpoints",
        description="Download the checkpoints of registry models (checked: Content-Length, size window, "
        f"zip signature, pinned SHA-256) into {checkpoint_dir()} (${CHECKPOINT_DIR_ENV} chooses another "
        "folder).",
    )
    parser.add_argument(
        "models", nargs="*", help="tiny, small, base_plus, large, all or a full model name (default: tiny)"
    )
    parser.add_argument("--model", action="append", default=[], help="a registry model name (repeatable)")
    parser.add_argument(
        "--model-file", type=Path, action="append", default=[], help="extra model registry TOML file(s)"
    )
    args = parser.parse_args(list(argv))
    try:
        registry = load_registry(args.model_file)
        words = [*args.models, *args.model] or ["tiny"]
        models = [m for name in words for m in resolve(name, registry)]
    except (ValueError, RegistryError) as e:
        parser.error(str(e))
    directory = checkpoint_dir()
    for model in models:
        spec = registry[model]
        path = checkpoint_path(model, directory, registry)
        if path.is_file():
            print(f"{path} already present")
            continue
        print(f"downloading {spec.url} to {path}")
        if spec.licence:
            print(f"  licence: {spec.licence}")
        try:
            path = download(model, directory, progress=_print_progress, registry=registry)
        except DownloadError as e:
            print(
                f"\n{e}\nGet it by hand from {spec.url} and save it as {path},\n"
                "or run the backend with --random-weights (for tests only: masks are meaningless).",
                file=sys.stderr,
            )
            return 1
        print(f"\nsaved {path} ({path.stat().st_size >> 20} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
