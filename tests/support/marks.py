"""Marks shared by the napari test modules."""

from __future__ import annotations

import os
import sys

import pytest

NO_DISPLAY = sys.platform.startswith("linux") and not (
    os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
)
# pytestmark of every napari test module.
GUI_TEST_MARKS = [
    pytest.mark.gui,
    pytest.mark.model,
    # napari renders with OpenGL: without an X server Qt would abort the whole session
    pytest.mark.skipif(NO_DISPLAY, reason="needs a display: run under Xvfb (scripts/test.sh does)"),
]
