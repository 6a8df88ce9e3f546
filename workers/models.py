"""Building and loading SAM2-family models named in the registry.

Which models exist (config, checkpoint, preprocessing, licence, ...) is data:
:mod:`protocol.runtime.registry` (``protocol/runtime/models.toml`` plus a
user's ``--model-file``). This module builds the model an entry names and
loads its checkpoint. Checkpoints use Meta's layout, ``{"model":
state_dict}`` (micro-sam's fine-tunes add ``"model_type"``, which is
ignored), and are loaded with ``map_location="cpu", weights_only=True``; any
missing or unexpected key is an error, never a silently half-initialised
model. :func:`checkpoint_digest` gives the file's SHA-256 (cached by path,
size and mtime) and refuses one that differs from the entry's pin.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from protocol.runtime import checkpoints
from protocol.runtime.digests import DigestMismatch, check_pinned, file_sha256
from protocol.runtime.registry import ModelEntry, builtin, get_entry

log = logging.getLogger(__name__)

RANDOM_WEIGHTS_SEED = 0


@dataclass(frozen=True)
class ServedModel:
    """What a worker serves, as ``info`` reports it.

    Attributes:
        entry: the registry entry (family, preprocessing, licence, description, ...).
        checkpoint: the weights file loaded, or None (random weights, or a family without weights).
        sha256: the checkpoint's SHA-256, or None without a checkpoint.
    """

    entry: ModelEntry
    checkpoint: Path | None = None
    sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The registry's ``family``, ``description``, ``licence``, ``preprocessing``; the
        ``checkpoint`` file name and ``checkpoint_sha256``."""
        return {
            **self.entry.describe(),
            "checkpoint": None if self.checkpoint is None else self.checkpoint.name,
            "checkpoint_sha256": self.sha256,
        }


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, does not fit the model, or fails its SHA-256 pin."""


def get_spec(name: str, registry: Mapping[str, ModelEntry] | None = None) -> ModelEntry:
    """Registry entry ``name`` (default: the shipped registry).

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    return get_entry(name, registry)


def sam2_models(registry: Mapping[str, ModelEntry] | None = None) -> list[str]:
    """Names of the registry's ``sam2``-family entries (what this module can build)."""
    return [name for name, entry in (registry or builtin()).items() if entry.family == "sam2"]


def how_to_get(spec: ModelEntry, path: Path) -> str:
    """Human instructions for obtaining the checkpoint of ``spec`` at ``path``."""
    where = f"download {spec.url} to {path}" if spec.url else f"put the checkpoint at {path}"
    command = checkpoints.download_command(spec.name)
    if checkpoints.source_checkout() is not None:
        command = f"checkpoints/download.sh {spec.name}"
    fetch = f"Get it with `{command}`, or " if spec.url else ""
    return (
        f"{fetch}{where}, or pass --checkpoint PATH. For tests only, --random-weights runs without "
        f"a checkpoint (masks are then meaningless)."
    )


def checkpoint_digest(spec: ModelEntry, path: Path) -> str:
    """SHA-256 of the checkpoint at ``path`` (hashed once, then cached by path, size and mtime).

    Raises:
        CheckpointError: unreadable, or not the entry's pinned ``sha256``.
    """
    try:
        digest = file_sha256(path)
        check_pinned(path, digest.sha256, spec.sha256, f"model {spec.name}")
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    except DigestMismatch as e:
        raise CheckpointError(str(e)) from e
    log.info("checkpoint %s sha256=%s%s", path.name, digest.sha256, " (cached)" if digest.cached else "")
    return digest.sha256


def build_random(
    name: str, seed: int = RANDOM_WEIGHTS_SEED, registry: Mapping[str, ModelEntry] | None = None
) -> torch.nn.Module:
    """Build the real SAM2 model ``name`` on the CPU with random (seeded) weights.

    The global torch RNG state is left untouched.
    """
    from sam2.build_sam import build_sam2

    spec = get_spec(name, registry)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model: torch.nn.Module = build_sam2(spec.config, None, device="cpu", mode="eval")
    return model


def read_state_dict(path: Path, allow_bare: bool = False) -> Mapping[str, torch.Tensor]:
    """The state dict of the checkpoint at ``path``: its ``"model"`` dict (the official layout), or with
    ``allow_bare`` the file's own dict when it has no ``"model"`` key (SAM 3's files may be either).

    Raises:
        CheckpointError: unreadable, or not in the layout.
    """
    try:
        checkpoint: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from e
    if allow_bare and isinstance(checkpoint, dict) and "model" not in checkpoint:
        return checkpoint
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise CheckpointError(
            f"checkpoint {path} is not in the official layout: expected a dict with a 'model' state dict"
        )
    state_dict: Mapping[str, torch.Tensor] = checkpoint["model"]
    return state_dict


def _few(keys: list[str], n: int = 5) -> str:
    more = f" (and {len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_state_dict_strict(
    model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], path: Path
) -> None:
    """Load ``state_dict`` into ``model``; any missing/unexpected key or shape mismatch is an error.

    Raises:
        CheckpointError: naming ``path`` and a few offending keys.
    """
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as e:  # shape mismatches are raised even with strict=False
        raise CheckpointError(f"checkpoint {path} does not fit the model: {e}") from e
    problems = []
    if result.missing_keys:
        problems.append(f"{len(result.missing_keys)} missing keys: {_few(list(result.missing_keys))}")
    if result.unexpected_keys:
        problems.append(
            f"{len(result.unexpected_keys)} unexpected keys: {_few(list(result.unexpected_keys))}"
        )
    if problems:
        raise CheckpointError(
            f"checkpoint {path} does not match the model ({'; '.join(problems)}); "
            "is it the checkpoint of another model size?"
        )


def load_model(
    name: str,
    checkpoint_path: Path | str | None,
    device: torch.device | str,
    random_weights: bool = False,
    registry: Mapping[str, ModelEntry] | None = None,
) -> torch.nn.Module:
    """Build SAM2 model ``name``, load its checkpoint, move it to ``device`` in eval mode.

    Args:
        name: registry name, e.g. ``"sam2.1_hiera_tiny"``.
        checkpoint_path: ``.pt`` file in the official layout; ``None`` means
            the registry's default path.
        device: torch device for the model.
        random_weights: build without any checkpoint (seeded random weights).
            Masks are then meaningless; a loud warning is logged.
        registry: the model registry (default: the shipped one).

    Raises:
        ValueError: unknown model name.
        CheckpointError: missing, unreadable or mismatching checkpoint.
    """
    spec = get_spec(name, registry)
    if spec.family != "sam2":
        raise ValueError(f"model {name!r} is of family {spec.family!r}, not sam2")
    if random_weights:
        log.warning(
            "!!! RANDOM WEIGHTS: model %s is built WITHOUT a checkpoint; every mask it returns is "
            "MEANINGLESS. Use this for tests only. !!!",
            name,
        )
        model = build_random(name, registry=registry)
    else:
        path = Path(checkpoint_path) if checkpoint_path is not None else spec.checkpoint_path()
        if path is None:
            raise CheckpointError(f"model {name} names no checkpoint file in the registry ({spec.source})")
        if not path.is_file():
            raise CheckpointError(f"checkpoint for {name} not found at {path}. {how_to_get(spec, path)}")
        state_dict = read_state_dict(path)
        from sam2.build_sam import build_sam2

        model = build_sam2(spec.config, None, device="cpu", mode="eval")
        load_state_dict_strict(model, state_dict, path)
        log.info("loaded checkpoint %s for %s", path, name)
    model = model.to(device)
    model.eval()
    return model


def write_random_checkpoint(
    name: str, path: Path | str, seed: int = RANDOM_WEIGHTS_SEED, extra: Mapping[str, Any] | None = None
) -> Path:
    """Save the real model ``name`` with random weights as ``{"model": state_dict, **extra}`` at ``path``.

    FOR TESTS ONLY: the masks of such a model are meaningless. ``extra`` adds
    keys beside ``"model"`` (micro-sam's layout: ``{"model_type": "hvit_t"}``). The file is
    written to a temporary file next to ``path`` and moved into place, so a
    reader never sees a half-written checkpoint.

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state_dict = build_random(name, seed).state_dict()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"model": state_dict, **(extra or {})}, f)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path
