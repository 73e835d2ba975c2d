"""Events: the TrackML format, the detector, the simulator, truth and processed graphs.

The choices a config may make are declared here, free of torch, so that a config is
validated before torch is imported.
"""

SOURCES = ("simulate", "trackml")  # data.source (dataset.py)
# a training stage's `truth`: the module-wise graph, or same-particle pairs (truth.py)
TRAINING_TRUTH = ("module", "pid")
