"""napari plugin: interactive SAM2 segmentation served by workers behind an MDP/0.2 broker.

Rooms (sub-packages; plugin/README.md, "Code map", has the table of what each
owns and may import, held by ``tests/protocol/test_layering.py``):

* :mod:`plugin._qt`: the widgets, thin, one per file (:mod:`plugin._qt.widget` docks the rest);
* :mod:`plugin.jobs`: what the plugin asks the workers and what it does with the answers
  (:mod:`plugin.jobs.controller` puts the jobs together; :mod:`plugin.jobs.submit` is the one
  path of every request and answer);
* :mod:`plugin.connection`: the session (:mod:`plugin.connection.session`), finding or starting
  a backend (:mod:`plugin.connection.backend`);
* :mod:`plugin.view`: napari glue without Qt (coordinates, slices, layers, overlays);
* :mod:`plugin.labels`: label bookkeeping without napari events (ids, names, undo, edits, stats);
* top-level modules: npe2 hooks (:mod:`plugin.io_hooks`, :mod:`plugin.sample_data`, see
  ``napari.yaml``), :mod:`plugin.export`, :mod:`plugin.user_settings`, :mod:`plugin.wording`,
  :mod:`plugin.events_log`.
"""

__version__ = "0.1.0"
