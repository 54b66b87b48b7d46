"""evaluation.metrics and evaluation.run_metrics: formulas, masking, resizing, temporal
consistency, saved-prediction tables, unfinished scenes and unreadable predictions.

Expected values are computed by hand or with numpy/cv2, independently of the code under test.
"""

import csv
import json
import math
import re

import cv2
import numpy as np
import pytest
import torch

from evaluation.metrics import depth_metrics
from evaluation import metrics, run_files, run_metrics
from tests.helpers import copy_run, hand_metrics

GT_HW, PRED_HW = (15, 20), (8, 10)   # the real data's 480/256 x 640/320 ratios, scaled down
SCENE = "scene0000_00"


def test_depth_metrics_equal_the_formulas_computed_by_hand():
    gt = torch.tensor([1.0, 2.0, 4.0])
    pred = torch.tensor([1.25, 1.5, 4.0])
    got = {k: float(v) for k, v in depth_metrics(gt, pred).items()}
    expected = {
        "abs_rel": (0.25 / 1 + 0.5 / 2 + 0) / 3,                     # 0.1667
        "abs_diff": (0.25 + 0.5 + 0) / 3,                            # 0.25
        "sq_rel": (0.0625 / 1 + 0.25 / 2 + 0) / 3,                   # 0.0625
        "rmse": math.sqrt((0.0625 + 0.25) / 3),                      # 0.3227
        "rmse_log": math.sqrt((math.log(1.25) ** 2 + math.log(4 / 3) ** 2) / 3),  # 0.2101
        "a1": 1 / 3,   # ratios 1.25, 1.333, 1: the threshold is strict
        "a2": 1.0,
        "a3": 1.0,
    }
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-12), name


def test_frame_metrics_masks_invalid_pixels_and_resizes_bilinear():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.5, 4.5, GT_HW)
    valid = np.ones(GT_HW, bool)
    valid[0, :5] = False                 # e.g. outside the evaluation range
    gt[1, :3] = 0.0                      # no measurement: never counted, even if "valid"
    gt[2, 0] = np.nan
    pred = rng.uniform(0.5, 4.5, PRED_HW).astype(np.float32)
    got = metrics.frame_metrics(pred, gt, valid)

    up = cv2.resize(pred, GT_HW[::-1], interpolation=cv2.INTER_LINEAR).astype(np.float64)
    mask = valid & (gt > 0) & np.isfinite(gt)
    want = hand_metrics(gt[mask], up[mask])
    assert got["valid_pixels"] == mask.sum() == GT_HW[0] * GT_HW[1] - 9
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
    assert metrics.frame_metrics(pred, gt, np.zeros(GT_HW, bool)) is None


def test_resize_prediction_nearest_uses_pixel_centres():
    pred = np.arange(PRED_HW[0] * PRED_HW[1], dtype=np.float64).reshape(PRED_HW)
    out = metrics.resize_prediction(pred, GT_HW, "nearest")
    rows = np.minimum(((np.arange(GT_HW[0]) + 0.5) * PRED_HW[0] / GT_HW[0]).astype(int), 7)
    cols = np.minimum(((np.arange(GT_HW[1]) + 0.5) * PRED_HW[1] / GT_HW[1]).astype(int), 9)
    np.testing.assert_array_equal(out, pred[rows][:, cols])


def test_eval_depth_range_defaults_and_overrides():
    assert metrics.eval_depth_range("scannet") == (0.3, 5.0)
    assert metrics.eval_depth_range("7scenes") == (0.3, 5.0)
    assert metrics.eval_depth_range("synthetic") == (0.1, 10.0)
    assert metrics.eval_depth_range("7scenes", "0.5", None) == (0.5, 5.0)  # YAML null-typed
    with pytest.raises(ValueError):
        metrics.eval_depth_range("scannet", 3.0, 2.0)


def test_temporal_consistency_of_a_plane():
    """Camera moves 0.1 m towards a wall 2 m away: true depths agree, stale ones are 0.1 off."""
    K = np.array([[20.0, 0, 9.5], [0, 20.0, 7.5], [0, 0, 1]])
    pose_t = np.eye(4)
    pose_t1 = np.eye(4)
    pose_t1[2, 3] = 0.1
    depth_t = np.full((16, 20), 2.0)
    exact = metrics.temporal_consistency(depth_t, np.full((16, 20), 1.9), pose_t, pose_t1, K)
    assert exact["tc_abs_diff"] == pytest.approx(0.0, abs=1e-9)
    # points spread by 2 / 1.9 around the principal point: the outer ring leaves the view
    # (|x - 9.5| * 2 / 1.9 <= 9.5 keeps columns 1..18, |y - 7.5| * 2 / 1.9 <= 7.5 rows 1..14)
    assert exact["valid_pixels"] == 18 * 14
    stale = metrics.temporal_consistency(depth_t, depth_t, pose_t, pose_t1, K)
    assert stale["tc_abs_diff"] == pytest.approx(0.1, abs=1e-9)
    assert stale["tc_abs_rel"] == pytest.approx(0.05, abs=1e-9)


# ------------------------------------------------------- saved predictions on disk
@pytest.fixture(scope="module")
def tiny_scan(tmp_path_factory):
    """A hand-made ScanNet-layout scene of 5 frames with predictions for frames 1-3.

    frame 1: ground truth with invalid (0), too-near (0.2 m) and too-far (5.5 m) pixels,
             its prediction saved as the official scripts did (float16, [1, H, W]);
    frame 2: ground truth without one valid pixel; frame 3: no depth file;
    frame 4: a non-finite pose (dropped by the loader).
    """
    root = tmp_path_factory.mktemp("tiny")
    data, run = root / "data", root / "run"
    rng = np.random.default_rng(1)
    scene = data / SCENE
    for sub in ("rgb", "depth", "pose"):
        (scene / sub).mkdir(parents=True)
    gts = {}
    for i in range(5):
        cv2.imwrite(str(scene / "rgb" / f"{i}.jpg"),
                    rng.integers(0, 255, (*GT_HW, 3), dtype=np.uint8))
        depth_mm = rng.integers(500, 4500, GT_HW).astype(np.uint16)
        if i == 1:
            depth_mm[0, :4] = 0
            depth_mm[1, :3] = 200
            depth_mm[2, :2] = 5500
        if i == 2:
            depth_mm[:] = 0
        if i != 3:
            cv2.imwrite(str(scene / "depth" / f"{i}.png"), depth_mm)
        gts[i] = depth_mm.astype(np.float64) / 1000
        pose = np.eye(4)
        pose[:3, 3] = [0.02 * i, 0.0, 0.01 * i]
        if i == 4:
            pose[0, 0] = np.inf
        np.savetxt(scene / "pose" / f"{i}.txt", pose)
    (root / "test.txt").write_text(SCENE + "\n")

    preds = {i: rng.uniform(0.5, 4.5, PRED_HW) for i in (1, 2, 3)}
    out = run / SCENE / "refined_depth"
    out.mkdir(parents=True)
    np.save(out / "1.npy", preds[1].astype(np.float16)[None])
    for i in (2, 3):
        np.save(out / f"{i}.npy", preds[i].astype(np.float32))
    return {"data": data, "run": run, "list": root / "test.txt", "gts": gts,
            "pred1": np.load(out / "1.npy")[0].astype(np.float32)}


def _expected_frame1(tiny_scan, low, high):
    gt = tiny_scan["gts"][1]
    up = cv2.resize(tiny_scan["pred1"], GT_HW[::-1],
                    interpolation=cv2.INTER_LINEAR).astype(np.float64)
    mask = (gt >= low) & (gt <= high)
    return hand_metrics(gt[mask], up[mask]), int(mask.sum())


def test_saved_predictions_table_counts_and_masks(tiny_scan):
    results = run_metrics.evaluate_saved(tiny_scan["run"], datapath=tiny_scan["data"],
                                     eval_dataset="scannet", testlist=tiny_scan["list"],
                                     frame_interval=1, show=False)
    counts = results["counts"]
    assert counts["frames_predicted"] == 3
    assert counts["frames_missing_gt"] == 1           # frame 3
    assert counts["frames_without_valid_gt"] == 1     # frame 2
    assert counts["skipped_nonfinite_pose"] == 1      # frame 4
    assert counts["scenes_without_marker"] == [SCENE]
    assert results["protocol"]["min_depth_eval"] == 0.3
    assert results["protocol"]["max_depth_eval"] == 5.0

    want, valid = _expected_frame1(tiny_scan, 0.3, 5.0)
    assert valid == GT_HW[0] * GT_HW[1] - 9          # 0 m, 0.2 m and 5.5 m pixels left out
    overall = results["overall"]["refined_depth"]
    assert overall["mean_over_frames"]["frames"] == 1
    for name, value in want.items():
        assert overall["mean_over_frames"][name] == pytest.approx(value, rel=1e-5), name
        assert overall["mean_over_scenes"][name] == pytest.approx(value, rel=1e-5), name
    assert "init_depth" not in results["overall"]
    # frames 1-2 and 2-3 are consecutive predictions: two temporal pairs
    assert overall["temporal_mean_over_pairs"]["pairs"] == 2
    assert np.isfinite(overall["temporal_mean_over_pairs"]["tc_abs_rel"])

    saved = json.loads((tiny_scan["run"] / "metrics.json").read_text())
    assert saved["counts"] == json.loads(json.dumps(counts))
    with open(tiny_scan["run"] / "metrics_frames.csv") as f:
        frames = list(csv.DictReader(f))
    assert [(r["depth"], r["frame"], int(r["valid_pixels"])) for r in frames] == \
        [("refined_depth", "1", valid)]
    with open(tiny_scan["run"] / "metrics.csv") as f:
        scenes = [r["scene"] for r in csv.DictReader(f)]
    assert scenes == ["ALL (mean over frames)", "ALL (mean over scenes)", SCENE]


def test_command_line_depth_range_overrides_the_datasets_range(tiny_scan, capsys):
    out = run_metrics.main(["--evalpath", str(tiny_scan["run"]), "--datapath", str(tiny_scan["data"]),
                        "--eval_dataset", "scannet", "--testlist", str(tiny_scan["list"]),
                        "--frame_interval", "1", "--max_depth_eval", "6"])
    results = out[str(tiny_scan["run"])]
    want, valid = _expected_frame1(tiny_scan, 0.3, 6.0)
    assert valid == GT_HW[0] * GT_HW[1] - 7          # the 5.5 m pixels count now
    for name, value in want.items():
        assert results["overall"]["refined_depth"]["mean_over_frames"][name] == \
            pytest.approx(value, rel=1e-5), name
    printed = capsys.readouterr().out
    assert "ALL (mean over frames)" in printed and "AbsRel" in printed


# ------------------------------------------------------- unfinished or unreadable runs
def test_metrics_leave_out_and_report_unfinished_scenes(estm_run, tmp_path, capsys):
    run = copy_run(estm_run, tmp_path)
    (run / "estm" / "room0000" / "seq-02" / run_files.MARKER).unlink()   # interrupted
    with pytest.raises(run_metrics.IncompleteRunError, match="room0000/seq-02.*--allow_partial"):
        run_metrics.main(["--evalpath", str(run)])
    assert not (run / "estm" / "metrics.json").exists()
    results = run_metrics.main(["--evalpath", str(run), "--allow_partial", "True"])
    counts = results[str(run / "estm")]["counts"]
    assert counts["scenes_evaluated"] == 1 and counts["frames_predicted"] == 2
    assert counts["scenes_without_marker"] == ["room0000/seq-02"] and not counts["complete"]
    printed = capsys.readouterr().out
    assert "room0000/seq-02" not in printed and "1/2 scenes" in printed


def test_an_unreadable_prediction_of_official_outputs_names_the_file(tmp_path):
    bad = tmp_path / "1.npy"
    bad.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        run_metrics.load_prediction(bad)
