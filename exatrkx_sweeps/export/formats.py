"""A stage's network as a TorchScript or an ONNX file, and either read back as a callable
that takes and returns torch tensors like the PyTorch model (so a stage runs with it).

TorchScript is traced (``torch.jit.trace``; the networks have no data-dependent control
flow, so the trace holds for any number of hits and edges): what the Exa.TrkX plugin of
ACTS loads. ONNX goes through ``torch.onnx.export`` (the ``torch.export`` path) with the
numbers of hits and edges as dynamic dimensions: what ONNX Runtime loads.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from ..stages.base import Input

FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}
OPSET = 18  # ScatterElements with max reduction (the interaction network's aggregation)


def example_inputs(inputs: list[Input], nodes: int = 61, edges: int = 257, seed: int = 0) -> tuple:
    """Random inputs of the given shapes (``nodes`` hits, ``edges`` edges), for tracing
    and for comparing an exported network with its model."""
    gen = torch.Generator().manual_seed(seed)
    sizes = {"nodes": nodes, "edges": edges}
    out = []
    for inp in inputs:
        shape = tuple(sizes.get(d, d) if isinstance(d, str) else d for d in inp.shape)
        if inp.dtype == "int64":
            out.append(torch.randint(0, nodes, shape, generator=gen))
        else:
            out.append(torch.randn(shape, generator=gen))
    return tuple(out)


def write(net: torch.nn.Module, inputs: list[Input], fmt: str, path: Path) -> Path:
    """``net`` as a ``fmt`` file at ``path``."""
    example = example_inputs(inputs)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice; tracer notes
        if fmt == "torchscript":
            torch.jit.trace(net, example, check_trace=False).save(str(path))
        elif fmt == "onnx":
            dims = {"nodes": torch.export.Dim("nodes"), "edges": torch.export.Dim("edges")}
            dynamic = tuple(
                {i: dims[d] for i, d in enumerate(inp.shape) if isinstance(d, str)} for inp in inputs
            )
            with contextlib.redirect_stdout(io.StringIO()), quiet("torch.onnx", "onnxscript", "onnx_ir"):
                torch.onnx.export(
                    net,
                    example,
                    str(path),
                    input_names=[inp.name for inp in inputs],
                    output_names=["output"],
                    dynamic_shapes=dynamic,
                    opset_version=OPSET,
                    dynamo=True,
                )
        else:
            raise ValueError(f"format {fmt!r}: one of {', '.join(FORMATS)}.")
    return path


@contextlib.contextmanager
def quiet(*loggers: str):
    """Other libraries' notes while exporting or logging a model (the ONNX exporter's
    progress and skipped torchvision operators, MLflow's remarks on serving a
    multi-input model): these loggers at ERROR, warnings off."""
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


class TorchScriptNetwork:
    """A TorchScript file, called like the model it was traced from."""

    def __init__(self, path: Path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.module = torch.jit.load(str(path), map_location="cpu").eval()

    def eval(self):
        return self

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.module(*tensors)


class OnnxNetwork:
    """An ONNX file run by ONNX Runtime, called like the model it was exported from."""

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort  # the optional runtime, only where an ONNX file is run

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def eval(self):
        return self

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        feed = {
            n: np.ascontiguousarray(t.detach().cpu().numpy())
            for n, t in zip(self.names, tensors, strict=True)
        }
        return torch.from_numpy(self.session.run(None, feed)[0])


def load(path: Path) -> TorchScriptNetwork | OnnxNetwork:
    """An exported network file, by its suffix."""
    path = Path(path)
    if path.suffix == FORMATS["onnx"]:
        return OnnxNetwork(path)
    return TorchScriptNetwork(path)
