"""Hydra discovers this package (``hydra_plugins.*``): ``hydra/sweeper=optuna``."""
