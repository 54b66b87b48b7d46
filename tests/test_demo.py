"""demo.py: end to end in its reduced size (--quick), and what Ctrl-C tells the user."""

import json

import cv2
import pytest
import torch

import demo
from tests.conftest import shared_available
from utils.config import load_config
from utils.distributed import resolve_device


@pytest.mark.slow  # trains 6 steps, evaluates and fuses two models: minutes on 2 cores
def test_quick_demo_runs_end_to_end_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    summary = demo.main(["--quick", "True", "--out", str(out), "--device", "cpu"])

    results = json.loads((out / "demo_results.json").read_text())
    assert results["plan"]["steps"] == 6
    datasets = ["synthetic"]
    # the real 7-Scenes sample is evaluated too whenever ../shared has it
    assert any(key.startswith("7scenes/") for key in results["results"]) == \
        shared_available(demo.SHARED_SAMPLE)
    if shared_available(demo.SHARED_SAMPLE):
        datasets.append("7scenes")
    # Even 6 training steps must beat the untrained model (the same configuration and seed)
    # on the same held-out frames: measured, refined AbsRel falls by 20-24 % on the synthetic
    # room (0.316 -> 0.252 Joint, 0.261 -> 0.200 ESTM) and by 13 % on the 7-Scenes sample;
    # the bound leaves half of that as margin.
    for dataset in datasets:
        for protocol in ("joint", "estm"):
            trained, untrained = (results["results"][f"{dataset}/{protocol}/{model}"]
                                  for model in ("trained", "untrained"))
            assert set(trained) == set(untrained) == {"init_depth", "refined_depth"}
            ratio = trained["refined_depth"]["abs_rel"] / untrained["refined_depth"]["abs_rel"]
            assert ratio < (0.9 if dataset == "synthetic" else 0.94), (dataset, protocol, ratio)
    # --fuse (on by default): the held-out room's meshes, F-score per model
    assert all(0 <= results["mesh"][tag]["fscore"] <= 1 for tag in ("trained", "untrained"))
    picture = cv2.imread(str(out / "demo.png"))
    assert picture is not None and picture.shape[0] > 3 * 128 and picture.shape[1] > 5 * 128
    assert list((out / "train").glob("events.out.tfevents.*"))
    train_summary = json.loads((out / "train" / "train_summary.json").read_text())
    assert train_summary["global_step"] == 6
    printed = capsys.readouterr().out
    assert "abs_rel" in printed and "demo.png" in printed

    # A second run finds everything done: no retraining, same results.
    again = demo.main(["--quick", "True", "--out", str(out), "--device", "cpu"])
    assert json.loads((out / "train" / "train_summary.json").read_text()) == train_summary
    assert again["results"] == summary["results"]


def test_demo_ctrl_c_says_to_re_run(monkeypatch, capsys):
    def interrupted(argv=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "main", interrupted)
    with pytest.raises(SystemExit) as stop:
        demo.cli([])
    assert stop.value.code == 130
    assert "run the same command again" in capsys.readouterr().err


def test_rooms_frames_and_training_window_reach_the_data_and_the_trainer(tmp_path,
                                                                         monkeypatch):
    args = load_config("demo", ["--frames", "60", "--seq_len", "5", "--out", str(tmp_path)])
    plan = demo.demo_plan(args, torch.device("cpu"))
    assert (plan["frames"], plan["seq_len"]) == (60, 5)
    seen = {}
    monkeypatch.setattr(demo, "run_training",
                        lambda argv: seen.update(argv=argv) or {"last_checkpoint": "x.ckpt"})
    demo.train(args, plan, tmp_path / "data")
    argv = seen["argv"]
    assert argv[argv.index("--seq_len") + 1] == "5"


# The demo's recipe cut to 200 steps, on one thread (the trajectory measured, reproduced):
# the held-out ESTM depth read from the cost volume (init, scale 2) must hold structure a
# constant cannot: scale-invariant AbsRel (each frame scaled to its ground-truth median,
# so the global scale is no help). Measured 0.867x the constant's (Joint 1.12x: 3-frame
# training windows leave its 5-frame EST attention untrained; the full 500 steps reach
# ESTM 0.59x, Joint 0.86x).
LEARNING_STEPS = 200
LEARNED_SI_RATIO = 0.92


@pytest.mark.slow  # renders the demo's rooms, trains 200 steps on one thread: ~11 min
def test_demo_recipe_learns_structure_a_constant_cannot(tmp_path):
    args = load_config("demo", ["--out", str(tmp_path), "--device", "cpu", "--log_level",
                                "WARNING"])
    args.device = resolve_device(args.device)
    plan = {**demo.demo_plan(args, args.device), "steps": LEARNING_STEPS}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = demo.prepare_data(args, plan)
        checkpoint = demo.train(args, plan, data)
        trained = demo.evaluate(args, checkpoint, "trained", "synthetic", data)
    finally:
        torch.set_num_threads(threads)
    constant = demo.baseline_results(args, demo.training_median_depth(args, data),
                                     ["synthetic"])[("synthetic", "constant")]
    si = lambda result: result["overall"]["init_depth"]["mean_over_frames"]["si_abs_rel"]  # noqa: E731
    ratios = {mode: si(trained[mode]) / si(constant[mode]) for mode in demo.MODES}
    print("trained / constant si_abs_rel after", LEARNING_STEPS, "steps:", ratios)
    assert ratios["estm"] < LEARNED_SI_RATIO, ratios
