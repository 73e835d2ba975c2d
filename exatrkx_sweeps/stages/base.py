"""The one interface every stage implements, and what flows from stage to stage.

A stage (embedding, graph construction, filter, GNN, track building) says:

* ``settings(cfg)``: everything it reads from the run's config, in three parts:
  ``fit`` (changes the fitted state, hence everything downstream), ``apply`` (changes
  only what the fitted state outputs) and ``runtime`` (changes speed or memory, never
  results). A stage reads its settings only through this object, so every setting
  that can change a result is in its cache key by construction; ``fit`` may read an
  ``apply`` setting only for the validation metrics it reports while training.
* ``code(settings)``: the modules whose source is its code fingerprint (by default its
  own module; the fingerprint follows their imports inside the package).
* ``fit(ctx, settings, train, val)``: train on the upstream outputs of the training
  and validation events; returns the fitted state, made of tensors and plain
  containers only (what the stage cache stores). Stages with ``fits`` false have none.
* ``load(ctx, settings, state)``: an :data:`Applier` that takes one event's
  :class:`EventGraph` to the next.

The driver (``pipeline.py``) keys, caches, times and evaluates every stage the same
way and never reads a stage's settings itself.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import torch
from torch_geometric.data import Data

from ..distributed import DataParallel, World
from ..errors import one_line
from ..progress import progress

log = logging.getLogger(__name__)

# on_epoch(stage, epoch, metrics): training curves; a sweeper may raise from it to prune
EpochCallback = Callable[[str, int, dict[str, float]], None]


@dataclass
class EventGraph:
    """One event on its way through the stages: the processed event and what the stages
    so far made of it. ``edges`` are the edges the last stage kept (2, E), inside-out,
    with their ``scores`` (E,) where that stage scored them."""

    data: Data
    embedding: torch.Tensor | None = None
    edges: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    labels: np.ndarray | None = None  # track candidate label of every hit

    # what the stage cache keeps of an event that passed a stage (tensors only)
    CACHED: ClassVar[tuple[str, ...]] = ("embedding", "edges", "scores")

    def replace(self, **changes: Any) -> EventGraph:
        return dataclasses.replace(self, **changes)

    def outputs(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in self.CACHED if getattr(self, k) is not None}


Applier = Callable[[EventGraph], EventGraph]


@dataclass(frozen=True)
class Settings:
    """What a stage reads from the config (see the module docstring)."""

    fit: Mapping[str, Any] = field(default_factory=dict)
    apply: Mapping[str, Any] = field(default_factory=dict)
    runtime: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        for part in (self.fit, self.apply, self.runtime):
            if key in part:
                return part[key]
        raise KeyError(f"{key!r} is not among this stage's settings")


@dataclass
class RunContext:
    """What a run gives every stage: the device, progress bars, the epoch callback
    (training curves, pruning), and the processes it trains with (``world``; each takes
    ``events_per_step`` events per optimizer step, distributed.py)."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    progress: bool = False
    on_epoch: EpochCallback | None = None
    world: World = field(default_factory=World)
    events_per_step: int = 1
    checkpoint: Path | None = None  # where the stage being fitted keeps its last finished epoch

    def epochs(self, n_epochs: int, stage: str, state: Mapping[str, Any] | None = None) -> Iterator[int]:
        """range(n_epochs), with a progress bar when the run shows progress (rank 0).

        With ``state`` (the training's model, optimizer, scheduler: anything with
        ``state_dict``) and a ``checkpoint`` path, every finished epoch is saved there, and
        a training that finds one (a run killed mid-stage: a SLURM time limit, a kill)
        loads it and goes on from the next epoch. Every draw of an epoch comes from
        generators seeded by the epoch (distributed.py), so the resumed training ends
        with the weights an uninterrupted one would have."""
        start, path = 0, self.checkpoint if state is not None else None
        if path is not None and path.exists():
            fresh = {name: copy.deepcopy(obj.state_dict()) for name, obj in state.items()}
            try:  # tensors and numbers only: a crafted pickle is refused, never run
                saved = torch.load(path, map_location=self.device, weights_only=True)
                for name, obj in state.items():
                    obj.load_state_dict(saved["state"][name])
                start = int(saved["epoch"]) + 1
            except Exception as exc:  # noqa: BLE001 (any unreadable or foreign file: train afresh)
                for name, obj in state.items():
                    obj.load_state_dict(fresh[name])
                start = 0
                log.warning(f"{stage}: cannot resume from {path.name} ({one_line(exc)}); training afresh")
            if start and self.world.main:
                log.info(f"{stage}: resuming after epoch {start} of {n_epochs} ({path.name})")
        shown = self.progress and self.world.main
        epochs = range(start, int(n_epochs))
        for epoch in progress(epochs, f"train {stage}", "epoch", enabled=shown, done=start):
            yield epoch
            if path is not None and self.world.main:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.tmp")
                try:  # a kill while saving leaves the previous epoch's checkpoint
                    torch.save({"epoch": epoch, "state": {k: v.state_dict() for k, v in state.items()}}, tmp)
                    os.replace(tmp, path)
                finally:
                    tmp.unlink(missing_ok=True)

    def data_parallel(self) -> DataParallel:
        return DataParallel(self.world, self.events_per_step)

    def epoch_done(self, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        if self.on_epoch is not None and self.world.main:
            self.on_epoch(stage, epoch, metrics)


class Stage(ABC):
    name: ClassVar[str]  # its config group, the prefix of its cache keys and metrics
    fits: ClassVar[bool] = True  # whether it has a state to fit (and cache)
    edge_metrics: ClassVar[str | None] = None  # edge metrics after it go under this name
    requires_embedding: ClassVar[bool] = False  # the embedding stage runs only for one that does
    network_output: ClassVar[str] = ""  # what its network returns (an exported model's manifest)

    @abstractmethod
    def settings(self, cfg: Mapping[str, Any]) -> Settings: ...

    def code(self, settings: Settings) -> tuple[ModuleType | str, ...]:
        return (type(self).__module__,)

    def fit(
        self, ctx: RunContext, s: Settings, train: list[EventGraph], val: list[EventGraph]
    ) -> dict[str, Any]:
        raise NotImplementedError(f"the {self.name} stage has nothing to fit")

    @abstractmethod
    def load(self, ctx: RunContext, s: Settings, state: dict[str, Any] | None) -> Applier: ...

    # A stage with a trained network also says what it is, so that it can be exported
    # (exatrkx_sweeps.export) and its applier run with an exported copy in its place.
    def network(self, s: Settings, state: dict[str, Any]) -> torch.nn.Module | None:
        """The trained network (CPU, eval mode); None for a stage without one."""
        return None

    def network_inputs(self, s: Settings) -> list[Input]:
        """The network's inputs, in the order of its forward()."""
        return []

    def applier(self, ctx: RunContext, s: Settings, model: Callable[..., torch.Tensor]) -> Applier:
        """The stage applied with ``model`` (the network, or anything called like it)."""
        raise NotImplementedError(f"the {self.name} stage has no network")


class NetworkStage(Stage):
    """A stage whose fitted state is the weights of the network ``build`` makes."""

    @abstractmethod
    def build(self, s: Settings) -> torch.nn.Module: ...

    def load(self, ctx: RunContext, s: Settings, state: dict[str, Any] | None) -> Applier:
        return self.applier(ctx, s, loaded(self.build(s), state, ctx.device))

    def network(self, s: Settings, state: dict[str, Any]) -> torch.nn.Module:
        return loaded(self.build(s), state, "cpu")


@dataclass(frozen=True)
class Input:
    """One network input: its name, shape (``"nodes"`` / ``"edges"`` for the sizes that
    vary from event to event), dtype, and what its columns are."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"
    columns: tuple[str, ...] = ()


def state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A model's weights as a CPU state dict: the fitted state of a network stage."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def loaded(model: torch.nn.Module, state: dict, device) -> torch.nn.Module:
    """``model`` with ``state`` loaded, on ``device``, in eval mode."""
    model.load_state_dict(state)
    return model.to(device).eval()
