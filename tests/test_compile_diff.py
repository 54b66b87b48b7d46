"""dev/compile_diff.py: compiled training against eager, part by part."""

import json

import pytest
import torch

from benchmark import random_window
from dev import compile_diff, gpu_figures
from models.depthnet import DepthNetHybrid
from utils.options import ModelOptions

TINY = ["--device", "cpu", "--resnet", "18", "--ndepths", "4", "--height", "128",
        "--width", "128"]


@pytest.fixture(scope="module")
def model_and_window():
    torch.manual_seed(0)
    model = DepthNetHybrid.from_options(ModelOptions(resnet=18, ndepths=4))
    return model, random_window(5, 128, 128, torch.device("cpu"))


def skewed(gm, example_inputs):
    """A torch.compile backend whose code computes 0.1% more than the graph."""
    def run(*args):
        return [o * 1.001 if torch.is_tensor(o) and o.is_floating_point() else o
                for o in gm(*args)]
    return run


@pytest.mark.slow
def test_captured_graphs_on_pytorchs_kernels_depart_by_nothing(model_and_window):
    """torch.compile's graphs of the parts (the decoder's keyword arguments and dataclass
    outputs included) run by PyTorch's own kernels: nothing departs."""
    model, window = model_and_window
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = compile_diff.compare(model, window, "none", "eager", "default",
                                  ("pre2", "CostRegNet"), steps=1, float64=False)
    step = report["steps"][0]
    assert step["loss_relative"] <= 1e-6
    assert {p: e["calls"] for p, e in step["parts"].items()} == \
        {"pre2": 6, "CostRegNet": 1}  # 3 targets x 2 sources; one decode
    assert all(e["local"] <= 1e-6 and e["carried"] <= 1e-5 for e in step["parts"].values())
    assert report["gradients"]["relative"] <= 1e-5
    for k, v in model.state_dict().items():  # the model given is left as it was
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


@pytest.mark.slow
def test_a_part_whose_compiled_code_computes_something_else_is_named(model_and_window):
    model, window = model_and_window
    report = compile_diff.compare(model, window, "none", skewed, "default", ("pre2",),
                                  steps=1, float64=False)
    assert "float64" not in report
    step = report["steps"][0]
    assert set(step["parts"]) == {"pre2"}
    # the skew's own size, measured on the very inputs the compiled code received
    assert step["parts"]["pre2"]["local"] == pytest.approx(1e-3, rel=1e-3)
    # while the loss barely moves (the fusion is a residual branch before batch norms)
    assert 0 < step["loss_relative"] < 1e-5 and report["gradients"]["relative"] > 0


def test_gradients_rank_by_their_share_of_the_whole():
    """A bias whose exact gradient is zero differs by 100% of its noise and ranks below a
    large gradient that differs by 1%."""
    want = {"a.weight": torch.full((100,), 1.0), "b.bias": torch.tensor([1e-9])}
    got = {"a.weight": torch.full((100,), 1.01), "b.bias": torch.tensor([-1e-9])}
    report = compile_diff.gradient_report(got, want)
    (share, own, name), (share_b, own_b, name_b) = report["worst"]
    assert name == "a.weight" and own == pytest.approx(0.01) and share == pytest.approx(0.01)
    assert name_b == "b.bias" and own_b == pytest.approx(2.0) and share_b == pytest.approx(2e-10)
    assert report["by_part"] == pytest.approx({"a": 0.01, "b": 2.0})
    with pytest.raises(RuntimeError, match="different parameters"):
        compile_diff.gradient_report({"a.weight": want["a.weight"]}, want)


def test_nested_outputs_are_copied_and_compared_leaf_by_leaf():
    from models.memory import ESTMemory

    memory = ESTMemory([torch.ones(2)], [torch.zeros(2)], [torch.eye(4)])
    copied = compile_diff.clone_tree(({"depth": torch.ones(3)}, memory, 2.0))
    assert copied[1].keys_bcdhw[0] is not memory.keys_bcdhw[0] and copied[2] == 2.0
    other = compile_diff.clone_tree(copied)
    other[1].values_bcdhw[0] += 1  # values: norm 0 -> a difference over the tiny norm
    other[0]["depth"][0] = 2.0
    diff, path = compile_diff.worst_difference(other, copied)
    assert path == "[1].values_bcdhw[0]" and diff > 1
    assert compile_diff.worst_difference(copied, copied) == (0.0, "[0]['depth']")
    for got, want in (((torch.ones(1),), (torch.ones(1), torch.ones(1))),
                      ((torch.ones(1), torch.ones(1)), (torch.ones(1),))):
        with pytest.raises(ValueError, match="different structures"):
            compile_diff.worst_difference(got, want)


@pytest.mark.slow  # eager and compiled training steps of the command line: ~17 s on 2 busy cores
def test_command_line_writes_the_report_the_gpu_run_summarises(tmp_path, capsys):
    out = tmp_path / "compile_diff.json"
    compile_diff.main(TINY + ["--amp", "bf16", "--backend", "aot_eager", "--mode", "default",
                              "--parts", "pre2", "--steps", "1", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "step 1: loss eager" in printed and "compiled against float64" in printed
    report = json.loads(out.read_text())
    assert report["config"]["resnet"] == 18 and report["config"]["parts"] == ["pre2"]
    ref = report["float64"]  # reduced precision is judged by its distance from float64
    assert 0 < ref["eager"]["loss_relative"] < 1e-3
    assert 1e-3 < ref["eager"]["gradients"] < 0.5  # bf16's rounding, far above float32's
    # the same graphs on the same kernels: the same distance from exact arithmetic
    assert ref["compiled"]["loss_relative"] == ref["eager"]["loss_relative"]
    assert ref["compiled"]["gradients"] == pytest.approx(ref["eager"]["gradients"], rel=1e-3)
    line = [x for x in gpu_figures.summary(tmp_path) if x.startswith("compile_diff:")]
    assert line and "first loss 0.00e+00 relative to eager (from float64: eager" in line[0]
    assert "most local departure pre2" in line[0]


def test_command_line_refuses_a_mode_its_backend_would_ignore(capsys):
    with pytest.raises(SystemExit):
        compile_diff.parse_args(["--backend", "aot_eager", "--mode", "reduce-overhead"])
    assert "--mode reduce-overhead is inductor's" in capsys.readouterr().err
    with pytest.raises(ValueError, match="compiled parts must be some of"):
        compile_diff.main(TINY + ["--backend", "eager", "--mode", "default",
                                  "--parts", "decoder", "--amp", "none"])


def test_the_gpu_run_passes_its_out_folder(tmp_path):
    for name in ("compile_diff", "compile_diff_aot_eager", "compile_diff_sideways"):
        cmd, limit = gpu_figures.command(name, tmp_path)
        args = compile_diff.parse_args(cmd[2:])
        assert args.device == "cuda" and args.out == str(tmp_path / f"{name}.json")
        assert 0 < limit <= 600
