"""Batch automatic segmentation through the broker: ``python -m batch`` or ``sam2-batch``.

Owns the batch client only: finding and reading input images (``inputs``),
the label TIFFs and the CSV summary with resume (``outputs``), and running
many ``auto`` requests at once so that every worker is busy (``runner``; its
settings and report in ``settings``, large inputs tile by tile in ``tiled_files``).
Like the plugin it talks to the backend only through ``protocol/``.
"""
