"""The ``standin`` model family: deterministic workers for demos, benchmarks and tests, without torch.

A stand-in answers the operations of ``protocol/README.md`` like a SAM2 worker
(same requests, replies, errors, cache and ``need_image``), but its masks come
from a rule, not a network: it looks at the image at <= 1024 px on the long
side, as SAM does, and labels bright connected components there. So its right
answers are known on synthetic images (``bench/discs.py``), which random-weight
SAM2 masks cannot give. Its answers are not SAM's: never use it for real work.

| module | owns |
|---|---|
| ``look.py`` | what the stand-in "sees": the image at <= 1024 px and its bright components |
| ``service.py`` | the operations (``StandinService``): info, embed, segment, auto, sleep, propagate |
| ``propagate.py`` | deterministic tracking through a stack (``propagate``) |
| ``cli.py`` | the command line, reached through ``python -m workers --model standin-blobs`` |

Imports only ``protocol.wire``, ``protocol.runtime``, ``workers.worker`` and ``workers.prep`` (no torch).
"""

from __future__ import annotations

FAMILY = "standin"
MODELS: tuple[str, ...] = ("standin-blobs",)
"""The stand-in models, each a service name: ``standin-blobs`` labels bright blobs."""
DEFAULT_MODEL = "standin-blobs"


def is_standin(model: str) -> bool:
    """Whether ``model`` names a stand-in (family ``standin``), served without torch."""
    return model in MODELS
