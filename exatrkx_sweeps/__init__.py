"""exatrkx-sweeps: hyperparameter studies for the Exa.TrkX GNN tracking pipeline."""

__version__ = "0.1.0"
