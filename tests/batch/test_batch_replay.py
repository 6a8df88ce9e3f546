"""``sam2-batch --replay``: the prompts recorded with an export, sent again, give the same labels.

Real broker, real SAM2 worker with random weights (masks meaningless, but every tensor and byte path
the real one), the real ``python -m batch`` command. The labels are made the way the plugin makes
them: each prompt's slice as :func:`plugin.view.image_slice.wire_slice` prepares it, sent with
``segment``, the mask written with the label's id.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import tifffile

from plugin.export import TIFF, export_labels, read_labels
from plugin.provenance_record import interactive_provenance
from plugin.view.coords import SlicePlane
from plugin.view.image_slice import wire_slice
from plugin.view.prompts import Prompt
from protocol.formats.provenance_files import read_provenance
from protocol.ops.requests import info, segment
from protocol.wire.client import SamClient
from tests.support.processes import MODEL, PYTHON, REPO_ROOT
from tests.support.timelapse import disc

SHAPE = (2, 96, 128)
LIMITS = (100.0, 3000.0)
HAND_LABEL = 9


def _image() -> np.ndarray:
    image = np.full(SHAPE, 200, np.uint16)
    image[0][disc(SHAPE[1:], (30, 40), 12)] = 2500
    image[0][disc(SHAPE[1:], (60, 90), 15)] = 2000
    image[1][disc(SHAPE[1:], (50, 60), 20)] = 2800
    return image


def _plane(z: int) -> SlicePlane:
    return SlicePlane(SHAPE, 1, 2, (z, None, None))


PROMPTS = {
    1: [Prompt(_plane(0), ((30.5, 40.5),), (1,))],
    2: [
        Prompt(_plane(0), ((60.5, 90.5), (30.5, 40.5)), (1, 0)),
        Prompt(_plane(1), box=(30.0, 40.0, 70.0, 80.0)),
    ],
    3: [Prompt(_plane(1), ((50.5, 60.5),), (1,))],
}


def test_replay_with_the_same_model_gives_exactly_the_labels_made_by_prompts(tmp_path: Path, make_backend):
    backend = make_backend(workers=1)
    image = _image()
    tifffile.imwrite(tmp_path / "cells.tif", image)
    labels = np.zeros(SHAPE, np.uint32)
    with SamClient(backend.frontend, MODEL) as client:
        worker_info = info(client)
        for label_id, prompts in PROMPTS.items():
            for prompt in prompts:
                wire = wire_slice(image, prompt.plane, False, LIMITS)
                answer = segment(client, wire, prompt.points, prompt.point_labels, prompt.box)
                labels[prompt.plane.index[0]][answer.mask] = label_id
    labels[1, 2:6, 2:6] = HAND_LABEL  # a hand-painted label: not replayable
    present = [int(i) for i in np.unique(labels) if i]
    assert len(present) >= 3, "random weights gave empty masks: the test would prove little"
    record = interactive_provenance(
        present, PROMPTS, model=MODEL, info=worker_info, parameters={"contrast_limits": list(LIMITS)}
    )
    assert record.not_replayable == (HAND_LABEL,)
    [annotated, *_] = export_labels(TIFF.key, tmp_path / "annotated.tif", labels, {}, provenance=record)

    out = tmp_path / "out"
    args = [str(tmp_path / "cells.tif"), "--out", str(out), "--broker", backend.frontend, "--model", MODEL]
    done = subprocess.run(
        [PYTHON, "-m", "batch", *args, "--replay", str(annotated), "--no-progress"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert f"not replayable (made by hand edits): labels [{HAND_LABEL}]" in done.stderr
    replayed = read_labels(out / "cells_replay.tif").data
    expected = np.where(labels == HAND_LABEL, 0, labels)
    by_prompts = labels != HAND_LABEL
    np.testing.assert_array_equal(replayed[by_prompts], expected[by_prompts])
    assert HAND_LABEL not in replayed
    again = read_provenance(out / "cells_replay.tif")
    assert again is not None and again.operation == "replay" and again.prompts == record.prompts
    assert again.parameters["replayed_from"] == str(annotated)


def test_a_file_without_prompts_is_refused_with_a_reason(tmp_path: Path):
    tifffile.imwrite(tmp_path / "cells.tif", _image())
    export_labels(TIFF.key, tmp_path / "plain.tif", np.ones(SHAPE, np.uint8), {})
    args = [
        str(tmp_path / "cells.tif"),
        "--out",
        str(tmp_path / "out"),
        "--replay",
        str(tmp_path / "plain.tif"),
    ]
    done = subprocess.run(
        [PYTHON, "-m", "batch", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and "holds no provenance record" in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()
