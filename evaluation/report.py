"""The metrics report: ``metrics.json``'s content, the text table and the files written
beside a run's predictions.

``metrics.json`` (everything), ``metrics.csv`` (one row per depth kind and scene after the
two overall rows), ``metrics_frames.csv`` (one row per frame); written atomically.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Optional

from evaluation.metrics import METRIC_NAMES, TEMPORAL_NAMES, mean_rows
from evaluation.run_files import DEPTH_KINDS
from utils.io import save_json, save_text

TABLE_HEADERS = {"abs_rel": "AbsRel", "abs_diff": "AbsDiff", "sq_rel": "SqRel", "rmse": "RMSE",
                 "rmse_log": "RMSElog", "a1": "d<1.25", "a2": "d<1.25^2", "a3": "d<1.25^3",
                 "si_abs_rel": "SI-AbsRel",
                 "tc_abs_rel": "TC-AbsRel", "tc_abs_diff": "TC-AbsDiff"}

METRICS_FORMAT = "estdepth/metrics"
METRICS_VERSION = 1


def _with_count(values: Optional[dict], key: str, count: int) -> Optional[dict]:
    return None if values is None else {**values, key: count}


def overall_means(per_scene: dict, frame_rows: dict, pair_rows: dict) -> dict:
    """Per kind: means over frames, over scenes, over pairs and over scenes' pairs."""
    overall = {}
    for kind in DEPTH_KINDS:
        scored = [scene[kind] for scene in per_scene.values() if kind in scene]
        if not scored:
            continue
        scene_means = [s for s in scored if s["frames"]]
        pair_means = [s for s in scored if s["tc_pairs"]]
        frames, pairs = frame_rows[kind], pair_rows[kind]
        overall[kind] = {
            "mean_over_frames": _with_count(mean_rows(frames, METRIC_NAMES), "frames",
                                            len(frames)),
            "mean_over_scenes": _with_count(mean_rows(scene_means, METRIC_NAMES), "scenes",
                                            len(scene_means)),
            "temporal_mean_over_pairs": _with_count(mean_rows(pairs, TEMPORAL_NAMES), "pairs",
                                                    len(pairs)),
            "temporal_mean_over_scenes": _with_count(mean_rows(pair_means, TEMPORAL_NAMES),
                                                     "scenes", len(pair_means)),
        }
    return overall


def protocol_description(settings) -> dict:
    """The protocol of a :class:`evaluation.run_metrics.MetricSettings`, as ``metrics.json``
    records it."""
    return {
        "min_depth_eval": settings.low, "max_depth_eval": settings.high,
        "gt_resolution": "native (as stored in the dataset)",
        "pred_resize": settings.pred_resize + " (pixel centres, align_corners=False)",
        "clamp_pred": settings.clamp is not None,
        "frame_interval": settings.frame_interval, "intrinsics": settings.intrinsics,
        "per_frame": "metrics over the frame's valid ground-truth pixels",
        "mean_over_frames": "mean of per-frame metrics over every frame of every scene",
        "mean_over_scenes": "mean over scenes of the per-scene mean over frames",
        "temporal": "consecutive predicted frames t, t+1: frame t's depth reprojected "
                    "into t+1 with ground-truth poses vs t+1's depth (nearest); "
                    "tc_abs_rel = mean |diff| / d_t, tc_abs_diff = mean |diff| (m)",
    }


def build_results(settings, num_scenes: int, per_scene: dict, frame_rows: dict,
                  pair_rows: dict, by_status: dict, complete: bool) -> dict:
    """The dict saved as ``metrics.json`` (``settings``: a
    :class:`evaluation.run_metrics.MetricSettings`; ``by_status``: scene names per status)."""
    def total(key):
        return sum(s["counts"][key] for s in per_scene.values())

    return {
        "format": METRICS_FORMAT,
        "version": METRICS_VERSION,
        "mode": settings.run.get("mode"),
        "config_hash": settings.run.get("config_hash"),
        "eval_dataset": settings.eval_dataset,
        "protocol": protocol_description(settings),
        "overall": overall_means(per_scene, frame_rows, pair_rows),
        "scenes": per_scene,
        "counts": {
            "scenes_listed": num_scenes,
            "scenes_evaluated": len(per_scene),
            "scenes_missing": by_status["missing"],
            "scenes_without_predictions": by_status["empty"],
            "scenes_without_marker": by_status["unmarked"],
            "scenes_other_config": by_status["mixed"],
            "scenes_damaged": by_status["damaged"],
            "complete": complete,
            **{key: total(key) for key in ("frames_predicted", "frames_missing_gt",
                                           "frames_without_valid_gt", "skipped_nonfinite_pose",
                                           "bad_pred_pixels")},
        },
    }


# ------------------------------------------------------------------- tables & files
def _csv(rows: list, columns: list) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return buffer.getvalue()


def summary_rows(results: dict) -> list[dict]:
    """One row per depth kind and scene, after the two overall rows of that kind."""
    rows = []
    for kind, overall in results["overall"].items():
        frames, scenes = overall["mean_over_frames"] or {}, overall["mean_over_scenes"] or {}
        pairs, tc_scenes = (overall["temporal_mean_over_pairs"] or {},
                            overall["temporal_mean_over_scenes"] or {})
        rows.append({"depth": kind, "scene": "ALL (mean over frames)",
                     "frames": frames.get("frames", 0), **frames,
                     "tc_pairs": pairs.get("pairs", 0), **pairs})
        rows.append({"depth": kind, "scene": "ALL (mean over scenes)",
                     "frames": frames.get("frames", 0), **scenes,
                     "tc_pairs": pairs.get("pairs", 0), **tc_scenes})
        for name, scene in results["scenes"].items():
            if kind in scene:
                rows.append({"depth": kind, "scene": name, **scene[kind]})
    return rows


SUMMARY_COLUMNS = ["depth", "scene", "frames", *METRIC_NAMES, "tc_pairs", *TEMPORAL_NAMES]
FRAME_COLUMNS = ["depth", "scene", "frame", "frame_id", "valid_pixels", *METRIC_NAMES]


def save_results(results: dict, frame_rows: dict, run_dir: Path) -> None:
    """``metrics.json``, ``metrics.csv`` and ``metrics_frames.csv`` in ``run_dir``."""
    save_json(results, str(run_dir / "metrics.json"))
    save_text(_csv(summary_rows(results), SUMMARY_COLUMNS), str(run_dir / "metrics.csv"))
    frames = [{"depth": kind, **row} for kind, rows in frame_rows.items() for row in rows]
    save_text(_csv(frames, FRAME_COLUMNS), str(run_dir / "metrics_frames.csv"))


def format_table(results: dict, title: str = "") -> str:
    """The metrics as a fixed-width text table."""
    names = [*METRIC_NAMES, *TEMPORAL_NAMES]
    rows = summary_rows(results)
    width = max([24] + [len(str(r["scene"])) for r in rows])
    head = f"{'depth':<14}{'scene':<{width}} {'frames':>6} " + " ".join(
        f"{TABLE_HEADERS[n]:>10}" for n in names)
    lines = [f"{results.get('mode') or ''} {results['eval_dataset']} {title}".strip(), head,
             "-" * len(head)]
    for row in rows:
        cells = " ".join(f"{row[n]:>10.4f}" if row.get(n) is not None else f"{'-':>10}"
                         for n in names)
        lines.append(f"{row['depth']:<14}{str(row['scene']):<{width}} {row['frames']:>6} {cells}")
    c = results["counts"]
    lines.append(f"{c['scenes_evaluated']}/{c['scenes_listed']} scenes, "
                 f"{c['frames_predicted']} predicted frames; skipped: {c['frames_missing_gt']} "
                 f"without ground truth, {c['frames_without_valid_gt']} without a valid pixel, "
                 f"{c['skipped_nonfinite_pose']} for a non-finite pose (never predicted)")
    return "\n".join(lines)
