"""Batch automatic segmentation through the broker: ``python -m batch`` or ``sam2-batch``.

Owns the batch client only: finding and reading input images (``inputs``),
the label TIFFs and the CSV summary with resume (``outputs``), and running
many ``auto`` requests at once so that every worker is busy (``runner``).
Like the plugin it talks to the backend only through ``protocol/``.
"""
