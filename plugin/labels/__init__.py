"""Label bookkeeping: ids and refine modes, names, history (undo/redo), edits, statistics.

No Qt. May import :mod:`plugin.view` and the protocol's client rooms.
"""
