"""Typed options (utils/options.py, utils/config.py): defaults, --config files, refused
values, --help texts; model options from checkpoints and the one model factory."""

import dataclasses
import json
import logging
import re
import typing
from pathlib import Path

import pytest
import torch
import yaml

import eval_hybrid_seq
from evaluation import run as eval_run
from evaluation import run_files
from models import factory, precision
from models.depthnet import DepthNetHybrid
from training import components
from utils.checkpoint import CheckpointError
from tests.helpers import estm_argv
from utils.config import (DEFAULTS, ConfigError, build_parser, load_config, log_ignored,
                          read_defaults)
from utils.defaults_file import render_defaults
from utils.options import (GROUPS, REMOVED, ModelOptions, TrainOptions, from_mapping,
                           section_options)

ROOT = Path(__file__).resolve().parents[1]
TINY = ModelOptions(resnet=18, ndepths=4, depth_min=0.5, depth_max=5.0)


# ------------------------------------------------------------ defaults in one place
def test_default_yaml_is_generated_from_the_dataclasses():
    assert Path(DEFAULTS).read_text() == render_defaults(), \
        "configs/default.yaml is stale: python -m utils.defaults_file > configs/default.yaml"


def test_yaml_sections_are_the_groups_with_their_defaults_and_types():
    tree = yaml.safe_load(Path(DEFAULTS).read_text())
    assert list(tree) == list(GROUPS)
    for section, options in tree.items():
        expected = {key: default for key, (default, _) in section_options(section).items()}
        assert options == expected, section
        assert {k: type(v) for k, v in options.items()} == \
            {k: type(v) for k, v in expected.items()}, section


@pytest.mark.parametrize("section", list(GROUPS))
def test_every_option_has_a_type_and_a_help_text(section):
    hints = typing.get_type_hints(GROUPS[section])
    for f in dataclasses.fields(GROUPS[section]):
        assert f.metadata["help"].strip(), f"{section}.{f.name} has no help"
        allowed = (hints[f.name],) + typing.get_args(hints[f.name])
        assert f.default is None or type(f.default) in allowed, f"{section}.{f.name}"


# -------------------------------------------------------------------- typed groups
def test_entry_points_get_typed_groups_of_their_sections():
    args = load_config("train", ["--resnet", "18", "--lr", "1e-3", "--amp", "bf16"])
    assert args.model == dataclasses.replace(ModelOptions(), resnet=18)
    assert isinstance(args.train, TrainOptions) and args.train.lr == 1e-3
    assert args.common.height == 256
    with pytest.raises(dataclasses.FrozenInstanceError):
        args.model.resnet = 50  # a copy: options are set on args
    with pytest.raises(AttributeError, match="no 'eval' group"):
        args.eval
    demo = load_config("demo", [])  # the demo's section overrides common and model defaults
    assert (demo.model.resnet, demo.model.ndepths, demo.common.height, demo.common.seed) == \
        (18, 8, 128, 0)
    assert load_config("predict", []).common.intrinsics == "auto"


@pytest.mark.parametrize("script, section", [("train_hybrid.sh", "train"),
                                             ("eval_hybrid.sh", "eval"),
                                             ("eval_hybrid_seq.sh", "eval")])
def test_the_official_command_lines_flags_are_all_options(script, section):
    flags = set(re.findall(r"--(\w+)", (ROOT / script).read_text())) - {"standalone",
                                                                          "nproc_per_node"}
    defaults, _ = read_defaults(("common", "model", section))
    assert flags and flags <= set(defaults), flags - set(defaults)


def test_official_flags_that_do_nothing_here_are_accepted_and_logged(caplog):
    args = load_config("train", ["--testdatapath", "/data/test", "--mode", "train",
                                 "--keep_batchnorm_fp32", "True"])
    with caplog.at_level(logging.INFO):
        log_ignored(args, logging.getLogger("test"))
    text = caplog.text
    assert "--testdatapath /data/test is accepted and ignored: training evaluates nothing" \
        in text
    assert "--mode train is accepted and ignored" in text
    assert "--keep_batchnorm_fp32 True is accepted and ignored" in text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        log_ignored(load_config("train", []), logging.getLogger("test"))  # none given
    assert "ignored" not in caplog.text


@pytest.mark.parametrize("flag", sorted(REMOVED["train"]))
def test_removed_official_flags_are_refused_with_what_replaced_them(flag, tmp_path):
    with pytest.raises(ConfigError, match=f"--{flag} was removed: training"):
        load_config("train", [f"--{flag}", "1"])
    path = tmp_path / "mine.yaml"
    path.write_text(f"train:\n  {flag}: 1\n")
    with pytest.raises(ConfigError, match=f"'{flag}' in section 'train' was removed"):
        load_config("train", ["--config", str(path)])
    assert flag not in vars(load_config("train", []))


# -------------------------------------------------------------------- model factory
def test_from_options_builds_the_models_configuration():
    torch.manual_seed(0)
    model = DepthNetHybrid.from_options(dataclasses.replace(TINY, IF_EST_transformer=False))
    torch.manual_seed(0)
    direct = DepthNetHybrid(ndepths=4, depth_min=0.5, depth_max=5.0, resnet=18,
                            IF_EST_transformer=False)
    assert (model.ndepths, model.depth_min, model.depth_max, model.IF_EST_transformer) == \
        (4, 0.5, 5.0, False)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 direct.state_dict().values()))


def test_from_options_loads_weights_strictly():
    torch.manual_seed(1)
    trained = DepthNetHybrid.from_options(TINY)
    loaded = DepthNetHybrid.from_options(TINY, trained.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(),
                                                 loaded.state_dict().values()))
    with pytest.raises(CheckpointError, match="mine.ckpt.*does not fit"):
        DepthNetHybrid.from_options(dataclasses.replace(TINY, ndepths=8),
                                    trained.state_dict(), source="mine.ckpt")


def test_checkpoint_options_fill_defaults_and_refuse_conflicts():
    ckpt = {"config": {"resnet": 18, "ndepths": 8, "lr": 1.0}}
    restored = factory.checkpoint_options(ModelOptions(), ckpt)
    assert restored == dataclasses.replace(ModelOptions(), resnet=18, ndepths=8)
    assert factory.checkpoint_options(ModelOptions(), {"model": {}}) == ModelOptions()
    with pytest.raises(ValueError, match="--ndepths 64 conflicts with the 8"):
        factory.checkpoint_options(ModelOptions(), ckpt, given={"ndepths"}, source="x.ckpt")
    assert from_mapping(ModelOptions, {"resnet": 18, "height": 128}) == \
        dataclasses.replace(ModelOptions(), resnet=18)


def test_models_are_built_from_options_only_through_the_factory():
    """No entry point or library module calls the constructor itself."""
    files = [p for p in ROOT.glob("*.py")] + [p for d in ("utils", "training", "datasets")
                                               for p in (ROOT / d).glob("*.py")]
    callers = [str(p.relative_to(ROOT)) for p in files if "DepthNetHybrid(" in p.read_text()]
    assert callers == []


# --------------------------------------------------------------- one table, one list
def test_one_table_of_amp_dtypes():
    assert set(precision.APEX_OPT_LEVELS.values()) <= set(precision.AMP_DTYPES)
    assert precision.training_amp_dtype("none", "O2") is torch.float16
    assert precision.training_amp_dtype("bf16", "O0") is torch.bfloat16
    assert components.amp_dtype(TrainOptions(opt_level="O3")) is torch.float16



# ------------------------------------------------------------------ refused values
@pytest.mark.parametrize("section, option", [
    ("train", "save_freq"), ("train", "summary_freq"), ("train", "frame_interval"),
    ("train", "batch_size"), ("train", "epochs"), ("eval", "frame_interval"),
    ("eval", "memory_size"), ("demo", "frame_interval")])
def test_zero_frequencies_and_counts_are_refused_at_start_up(section, option):
    with pytest.raises(ConfigError, match=f"--{option}"):
        load_config(section, [f"--{option}", "0"])


# -------------------------------------------------------------------- --config files
@pytest.mark.parametrize("text, message", [
    ("trian:\n  lr: 1.0e-3\n", "unknown section 'trian' \\(did you mean 'train'\\?\\)"),
    ("train:\n  lrr: 1.0e-3\n", "unknown option 'lrr' in section 'train' \\(did you mean 'lr'"),
    ("common:\n  lr: 1.0e-3\n", "'lr' in section 'common' \\(it belongs in section 'train'\\)"),
    ("eval:\n  loadckp: x.ckpt\n", "'loadckp' in section 'eval' \\(did you mean 'loadckpt'"),
    ("train:\n  epochs: seven\n", "option 'epochs' in section 'train' must be an integer"),
    ("train:\n  epochs: 1.5\n", "option 'epochs' in section 'train' must be an integer"),
    ("train:\n  resume: perhaps\n", "option 'resume' .* must be a boolean"),
    ("train:\n  lr: [1, 2]\n", "option 'lr' .* must be a number"),
    ("- train\n- lr\n", "the top level must be sections"),
    ("train: 3\n", "section 'train' must hold"),
])
def test_config_file_mistakes_name_the_file_the_key_and_the_nearest_name(tmp_path, text,
                                                                         message):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_config("train", ["--config", str(path)])
    assert str(path) in str(err.value)


def test_config_file_values_apply_and_are_given(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("train:\n  epochs: 3\n  lr: 1\neval:\n  seq_len: 7\n")
    args = load_config("train", ["--config", str(path), "--seed", "5"])
    assert (args.epochs, args.lr, args.seed) == (3, 1.0, 5) and isinstance(args.lr, float)
    assert args.given == {"epochs", "lr", "seed"} and "given" not in vars(args)


def test_a_list_option_takes_one_or_more_values_on_the_command_line_and_in_a_file(tmp_path):
    assert load_config("predict", []).input is None
    assert load_config("predict", ["--input", "a", "b"]).input == ["a", "b"]
    path = tmp_path / "mine.yaml"
    for text, expected in (("predict:\n  input: a\n", ["a"]),
                           ("predict:\n  input: [a, b]\n", ["a", "b"])):
        path.write_text(text)
        assert load_config("predict", ["--config", str(path)]).input == expected
    path.write_text("predict:\n  input: {a: 1}\n")
    with pytest.raises(ConfigError, match="'input' .* must be a string or a list of them"):
        load_config("predict", ["--config", str(path)])


# ------------------------------------------------------------------- --help texts
@pytest.mark.parametrize("section", ["train", "eval", "benchmark"])
def test_each_entry_point_help_describes_itself(section):
    text = " ".join(build_parser(section).format_help().split())
    assert "demo:" not in text
    assert "random seed" in text
    demo_text = " ".join(build_parser("demo").format_help().split())
    assert "demo: random seed" in demo_text
    if section == "train":
        assert "accepted for the official command line (only training is done here)" in text



def test_developer_options_work_but_stay_out_of_help():
    assert "--log_samples" not in build_parser("train").format_help()
    assert load_config("train", ["--log_samples", "True"]).log_samples is True


# ------------------------------------------------- model options from the checkpoint
def test_model_options_come_from_the_checkpoint(seven_set, ckpt, tmp_path):
    """Without model options the defaults are the official ResNet-50, 64 planes; an
    evaluation takes the checkpoint's instead, refuses conflicting ones, accepts agreeing
    ones."""
    argv = estm_argv(seven_set, ckpt, tmp_path, "--metrics", "False", "--datapath",
                     str(seven_set / "room0000" / "seq-01"), model=[])
    eval_hybrid_seq.main(argv)
    hashed = json.loads((tmp_path / "estm" / run_files.RUN_FILE).read_text())["hashed"]
    assert (hashed["resnet"], hashed["ndepths"], hashed["depth_max"]) == (18, 8, 10.0)
    with pytest.raises(ValueError, match="--ndepths 16 conflicts with the 8"):
        eval_hybrid_seq.main(argv + ["--ndepths", "16"])
    eval_hybrid_seq.main(argv + ["--resnet", "18"])


def test_official_checkpoints_keep_the_official_defaults():
    args = load_config("eval", [])
    eval_run.apply_checkpoint_options(args, {"model": {}, "epoch": 6})
    assert (args.resnet, args.ndepths, args.depth_min, args.depth_max,
            args.IF_EST_transformer) == (50, 64, 0.1, 10.0, True)
