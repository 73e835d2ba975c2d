"""Augmentations of the GNN's inputs: Hough features, reflections, edge weighting.

The choices a config may make are declared here, free of torch, so that a config is
validated before torch is imported.
"""

HOUGH_MODES = ("none", "params", "votes")  # augment.hough (hough.py)
# augment.reflect (reflection.py): mirror planes, and beamline: x and y together, a turn by pi
REFLECT_AXES = ("x", "y", "z", "beamline")
