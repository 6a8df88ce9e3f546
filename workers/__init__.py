"""workers/: one process = one SAM2 model on one device, served over MDP/0.2.

| module | owns |
|---|---|
| ``models.py`` | model registry (name -> config, checkpoint, URL), checkpoint loading, random weights |
| ``device.py`` | choosing the torch device, autocast dtype and CPU thread count |
| ``prep.py`` | turning a received image into SAM's uint8 (H, W, 3) RGB |
| ``prompts.py`` | validating prompts and the one (row, col) -> (x, y) conversion |
| ``cache.py`` | the LRU embedding cache, bounded in bytes |
| ``ops.py`` | the operations of ``protocol/README.md`` (``Sam2Service``) |
| ``labels.py`` | painting automatic masks into one label image |
| ``worker.py`` | the MDP/0.2 worker loop: READY, heartbeats, reconnects, a compute thread |
| ``__main__.py`` | the command line (``python -m workers`` / ``sam2-worker``); family dispatch |
| ``standin/`` | the stand-in model ``standin-blobs``: deterministic answers, no torch (demos, tests) |

Nothing here is imported by ``broker/`` or ``plugin/``; the only shared code is ``protocol/``.
"""
