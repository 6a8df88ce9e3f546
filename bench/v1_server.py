"""The v1.0 design, rebuilt for comparison: a Flask server that gets the image in every request.

This is how the old plugin's server worked, reduced to what matters for
speed: one HTTP POST per click with a JSON body holding the whole image as
nested lists, the prompt and the contrast limits; the server turns the lists
back into an array, calls ``set_image`` (the image encoder) on every request,
then ``predict``, and answers the best mask as nested JSON lists of 0/1.
The model and predictor are built once at start-up, as they were.

``python -m bench.v1_server --checkpoint PATH --port N [--threads T]``
prints ``ready`` to stderr when it serves. FOR BENCHMARKS ONLY.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from protocol.runtime.checkpoints import DEFAULT_MODEL


def create_app(checkpoint: str, model_name: str, device: str) -> Any:
    """The Flask app with the model loaded."""
    from flask import Flask, jsonify, request
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from workers.models import load_model
    from workers.prep import prepare_image

    predictor = SAM2ImagePredictor(load_model(model_name, checkpoint, device))
    app = Flask("sam2-v1")

    @app.post("/predict")
    def predict() -> Any:
        body = request.get_json()
        image = np.asarray(body["image"], dtype=body.get("dtype", "uint8"))
        limits = body.get("contrast_limits")
        predictor.set_image(prepare_image(image, limits))
        points = np.asarray(body["points"], dtype=np.float32)  # (x, y), as v1 sent them
        labels = np.asarray(body["labels"], dtype=np.int32)
        masks, scores, _ = predictor.predict(points, labels, multimask_output=True)
        best = int(np.argmax(scores))
        return jsonify({"mask": (masks[best] > 0.5).astype(np.uint8).tolist(), "score": float(scores[best])})

    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    import logging

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    app = create_app(args.checkpoint, args.model, args.device)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    print("ready", file=sys.stderr, flush=True)
    app.run(host="127.0.0.1", port=args.port, threaded=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
