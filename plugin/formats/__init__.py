"""File formats for labels with names, for the tools that come next (no napari, no Qt).

* :mod:`plugin.formats.geometry`: axes, pixel size, units and origin of a labels array;
* :mod:`plugin.formats.atomic`: write a file or a directory atomically;
* :mod:`plugin.formats.imagej`: ImageJ/Fiji-ready TIFF (calibration and names);
* :mod:`plugin.formats.ngff`: OME-Zarr (NGFF 0.4) labels image with ``image-label`` names;
* :mod:`plugin.formats.geojson`: one polygon feature per label, QuPath conventions;
* :mod:`plugin.formats.measure`: a measurements table per label and slice.

The batch command (``sam2-batch --format``) uses the same writers, so these
modules import nothing from napari or Qt.
"""
