"""napari glue without Qt: coordinates, slices of image layers, result layers, redraws, picking,
names drawn over regions.
"""
