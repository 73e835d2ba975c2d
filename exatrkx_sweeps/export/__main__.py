"""``python -m exatrkx_sweeps.export RUN [--format torchscript onnx] [--out DIR]``

Writes the trained embedding, filter and GNN of a run as TorchScript and ONNX files, with
``manifest.json``: for each network its file, inputs (shapes, dtypes and every column:
feature order and scalings), output, and the stage's settings (radius, neighbour cap,
cuts). RUN is a run's Hydra job folder (``outputs/<date>/<time>``), its ``models``
folder, or an MLflow run id (``--tracking-uri``; default: the default store). Each file
is checked against its PyTorch model on random inputs before the command ends.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from .. import __version__
from ..errors import TrackingError
from ..redaction import redact
from ..tracking.store import client, resolve_uri
from . import formats
from .bundle import INDEX, load_bundle, networks


def _models_folder(source: str, tracking_uri: str | None, scratch: Path) -> Path:
    p = Path(source).expanduser()
    for candidate in (p, p / "models"):
        if (candidate / INDEX).is_file():
            return candidate
    if p.exists():
        raise ValueError(f"{p}: holds no trained stages (no {INDEX} in it or in models/ below it).")
    if not re.fullmatch(r"[0-9a-f]{32}", source):
        raise ValueError(f"{source}: neither a run folder nor an MLflow run id (32 hex digits).")
    uri = resolve_uri(tracking_uri, write=False)
    try:
        return Path(client(uri).download_artifacts(source, "models", str(scratch)))
    except Exception as exc:  # MLflow's own errors: a missing run, a run without models
        raise TrackingError(f"run {source} in {redact(uri)}: no models to export ({exc}).") from None


def export(folder: Path, out: Path, fmts: list[str], source: str) -> list[dict]:
    """Write every network of the run in ``folder`` in each format; returns the manifest's
    entries (with the largest difference from PyTorch on random inputs)."""
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, (net, saved) in networks(load_bundle(folder)).items():
        inputs = saved.stage.network_inputs(saved.settings)
        example = formats.example_inputs(inputs, nodes=97, edges=389, seed=1)  # not the traced sizes
        with torch.no_grad():
            want = net(*example)
        files, diffs = {}, {}
        for fmt in fmts:
            path = formats.write(net, inputs, fmt, out / f"{name}{formats.FORMATS[fmt]}")
            got = formats.load(path)(*example)
            files[fmt], diffs[fmt] = path.name, float((got - want).abs().max())
        entries.append(
            {
                "stage": name,
                "files": files,
                "inputs": [asdict(i) for i in inputs],
                "output": saved.stage.network_output,
                "settings": {"fit": saved.settings.fit, "apply": saved.settings.apply},
                "max_abs_diff_vs_pytorch": diffs,
            }
        )
    manifest = {
        "source": source,
        "exatrkx_sweeps": __version__,
        "torch": torch.__version__,
        "networks": entries,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
    return entries


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m exatrkx_sweeps.export", description=__doc__.split("\n\n")[1])
    ap.add_argument("run", help="a run's job folder or models folder, or an MLflow run id")
    ap.add_argument("--format", nargs="+", choices=list(formats.FORMATS), default=list(formats.FORMATS))
    ap.add_argument("--out", help="output folder (default: ./exported/<run>)")
    ap.add_argument("--tracking-uri", help="the MLflow store of a run id (default: the default store)")
    args = ap.parse_args(argv)
    out = Path(args.out or Path("exported") / Path(args.run).name).resolve()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            folder = _models_folder(args.run, args.tracking_uri, Path(scratch))
            entries = export(folder, out, args.format, args.run)
    except (ValueError, FileNotFoundError, TrackingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # onnx, onnxscript, onnxruntime: an optional extra
        print(f"error: ONNX export needs {exc.name}: pip install 'exatrkx-sweeps[export]'.", file=sys.stderr)
        return 2
    print(f"{'network':<10} {'format':<12} {'file':<16} {'max |diff| vs PyTorch':>22}")
    for e in entries:
        for fmt, name in e["files"].items():
            print(f"{e['stage']:<10} {fmt:<12} {name:<16} {e['max_abs_diff_vs_pytorch'][fmt]:>22.2e}")
    print(f"written to {out} (manifest.json: inputs, feature order and scalings, cuts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
