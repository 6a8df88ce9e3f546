"""``concept``'s parameter names and limits (SAM 3's "find every instance of this"), for every room.

The client builds a request with :func:`protocol.ops.concept.concept_params`;
the SAM 3 worker (``workers/concept.py``) and the stand-in check a received one
against the same names and limits. Params: ``text`` (1..``MAX_TEXT_CHARS``
characters), ``boxes`` (at most ``MAX_BOXES`` exemplar boxes ``(row0, col0, row1,
col1)`` in pixels of the image sent), ``box_labels`` (1 an instance, 0 not one),
``score_threshold`` in [0, 1] (instances scoring below it are left out;
default ``DEFAULT_SCORE_THRESHOLD``), ``contrast_limits``.
"""

from __future__ import annotations

PARAMS = ("text", "boxes", "box_labels", "score_threshold", "contrast_limits")
MAX_TEXT_CHARS = 200
MAX_BOXES = 16
DEFAULT_SCORE_THRESHOLD = 0.5
