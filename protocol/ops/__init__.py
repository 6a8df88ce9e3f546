"""The client side of each operation: typed requests and checked answers, prompts on windows of
large slices, tiled automatic segmentation, many requests over every worker.

Used by the plugin, ``sam2-batch`` and the benchmarks; never by the broker or workers.
Imports :mod:`protocol.wire`, :mod:`protocol.geometry` and :mod:`protocol.runtime`.
"""
