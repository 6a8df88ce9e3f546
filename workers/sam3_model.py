"""Building and loading SAM 3 image models (family ``sam3``) named in the registry.

The model is Meta's ``sam3`` package (0.1.4), built the way its
``build_sam3_image_model(load_from_HF=False)`` builds it (the same ``sam3``
parts, never a download), with two differences:

* the widths of the vision backbone (ViT) and the text encoder, and the input
  resolution, come from a :class:`Sam3Architecture`: the official one by
  default, or a small TOML file named by the entry's ``config`` (a narrower
  variant, such as the tests' random-weight one);
* the model is built on the worker's device inside :func:`follow_device`, so
  the CUDA that ``sam3`` hard-codes follows the worker's device
  (``workers/sam3_device.py``).

Checkpoints: Meta's ``sam3.pt`` layout, ``{"model": state_dict}`` or a bare
state dict, whose image-model keys start with ``detector.`` (the ``tracker.``
keys of the video model are not used). A missing key or a shape mismatch is
a :class:`~workers.models.CheckpointError`; extra ``detector.`` keys (parts
the image model does not build) are logged.

The wheel lacks its BPE vocabulary; :func:`bpe_path` takes it from the
``sam3`` package when present, else from ``open_clip_torch``, which ships the
same file.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from protocol.runtime.registry import ModelEntry
from workers.models import CheckpointError, how_to_get, load_state_dict_strict, read_state_dict
from workers.sam3_device import follow_device

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

log = logging.getLogger(__name__)

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
CHECKPOINT_PREFIX = "detector."
GATED_PAGE = "https://huggingface.co/facebook/sam3"
"""Where a user asks for SAM 3's weights (gated: Meta's licence must be accepted)."""
RANDOM_WEIGHTS_SEED = 0


@dataclass(frozen=True)
class Sam3Architecture:
    """The sizes that tell SAM 3 variants apart (defaults: Meta's released model, 840 M parameters).

    Attributes:
        resolution: side of the square model input in pixels (a multiple of ``patch_size`` 14).
        vit_width, vit_depth, vit_heads: the vision transformer's embedding width, blocks and heads.
        vit_global_blocks: the blocks with global (not windowed) attention.
        text_width, text_layers, text_heads: the text encoder's width, layers and heads.
    """

    resolution: int = 1008
    vit_width: int = 1024
    vit_depth: int = 32
    vit_heads: int = 16
    vit_global_blocks: tuple[int, ...] = (7, 15, 23, 31)
    text_width: int = 1024
    text_layers: int = 24
    text_heads: int = 16

    def to_toml(self) -> str:
        """The ``[sam3]`` table :func:`read_architecture` reads back."""
        lines = ["[sam3]"]
        for key, value in asdict(self).items():
            lines.append(f"{key} = {list(value) if isinstance(value, tuple) else value}")
        return "\n".join(lines) + "\n"


def read_architecture(entry: ModelEntry) -> Sam3Architecture:
    """The architecture of ``entry``: official without ``config``, else the ``[sam3]`` table of that file.

    A relative ``config`` path is relative to the model file the entry came from.

    Raises:
        CheckpointError: the file is unreadable, or has unknown or badly typed fields.
    """
    if not entry.config:
        return Sam3Architecture()
    path = Path(entry.config).expanduser()
    if not path.is_absolute() and entry.source:
        path = Path(entry.source).parent / path
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f).get("sam3")
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise CheckpointError(f"model {entry.name}: cannot read its SAM 3 architecture {path}: {e}") from e
    known = {f.name: f for f in fields(Sam3Architecture)}
    if not isinstance(table, dict) or set(table) - set(known):
        raise CheckpointError(
            f"model {entry.name}: {path} needs a [sam3] table with fields among {', '.join(known)}"
        )
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key == "vit_global_blocks":
            ok = isinstance(value, list) and all(type(v) is int for v in value)
            value = tuple(value) if ok else value
        else:
            ok = type(value) is int and value > 0
        if not ok:
            raise CheckpointError(f"model {entry.name}: {path}: bad value {value!r} for {key}")
        values[key] = value
    return Sam3Architecture(**values)


def bpe_path() -> Path:
    """SAM 3's BPE vocabulary file (the ``sam3`` package's own, else ``open_clip_torch``'s).

    Raises:
        CheckpointError: neither package holds it.
    """
    for package, relative in (("sam3", Path("..") / "assets" / BPE_FILE), ("open_clip", Path(BPE_FILE))):
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            candidate = (Path(folder) / relative).resolve()
            if candidate.is_file():
                return candidate
    raise CheckpointError(
        f"SAM 3's tokenizer vocabulary {BPE_FILE} was not found: install open_clip_torch "
        "(pip install -e '.[sam3]'), which ships it"
    )


def build_sam3(arch: Sam3Architecture, device: torch.device) -> torch.nn.Module:
    """SAM 3's image model (concept detection and segmentation) with ``arch``'s sizes, in eval mode on
    ``device``; its weights are ``torch``'s initialisation until a checkpoint is loaded."""
    import sam3.model_builder as mb
    from sam3.model.necks import Sam3DualViTDetNeck
    from sam3.model.text_encoder_ve import VETextEncoder
    from sam3.model.tokenizer_ve import SimpleTokenizer
    from sam3.model.vitdet import ViT

    with follow_device(device), torch.device(device):
        trunk = ViT(  # mb._create_vit_backbone's arguments, with the architecture's sizes
            img_size=arch.resolution,
            pretrain_img_size=336,
            patch_size=14,
            embed_dim=arch.vit_width,
            depth=arch.vit_depth,
            num_heads=arch.vit_heads,
            mlp_ratio=4.625,
            norm_layer="LayerNorm",
            drop_path_rate=0.1,
            qkv_bias=True,
            use_abs_pos=True,
            tile_abs_pos=True,
            global_att_blocks=arch.vit_global_blocks,
            rel_pos_blocks=(),
            use_rope=True,
            use_interp_rope=True,
            window_size=24,
            pretrain_use_cls_token=True,
            retain_cls_token=False,
            ln_pre=True,
            ln_post=False,
            return_interm_layers=False,
            bias_patch_embed=False,
        )
        position = mb._create_position_encoding(precompute_resolution=arch.resolution)
        vision = Sam3DualViTDetNeck(
            position_encoding=position, d_model=256, scale_factors=[4.0, 2.0, 1.0, 0.5], trunk=trunk
        )
        text = VETextEncoder(
            tokenizer=SimpleTokenizer(bpe_path=str(bpe_path())),
            d_model=256,
            width=arch.text_width,
            heads=arch.text_heads,
            layers=arch.text_layers,
        )
        model: torch.nn.Module = mb._create_sam3_model(
            mb._create_vl_backbone(vision, text),
            mb._create_sam3_transformer(),
            mb._create_geometry_encoder(),
            mb._create_segmentation_head(),
            mb._create_dot_product_scoring(),
            None,  # no SAM 1-style interactive predictor: this worker serves concepts
            True,  # eval mode: no training matcher
        )
    return model.eval()


def fill_uninitialised(model: torch.nn.Module, seed: int = RANDOM_WEIGHTS_SEED) -> None:
    """Give parameters left as ``torch.empty`` (the text encoder's positional embedding and projection:
    NaN or garbage, hence no masks) seeded normal values (std 0.01). For random-weight models only:
    a checkpoint overwrites them."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if (
                name.endswith(("positional_embedding", "text_projection"))
                or not torch.isfinite(parameter).all()
            ):
                values = torch.randn(parameter.shape, generator=generator) * 0.01
                parameter.copy_(values.to(parameter.device, parameter.dtype))


def image_model_state(checkpoint: Mapping[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """The image model's state dict from a SAM 3 checkpoint's ``detector.`` keys (prefix removed).

    Raises:
        CheckpointError: no ``detector.`` key (not a SAM 3 checkpoint).
    """
    state = {k[len(CHECKPOINT_PREFIX) :]: v for k, v in checkpoint.items() if k.startswith(CHECKPOINT_PREFIX)}
    if not state:
        raise CheckpointError(
            f"checkpoint {path} holds no '{CHECKPOINT_PREFIX}*' keys: it is not a SAM 3 checkpoint"
        )
    return state


def load_sam3(
    entry: ModelEntry, checkpoint: Path | None, device: torch.device, random_weights: bool = False
) -> tuple[torch.nn.Module, Sam3Architecture]:
    """Build ``entry``'s SAM 3 model on ``device`` and load its checkpoint.

    Args:
        entry: a registry entry of family ``sam3``.
        checkpoint: the weights file (``None``: the entry's).
        device: where the model runs.
        random_weights: TESTS ONLY: no checkpoint, seeded random weights (meaningless masks).

    Raises:
        CheckpointError: no checkpoint file (with how to get SAM 3's gated weights), an unreadable one,
            one of another model, or a bad architecture file.
    """
    arch = read_architecture(entry)
    if random_weights:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            model = build_sam3(arch, device)
        fill_uninitialised(model)
        return model, arch
    path = checkpoint if checkpoint is not None else entry.checkpoint_path()
    if path is None or not path.is_file():
        raise CheckpointError(
            f"checkpoint for {entry.name} not found at {path}. SAM 3's weights are gated: accept Meta's "
            f"licence at {GATED_PAGE}, download sam3.pt (README.md, 'Models'), then "
            + how_to_get(entry, path or Path(entry.checkpoint))
        )
    state = image_model_state(read_state_dict(path, allow_bare=True), path)
    model = build_sam3(arch, device)
    extra = sorted(set(state) - set(model.state_dict()))
    if extra:
        log.info(
            "checkpoint %s: %d keys the image model does not use (e.g. %s)", path.name, len(extra), extra[0]
        )
    load_state_dict_strict(model, {k: v for k, v in state.items() if k not in extra}, path)
    log.info("loaded checkpoint %s for %s", path, entry.name)
    return model, arch
