"""A run's trained stages as files: what a run writes (and logs to MLflow) and what
``python -m exatrkx_sweeps.export`` reads.

``models/stages.json`` lists the stages in order; ``models/<stage>/stage.json`` holds the
stage's class and settings (fit / apply / runtime: everything that shapes its network and
its cuts), ``models/<stage>/state.pt`` its fitted state (tensors and plain containers,
read with ``weights_only=True``, so a file cannot run code).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch_geometric.data import Data

from .. import __version__
from ..stages.base import EventGraph, RunContext, Settings, Stage

INDEX, STAGE_FILE, STATE_FILE = "stages.json", "stage.json", "state.pt"
_STAGES_PACKAGE = "exatrkx_sweeps.stages."  # the only modules a stage.json may name


@dataclass
class SavedStage:
    stage: Stage
    settings: Settings
    state: Any


def save_stage(folder: Path, stage: Stage, s: Settings, state: Any) -> None:
    """Write one fitted stage into ``folder`` (and add it to the folder's index)."""
    d = Path(folder) / stage.name
    d.mkdir(parents=True, exist_ok=True)
    meta = {
        "stage": stage.name,
        "class": f"{type(stage).__module__}:{type(stage).__qualname__}",
        "settings": {"fit": dict(s.fit), "apply": dict(s.apply), "runtime": dict(s.runtime)},
        "exatrkx_sweeps": __version__,
    }
    (d / STAGE_FILE).write_text(json.dumps(meta, indent=1, default=str))
    if state is not None:
        torch.save(state, d / STATE_FILE)
    index = Path(folder) / INDEX
    names = json.loads(index.read_text()) if index.exists() else []
    index.write_text(json.dumps([*[n for n in names if n != stage.name], stage.name]))


def load_bundle(folder: Path) -> list[SavedStage]:
    """The stages saved in ``folder``, in pipeline order."""
    folder = Path(folder)
    index = folder / INDEX
    if not index.is_file():
        raise FileNotFoundError(f"{folder}: no {INDEX}; not a run's models folder (written by every run).")
    return [_load_stage(folder / name) for name in json.loads(index.read_text())]


def _load_stage(d: Path) -> SavedStage:
    meta = json.loads((d / STAGE_FILE).read_text())
    module, _, cls = str(meta["class"]).partition(":")
    if not module.startswith(_STAGES_PACKAGE):
        raise ValueError(f"{d / STAGE_FILE}: class {meta['class']!r} is not a stage of exatrkx_sweeps.")
    stage = getattr(importlib.import_module(module), cls)()
    s = Settings(**meta["settings"])
    state = (
        torch.load(d / STATE_FILE, map_location="cpu", weights_only=True)
        if (d / STATE_FILE).exists()
        else None
    )
    return SavedStage(stage, s, state)


def networks(bundle: list[SavedStage]) -> dict[str, tuple[torch.nn.Module, SavedStage]]:
    """The trained network of every stage that has one, by stage name."""
    out = {}
    for saved in bundle:
        net = saved.stage.network(saved.settings, saved.state)
        if net is not None:
            out[saved.stage.name] = (net, saved)
    return out


def reconstruct(
    bundle: list[SavedStage],
    data: Data,
    replace: Mapping[str, Callable[..., torch.Tensor]] | None = None,
    device: str = "cpu",
) -> EventGraph:
    """One event through every saved stage; ``replace`` runs a stage with another copy
    of its network (an exported one) in place of the PyTorch model."""
    ctx = RunContext(torch.device(device))
    ev = EventGraph(data)
    for saved in bundle:
        if replace and saved.stage.name in replace:
            apply = saved.stage.applier(ctx, saved.settings, replace[saved.stage.name])
        else:
            apply = saved.stage.load(ctx, saved.settings, saved.state)
        ev = apply(ev)
    return ev
