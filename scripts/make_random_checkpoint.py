#!/usr/bin/env python
"""Write a SAM2 checkpoint with RANDOM weights in the official layout (FOR TESTS ONLY).

    python scripts/make_random_checkpoint.py --model sam2.1_hiera_tiny --out /tmp/sam2.1_hiera_tiny.pt

The real model is built with seeded random weights and saved as
``{"model": state_dict}``, so it loads through exactly the code path of an
official checkpoint. Every mask such a model returns is meaningless.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# This checkout's code, even where another checkout is pip-installed (editable) in the environment.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from protocol.runtime.checkpoints import DEFAULT_MODEL
from workers.models import RANDOM_WEIGHTS_SEED, sam2_models, write_random_checkpoint


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=sam2_models())
    parser.add_argument("--out", type=Path, required=True, help="where to write the .pt file")
    parser.add_argument("--seed", type=int, default=RANDOM_WEIGHTS_SEED)
    args = parser.parse_args()
    print(
        f"WARNING: writing a RANDOM-WEIGHT {args.model} checkpoint to {args.out}. It is for tests only: "
        "every mask it produces is meaningless.",
        file=sys.stderr,
    )
    path = write_random_checkpoint(args.model, args.out, seed=args.seed)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
