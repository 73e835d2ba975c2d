"""The pipeline's stages, one module each, behind the one interface of ``base.py``.

The names a config may choose for them are declared here, free of torch, so that a
config is validated before torch is imported; each stage module takes its list from here.
"""

GRAPH_METHODS = ("radius", "module_map")  # graph.method (stages/graph.py)
NEIGHBOUR_BACKENDS = ("auto", "faiss", "kdtree", "torch", "faiss_gpu")  # graph.backend (neighbours.py)
TRACK_BACKENDS = ("auto", "scipy", "cugraph")  # tracks.backend (tracks.py)
BEND_MODELS = ("curvature", "direction", "helix")  # tracks.bend_model (tracks.py)
# the gnn group's keys that belong to the stage's training; the rest go to the model
GNN_TRAINING_KEYS = ("model", "use_cells", "lr", "epochs", "pos_weight", "truth")
