"""Metrics of a saved run: read the depths an evaluator wrote, score every finished scene
against the ground truth, and report (``python -m evaluation.run_metrics --evalpath RUN``).

The protocol (resizing, masking, ranges, temporal consistency) is :mod:`evaluation.metrics`;
the table and files are :mod:`evaluation.report`. Steps of :func:`evaluate_saved`:
resolve the options (:func:`resolve_settings`), classify each listed scene
(:func:`scene_status`), score the usable ones (:func:`evaluate_scene`), refuse an
incomplete run (:func:`check_complete`), then gather the means
(:func:`evaluation.report.build_results`).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from evaluation.metrics import (METRIC_NAMES, PRED_RESIZE_MODES, TEMPORAL_NAMES, eval_depth_range,
                                frame_metrics, mean_rows, sanitize_prediction, temporal_consistency)
from evaluation.report import build_results, format_table, save_results
from evaluation.run_files import DEPTH_KINDS, RUN_FILE, damaged_files, frame_stem, read_marker
from evaluation.scenes import effective_intrinsics, list_scenes, open_sequence
from utils.config import build_parser
from utils.logs import setup_logging

log = logging.getLogger("metrics")

# A listed scene is one of these; only "ok" ones (and, in official outputs without
# markers, "unmarked" ones) are scored.
SCENE_STATUSES = ("ok", "missing", "empty", "unmarked", "mixed", "damaged")
# Metric options of the eval configuration; left unset they come from each run's run.json.
RUN_OPTIONS = ("datapath", "eval_dataset", "testlist", "intrinsics", "frame_interval",
               "min_depth_eval", "max_depth_eval", "pred_resize", "clamp_pred")


class IncompleteRunError(RuntimeError):
    """Listed scenes are missing or unfinished (and ``allow_partial`` is off)."""


@dataclass(frozen=True)
class MetricSettings:
    """How one run folder is scored: options given, else its ``run.json``'s, else defaults."""

    run_dir: Path
    run: dict
    eval_dataset: str
    datapath: str
    testlist: Optional[str]
    intrinsics: str
    frame_interval: int
    low: float
    high: float
    pred_resize: str
    clamp: Optional[tuple]

    @property
    def ours(self) -> bool:
        """Written by our evaluators (markers to check), else official outputs."""
        return bool(self.run.get("config_hash"))

    def sequence(self, folder, size_hw):
        """The scene's frames with ground truth, at the predictions' size ``size_hw``."""
        return open_sequence(self.eval_dataset, folder, size_hw[0], size_hw[1],
                             self.frame_interval, self.intrinsics, self.low, self.high)


@dataclass(frozen=True)
class SceneInput:
    """A listed scene with predictions: its name, data folder, outputs and marker."""

    name: str
    folder: Path
    scene_dir: Path
    kinds: list
    marker: Optional[dict]


@dataclass
class RowsOfAllScenes:
    """Per depth kind, every frame's metrics and every pair's temporal consistency."""

    frames: dict = field(default_factory=lambda: {kind: [] for kind in DEPTH_KINDS})
    pairs: dict = field(default_factory=lambda: {kind: [] for kind in DEPTH_KINDS})


# ------------------------------------------------------------------------ run folder
def read_run(run_dir: Path) -> dict:
    """The run's ``run.json``, or ``{}`` (official outputs have none)."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def find_runs(evalpath) -> list[Path]:
    """Run folders under ``evalpath``: itself when it holds ``run.json`` (or no run at all:
    official outputs), else its ``joint``/``estm`` sub-folders that do."""
    evalpath = Path(evalpath)
    if (evalpath / RUN_FILE).is_file():
        return [evalpath]
    runs = [evalpath / mode for mode in ("joint", "estm") if (evalpath / mode / RUN_FILE).is_file()]
    return runs or [evalpath]


def resolve_settings(run_dir: Path, datapath=None, eval_dataset=None, testlist=None,
                     intrinsics=None, frame_interval=None, min_depth_eval=None,
                     max_depth_eval=None, pred_resize=None, clamp_pred=None) -> MetricSettings:
    """Each option as given, else as the run's ``run.json`` recorded it, else the default."""
    run = read_run(run_dir)
    cfg = run.get("config", {})

    def pick(value, key, default=None):
        return value if value is not None else cfg.get(key, default)

    eval_dataset = pick(eval_dataset, "eval_dataset")
    datapath = pick(datapath, "datapath")
    if not eval_dataset or not datapath:
        raise ValueError(f"{run_dir} has no run.json: pass --datapath and --eval_dataset")
    low, high = eval_depth_range(eval_dataset, pick(min_depth_eval, "min_depth_eval"),
                                 pick(max_depth_eval, "max_depth_eval"))
    pred_resize = pick(pred_resize, "pred_resize", "bilinear")
    if pred_resize not in PRED_RESIZE_MODES:
        raise ValueError(f"pred_resize must be one of {PRED_RESIZE_MODES}, got {pred_resize!r}")
    return MetricSettings(
        run_dir=run_dir, run=run, eval_dataset=eval_dataset, datapath=datapath,
        testlist=pick(testlist, "testlist"),
        intrinsics=effective_intrinsics(eval_dataset, pick(intrinsics, "intrinsics", "official")),
        frame_interval=int(pick(frame_interval, "frame_interval", 10)), low=low, high=high,
        pred_resize=pred_resize,
        clamp=(low, high) if pick(clamp_pred, "clamp_pred", False) else None)


def scene_status(settings: MetricSettings, name: str, folder) -> tuple[str, Optional[SceneInput]]:
    """``(status, scene)``: one of :data:`SCENE_STATUSES`; ``scene`` when it has depths."""
    scene_dir = settings.run_dir / name
    kinds = [k for k in DEPTH_KINDS if (scene_dir / k).is_dir()]
    marker = read_marker(scene_dir)
    if not kinds:
        # no depth at all: not evaluated yet, or only probabilities were saved
        return ("empty" if marker is not None else "missing"), None
    if marker is None:
        # ours: an interrupted scene, its frames are not all there
        return "unmarked", SceneInput(name, Path(folder), scene_dir, kinds, None)
    if settings.ours and marker.get("config_hash") != settings.run["config_hash"]:
        return "mixed", None
    if damaged_files(scene_dir, marker):
        return "damaged", None
    return "ok", SceneInput(name, Path(folder), scene_dir, kinds, marker)


def check_complete(settings: MetricSettings, num_scenes: int, by_status: dict,
                   allow_partial: bool) -> bool:
    """Whether every listed scene is scored; raises :class:`IncompleteRunError` if not,
    unless ``allow_partial`` (then warns)."""
    unfinished = {"without predictions": by_status["missing"],
                  "unfinished (no completion marker)":
                      by_status["unmarked"] if settings.ours else [],
                  "of another configuration than run.json's": by_status["mixed"],
                  "with missing or truncated files": by_status["damaged"]}
    problems = [f"{len(names)} {what} (e.g. {names[0]})"
                for what, names in unfinished.items() if names]
    if problems:
        text = (f"{settings.run_dir}: of {num_scenes} listed scene(s), " + "; ".join(problems)
                + "; they are left out of the table")
        if not allow_partial:
            raise IncompleteRunError(text + ". Finish the evaluation (re-run it to resume), "
                                            "or pass --allow_partial True")
        log.warning("%s (--allow_partial)", text)
    if by_status["unmarked"] and not settings.ours:
        log.warning("%d scene(s) have no completion marker (not written by this project): "
                    "using the predictions present (e.g. %s)", len(by_status["unmarked"]),
                    by_status["unmarked"][0])
    return not problems


# ----------------------------------------------------------------------- one scene
def load_prediction(path: Path) -> np.ndarray:
    """A saved depth map; an unreadable or truncated file is an error naming it."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"cannot read the prediction {path} (truncated or not a .npy "
                         f"file?): {err}") from None


def prediction_stems(scene: SceneInput) -> dict:
    """``{kind: sorted frame names}`` of the saved depths (a marker disagreeing is logged)."""
    stems = {kind: sorted(p.name[:-len(".npy")] for p in (scene.scene_dir / kind).glob("*.npy"))
             for kind in scene.kinds}
    if scene.marker is not None:
        for kind in scene.kinds:
            if set(stems[kind]) != set(scene.marker["frames"]):
                log.warning("%s: %s holds %d predictions, its marker lists %d frames",
                            scene.name, kind, len(stems[kind]), len(scene.marker["frames"]))
    return stems


def predictions_by_frame(scene: SceneInput, stems: dict, seq) -> dict:
    """``{frame index in seq: [kinds predicted for it]}``; a name not in ``seq`` is an error."""
    index_of = {frame_stem(str(frame.color)): i for i, frame in enumerate(seq.frames)}
    by_index = {}
    for kind in scene.kinds:
        for stem in stems[kind]:
            if stem not in index_of:
                raise ValueError(f"{scene.scene_dir / kind / stem}.npy: no frame {stem!r} among "
                                 f"the {len(seq)} frames of {seq.name} at this frame interval "
                                 f"(check --frame_interval and --datapath)")
            by_index.setdefault(index_of[stem], []).append(kind)
    return by_index


def _frame_row(scene: SceneInput, stem: str, item: dict, pred, settings: MetricSettings):
    """The frame's metrics row, or None without ground truth or valid pixel."""
    if item["dmap"] is None:
        return None
    values = frame_metrics(pred, item["dmap"].numpy(), item["dmask"].numpy(),
                           settings.pred_resize, settings.clamp)
    if values is None:
        return None
    return {"scene": scene.name, "frame": stem, "frame_id": item["frame_id"], **values}


def score_frames(scene: SceneInput, settings: MetricSettings, seq, by_index: dict,
                 counts: dict) -> tuple[dict, dict]:
    """``(frame rows, pair rows)`` per kind, in frame order; ``counts`` updated."""
    rows = {kind: [] for kind in scene.kinds}
    pairs = {kind: [] for kind in scene.kinds}
    previous = {}
    K = seq.cam_intr.double().numpy()
    for index in sorted(by_index):
        item = seq[index]
        stem = frame_stem(item["img_path"])
        evaluated = False
        for kind in by_index[index]:
            pred, bad = sanitize_prediction(
                load_prediction(scene.scene_dir / kind / f"{stem}.npy"), settings.low)
            counts["bad_pred_pixels"] += bad
            row = _frame_row(scene, stem, item, pred, settings)
            if row is not None:
                evaluated = True
                rows[kind].append(row)
            before = previous.get(kind)
            if before is not None and before[0] == index - 1:
                tc = temporal_consistency(before[1], pred, seq.poses[index - 1],
                                          seq.poses[index], K)
                if tc is not None:
                    pairs[kind].append(tc)
            previous[kind] = (index, pred)
        if item["dmap"] is None:
            counts["frames_missing_gt"] += 1
        elif not evaluated:
            counts["frames_without_valid_gt"] += 1
    return rows, pairs


def evaluate_scene(scene: SceneInput, settings: MetricSettings, all_rows: RowsOfAllScenes) -> dict:
    """The scene's counts and per-kind means; its rows are appended to ``all_rows``."""
    stems = prediction_stems(scene)
    first = next((scene.scene_dir / k / f"{stems[k][0]}.npy" for k in scene.kinds if stems[k]),
                 None)
    counts = {"frames_predicted": max(len(s) for s in stems.values()), "frames_missing_gt": 0,
              "frames_without_valid_gt": 0, "skipped_nonfinite_pose": 0, "bad_pred_pixels": 0}
    result = {"counts": counts, "marker": scene.marker is not None}
    if first is None:
        for kind in scene.kinds:
            result[kind] = {"frames": 0, **dict.fromkeys(METRIC_NAMES), "tc_pairs": 0,
                            **dict.fromkeys(TEMPORAL_NAMES)}
        return result
    seq = settings.sequence(scene.folder, load_prediction(first).squeeze().shape)
    counts["skipped_nonfinite_pose"] = seq.skipped_nonfinite
    rows, pairs = score_frames(scene, settings, seq, predictions_by_frame(scene, stems, seq),
                               counts)
    for kind in scene.kinds:
        all_rows.frames[kind] += rows[kind]
        all_rows.pairs[kind] += pairs[kind]
        means = mean_rows(rows[kind], METRIC_NAMES) or dict.fromkeys(METRIC_NAMES)
        tc = mean_rows(pairs[kind], TEMPORAL_NAMES) or dict.fromkeys(TEMPORAL_NAMES)
        result[kind] = {"frames": len(rows[kind]), **means, "tc_pairs": len(pairs[kind]), **tc}
    return result


# ------------------------------------------------------------------------- results
def log_skipped(counts: dict, fill: float) -> None:
    if counts["frames_missing_gt"] or counts["frames_without_valid_gt"]:
        log.warning("skipped %d frame(s) without a ground-truth file and %d without a valid "
                    "ground-truth pixel", counts["frames_missing_gt"],
                    counts["frames_without_valid_gt"])
    if counts["bad_pred_pixels"]:
        log.warning("%d predicted pixel(s) were non-finite or <= 0 (set to %g m)",
                    counts["bad_pred_pixels"], fill)


def evaluate_saved(run_dir, datapath=None, eval_dataset=None, testlist=None, intrinsics=None,
                   frame_interval=None, min_depth_eval=None, max_depth_eval=None,
                   pred_resize=None, clamp_pred=None, save: bool = True,
                   show: bool = True, allow_partial: bool = False) -> dict:
    """Metrics of the predictions saved in one run folder (protocol: :mod:`evaluation.metrics`).

    Unset arguments come from the run's ``run.json`` (written by the evaluators), then from
    the defaults. Without ``run.json`` (e.g. outputs of the official scripts, float16
    ``[1, H, W]`` arrays, which are read too) ``datapath`` and ``eval_dataset`` are needed.

    In a run of the evaluators only finished scenes count: a completion marker of the
    run's configuration whose files are all there at the size written. Unfinished scenes
    (interrupted, another configuration, damaged files) are left out of every row and
    listed in ``counts``.

    Raises:
        IncompleteRunError: a listed scene is missing or unfinished, unless
            ``allow_partial`` (then the table covers the finished ones, and says so).
    Returns:
        the dict saved as ``metrics.json``.
    """
    settings = resolve_settings(
        Path(run_dir), datapath=datapath, eval_dataset=eval_dataset, testlist=testlist,
        intrinsics=intrinsics, frame_interval=frame_interval, min_depth_eval=min_depth_eval,
        max_depth_eval=max_depth_eval, pred_resize=pred_resize, clamp_pred=clamp_pred)
    scenes = list_scenes(settings.eval_dataset, settings.datapath, settings.testlist)
    all_rows, per_scene = RowsOfAllScenes(), {}
    by_status = {status: [] for status in SCENE_STATUSES}
    for name, folder in scenes:
        status, scene = scene_status(settings, name, folder)
        by_status[status].append(name)
        if scene is not None and (status == "ok" or not settings.ours):
            per_scene[name] = evaluate_scene(scene, settings, all_rows)
    complete = check_complete(settings, len(scenes), by_status, allow_partial)
    results = build_results(settings, len(scenes), per_scene, all_rows.frames,
                            all_rows.pairs, by_status, complete)
    log_skipped(results["counts"], settings.low)
    if save:
        save_results(results, all_rows.frames, settings.run_dir)
    if show:
        print(format_table(results, title=str(settings.run_dir)))
    return results


def main(argv=None) -> dict:
    """``python -m evaluation.run_metrics --evalpath RUN [...]``; returns ``{run folder: results}``.

    Takes the evaluators' configuration (configs/default.yaml, section ``eval``); the
    options of :data:`RUN_OPTIONS` default to what each run's ``run.json`` recorded.
    ``--evalpath`` is a run folder (``<evalpath>/joint`` or ``/estm``), the ``--evalpath``
    given to the evaluators (every run below it), or a folder of official outputs.
    """
    parser = build_parser("eval", description="Depth metrics of saved ESTDepth predictions "
                                              "(protocol: evaluation/metrics.py)")
    parser.set_defaults(**{key: None for key in RUN_OPTIONS})
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    return {str(run_dir): evaluate_saved(run_dir, allow_partial=args.allow_partial,
                                         **{k: getattr(args, k) for k in RUN_OPTIONS})
            for run_dir in find_runs(args.evalpath)}


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except IncompleteRunError as err:
        sys.exit(f"error: {err}")
