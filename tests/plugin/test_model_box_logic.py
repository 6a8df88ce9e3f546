"""What the plugin's model box says about each model and which operations it offers (no Qt)."""

from __future__ import annotations

from plugin.connection.backend import BackendStatus

SERVICES = {
    "sam2.1_hiera_tiny": {
        "workers": 1,
        "family": "sam2",
        "description": "Meta SAM 2.1 Hiera tiny",
        "licence": "Apache-2.0",
        "preprocessing": "sam2",
        "ops": ["auto", "embed", "info", "propagate", "segment"],
    },
    "standin-blobs": {
        "workers": 2,
        "family": "standin",
        "description": "deterministic stand-in",
        "licence": "BSD-3-Clause",
        "preprocessing": "none",
        "ops": ["auto", "embed", "info", "segment"],
    },
    "undescribed": {"workers": 1},
}


def test_operations_no_worker_of_the_chosen_model_offers_are_greyed_out() -> None:
    standin = BackendStatus("tcp://x:1", SERVICES, "standin-blobs")
    assert standin.offers("segment") and standin.offers("auto") and not standin.offers("propagate")
    assert BackendStatus("tcp://x:1", SERVICES, "sam2.1_hiera_tiny").offers("propagate")
    unknown = BackendStatus("tcp://x:1", SERVICES, "undescribed")
    assert unknown.offers("propagate")  # nothing known: nothing greyed out
    told = BackendStatus("tcp://x:1", SERVICES, "undescribed", info={"ops": ["segment"]})
    assert told.offers("segment") and not told.offers("auto")  # the worker's own info answer


def test_model_summary_names_family_preprocessing_licence_and_ops() -> None:
    status = BackendStatus("tcp://x:1", SERVICES, "sam2.1_hiera_tiny")
    assert status.model_summary() == (
        "Meta SAM 2.1 Hiera tiny [sam2, preprocessing sam2; licence Apache-2.0; "
        "ops: auto, embed, propagate, segment]"
    )
    assert (
        "[standin, preprocessing none; licence BSD-3-Clause; ops: auto, embed, segment]"
        in status.model_summary("standin-blobs")
    )
    assert status.model_summary("undescribed") == ""
