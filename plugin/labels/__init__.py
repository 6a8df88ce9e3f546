"""Label bookkeeping: ids and refine modes, names, history (undo/redo), edits, statistics.

No Qt, no napari events. May import only :mod:`protocol.runtime` (tests/protocol/test_layering.py).
"""
