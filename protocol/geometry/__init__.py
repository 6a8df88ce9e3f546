"""Large-image geometry, pure numpy: windows around prompts, the tile grid, stitching tiles into
one label image, linking the slices of a stack, compressed label planes.

No network, no napari; imports nothing else of the project.
"""
