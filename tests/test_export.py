"""Trained models out of a run: listed as MLflow models, exported as TorchScript and ONNX
files that reproduce the PyTorch scores and build the same tracks on a held event."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from exatrkx_sweeps.data.dataset import EventStore
from exatrkx_sweeps.export import formats
from exatrkx_sweeps.export.bundle import load_bundle, networks, reconstruct

from .helpers import TINY, tiny_cfg

NETWORKS = {"embedding", "filter", "gnn"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run that logs its models: (its job folder, run id, store URI, cache)."""
    tmp = tmp_path_factory.mktemp("export")
    db, job, cache = tmp / "m.db", tmp / "job", tmp / "cache"
    args = [*TINY, "tracking.log_models=true", f"cache.dir={cache}", f"hydra.run.dir={job}"]
    r = subprocess.run(
        [sys.executable, "-m", "exatrkx_sweeps", *args],
        env={**os.environ, "EXATRKX_MLFLOW_DB": str(db)},
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    uri = f"sqlite:///{db}"
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("exatrkx").experiment_id])
    return job, run.info.run_id, uri, cache


def _export(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "exatrkx_sweeps.export", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_run_lists_its_networks_as_mlflow_models(trained):
    job, run_id, uri, _ = trained
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    models = client.search_logged_models([run.info.experiment_id])
    assert {m.name for m in models} == NETWORKS and {m.source_run_id for m in models} == {run_id}
    assert "models/stages.json" in {a.path for a in client.list_artifacts(run_id, "models")}
    nets = networks(load_bundle(job / "models"))
    mlflow.set_tracking_uri(uri)
    for m in models:  # mlflow.pytorch gets each back, and it computes what the network does
        back = mlflow.pytorch.load_model(f"models:/{m.model_id}")
        net, saved = nets[m.name]
        x = formats.example_inputs(saved.stage.network_inputs(saved.settings), nodes=40, edges=150, seed=5)
        with torch.no_grad():
            got = (back.module() if hasattr(back, "module") else back)(*x)
            assert torch.allclose(got, net(*x), atol=1e-5)


def test_torchscript_and_onnx_reproduce_the_scores_and_the_tracks_of_a_held_event(trained, tmp_path):
    job, run_id, uri, cache = trained
    # from the job folder (TorchScript) and from the run id in MLflow (ONNX)
    r = _export(str(job), "--format", "torchscript", "--out", str(tmp_path / "ts"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    r = _export(
        run_id, "--tracking-uri", uri, "--format", "onnx", "--out", str(tmp_path / "onnx"), cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "max |diff| vs PyTorch" in r.stdout
    manifest = json.loads((tmp_path / "onnx" / "manifest.json").read_text())
    by_stage = {e["stage"]: e for e in manifest["networks"]}
    assert set(by_stage) == NETWORKS
    x = by_stage["gnn"]["inputs"][0]
    assert x["columns"][:3] == ["r / 1000 mm", "phi / pi", "z / 1000 mm"] and x["shape"][0] == "nodes"
    # the cut it applies and the precision it scored in
    assert by_stage["filter"]["settings"]["apply"] == {"cut": tiny_cfg().filter.cut, "infer_precision": "32"}

    # a held event: simulated like the training events, never seen in training
    data_cfg = {**OmegaConf.to_container(tiny_cfg().data, resolve=True), "first_event": 9000}
    data_cfg.update(n_train=0, n_val=0, n_test=1)
    (event,) = EventStore(data_cfg, cache).split("test", pt_cut=0.5)
    bundle = load_bundle(job / "models")
    recorded = {name: Recorder(net) for name, (net, _) in networks(bundle).items()}
    want = reconstruct(bundle, event, replace=recorded)  # PyTorch, each network's inputs kept
    for fmt, folder, suffix in (("torchscript", "ts", ".pt"), ("onnx", "onnx", ".onnx")):
        exported = {n: formats.load(tmp_path / folder / f"{n}{suffix}") for n in NETWORKS}
        # each network on the held event's own inputs: the embedding, the filter's and the
        # GNN's scores as PyTorch gives them
        for name, rec in recorded.items():
            for inputs, output in rec.calls:
                got = exported[name](*inputs)
                if name != "embedding":
                    got, output = torch.sigmoid(got), torch.sigmoid(output)
                assert float((got - output).abs().max()) < 1e-4, (fmt, name)
        # end to end: the same graph after every cut and identical tracks. (A last-digit
        # difference in the embedding may move a hit pair across the radius; such an edge
        # is cut later, but it nudges its neighbours' GNN scores: compare the tracks.)
        got = reconstruct(bundle, event, replace=exported)
        assert torch.equal(got.edges, want.edges), fmt
        assert np.array_equal(got.labels, want.labels), fmt
    sizes = np.bincount(want.labels)
    assert (sizes >= 3).sum() >= 10  # the held event's tracks are really built


class Recorder:
    """A network that keeps the inputs and outputs of its calls."""

    def __init__(self, net):
        self.net, self.calls = net, []

    def eval(self):
        return self

    def __call__(self, *inputs):
        with torch.no_grad():
            out = self.net(*inputs)
        self.calls.append((inputs, out))
        return out


def test_export_of_something_that_is_not_a_run_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    for source in (str(tmp_path / "empty"), "not-a-run"):
        r = _export(source, cwd=tmp_path)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
