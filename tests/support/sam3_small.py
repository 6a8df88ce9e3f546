"""TESTS ONLY: a small SAM 3 with random weights, saved as a checkpoint in Meta's layout plus a model file.

The variant is Meta's SAM 3 image model with a narrower vision transformer
(width 64, 2 blocks) and text encoder (width 64, 1 layer) at input resolution
336 (:data:`SMALL`); every other part is the real one. Its two ``torch.empty``
text-encoder parameters are given values (:func:`workers.sam3_model.fill_uninitialised`;
left empty they are NaN and SAM 3 finds nothing). Masks and scores are
meaningless; the tensors, file layout, loading and wire paths are the real ones.

Run in a subprocess (``python -m tests.support.sam3_small FOLDER``) so the test
process does not import ``sam3``; it writes ``sam3_small.pt`` (``{"model":
{"detector.<key>": tensor}}``), ``sam3_small_arch.toml`` and ``sam3_small_models.toml``
(service :data:`SERVICE`, for ``python -m workers --model-file``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from protocol.runtime.atomic import atomic_file

SERVICE = "sam3-small-random"
MODEL_FILE = "sam3_small_models.toml"
SMALL_FIELDS = {
    "resolution": 168,
    "vit_width": 64,
    "vit_depth": 2,
    "vit_heads": 2,
    "vit_global_blocks": (1,),
    "text_width": 64,
    "text_layers": 1,
    "text_heads": 2,
}


def write_small_sam3(folder: Path) -> Path:
    """Build the small random SAM 3 on the CPU and write its three files into ``folder``; return the
    model file's path."""
    import torch

    from workers.sam3_model import CHECKPOINT_PREFIX, Sam3Architecture, build_sam3, fill_uninitialised

    arch = Sam3Architecture(**SMALL_FIELDS)  # type: ignore[arg-type]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_sam3(arch, torch.device("cpu"))
    fill_uninitialised(model)
    folder.mkdir(parents=True, exist_ok=True)
    state = {CHECKPOINT_PREFIX + key: value for key, value in model.state_dict().items()}
    checkpoint = folder / "sam3_small.pt"
    with atomic_file(checkpoint) as tmp:
        torch.save({"model": state}, tmp)
    (folder / "sam3_small_arch.toml").write_text(arch.to_toml())
    model_file = folder / MODEL_FILE
    model_file.write_text(
        f'[models.{SERVICE}]\nfamily = "sam3"\nconfig = "sam3_small_arch.toml"\n'
        f'checkpoint = "{checkpoint}"\nlicence = "tests only"\npreprocessing = "sam3"\n'
        'device = "cpu"\nprecision = "fp32"\n'
        'description = "TESTS ONLY: a narrow SAM 3 with random weights (meaningless masks)"\n'
    )
    return model_file


def build_small_sam3(folder: Path, timeout_s: float = 600) -> Path:
    """:func:`write_small_sam3` in a subprocess; return the model file's path."""
    subprocess.run(
        [sys.executable, "-m", "tests.support.sam3_small", str(folder)],
        check=True,
        timeout=timeout_s,
        cwd=Path(__file__).resolve().parents[2],
    )
    return folder / MODEL_FILE


if __name__ == "__main__":
    write_small_sam3(Path(sys.argv[1]))
