"""``sam2-batch --concept "nucleus"``: every instance of a concept instead of automatic masks.

SAM 3's ``concept`` op (:mod:`protocol.ops.concept`) takes the place of ``auto``
and everything else stays as it is: each slice up to ``--tile-size`` is one
request, a larger one goes tile by tile with a halo and is stitched exactly
like automatic mode (:func:`protocol.ops.tiled.tiled_auto` with ``op="concept"``;
a merged instance keeps the highest score of its pieces), stacks are linked,
and the same outputs are written (labels file, ``summary.csv``, provenance
with operation ``concept``/``tiled_concept`` and the prompt and threshold).
The worker leaves out instances scoring below ``--concept-threshold``.
Exemplar boxes are for the plugin; a batch gives text only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from batch.inputs import UsageError
from protocol.ops.concept import DEFAULT_SCORE_THRESHOLD, ConceptAnswer, concept, concept_params
from protocol.ops.requests import AutoAnswer, auto
from protocol.wire.client import SamClient
from protocol.wire.wire_image import WireImage

AUTO, CONCEPT = "auto", "concept"


@dataclass(frozen=True)
class ConceptPrompt:
    """The concept every slice is searched for.

    Attributes:
        text: the concept in words ("nucleus").
        score_threshold: instances scoring below it are left out, in [0, 1].
    """

    text: str
    score_threshold: float = DEFAULT_SCORE_THRESHOLD

    def params(self) -> dict[str, Any]:
        """``concept``'s parameters (checked: raises ValueError on an empty text or a bad threshold)."""
        return concept_params(self.text, score_threshold=self.score_threshold)


def parse_concept(text: str | None, threshold: float | None) -> ConceptPrompt | None:
    """``--concept`` / ``--concept-threshold`` as a :class:`ConceptPrompt` (None: automatic mode).

    Raises:
        UsageError: an empty concept, a threshold outside [0, 1], or a threshold without a concept.
    """
    if text is None:
        if threshold is not None:
            raise UsageError("--concept-threshold needs --concept TEXT")
        return None
    prompt = ConceptPrompt(text, DEFAULT_SCORE_THRESHOLD if threshold is None else threshold)
    try:
        prompt.params()
    except ValueError as e:
        raise UsageError(f"--concept / --concept-threshold: {e}") from e
    return prompt


def ask_slice(
    client: SamClient, image: WireImage, op: str, params: dict[str, Any], **kwargs: Any
) -> AutoAnswer | ConceptAnswer:
    """One slice's request: ``auto`` or ``concept`` with ``params`` (both answer ``labels``,
    ``num_objects`` and ``request_id``); ``kwargs``: ``cancel``, ``timeout_s``."""
    if op == CONCEPT:
        return concept(client, image, params, **kwargs)
    return auto(client, image, params, **kwargs)


def require_op(info: dict[str, Any], op: str, model: str) -> None:
    """Refuse a run whose model does not serve ``op`` (when its ``info`` lists the ops it serves).

    Raises:
        UsageError: ``op`` is not among the worker's ops.
    """
    ops = info.get("ops")
    if isinstance(ops, list) and op not in ops:
        raise UsageError(
            f"model {model!r} does not serve {op!r} (its workers serve: {', '.join(map(str, ops))}); "
            "--concept needs a SAM 3 model (sam2-batch --list-models shows each model's ops)"
        )
