"""File formats for labels with names, for the tools that come next (no napari, no Qt).

Label images on disk, written atomically: used by the plugin's export and by
``sam2-batch``, so they live in ``protocol/`` (shared by all rooms) and import
nothing above it.

* :mod:`protocol.formats.geometry`: axes, pixel size, units and origin of a labels array;
* :mod:`protocol.runtime.atomic`: write a file or a directory atomically;
* :mod:`protocol.formats.imagej`: ImageJ/Fiji-ready TIFF (calibration and names);
* :mod:`protocol.formats.tiled_tiff`: labels larger than memory as a tiled BigTIFF, tile by tile;
* :mod:`protocol.formats.ngff`: OME-Zarr (NGFF 0.4) labels image with ``image-label`` names;
* :mod:`protocol.formats.geojson`: one polygon feature per label, QuPath conventions;
* :mod:`protocol.formats.measure`: a measurements table per label and slice;
* :mod:`protocol.formats.tracks`: tracks of a labels time-lapse (CTC rules, lineage);
* :mod:`protocol.formats.ctc`: Cell Tracking Challenge folders (masks + ``man_track.txt``);
* :mod:`protocol.formats.geff_tracks`: GEFF graphs with their segmentation (``geff`` library);
* :mod:`protocol.formats.provenance`: how a result was made, one record for every format;
* :mod:`protocol.formats.provenance_files`: find that record in any output.

The batch command (``sam2-batch --format``) uses the same writers as the
plugin's export, so these modules import nothing from napari or Qt; zarr,
ome-zarr, shapely and scikit-image are imported inside the functions that need them.
"""
