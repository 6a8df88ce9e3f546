"""napari plugin: interactive SAM2 segmentation served by workers behind an MDP/0.2 broker.

Pure logic (no Qt): :mod:`plugin.view.coords`, :mod:`plugin.view.image_slice`,
:mod:`plugin.view.prompts`, :mod:`plugin.labels.ops`, :mod:`plugin.labels.names`,
:mod:`plugin.labels.stats`, :mod:`plugin.events_log`, :mod:`plugin.export`,
:mod:`plugin.connection.session`, :mod:`plugin.connection.backend`; napari glue without Qt:
:mod:`plugin.view.layers`, :mod:`plugin.jobs.controller`, :mod:`plugin.jobs.stacks`,
:mod:`plugin.labels.history`, :mod:`plugin.labels.edits`, :mod:`plugin.labels.watch`,
:mod:`plugin.view.name_overlay`, :mod:`plugin.view.picking`; thin widgets:
:mod:`plugin._qt.widget`, :mod:`plugin._qt.auto_widget`, :mod:`plugin._qt.label_table_widget`,
:mod:`plugin._qt.propagate_widget`, :mod:`plugin._qt.events_widget`, :mod:`plugin._qt.name_widget`,
:mod:`plugin._qt.export_widget`
(with :mod:`plugin._qt.qt_helpers`); npe2 hooks: :mod:`plugin.io_hooks`,
:mod:`plugin.sample_data` (see ``napari.yaml``).
"""

__version__ = "0.1.0"
