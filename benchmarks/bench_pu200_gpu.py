"""Full PU200 inference on a CUDA GPU, per stage, with the models trained on the CPU.

On the CPU machine, after the full-scale run (``python -m exatrkx_sweeps data=sim_pu200``):

    python benchmarks/bench_pu200_gpu.py --pack benchmarks/pu200_models [key=value ...]   # < 1 MB

On the GPU machine (the folder travels with the checkout):

    pip install -e ".[gpu]"   # optional: faiss-gpu, cugraph (else torch's CUDA search, scipy)
    python benchmarks/bench_pu200_gpu.py --models benchmarks/pu200_models [--events 4] [key=value ...]

It puts the fitted stages in a fresh stage cache, simulates the setting's events (the
training events are not run through the stages: with every fitted stage in the cache
nothing trains), runs the test events through every stage on the GPU (radius search
with faiss-gpu or torch, connected components with cugraph or scipy) and prints the
run's summary. Then it runs the test events twice more, warm (one untimed event first):
with the filter and the GNN scoring in the precision they were trained with, and in
bf16 where the device has bf16 units (the same fitted states under bf16 autocast). For
each: per stage, seconds per event and edges after it, the physics, and GFLOP per
event, GFLOP/s and the share of the device's matrix-product peak measured here; and the
seed's anchors: 1.11 s per event on a V100, 0.86 s in the ACTS plugin. The fitted
stages are found only with the code that trained them (a cache key holds the code's
fingerprint): pack and run at the same commit. ``--pack`` copies only the stages of the
run its overrides describe, with what each key was made of (``keys.json``); ``--models``
computes this machine's keys before anything runs and, where the pack lacks one, stops
and names what differs (a setting, the code, an upstream key) instead of training the
stage (``--allow-training`` trains it; the output then names it under "trained here").

A stage's key also holds the precisions its training resolved ``auto`` to on the
machine that trained it: the GNN's ``train.precision``, and through the filtered edges
it trained on, ``eval.precision``. A CPU without bf16 units resolves both to fp32, a
recent GPU to bf16, and so would train the GNN again. ``--pack`` therefore writes the
training run's overrides (``key=value`` given after ``--pack DIR``: those of the CPU
run) with both precisions resolved to ``overrides.txt``, and ``--models`` applies them
before its own; the bf16 pass changes only how the test events are scored. Without
``--models`` it first trains the setting on the GPU (tens of minutes). Without CUDA it
runs on the CPU, for a dry run of the script. A few minutes on a GPU machine, set-up
included. On a machine without the package's other dependencies (no internet), hydra-core,
omegaconf and antlr4-python3-runtime are all it needs beside torch, torch-geometric,
numpy, scipy, pandas, psutil and tqdm: ``PYTHONPATH=.:<their folder>`` instead of
``pip install``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_inference import peak_table
from hydra import compose, initialize_config_module

from exatrkx_sweeps import pipeline
from exatrkx_sweeps.cache import default_dir
from exatrkx_sweeps.config import validate
from exatrkx_sweeps.devices import cpu_has_bf16
from exatrkx_sweeps.profiling import Profiler
from exatrkx_sweeps.stages.base import RunContext

SEED_ANCHORS = "seed: 1.11 s per event on a V100 (16 GB), 0.86 s in the ACTS plugin"


OVERRIDES = "overrides.txt"  # in a pack: the training run's overrides, precisions resolved
KEYS = "keys.json"  # in a pack: what each fitted stage's key was made of on the training machine
# keys that say where and how this script runs, not how the models were trained
_NOT_PACKED = ("train.precision=", "eval.precision=", "train.device=", "cache.", "tracking.")


def training_overrides(overrides: list[str]) -> list[str]:
    """The training run's ``overrides`` with its precisions as this machine resolves them."""
    with initialize_config_module("exatrkx_sweeps.conf", version_base=None):
        cfg = validate(compose("config", overrides=["data=sim_pu200", *overrides]))
    resolved = [f"train.precision={cfg['train']['precision']}", f"eval.precision={cfg['eval']['precision']}"]
    return [o for o in overrides if not o.startswith(_NOT_PACKED)] + resolved


def pack(cache_dir: Path, out: Path, overrides: list[str]) -> None:
    """Copy the fitted stages of the run that ``overrides`` describe (not events, not
    per-event outputs, not other runs' stages) from a stage cache, with those overrides
    and what each stage's key is made of."""
    trained_with = training_overrides(overrides)
    with initialize_config_module("exatrkx_sweeps.conf", version_base=None):
        cfg = validate(
            compose("config", overrides=["data=sim_pu200", *trained_with, f"cache.dir={cache_dir}"])
        )
    pack_stages(cfg, cache_dir, out, trained_with)


def pack_stages(cfg: dict, cache_dir: Path, out: Path, trained_with: list[str]) -> None:
    """Copy the fitted stages of ``cfg`` from ``cache_dir`` to ``out``, a new folder or
    an earlier pack: that pack's stages go (``--models`` would copy every stage file it
    finds), and a folder that is not a pack is left alone with an error."""
    parts = pipeline.key_parts(cfg)
    stored = cache_dir / "stages"
    absent = [p.stage for p in parts if not (stored / f"{p.fit_key}.pt").exists()]
    if absent:
        sys.exit(
            f"error: {stored} holds no fitted {', '.join(absent)} for these overrides; run the "
            "full-scale setting with them first (or give the cache.dir= it ran with)."
        )
    old = sorted(out.iterdir()) if out.is_dir() else []
    if old and not (out / KEYS).exists():
        sys.exit(
            f"error: {out} holds files and is not a pack (no {KEYS}); give --pack a new or "
            "empty folder, or an earlier pack to replace."
        )
    out.mkdir(parents=True, exist_ok=True)
    for f in old:
        if f.suffix in (".pt", ".sha256") and f.is_file():
            f.unlink()
    for p in parts:
        for suffix in (".pt", ".sha256"):
            shutil.copy2(stored / f"{p.fit_key}{suffix}", out / f"{p.fit_key}{suffix}")
    (out / OVERRIDES).write_text("\n".join(trained_with) + "\n")
    (out / KEYS).write_text(json.dumps([dataclasses.asdict(p) for p in parts], indent=1))
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    replaced = f", replacing {sum(f.suffix == '.pt' for f in old)} stages of an earlier pack" if old else ""
    with_ = " ".join(trained_with)
    print(f"{len(parts)} fitted stages ({size:.1f} MB) in {out}{replaced}; trained with: {with_}")


def check_pack(cfg: dict, device: str, cache: Path, models: Path) -> None:
    """Stop, before anything trains, when the pack lacks a fitted stage this checkout keys
    differently here: name the part of its key that differs from the training machine's."""
    made = {}
    if (models / KEYS).exists():
        made = {p["stage"]: pipeline.KeyParts(**p) for p in json.loads((models / KEYS).read_text())}
    parts = pipeline.key_parts(cfg, device)
    missing = [p for p in parts if not (cache / "stages" / f"{p.fit_key}.pt").exists()]
    here = f"Python {sys.version.split()[0]}, torch {torch.__version__}"
    if not missing:
        print(f"the pack holds every fitted stage at this machine's keys ({here})")
        return
    lines = [
        f"error: the pack {models} lacks the fitted {', '.join(p.stage for p in missing)} at this "
        f"machine's keys ({here}); the run would train {'it' if len(missing) == 1 else 'them'} here."
    ]
    for p in missing:
        there = made.get(p.stage)
        why = p.differences(there) if there else ["the pack has no keys.json (packed by an older commit)"]
        why = why or ["none of its parts differs: the cache's entry format changed between the two commits"]
        lines.append(f"  {p.stage}: key {p.fit_key} here, {there.fit_key if there else '?'} in the pack")
        lines += [f"    {d}" for d in why]
    lines.append(
        "Pack and run at the same commit with the same overrides, or pass --allow-training to train it."
    )
    sys.exit("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pack", type=Path, help="copy the fitted stages of --cache here, and stop")
    ap.add_argument(
        "--cache", type=Path, default=None, help="stage cache to pack (default: cache.dir=, else the user's)"
    )
    ap.add_argument("--models", type=Path, help="a folder made by --pack")
    ap.add_argument("--events", type=int, default=None, help="the first N of the setting's test events")
    ap.add_argument(
        "--allow-training",
        action="store_true",
        help="with --models: train a stage the pack lacks (else stop before the run, saying why)",
    )
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    if args.pack:
        given = [o.split("=", 1)[1] for o in args.overrides if o.startswith("cache.dir=")]
        return pack(args.cache or Path(given[-1] if given else default_dir()), args.pack, args.overrides)
    if args.models and any(o.startswith("cache.dir=") for o in args.overrides):
        # the pack goes into a temporary cache; another cache.dir would find no fitted
        # stage there and train the setting (hours on a CPU)
        sys.exit("error: --models runs in a temporary stage cache of its own; drop cache.dir=.")
    t_start = time.perf_counter()
    # the run's progress lines (events simulated, stages, test events) on stderr
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device: {torch.cuda.get_device_name() if device == 'cuda' else 'CPU (no CUDA here: a dry run)'}")
    cache = Path(tempfile.mkdtemp(prefix="pu200_gpu_"))
    packed: list[str] = []
    if args.models:
        (cache / "stages").mkdir(parents=True)
        for f in args.models.iterdir():
            if f.name == OVERRIDES:
                packed = f.read_text().split()
            elif f.name != KEYS:
                shutil.copy2(f, cache / "stages" / f.name)
        print(f"the pack's training overrides: {' '.join(packed) or 'none (a pack of an older commit)'}")
    overrides = [
        "data=sim_pu200",
        f"train.device={device}",
        f"cache.dir={cache}",
        "tracking.enabled=false",
        *packed,
        *args.overrides,
    ]
    with initialize_config_module("exatrkx_sweeps.conf", version_base=None):
        cfg = validate(compose("config", overrides=overrides))
    if args.events:
        # the first N of the setting's test events; data.n_test=N would move the training
        # events (the test events come first) and so miss every fitted stage
        cfg["eval"]["data"] = {**copy.deepcopy(cfg["data"]), "n_train": 0, "n_val": 0, "n_test": args.events}
    if args.models and not args.allow_training:
        check_pack(cfg, device, cache, args.models)
    captured: list[tuple] = []  # (stage, settings, fitted state) of every stage, in order
    callbacks = pipeline.Callbacks(on_fitted=lambda *fitted: captured.append(fitted))
    report = pipeline.run(cfg, callbacks, progress=True)
    m, info = report.metrics, report.info
    trained = [s for s in ("embedding", "filter", "gnn") if not report.cache_hits.get(s)]
    print(report.summary_table())
    backends = f"graph {info['graph_backend']}, tracks {info['tracks_backend']}"
    print(f"backends: {backends}; trained here: {trained or 'none'}")
    first = m["time_infer_total_s"]
    print(f"the run's test pass (the first on this device, its warm-up included): {first:.3f} s per event")

    # the same test events again, warm: as trained, and with bf16 scoring where the device has bf16 units
    test = pipeline.load_events(cfg, cache, progress=False).test
    trained_in = "bf16" if cfg["eval"]["precision"] == "bf16" else "32"
    has_bf16 = torch.cuda.is_bf16_supported() if device == "cuda" else cpu_has_bf16()
    precisions = dict.fromkeys([trained_in, *(["bf16"] if has_bf16 else [])])  # in order, once each
    passes = {p: warm_pass(captured, cfg, test, device, p) for p in precisions}
    flops = peaks = None
    for precision, pm in passes.items():
        name = "fp32" if precision == "32" else precision
        tag = " (as trained)" if precision == trained_in else " (the models trained in fp32, scored in bf16)"
        print(f"\n{name} scoring{tag}, per event ({pm['hits_per_event']:.0f} hits), on {device}, warm:")
        for stage in ("graph", "filter", "gnn", "tracks"):
            edges = pm.get(f"edges_per_event_{'embedding' if stage == 'graph' else stage}")
            shown = f", {edges:,.0f} edges after it" if edges is not None and stage != "tracks" else ""
            print(f"  {stage:>7}: {pm[f'time_infer_{stage}_s']:.3f} s{shown}")
        print(f"  total  : {pm['time_infer_total_s']:.3f} s per event ({SEED_ANCHORS})")
        print(
            f"  technical efficiency {100 * pm['eff_tech_pt0.5']:.2f}% (pT > 0.5 GeV), "
            f"{100 * pm['eff_tech_pt1']:.2f}% (> 1 GeV); physics {100 * pm['eff_phys_pt0.5']:.2f}% / "
            f"{100 * pm['eff_phys_pt1']:.2f}%; purity {100 * pm['purity']:.2f}%"
        )
        peaks_mb = {k: round(v) for k, v in pm.items() if k.startswith("cuda_peak")}
        if peaks_mb:
            print(f"  CUDA peak memory (MB): {peaks_mb}")
        scored = {**cfg, "eval": {**cfg["eval"], "precision": precision}}
        flops, peaks = peak_table(scored, pm, device, flops, peaks)
    print(f"\nwall time, set-up included: {time.perf_counter() - t_start:.0f} s")
    shutil.rmtree(cache, ignore_errors=True)


def warm_pass(captured: list[tuple], cfg: dict, events: list, device: str, precision: str) -> dict:
    """The test events through the fitted stages with the filter and the GNN scoring in
    ``precision`` (the fitted states unchanged), after one untimed event as a warm-up:
    the metrics of ``pipeline.run``'s test pass."""
    ctx = RunContext(device=torch.device(device))
    fitted = []
    for stage, s, state in captured:
        if "infer_precision" in s.apply:
            s = dataclasses.replace(s, apply={**s.apply, "infer_precision": precision})
        fitted.append(pipeline.Fitted(stage, stage.load(ctx, s, state), ""))
    pipeline.evaluate(fitted, events[:1], Profiler(ctx.device), cfg)
    prof = Profiler(ctx.device)
    edges, tracks = pipeline.evaluate(fitted, events, prof, cfg)
    m = pipeline.evaluation_metrics(fitted, edges, tracks, prof)
    m["hits_per_event"] = sum(d.num_nodes for d in events) / len(events)
    return m


if __name__ == "__main__":
    main()
