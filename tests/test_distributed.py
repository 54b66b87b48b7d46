"""Multi-process training under torchrun (gloo, 2 CPU processes) and the distributed helpers."""

import json
from pathlib import Path

import pytest
import torch

from datasets.synthetic.writer import generate
from training import components
from training import trainer as trainer_lib
from utils import distributed as dist_utils
from tests.helpers import CONFIGS, GRAD_RTOL, changed_parameters_after_steps, torchrun
from utils.config import load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # 4 configurations x 3 steps in one launch: ~1-2 min on 2 cores
def test_two_processes_stay_in_sync_and_match_one_process_for_each_configuration(tmp_path):
    """DDP without find_unused_parameters in every configuration (EST off, or 3 frames,
    crashed at step 2 before: key_layer gets no gradient); ranks end identical; the
    first step's gradient equals a 1-process run on the concatenated batch.

    Exact only where both compute the same function: batch norm uses its running
    statistics (in train mode each rank normalises its own window, the 1-process run the
    batch of 2), and every ground-truth pixel is valid (the loss is a mean over the valid
    pixels of a rank's batch; DDP averages the ranks, which weighs windows equally, while
    one process weighs them by their valid-pixel counts).
    """
    data = tmp_path / "data"
    generate(data, layout="scannet", scenes=2, frames=22, height=128, width=128, seed=3,
             val=0, test=0, workers=1)
    run = torchrun(ROOT / "tests" / "ddp_worker.py", "--out", tmp_path, "--datapath", data)
    assert run.returncode == 0, run.stderr[-4000:]

    index = json.loads((tmp_path / "index.json").read_text())
    assert index["scans_by_rank"] == [2, 0], "only rank 0 scans the scenes"
    assert index["windows_by_rank"][0] == index["windows_by_rank"][1] > 0
    for config in CONFIGS:
        result = json.loads((tmp_path / f"{config}.json").read_text())
        assert result["replicas_in_sync"] and result["steps"] == 3, config
        assert result["same_parameters_with_grad"], config
        assert result["max_grad_diff"] <= GRAD_RTOL * result["max_grad"], (config, result)
        key_layer = [n for n in result["frozen"] if n.startswith("CostRegNet.key_layer.")]
        assert bool(key_layer) == (config != "est1_seq5"), config


def test_explicit_gpu_with_several_ranks_is_an_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ValueError, match="LOCAL_RANK"):
        dist_utils.init_distributed("cuda:1")


def test_sync_bn_on_cpu_is_refused_clearly():
    args = load_config("train", ["--device", "cpu", "--resnet", "18", "--ndepths", "4",
                                 "--sync_bn", "True"])
    env = dist_utils.DistEnv(0, 0, 1, torch.device("cpu"))
    with pytest.raises(ValueError, match="--sync_bn needs GPUs"):
        components.build_model(args.model, args.train, env)


def test_the_trained_model_runs_the_fast_layers():
    args = load_config("train", ["--device", "cpu", "--resnet", "18", "--ndepths", "4"])
    env = dist_utils.DistEnv(0, 0, 1, torch.device("cpu"))
    model = components.build_model(args.model, args.train, env)
    assert model.fast_layers and model.CostRegNet.split_key_value


def test_apex_options_map_to_native_equivalents():
    def parse(*argv):
        return load_config("train", list(argv))

    assert components.amp_dtype(parse("--using_apex", "True", "--opt_level", "O2")) \
        == torch.float16
    assert components.amp_dtype(parse("--using_apex", "True")) is None  # O0: float32
    with pytest.raises(ValueError, match="contradicts"):
        components.amp_dtype(parse("--opt_level", "O1", "--amp", "bf16"))
    with pytest.raises(ValueError, match="opt_level"):
        components.amp_dtype(parse("--opt_level", "O4"))
    cpu = torch.device("cpu")
    fixed = components.grad_scaler(parse("--loss_scale", "128"), cpu, torch.float16)
    assert fixed.is_enabled() and fixed.get_scale() == 128.0
    assert fixed.get_growth_interval() == 2 ** 31 - 1
    dynamic = components.grad_scaler(parse("--loss_scale", "dynamic"), cpu, torch.float16)
    assert dynamic.get_growth_interval() == 2000
    assert not components.grad_scaler(parse(), cpu, torch.bfloat16).is_enabled()
    with pytest.raises(ValueError, match="loss_scale"):
        components.grad_scaler(parse("--loss_scale", "big"), cpu, torch.float16)


def test_every_trainable_parameter_batch_norm_included_changes(tmp_path):
    """The optimizer holds the parameters of the model that trains (apex's SyncBN
    converter used to copy them after the optimizer was built, freezing every BN)."""
    data = tmp_path / "data"
    generate(data, layout="scannet", scenes=1, frames=22, height=128, width=128, seed=3,
             val=0, test=0, workers=1)
    args = load_config("train", [
        "--dataset", "synthetic", "--datapath", str(data), "--logdir", str(tmp_path / "run"),
        "--device", "cpu", "--height", "128", "--width", "128", "--resnet", "18",
        "--ndepths", "4", "--depth_min", "0.5", "--depth_max", "6", "--seq_len", "3",
        "--frame_interval", "2", "--num_workers", "0", "--lr", "1e-3", "--warmup_iters", "0",
        "--IF_EST_transformer", "False", "--using_apex", "True", "--opt_level", "O0"])
    trainer = trainer_lib.Trainer(args, dist_utils.init_distributed("cpu"))
    trainable, changed = changed_parameters_after_steps(trainer)
    assert any(".bn1.weight" in n or n.endswith(".1.bias") for n in trainable)
    assert trainable - changed == set()
    assert not {n for n, p in trainer.model.named_parameters()
                if not p.requires_grad} & changed  # frozen ones (key_layer, fc) stay
