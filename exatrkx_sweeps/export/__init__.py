"""Trained models out of a run: its stages as files (``bundle``), their networks as
TorchScript and ONNX files with a manifest (``formats``), ``python -m exatrkx_sweeps.export``."""
