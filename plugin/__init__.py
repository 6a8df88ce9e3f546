"""napari plugin: interactive SAM2 segmentation served by workers behind an MDP/0.2 broker.

Pure logic (no Qt): :mod:`plugin.coords`, :mod:`plugin.image_slice`,
:mod:`plugin.prompts`, :mod:`plugin.label_ops`, :mod:`plugin.label_names`,
:mod:`plugin.label_stats`, :mod:`plugin.events_log`, :mod:`plugin.export`,
:mod:`plugin.session`, :mod:`plugin.backend`; napari glue without Qt:
:mod:`plugin.layers`, :mod:`plugin.controller`, :mod:`plugin.stack_jobs`,
:mod:`plugin.history`, :mod:`plugin.label_edits`, :mod:`plugin.label_watch`,
:mod:`plugin.name_overlay`, :mod:`plugin.picking`; thin widgets:
:mod:`plugin.widget`, :mod:`plugin.auto_widget`, :mod:`plugin.label_table_widget`,
:mod:`plugin.propagate_widget`, :mod:`plugin.events_widget`, :mod:`plugin.name_widget`,
:mod:`plugin.export_widget`
(with :mod:`plugin.qt_helpers`); npe2 hooks: :mod:`plugin.io_hooks`,
:mod:`plugin.sample_data` (see ``napari.yaml``).
"""

__version__ = "0.1.0"
