"""Networks of the pipeline. ``mlp.py`` is the building block of all of them.

GNN edge classifiers register in :data:`GNN_MODELS` under the name that ``gnn.model``
selects (``@GNN_MODELS.register("interaction")``). A GNN model is an ``nn.Module``
whose constructor takes ``node_dim``, ``edge_dim`` and ``checkpointing`` (given by the
GNN stage) plus its own settings as keyword arguments (given by its config file in
``conf/gnn/``; a setting it does not take is a config error), and whose ``forward(x,
edge_index, edge_attr)`` maps (N, F_node), (2, E), (E, F_edge) to (E,) edge logits.


Names a config may choose are declared here, free of torch, so that a config is
validated before torch is imported: the activations (by their ``torch.nn`` class) and
the interaction network's aggregations.
"""

from ..registry import Registry

ACTIVATIONS = {"relu": "ReLU", "tanh": "Tanh", "silu": "SiLU", "gelu": "GELU", "leaky_relu": "LeakyReLU"}
AGGREGATIONS = ("sum", "max", "sum_max")

GNN_MODELS: Registry = Registry("gnn.model", discover=__name__)
# what the GNN stage passes to every model; the rest of the constructor is config
GNN_MODEL_INPUTS = ("node_dim", "edge_dim", "checkpointing")
