"""Helpers shared by the test modules (no tests and no fixtures here; fixtures are in ``tests/conftest.py``).

* ``processes``: free ports, ``wait_until``, :class:`ProcessSpawner`, process logs and memory.
* ``backend``: :class:`Backend`, a real broker plus SAM2 worker subprocesses.
* ``broker_peers``: a broker subprocess and raw MDP/0.2 clients and workers, frame by frame.
* ``scripted_worker``: an MDP worker that answers from a script (exact replies, delays).
* ``fuzzing``: random and mutated messages, and a fake broker, for the fuzz tests.
* ``marks``: the marks of the napari tests.
* ``standin_backend``: a broker with deterministic stand-in workers (large-image tests).
* ``plugin_helpers``: small images and clicks for the napari tests.
"""
