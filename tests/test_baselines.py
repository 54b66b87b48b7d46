"""evaluation.baselines: scale-invariant Abs Rel, the constant and its oracle, and the
classical plane sweep (a synthetic textured plane at a known depth, real 7-Scenes frames)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datasets.seven_scenes import SevenScenesSequence
from evaluation import baselines
from evaluation.metrics import frame_metrics
from utils.geometry import homography_warp, relative_pose

PLANES_D = torch.linspace(0.5, 6.0, 8, dtype=torch.float64)  # the demo's 8 planes
H, W = 64, 80
K_33 = torch.tensor([[70.0, 0.0, (W - 1) / 2], [0.0, 70.0, (H - 1) / 2], [0.0, 0.0, 1.0]],
                    dtype=torch.float64)


def test_si_abs_rel_ignores_the_prediction_scale_and_is_zero_for_a_scaled_truth():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.5, 5.0, (12, 16))
    pred = rng.uniform(0.5, 5.0, (12, 16))
    mask = rng.uniform(size=gt.shape) > 0.2
    base = baselines.si_abs_rel(pred, gt, mask)
    assert base > 0.1
    assert baselines.si_abs_rel(3.7 * pred, gt, mask) == pytest.approx(base, rel=1e-12)
    assert baselines.si_abs_rel(0.25 * gt, gt, mask) == pytest.approx(0.0, abs=1e-12)
    # by hand: median(gt) / median(pred) = 2 / 1, scaled pred (2, 2, 4) vs gt (1, 2, 4)
    assert baselines.si_abs_rel(np.array([1.0, 1.0, 2.0]), np.array([1.0, 2.0, 4.0])) == \
        pytest.approx((1.0 / 1 + 0 + 0) / 3)


def test_the_oracle_has_the_constants_si_abs_rel_and_the_best_single_value_abs_rel():
    rng = np.random.default_rng(1)
    gt = rng.uniform(0.5, 5.0, (15, 20))
    mask = np.ones(gt.shape, bool)
    mask[:3] = False
    constant = baselines.constant_depth(2.7, (8, 10))
    oracle = baselines.oracle_depth(gt, mask, (8, 10))
    assert oracle[0, 0] == pytest.approx(np.median(gt[mask]))
    got_constant = frame_metrics(constant, gt, mask)
    got_oracle = frame_metrics(oracle, gt, mask)
    assert got_oracle["si_abs_rel"] == pytest.approx(got_constant["si_abs_rel"], rel=1e-12)
    assert got_oracle["si_abs_rel"] == pytest.approx(got_oracle["abs_rel"], rel=1e-12)
    assert got_oracle["abs_rel"] < got_constant["abs_rel"]
    assert baselines.oracle_depth(gt, np.zeros(gt.shape, bool), (8, 10)) is None


def _texture_3hw(seed: int) -> torch.Tensor:
    """A random texture of ~2-pixel blobs, RGB 0..255 (white noise aliases under warping)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, H // 2, W // 2, generator=gen, dtype=torch.float64)
    return 255 * F.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=False)[0]


def test_plane_sweep_recovers_a_textured_fronto_parallel_plane_at_a_known_depth():
    """The reference sees a textured plane at plane 3's depth; two translated sources are
    rendered with the project's homography warp (with no rotation the plane stays
    fronto-parallel in each source, at depth d - t_z)."""
    depth_true = float(PLANES_D[3])
    ref = _texture_3hw(0)
    world_T_ref = torch.eye(4, dtype=torch.float64)
    world_T_srcs, srcs = [], []
    for t_xyz in ((0.25, 0.0, 0.1), (-0.2, 0.1, 0.0)):
        world_T_src = torch.eye(4, dtype=torch.float64)
        world_T_src[:3, 3] = torch.tensor(t_xyz, dtype=torch.float64)
        ref_T_src = relative_pose(world_T_src[None], world_T_ref[None])
        plane = torch.tensor([[depth_true - t_xyz[2]]], dtype=torch.float64)
        srcs.append(homography_warp(ref[None], plane, ref_T_src, K_33[None])[0, :, 0])
        world_T_srcs.append(world_T_src)
    args = (ref, torch.stack(srcs), world_T_ref, torch.stack(world_T_srcs), K_33, PLANES_D)
    wta, valid = baselines.plane_sweep_depth(*args, refine=False)
    refined, _ = baselines.plane_sweep_depth(*args)
    hit = (wta[valid] == depth_true).double().mean()
    err = (refined[valid] - depth_true).abs().median()
    print(f"synthetic plane: {valid.double().mean():.3f} of pixels swept, WTA on the right "
          f"plane {hit:.3f}, median |refined - true| {err:.4f} m")
    assert valid.double().mean() > 0.8
    assert hit > 0.95
    # truth exactly on a plane: the parabola (the ZNCC cost is a cone, not one) stays
    # within a small fraction of a plane of it (measured 0.08 m, 0.11 of a plane)
    assert err < 0.15 * (PLANES_D[1] - PLANES_D[0])


def _real_sweep_and_random(redkitchen) -> tuple[dict, list, list]:
    """Baseline rows on 3 real frames (32 planes 0.3-5 m) and random-plane rows."""
    seq = SevenScenesSequence(redkitchen, height=128, width=160, frame_interval=5,
                              intrinsics="dataset")
    planes_d = torch.linspace(0.3, 5.0, 32, dtype=torch.float64)
    indices = [2, 5, 8]
    rows = baselines.baseline_rows(seq, indices, 2.0, planes_d)
    rng = np.random.default_rng(0)
    random_rows = []
    for index in indices:
        item = seq[index]
        guess = planes_d.numpy()[rng.integers(0, len(planes_d), (128, 160))]
        random_rows.append(frame_metrics(guess, item["dmap"].numpy(), item["dmask"].numpy()))
    print(f"7-Scenes redkitchen frames {indices} (interval 5): plane sweep AbsRel "
          f"{_mean(rows['planesweep'], 'abs_rel'):.3f} SI "
          f"{_mean(rows['planesweep'], 'si_abs_rel'):.3f} "
          f"({_mean(rows['planesweep'], 'swept_fraction'):.2f} swept); random planes AbsRel "
          f"{_mean(random_rows, 'abs_rel'):.3f} SI {_mean(random_rows, 'si_abs_rel'):.3f}; "
          f"oracle constant AbsRel {_mean(rows['oracle'], 'abs_rel'):.3f}")
    return rows, random_rows, indices


def _mean(frame_rows: list, name: str) -> float:
    return float(np.mean([row[name] for row in frame_rows]))


def test_baseline_rows_score_every_real_frame_with_the_sweep_covering_it(redkitchen):
    rows, _, indices = _real_sweep_and_random(redkitchen)
    assert [len(rows[name]) for name in baselines.BASELINES] == [len(indices)] * 3
    assert _mean(rows["planesweep"], "swept_fraction") > 0.9
    assert _mean(rows["oracle"], "abs_rel") < _mean(rows["constant"], "abs_rel")
    assert _mean(rows["oracle"], "si_abs_rel") == pytest.approx(
        _mean(rows["constant"], "si_abs_rel"))


@pytest.mark.xfail(strict=True, reason=(
    "measured: the sweep's AbsRel 0.86 (SI 0.36) against random planes' 0.54 (SI 0.39). "
    "With the sample's intrinsics (585 px, the 7-Scenes depth camera's focal) the "
    "photometric cost prefers near planes; with 525 px AbsRel falls to about 0.53, still "
    "no better than random. Passing means the calibration or the matching was fixed: "
    "remove this marker."))
def test_plane_sweep_on_real_7scenes_frames_beats_random_planes(redkitchen):
    rows, random_rows, _ = _real_sweep_and_random(redkitchen)
    assert _mean(rows["planesweep"], "abs_rel") < 0.5 * _mean(random_rows, "abs_rel")
