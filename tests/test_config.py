"""Config validation: one line naming the key, with the choices of the owning modules."""

import logging

import pytest
from hydra import compose, initialize_config_module

from exatrkx_sweeps.config import validate
from exatrkx_sweeps.errors import ConfigError
from exatrkx_sweeps.models import GNN_MODELS

from .helpers import tiny_cfg


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["gnn=attention", "+gnn.aggregation=sum"], "gnn.aggregation: not a setting of gnn.model=attention"),
        (["gnn.model=transformer"], "gnn.model='transformer': must be one of attention, gcn, interaction"),
        (["gnn=common"], "gnn.model: missing; choose gnn=attention|gcn|interaction"),
        (["gnn.aggregation=mean"], "gnn.aggregation='mean': must be one of sum, max, sum_max"),
        (["embedding.activation=swish"], "embedding.activation='swish': must be one of relu, tanh"),
        (["data.simulation.mu=-1"], "data.simulation.mu=-1: must be a number > 0"),
        (["+data.simulation.pileup=3"], "data.simulation.pileup: unknown key"),
        (["graph.backend=annoy"], "graph.backend='annoy': must be one of auto, faiss, kdtree"),
        (["augment.hough=all"], "augment.hough='all': must be one of none, params, votes"),
        (["filter.truth=layer"], "filter.truth='layer': must be one of module, pid"),
        (["tracks.bend_sigma_phi=0"], "tracks.bend_sigma_phi=0: must be a number > 0"),
        (
            ["tracks.bend_model=spline"],
            "tracks.bend_model='spline': must be one of curvature, direction, helix",
        ),
        (["train.device=gpu"], "train.device='gpu': must be auto, cpu or cuda[:N]"),
        (["train.device=cuda"], "train.device=cuda: no CUDA device is visible"),
        (["train.device=cpu", "train.precision=16-mixed"], "train.precision=16-mixed: needs a CUDA device"),
    ],
)
def test_bad_values_name_the_key_and_the_choices(overrides, message):
    with pytest.raises(ConfigError) as err:
        validate(tiny_cfg(*overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_every_shipped_architecture_validates():
    for model in ("interaction", "attention", "gcn"):
        assert validate(tiny_cfg(f"gnn={model}"))["gnn"]["model"] == model
    assert {"interaction", "attention", "gcn"} <= set(GNN_MODELS.names())


def test_the_simulation_dataclass_checks_itself_the_same_way():
    from exatrkx_sweeps.data.simulate import SimulationConfig

    with pytest.raises(ValueError, match=r"simulation.mu=0: must be a number > 0"):
        SimulationConfig(mu=0)


def test_model_settings_are_read_from_source_as_the_constructor_declares_them():
    """Validation reads a shipped model's settings from its source (no torch import);
    that reading must agree with the constructor itself, for every shipped model."""
    from exatrkx_sweeps.registry import arguments

    declared = GNN_MODELS._declared()
    assert set(declared) == {"interaction", "attention", "gcn"}
    for name in declared:
        assert declared[name] == arguments(GNN_MODELS[name]), name


def test_devices_are_told_without_torch_on_this_cpu_build():
    import torch

    from exatrkx_sweeps import devices

    # the probe (torch/version.py, the driver) agrees with torch itself: 0 on the CPU build
    assert devices.cuda_devices_seen() == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert devices.cuda_devices_seen() == 0  # the CPU build of torch, on any machine
    assert devices.check_device("auto", "bf16") == "cpu"
    with pytest.raises(ConfigError, match="train.precision=16-mixed: needs a CUDA device"):
        devices.check_device("auto", "16-mixed")
    with pytest.raises(ConfigError, match="must be auto, cpu or cuda"):
        devices.check_device("cpu:1", "32")
    with pytest.raises(ConfigError, match="train.precision='8': must be one of auto, 32, bf16, 16-mixed"):
        devices.check_device("cpu", "8")


def test_auto_precision_is_bf16_where_the_cpu_multiplies_bf16_natively(tmp_path, monkeypatch):
    from exatrkx_sweeps import devices

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n\n")
    assert devices.cpu_has_bf16(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n\n")  # AVX-512 without BF16
    assert not devices.cpu_has_bf16(info)
    assert not devices.cpu_has_bf16(tmp_path / "missing")  # not Linux: no bf16 assumed
    assert devices.resolve_precision("auto", "cuda", cuda_bf16=True) == "bf16"
    assert devices.resolve_precision("auto", "cuda", cuda_bf16=False) == "32"
    assert devices.resolve_precision("auto", "auto") == "auto"  # torch decides when the run starts
    assert devices.resolve_precision("32", "cpu") == "32"  # an explicit precision stays
    # validation resolves the default (auto) for the CPU, so that runs log and key what ran
    for native, want in ((True, "bf16"), (False, "32")):
        monkeypatch.setattr(devices, "cpu_has_bf16", lambda native=native: native)
        cfg = validate(tiny_cfg("train.device=cpu"))
        assert cfg["train"]["precision"] == want
        assert cfg["eval"]["precision"] == "32"  # scoring stays fp32 unless asked
        assert validate(tiny_cfg("train.device=cpu", "eval.precision=auto"))["eval"]["precision"] == want
        assert validate(tiny_cfg("train.device=cpu", "train.precision=32"))["train"]["precision"] == "32"


def test_the_full_scale_setting_asks_for_bf16_only_where_the_cpu_has_bf16_units(monkeypatch, caplog):
    """An AVX2-only CPU emulates bf16 (docs/pu200.md, "Which CPU": 7x slower than fp32
    there): the setting says auto, and an explicit bf16 on such a CPU runs, with a warning
    that names the fix."""
    from exatrkx_sweeps import devices

    def full_scale(*overrides):
        with initialize_config_module("exatrkx_sweeps.conf", version_base=None):
            return validate(compose("config", overrides=["data=sim_pu200", "train.device=cpu", *overrides]))

    caplog.set_level(logging.WARNING, logger="exatrkx_sweeps.config")
    for native, want in ((True, "bf16"), (False, "32")):
        monkeypatch.setattr(devices, "cpu_has_bf16", lambda native=native: native)
        caplog.clear()
        cfg = full_scale()
        assert (cfg["train"]["precision"], cfg["eval"]["precision"]) == (want, want)
        assert cfg["train"]["sectors"] == 8  # the setting itself was applied
        assert not caplog.messages
        cfg = full_scale("train.precision=bf16", "eval.precision=bf16")
        assert (cfg["train"]["precision"], cfg["eval"]["precision"]) == ("bf16", "bf16")  # as asked
        if native:
            assert not caplog.messages
        else:
            train, infer = caplog.messages
            assert train.startswith("train.precision=bf16: this CPU has no bf16 units")
            assert "use train.precision=auto" in train and "use eval.precision=auto" in infer
