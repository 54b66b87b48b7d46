"""The built-in demo: the whole ESTDepth pipeline in minutes, with no download.

1. renders a synthetic set of textured rooms (ScanNet layout, exact depth and poses);
2. trains a small model (ResNet-18, 8 planes, 128x128) with tensorboard logs;
3. evaluates the trained and the untrained model in Joint and ESTM mode on held-out
   synthetic scenes, and on the real 7-Scenes sample when it is there;
4. prints the metrics table and writes a picture (colour | ground truth | depths);
5. (--fuse) fuses a held-out room's ESTM depths into a mesh per model and scores it
   against the mesh fused from ground-truth depth (F-score at 5 cm).

    python demo.py                 # about 13 minutes on 2 CPU cores, a few on a GPU
    python demo.py --quick True    # a one-minute smoke run

Everything lands in --out (default ./demo_output); re-running resumes where it stopped.
"""

import json
import logging
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from datasets.intrinsics import resize_intrinsics
from datasets.scannet import ScanNetSequence
from datasets.seven_scenes import SevenScenesSequence
from datasets.synthetic.writer import generate
from datasets.windows import joint_windows
from evaluation import baselines, fusion
from evaluation import run_metrics as metrics_mod
from evaluation.run import evaluate_command_line
from evaluation.run_files import DEPTH_KINDS, frame_stem
from models.depthnet import DepthNetHybrid
from training.run import run_training
from training.trainer import TrainingInterrupted
from utils.checkpoint import latest_checkpoint, save_checkpoint
from utils.config import load_config
from utils.distributed import resolve_device
from utils.io import save_image, save_json, shared_dir
from utils.logs import setup_logging
from utils.visualization import colorize_depth, image_to_uint8, panel

log = logging.getLogger("demo")
ROOT = Path(__file__).resolve().parent
SHARED_SAMPLE = shared_dir() / "data" / "7scenes" / "redkitchen" / "seq-sample"
MODES = ("joint", "estm")
SHOWN = ("abs_rel", "abs_diff", "rmse", "a1", "si_abs_rel")
CELL = 11  # characters per number of the table (si_abs_rel is 10 long)
DEMO_VOXEL, DEMO_FUSE_MAX_DEPTH = 0.05, 4.0  # --fuse: 5 cm voxels, depths up to 4 m


def demo_plan(args, device: torch.device) -> dict:
    """Sizes of the run: the full demo, or the quick one the tests use."""
    if args.quick:
        plan = {"scenes": 4, "test_scenes": 1, "frames": 35, "seq_len": 3, "steps": 6}
    else:
        plan = {"scenes": 65, "test_scenes": 5, "frames": args.frames, "seq_len": args.seq_len,
                "steps": 2000 if device.type == "cuda" else 500}
    if args.steps:
        plan["steps"] = args.steps
    return plan


def prepare_data(args, plan: dict) -> Path:
    """The synthetic set, rendered once (a matching ``synthetic.json`` means it is there)."""
    root = Path(args.out) / "data"
    wanted = {"scenes": plan["scenes"], "frames": plan["frames"], "height": args.height,
              "width": args.width, "seed": args.seed, "camera_speed": args.camera_speed}
    summary_file = root / "synthetic.json"
    if summary_file.is_file():
        done = json.loads(summary_file.read_text())
        if all(done.get(k) == v for k, v in wanted.items()):
            log.info("synthetic data already in %s", root)
            return root
    log.info("rendering %d synthetic scenes x %d frames into %s", plan["scenes"], plan["frames"],
             root)
    generate(root, layout="scannet", val=0, test=plan["test_scenes"], overwrite=True, **wanted)
    return root


def model_argv(args) -> list:
    """The model options shared by training and evaluation."""
    return ["--device", str(args.device), "--height", str(args.height), "--width",
            str(args.width), "--frame_interval", str(args.frame_interval), "--resnet",
            str(args.resnet), "--ndepths", str(args.ndepths), "--depth_min",
            str(args.depth_min), "--depth_max", str(args.depth_max), "--IF_EST_transformer",
            str(args.IF_EST_transformer), "--log_level", args.log_level]


def train(args, plan: dict, data: Path) -> Path:
    """Train (or resume) the small model; returns its last checkpoint."""
    logdir = Path(args.out) / "train"
    summary_file = logdir / "train_summary.json"
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
        if summary["global_step"] >= plan["steps"]:
            log.info("training already done (%d steps) in %s", summary["global_step"], logdir)
            return Path(summary["last_checkpoint"])
    resume = latest_checkpoint(str(logdir)) is not None
    argv = model_argv(args) + [
        "--dataset", "synthetic", "--datapath", str(data), "--logdir", str(logdir),
        "--seq_len", str(plan["seq_len"]), "--batch_size", "1", "--lr", str(args.lr),
        "--lrepochs", args.lrepochs, "--warmup_iters", str(args.warmup_iters),
        "--init_cost_fusion", args.init_cost_fusion,
        "--max_iters", str(plan["steps"]), "--epochs", "1000", "--save_iters", "100",
        "--keep_checkpoints", "1",
        "--summary_freq", "10", "--num_workers", "1", "--seed", str(args.seed),
        "--resume", str(resume)]
    log.info("training %d steps (tensorboard --logdir %s)", plan["steps"], logdir)
    return Path(run_training(argv)["last_checkpoint"])


def untrained_checkpoint(args) -> Path:
    """A randomly initialised model of the same configuration, as the baseline."""
    path = Path(args.out) / "untrained.ckpt"
    if not path.is_file():
        torch.manual_seed(args.seed)
        save_checkpoint(str(path), DepthNetHybrid.from_options(args.model))
    return path


def evaluate(args, checkpoint: Path, tag: str, dataset: str, datapath: Path) -> dict:
    """Joint and ESTM evaluation of one checkpoint; returns ``{mode: metrics}``."""
    extra = ["--intrinsics", "dataset"] if dataset == "7scenes" else []
    results = {}
    for mode in MODES:
        evalpath = Path(args.out) / "eval" / tag / dataset
        argv = model_argv(args) + extra + [
            "--eval_dataset", dataset, "--datapath", str(datapath), "--loadckpt",
            str(checkpoint), "--evalpath", str(evalpath), "--metrics", "False",
            "--overwrite", "True"]
        run_dir = Path(evaluate_command_line(mode, argv)["run_dir"])
        results[mode] = metrics_mod.evaluate_saved(run_dir, show=False)
    return results


def results_table(results: dict) -> str:
    """One line per (data, mode, model): the paper's main metrics, init and refined.

    """
    names = "".join(f"{name:>{CELL}}" for name in SHOWN)
    blocks = [kind.split("_")[0] for kind in DEPTH_KINDS]
    head = f"{'data':<10}{'mode':<7}{'model':<10}" + f" | {names}" * len(blocks)
    lines = [(" " * 27 + "".join(f" | {block:<{len(names)}}" for block in blocks)).rstrip(),
             head, "-" * len(head)]
    for (dataset, tag), by_mode in results.items():
        for mode, res in by_mode.items():
            cells = ""
            for kind in DEPTH_KINDS:
                overall = res["overall"].get(kind, {}).get("mean_over_frames", {})
                cells += " | " + "".join(f"{overall.get(n, float('nan')):>{CELL}.3f}"
                                         for n in SHOWN)
            lines.append(f"{dataset:<10}{mode:<7}{tag:<10}{cells}")
    return "\n".join(lines)


def improvement_lines(results: dict) -> str:
    """Per data set and depth: the range over modes of AbsRel's drop, untrained -> trained."""
    lines = []
    for dataset in dict.fromkeys(d for d, _ in results):
        if (dataset, "trained") not in results or (dataset, "untrained") not in results:
            continue
        parts = []
        for kind in DEPTH_KINDS:
            drops = []
            for mode in MODES:
                # from the values as the table shows them, so the two always agree
                before, after = (round(results[dataset, tag][mode]["overall"][kind]
                                       ["mean_over_frames"]["abs_rel"], 3)
                                 for tag in ("untrained", "trained"))
                if before > 0:
                    drops.append(round(100 * (before - after) / before))
            if not drops:
                continue
            low, high = min(drops), max(drops)
            parts.append(f"{kind.split('_')[0]} {low}%" if low == high
                         else f"{kind.split('_')[0]} {low}-{high}%")
        lines.append(f"AbsRel drop, untrained -> trained, {dataset}: " + ", ".join(parts))
    return "\n".join(lines)


def training_median_depth(args, data: Path) -> float:
    """The training scenes' median ground-truth depth in the training range (every 5th
    frame, every 4th pixel): the constant baseline."""
    scenes = (data / "splits" / "train_split.txt").read_text().split()
    seqs = [ScanNetSequence(data / scene, height=args.height, width=args.width,
                            frame_interval=args.frame_interval, depth_min=args.depth_min,
                            depth_max=args.depth_max, intrinsics="scene") for scene in scenes]
    return baselines.median_depth(seqs, frame_step=5, pixel_step=4)


def baseline_results(args, constant_m: float, datasets: list) -> dict:
    """The baselines on the frames the trained model predicted, per data set and mode, in
    the layout of :func:`evaluate`'s results (one depth per frame: the same numbers in the
    init and refined columns)."""
    planes_d = torch.linspace(args.depth_min, args.depth_max, args.ndepths,
                              dtype=torch.float64)  # the model's planes
    results = {}
    for dataset in datasets:
        for mode in MODES:
            run_dir = Path(args.out) / "eval" / "trained" / dataset / mode
            means = baselines.baseline_means(baselines.run_baselines(run_dir, constant_m,
                                                                     planes_d))
            for name, values in means.items():
                overall = {kind: {"mean_over_frames": values} for kind in DEPTH_KINDS}
                results.setdefault((dataset, name), {})[mode] = {"overall": overall}
    return results


def baseline_note(args, constant_m: float) -> str:
    """What the baseline rows of the table are."""
    return (f"Baselines on the trained model's frames (one depth, shown in both blocks): "
            f"constant = the training median {constant_m:.2f} m; oracle = each frame's "
            f"ground-truth median (reads the ground truth); planesweep = 1 - ZNCC 5x5 over "
            f"the model's {args.ndepths} planes, frames t-1 and t+1, no learning. si_abs_rel: "
            f"AbsRel after per-frame median scaling (constant and oracle share it).")


def picture(args, rows_spec: list, path: Path) -> None:
    """colour | ground truth | Joint | ESTM (trained) | ESTM (untrained), one row a frame."""
    rows = []
    for seq, index, eval_root, scene in rows_spec:
        item = seq[index]
        stem = frame_stem(item["img_path"])
        depths = []
        for tag, mode in (("trained", "joint"), ("trained", "estm"), ("untrained", "estm")):
            pred = Path(args.out) / "eval" / tag / eval_root / mode / scene / "refined_depth"
            depths.append(colorize_depth(np.load(pred / f"{stem}.npy"), args.depth_max))
        gt = item["dmap"] if item["dmap"] is not None else torch.zeros(1, 1, 1)
        rows.append([image_to_uint8(item["img"]), colorize_depth(gt, args.depth_max), *depths])
    image = panel(rows, ["colour", "ground truth", "Joint", "ESTM", "ESTM untrained"])
    save_image(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def picture_rows(args, data: Path, sample: Path | None) -> list:
    """A few frames predicted by both protocols: held-out synthetic, then 7-Scenes."""
    def spread(seq, count):
        # Joint predicts fewer frames than ESTM (every ESTM target but the tail)
        joint = sorted({i for window in joint_windows(len(seq)) for i in window[1:-1]})
        return [joint[k] for k in np.linspace(0, len(joint) - 1, count).round().astype(int)]

    scene = (data / "splits" / "test_split.txt").read_text().split()[0]
    seq = ScanNetSequence(data / scene, height=args.height, width=args.width,
                          frame_interval=args.frame_interval, depth_min=args.depth_min,
                          depth_max=args.depth_max, intrinsics="scene")
    rows = [(seq, i, "synthetic", scene) for i in spread(seq, 3)]
    if sample is not None:
        seq = SevenScenesSequence(sample, height=args.height, width=args.width,
                                  frame_interval=args.frame_interval, intrinsics="dataset")
        name = f"{sample.resolve().parent.name}/{sample.name}"
        rows += [(seq, i, "7scenes", name) for i in spread(seq, 2)]
    return rows


def fuse_heldout(args, data: Path) -> dict:
    """Meshes of the first held-out room from each model's ESTM depths, and their F-score
    against the mesh of its ground-truth depth fused with the same settings."""
    scene = (data / "splits" / "test_split.txt").read_text().split()[0]
    seq = ScanNetSequence(data / scene, height=args.height, width=args.width,
                          frame_interval=args.frame_interval, depth_min=args.depth_min,
                          depth_max=args.depth_max, intrinsics="scene")
    K, K_hw = seq.cam_intr.numpy(), (args.height, args.width)
    by_stem = {frame_stem(str(f.color)): i for i, f in enumerate(seq.frames)}
    result = {"scene": scene}
    gt_mesh = None
    for tag in ("trained", "untrained"):
        pred_dir = Path(args.out) / "eval" / tag / "synthetic" / "estm" / scene / "refined_depth"
        indices = sorted(by_stem[p.stem] for p in pred_dir.glob("*.npy"))
        if gt_mesh is None:  # ground truth over the same frames, at the network resolution
            gt_frames = [(gt, resize_intrinsics(K, K_hw, gt.shape), seq.poses[i]) for i in indices
                         for gt in [seq[i]["dmap"][0].numpy()]]
            gt_mesh, _ = fusion.fuse_depths(gt_frames, DEMO_VOXEL, DEMO_FUSE_MAX_DEPTH)
            fusion.save_ply(gt_mesh, Path(args.out) / "mesh_gt.ply")
        stems = [frame_stem(str(seq.frames[i].color)) for i in indices]
        frames = [(np.load(pred_dir / f"{stem}.npy"), K, seq.poses[i])
                  for stem, i in zip(stems, indices)]
        mesh, _ = fusion.fuse_depths(frames, DEMO_VOXEL, DEMO_FUSE_MAX_DEPTH)
        fusion.save_ply(mesh, Path(args.out) / f"mesh_{tag}.ply")
        result[tag] = fusion.mesh_metrics(mesh, gt_mesh, num_points=50_000)
    return result


def main(argv=None) -> dict:
    args = load_config("demo", argv, description=__doc__)
    setup_logging(args.log_level)
    start = time.time()
    args.device = resolve_device(args.device)
    plan = demo_plan(args, args.device)
    sample = Path(args.sevenscenes) if args.sevenscenes else (
        SHARED_SAMPLE if SHARED_SAMPLE.is_dir() else None)
    log.info("demo in %s on %s: %s; 7-Scenes sample: %s", args.out, args.device, plan,
             sample or "none (pass --sevenscenes)")
    timings = {}

    data = prepare_data(args, plan)
    timings["data_s"] = time.time() - start
    trained = train(args, plan, data)
    timings["train_s"] = time.time() - start - timings["data_s"]
    untrained = untrained_checkpoint(args)

    results = {}
    for tag, ckpt in (("trained", trained), ("untrained", untrained)):
        results[("synthetic", tag)] = evaluate(args, ckpt, tag, "synthetic", data)
        if sample is not None:
            results[("7scenes", tag)] = evaluate(args, ckpt, tag, "7scenes", sample)
    constant_m = training_median_depth(args, data)
    results.update(baseline_results(args, constant_m, [d for d, t in results if t == "trained"]))
    timings["eval_s"] = time.time() - start - timings["data_s"] - timings["train_s"]

    table = results_table(results)
    picture_path = Path(args.out) / "demo.png"
    picture(args, picture_rows(args, data, sample), picture_path)
    timings["total_s"] = time.time() - start
    summary = {
        "plan": plan, "device": str(args.device), "timings_s": timings,
        "trained_checkpoint": str(trained), "picture": str(picture_path),
        "baselines": {"constant_depth_m": constant_m, "planes_m": [args.depth_min,
                      args.depth_max, args.ndepths], "sweep": "1 - ZNCC 5x5, frames t-1, t+1"},
        "results": {f"{d}/{m}/{t}": {kind: res["overall"][kind]["mean_over_frames"]
                                     for kind in res["overall"]}
                    for (d, t), by_mode in results.items() for m, res in by_mode.items()},
    }
    if args.fuse:
        summary["mesh"] = fuse_heldout(args, data)
    save_json(summary, os.path.join(args.out, "demo_results.json"))
    print("\nMetrics on held-out data (mean over frames; init = scale-2 depth after EST "
          "fusion, refined = full resolution):")
    print(table)
    print(baseline_note(args, constant_m))
    print(improvement_lines(results))
    print(f"\nPicture: {picture_path}\nTensorboard: tensorboard --logdir "
          f"{Path(args.out) / 'train'}\nTook {timings['total_s'] / 60:.1f} min "
          f"(data {timings['data_s']:.0f} s, training {timings['train_s']:.0f} s, "
          f"evaluation {timings['eval_s']:.0f} s) on {args.device}.")
    if args.fuse:
        mesh = summary["mesh"]
        print(f"Mesh of held-out room {mesh['scene']} (ESTM depths, 5 cm voxels) against its "
              f"ground-truth mesh: F-score at 5 cm {mesh['trained']['fscore']:.3f} trained, "
              f"{mesh['untrained']['fscore']:.3f} untrained ({args.out}/mesh_*.ply).")
    return summary


def cli(argv=None) -> None:
    """The command line: Ctrl-C ends with what to do next, not a traceback."""
    again = "run the same command again to resume where it stopped"
    try:
        main(argv)
    except TrainingInterrupted as stop:
        print(f"{stop}\nThe demo: {again}.", file=sys.stderr)
        sys.exit(128 + stop.signum)
    except KeyboardInterrupt:
        print(f"interrupted; {again}.", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    cli()
