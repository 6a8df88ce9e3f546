"""Helpers shared by the test modules (no tests and no fixtures here; fixtures are in ``tests/conftest.py``).

* ``processes``: the repository root, interpreter and default model for subprocesses, and
  :class:`ProcessSpawner`; the helpers (free ports, ``wait_until``, logs, memory) are
  ``protocol/runtime/processes.py``'s, re-exported.
* ``backend``: :class:`Backend`, a real broker plus SAM2 worker subprocesses.
* ``broker_peers``: a broker subprocess and ``mmi`` questions; the raw MDP/0.2 peers it re-exports
  live in ``bench/raw_peers.py`` (the fuzz soak uses them too).
* ``scripted_worker``: an MDP worker that answers from a script (exact replies, delays).
* ``marks``: the marks of the napari tests.
* ``standin_backend``: a broker with deterministic stand-in workers (``--model standin-blobs``).

Shared with tools, so not here: synthetic disc images (``bench/discs.py``), the fuzz corpus
(``bench/fuzzing.py``), the stand-in model itself (``workers/standin/``).
* ``plugin_helpers``: small images and clicks for the napari tests.
"""
