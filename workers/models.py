"""The SAM2 model registry, checkpoint loading and random-weight checkpoints.

A model name (the MDP service name, e.g. ``sam2.1_hiera_tiny``) maps to the
sam2 package's Hydra config, the official checkpoint file name and its URL.
Checkpoints use Meta's layout, ``{"model": state_dict}``, and are loaded with
``map_location="cpu", weights_only=True``; any missing or unexpected key is
an error, never a silently half-initialised model.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from protocol.runtime import checkpoints

log = logging.getLogger(__name__)

RANDOM_WEIGHTS_SEED = 0


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the registry.

    Attributes:
        name: service/model name, e.g. ``"sam2.1_hiera_tiny"``.
        config: Hydra config inside the ``sam2`` package, e.g. ``"configs/sam2.1/sam2.1_hiera_t.yaml"``.
        checkpoint_file: official checkpoint file name, e.g. ``"sam2.1_hiera_tiny.pt"``.
    """

    name: str
    config: str
    checkpoint_file: str

    @property
    def url(self) -> str:
        """Official download URL of the checkpoint."""
        return checkpoints.BASE_URL + self.checkpoint_file

    @property
    def default_checkpoint_path(self) -> Path:
        """``<checkpoint dir>/<checkpoint_file>`` (``protocol.runtime.checkpoints.checkpoint_dir``:
        ``$SAM2_CHECKPOINT_DIR``, the repository's ``checkpoints/``, or a per-user cache)."""
        return checkpoints.checkpoint_dir() / self.checkpoint_file


def _spec(name: str, suffix: str) -> ModelSpec:
    return ModelSpec(name, f"configs/sam2.1/sam2.1_hiera_{suffix}.yaml", f"{name}.pt")


MODELS: Mapping[str, ModelSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            _spec("sam2.1_hiera_tiny", "t"),
            _spec("sam2.1_hiera_small", "s"),
            _spec("sam2.1_hiera_base_plus", "b+"),
            _spec("sam2.1_hiera_large", "l"),
        )
    }
)


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


def get_spec(name: str) -> ModelSpec:
    """Registry entry for ``name``.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None


def how_to_get(spec: ModelSpec, path: Path) -> str:
    """Human instructions for obtaining the checkpoint of ``spec`` at ``path``."""
    command = checkpoints.download_command(spec.name)
    if checkpoints.source_checkout() is not None:
        command = f"checkpoints/download.sh {spec.name}"
    return (
        f"Get it with `{command}`, or download {spec.url} to {path}, "
        f"or pass --checkpoint PATH. For tests only, --random-weights runs without a checkpoint "
        f"(masks are then meaningless)."
    )


def build_random(name: str, seed: int = RANDOM_WEIGHTS_SEED) -> torch.nn.Module:
    """Build the real SAM2 model ``name`` on the CPU with random (seeded) weights.

    The global torch RNG state is left untouched.
    """
    from sam2.build_sam import build_sam2

    spec = get_spec(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model: torch.nn.Module = build_sam2(spec.config, None, device="cpu", mode="eval")
    return model


def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    try:
        checkpoint: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from e
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
) -> torch.nn.Module:
    """Build SAM2 model ``name``, load its checkpoint, move it to ``device`` in eval mode.

    Args:
        name: registry name, e.g. ``"sam2.1_hiera_tiny"``.
        checkpoint_path: ``.pt`` file in the official layout; ``None`` means
            the registry's default path.
        device: torch device for the model.
        random_weights: build without any checkpoint (seeded random weights).
            Masks are then meaningless; a loud warning is logged.

    Raises:
        ValueError: unknown model name.
        CheckpointError: missing, unreadable or mismatching checkpoint.
    """
    spec = get_spec(name)
    if random_weights:
        log.warning(
            "!!! RANDOM WEIGHTS: model %s is built WITHOUT a checkpoint; every mask it returns is "
            "MEANINGLESS. Use this for tests only. !!!",
            name,
        )
        model = build_random(name)
    else:
        path = Path(checkpoint_path) if checkpoint_path is not None else spec.default_checkpoint_path
        if not path.is_file():
            raise CheckpointError(f"checkpoint for {name} not found at {path}. {how_to_get(spec, path)}")
        state_dict = _read_state_dict(path)
        from sam2.build_sam import build_sam2

        model = build_sam2(spec.config, None, device="cpu", mode="eval")
        load_state_dict_strict(model, state_dict, path)
        log.info("loaded checkpoint %s for %s", path, name)
    model = model.to(device)
    model.eval()
    return model


def write_random_checkpoint(name: str, path: Path | str, seed: int = RANDOM_WEIGHTS_SEED) -> Path:
    """Save the real model ``name`` with random weights as ``{"model": state_dict}`` at ``path``.

    FOR TESTS ONLY: the masks of such a model are meaningless. The file is
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
            torch.save({"model": state_dict}, f)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path
