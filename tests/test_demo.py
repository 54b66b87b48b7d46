"""demo.py end to end in its reduced size (--quick)."""

import json

import cv2

import demo
from tests.conftest import shared_available


def test_quick_demo_runs_end_to_end_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    summary = demo.main(["--quick", "True", "--out", str(out), "--device", "cpu"])

    results = json.loads((out / "demo_results.json").read_text())
    assert results["plan"]["steps"] == 6
    for protocol in ("joint", "estm"):
        for model in ("trained", "untrained"):
            metrics = results["results"][f"synthetic/{protocol}/{model}"]
            assert set(metrics) == {"init_depth", "refined_depth"}
            assert 0 < metrics["refined_depth"]["abs_rel"] < 5
    # the real 7-Scenes sample is evaluated too whenever ../shared has it
    assert any(key.startswith("7scenes/") for key in results["results"]) == \
        shared_available(demo.SHARED_SAMPLE)
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
