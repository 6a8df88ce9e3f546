"""Download official SAM 2.1 checkpoints (stdlib only; the logic lives in ``protocol/runtime/checkpoints.py``).

Usage: python checkpoints/download.py [tiny|small|base_plus|large|all|MODEL_NAME ...]

Files go to ``$SAM2_CHECKPOINT_DIR`` when set, else to this folder. Each
download is checked (Content-Length, the model's size window, the torch zip
signature) before it gets its final name. Where there is no repository (a
wheel install), ``python -m protocol.runtime.checkpoints tiny`` does the same.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder is sys.path[0]; the repository root holds ``protocol``.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocol.runtime.checkpoints import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
