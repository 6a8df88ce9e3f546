"""The widget's warm-up imports what napari's first Labels layer would import on the GUI thread."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys
from plugin.view.layers import warm_up_labels
from napari.utils.colormaps.colormap_utils import label_colormap
assert not any(name.startswith("skimage.color.") for name in sys.modules), "imported before the warm-up"
warm_up_labels().join(120)
before = set(sys.modules)
label_colormap(50)  # what Labels(...) calls first: its random colours go through skimage.color.lab2rgb
print(sorted(name for name in set(sys.modules) - before if name.startswith("skimage")))
"""


def test_after_the_warm_up_the_first_labels_colormap_imports_nothing_from_skimage() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
