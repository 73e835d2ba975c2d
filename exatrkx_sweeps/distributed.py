"""Data-parallel training over processes with ``torch.distributed`` (gloo on CPU, nccl on
CUDA).

A run is distributed when torchrun started it (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``PORT``), when it is one of several tasks of a SLURM job step (srun, or
``hydra/launcher=slurm`` with ``tasks_per_node``: ``SLURM_PROCID``, ``SLURM_NTASKS``), or
with ``train.devices=N``, which starts the same command again under torchrun on this
machine. Every rank runs the whole command and loads the events. At every optimizer step
each rank takes its share of the step's events (:class:`DataParallel`); the gradients
are summed over the ranks and divided by the step's events, so N ranks with
``train.events_per_step=k`` train as one process with ``k * N`` events per step. Rank 0
alone validates, writes the cache, logs to MLflow and tests; the others stop after the
last training stage.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def world_from_env(env: dict[str, str] | None = None) -> World:
    """The processes this one trains with, from torchrun's or SLURM's variables."""
    env = dict(os.environ if env is None else env)
    if "RANK" in env and "WORLD_SIZE" in env:
        return World(
            int(env["RANK"]),
            int(env["WORLD_SIZE"]),
            int(env.get("LOCAL_RANK", 0)),
            int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])),
        )
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env and "SLURM_STEP_ID" in env:
        n = int(env["SLURM_NTASKS"])
        per_node = int(env.get("SLURM_NTASKS_PER_NODE", str(n)).split("(")[0])
        return World(int(env["SLURM_PROCID"]), n, int(env.get("SLURM_LOCALID", 0)), per_node)
    return World()


def _slurm_rendezvous(world: World) -> None:
    """MASTER_ADDR / MASTER_PORT for the tasks of a SLURM step: the step's first node, and
    a port from the job id (the same on every task)."""
    if "MASTER_ADDR" not in os.environ:
        nodes = os.environ.get("SLURM_STEP_NODELIST") or os.environ.get("SLURM_JOB_NODELIST", "")
        first = "127.0.0.1"
        if nodes:
            out = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True, text=True)
            first = (out.stdout.split() or [first])[0]
        os.environ["MASTER_ADDR"] = first
    os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000))
    os.environ.setdefault("RANK", str(world.rank))
    os.environ.setdefault("WORLD_SIZE", str(world.size))


def init(world: World, device: torch.device) -> None:
    """Join the process group of ``world`` (nothing to do for one process)."""
    if world.size == 1 or dist.is_initialized():
        return
    if "SLURM_PROCID" in os.environ and "RANK" not in os.environ:
        _slurm_rendezvous(world)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=world.rank, world_size=world.size, timeout=timedelta(minutes=30))


def device_of(world: World, device: torch.device) -> torch.device:
    """Each rank's own GPU on a node (``cuda:LOCAL_RANK``); CPU ranks share the CPU."""
    if device.type == "cuda" and world.size > 1:
        return torch.device("cuda", world.local_rank)
    return device


def broadcast(world: World, value: Any) -> Any:
    """Rank 0's ``value`` on every rank."""
    if world.size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def finish(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


class DataParallel:
    """The optimizer steps of one stage's training on ``world``: ``per_step`` events (or
    other work items) per rank and step, the gradients averaged over the step's items
    of all ranks."""

    def __init__(self, world: World, per_step: int = 1):
        self.world, self.per_step = world, max(1, int(per_step))

    def steps(self, order: Sequence[T]) -> Iterator[list[T]]:
        """This rank's items of each step, in ``order`` (the same on every rank)."""
        group = self.per_step * self.world.size
        for start in range(0, len(order), group):
            yield list(order[start : start + group])[self.world.rank :: self.world.size]

    def sync(self, model: torch.nn.Module) -> None:
        """Rank 0's parameters on every rank (models start equal)."""
        if self.world.size > 1:
            for p in model.parameters():
                dist.broadcast(p.data, src=0)

    def average(self, model: torch.nn.Module, n_local: int) -> int:
        """Sum the accumulated gradients over the ranks and divide them by the step's
        items on all ranks (``n_local`` here); returns that number (0: skip the step)."""
        params = [p for p in model.parameters() if p.requires_grad]
        n = n_local
        if self.world.size > 1:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            flat = torch.cat([g.reshape(-1).float() for g in grads])
            flat = torch.cat([flat, torch.tensor([float(n_local)], device=flat.device)])
            dist.all_reduce(flat)
            n = int(round(float(flat[-1])))
            offset = 0
            for p, g in zip(params, grads, strict=True):
                p.grad = flat[offset : offset + g.numel()].view_as(g).to(g.dtype).clone()
                offset += g.numel()
        if n > 1:
            for p in params:
                if p.grad is not None:
                    p.grad /= n
        return n

    def total(self, *values: float) -> list[float]:
        """``values`` summed over the ranks (losses and counts of an epoch)."""
        if self.world.size == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()


def event_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The random numbers of one event's training step (reflections, sampled pairs): a
    function of the event and epoch only, so whichever rank takes the event draws the same."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + epoch) * 1_000_033 + index)


def epoch_order(seed: int, epoch: int, n: int) -> list[int]:
    """The order of the training events in one epoch, the same on every rank."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(seed) * 7919 + epoch)).tolist()
