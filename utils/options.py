"""Every option of every entry point: one dataclass field each (type, default, --help).

An entry point reads the groups ``common``, ``model`` and its own (``train``, ``eval``,
``demo``, ``predict`` or ``benchmark``); each group is one section of
``configs/default.yaml``. The dataclasses are the one source: ``configs/default.yaml`` is
generated from them (``python -m utils.defaults_file > configs/default.yaml``), and
tests/test_config.py fails when the file and the dataclasses differ.

A group may give options of ``common``/``model`` other defaults for its entry point
(``OVERRIDES``: the demo's small network, predict's ``intrinsics``). Options the
official command line passes but that do nothing here are accepted and logged with what
replaced them (``ignored`` in a field's metadata); official options nothing passes and
nothing uses are rejected with that note (:data:`REMOVED`).

utils/config.py turns these into the command line and reads ``--config`` files.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Optional

# Options for tests and diagnostics: accepted and in configs/default.yaml, not in --help.
DEVELOPER_OPTIONS = frozenset({"log_samples"})
# Rules and ranges several packages check; each is defined here only.
RESNET_DEPTHS = (18, 34, 50, 101, 152)  # the context encoder's torchvision ResNets
# Network input height and width: the ResNet halves the size five times and the decoder
# concatenates its upsampled maps with the skips (multiples of 32); the matching net's
# largest pooling window (32 at 1/4 resolution) needs at least 128.
SIZE_MULTIPLE, MIN_SIZE = 32, 128
MIN_WINDOW_FRAMES = 3  # a window's targets are its inner frames
# Ground-truth depth evaluated by default (m), per dataset; "capture": your own data.
EVAL_DEPTH_RANGE = {"scannet": (0.3, 5.0), "7scenes": (0.3, 5.0), "synthetic": (0.1, 10.0),
                    "capture": (0.3, 5.0)}


def opt(default, help: str, ignored: str = ""):
    """A field with its --help text; ``ignored``: the note logged when it is given."""
    return field(default=default, metadata={"help": help, "ignored": ignored})


@dataclass(frozen=True)
class CommonOptions:
    """Run and input options every entry point reads (section ``common``)."""

    device: str = opt("auto", "cuda, cpu, cuda:1, or auto (cuda when available)")
    seed: int = opt(1234, "random seed")
    height: int = opt(256, f"network input height (multiple of {SIZE_MULTIPLE}, >= {MIN_SIZE})")
    width: int = opt(320, f"network input width (multiple of {SIZE_MULTIPLE}, >= {MIN_SIZE})")
    frame_interval: int = opt(10, "use every n-th frame of a scan")
    intrinsics: str = opt("official", "official (ScanNet's 577.87/319.5/239.5 for every "
                          "dataset), or the data's own: scene (ScanNet) / dataset (7-Scenes)")
    num_workers: int = opt(2, "data-loading worker processes (training); frame-reading threads "
                           "(evaluation, predict, benchmark windows; 0: in the loop)")
    log_level: str = opt("INFO", "logging level")


@dataclass(frozen=True)
class ModelOptions:
    """The network (section ``model``); ``DepthNetHybrid.from_options`` builds it."""

    resnet: int = opt(50, "ResNet depth of the context encoder: " + ", ".join(map(str, RESNET_DEPTHS)))
    ndepths: int = opt(64, "number of depth planes of the cost volume")
    depth_min: float = opt(0.1, "nearest depth plane (m)")
    depth_max: float = opt(10.0, "farthest depth plane (m)")
    IF_EST_transformer: bool = opt(True, "build and use the Epipolar Spatio-Temporal "
                                   "transformer")
    pretrained_resnet: Optional[str] = opt(None, "local file with torchvision ImageNet "
                                           "weights for the ResNet (never downloaded)")


@dataclass(frozen=True)
class TrainOptions:
    """train_hybrid.py (section ``train``)."""

    dataset: str = opt("scannet", "scannet or synthetic (ScanNet layout with per-scene "
                       "intrinsics)")
    datapath: Optional[str] = opt(None, "root of the training scans")
    testdatapath: Optional[str] = opt(
        None, "root of the test scans (kept for the official command line; unused during "
        "training)", ignored="training evaluates nothing; evaluate its checkpoints with "
        "eval_hybrid.py / eval_hybrid_seq.py --datapath")
    trainlist: str = opt("./data/scannet_split/train_split.txt", "scenes to train on")
    reloadscan: bool = opt(False, "rebuild the cached per-scan frame index")
    epochs: int = opt(7, "number of epochs")
    lr: float = opt(4.0e-5, "learning rate (Adam)")
    lrepochs: str = opt("2,4,6,8:2", "epochs at which the lr is divided, and by how much")
    wd: float = opt(4.0e-4, "weight decay")
    warmup_iters: int = opt(500, "linear lr warm-up iterations")
    warmup_factor: float = opt(1 / 3, "lr factor at the start of the warm-up")
    clip_epoch: int = opt(3, "gradient-norm clip is clip_before until this epoch, "
                          "clip_after from it")
    clip_before: float = opt(10.0, "gradient-norm clip in early epochs")
    clip_after: float = opt(1.0, "gradient-norm clip in later epochs")
    batch_size: int = opt(1, "windows per GPU")
    seq_len: int = opt(5, "frames per training window")
    max_iters: int = opt(0, "stop after this many iterations in total (0: run all epochs)")
    loadckpt: Optional[str] = opt(None, "start from these weights (strict; official "
                                  "checkpoints load)")
    restore_part: Optional[str] = opt(None, "with --loadckpt: load only the feature nets "
                                      "(official behaviour for any value)")
    logdir: str = opt("./checkpoints/debug", "checkpoints, tensorboard events and the "
                      "resolved config")
    resume: bool = opt(False, "continue from the latest checkpoint in --logdir")
    overwrite: bool = opt(False, "start a fresh run (no --resume) in a --logdir that holds "
                          "another run's checkpoints, deleting them (otherwise an error)")
    summary_freq: int = opt(10, "tensorboard scalars every n steps (images every 10*n)")
    save_freq: int = opt(1, "checkpoint every n epochs")
    save_iters: int = opt(5000, "also checkpoint every n iterations (0: never)")
    keep_checkpoints: int = opt(0, "keep only the newest n checkpoints this run wrote (0: all)")
    pin_m: bool = opt(False, "pin data-loader memory (always on with a CUDA device: "
                      "non-blocking copies)")
    using_apex: bool = opt(False, "official flag; apex is not used: its native equivalents "
                           "are (torch.autocast + GradScaler for --opt_level O1-O3, "
                           "torch.nn.SyncBatchNorm for --sync_bn, PyTorch DDP)")
    sync_bn: bool = opt(False, "torch.nn.SyncBatchNorm: batch-norm statistics over all GPUs "
                        "(CUDA only)")
    opt_level: str = opt("O0", "official apex level: O0 = float32, O1/O2/O3 = fp16 autocast "
                         "with a GradScaler")
    amp: str = opt("none", "mixed precision: none, bf16 or fp16 (fp16 uses a GradScaler); "
                   "see models/precision.py")
    init_cost_fusion: str = opt("random", "cost volume's pair fusion (pre0) at the start: "
                                "random (the official) or difference (reference - warped "
                                "source: a matching cost from step 0; docs/training.md)")
    fix_matchingFeature: bool = opt(False, "freeze the matching feature net")
    fix_semanticFeature: bool = opt(False, "freeze the ResNet context encoder")
    local_rank: int = opt(0, "set by the launcher (torchrun sets LOCAL_RANK)")
    log_samples: bool = opt(False, "record which windows every rank trained on "
                            "(logdir/samples.jsonl)")
    mode: str = opt("train", "accepted for the official command line (only training is done "
                    "here)", ignored="train_hybrid.py only trains; evaluation is "
                    "eval_hybrid.py (Joint) and eval_hybrid_seq.py (ESTM)")
    keep_batchnorm_fp32: Optional[str] = opt(
        None, "official apex option, accepted: native autocast always keeps batch norm in "
        "float32", ignored="native autocast always keeps batch-norm weights and statistics "
        "in float32")
    loss_scale: Optional[str] = opt(None, "fp16 loss scale: a number (fixed) or dynamic "
                                    "(default GradScaler)")
    compile: bool = opt(False, "torch.compile the model's parts for training (GPU; compiling "
                        "takes minutes the first time)")
    compile_mode: str = opt("default", "--compile: torch.compile's mode, default, "
                            "reduce-overhead (CUDA graphs) or max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class EvalOptions:
    """eval_hybrid.py and eval_hybrid_seq.py, and ``python -m evaluation.run_metrics`` (``eval``)."""

    eval_dataset: str = opt("scannet", "scannet, 7scenes or synthetic (ScanNet layout with "
                            "per-scene intrinsics)")
    datapath: Optional[str] = opt(None, "root of the test scans / 7-Scenes (or one 7-Scenes "
                                  "sequence folder)")
    evalpath: str = opt("./outputs/eval", "output root: predictions go to <evalpath>/joint "
                        "or <evalpath>/estm")
    testlist: Optional[str] = opt(None, "scene list (default: data/scannet_split/test_split.txt,"
                                  " data/7scenes/test.txt, <datapath>/splits/test_split.txt)")
    loadckpt: Optional[str] = opt(None, "checkpoint to evaluate (required; loaded strictly)")
    seq_len: int = opt(5, "Joint: frames per window (targets are the inner seq_len-2)")
    lwindow: int = opt(3, "ESTM: frames per sliding window (target: the middle one)")
    memory_size: int = opt(2, "ESTM: windows kept in the memory")
    save_init_depth: bool = opt(True, "save the scale-2 depth after EST fusion (init_depth/, "
                                "as the official)")
    save_refined_depth: bool = opt(True, "save the refined full-resolution depth "
                                   "(refined_depth/)")
    save_init_prob: bool = opt(False, "save the initial probability map (init_prob/)")
    save_refined_prob: bool = opt(False, "save the fused probability map (refined_prob/)")
    save_images: bool = opt(True, "also save colourised .jpg next to the .npy files")
    save_dtype: str = opt("float32", ".npy dtype: float32 (exact) or float16 (what the "
                          "official scripts saved)")
    overwrite: bool = opt(False, "recompute scenes completed under another configuration "
                          "(otherwise an error)")
    metrics: bool = opt(True, "compute the metrics table from the saved predictions after "
                        "inference")
    min_depth_eval: Optional[float] = opt(None, "metrics: ground truth below this is ignored "
                                          "(m); default per dataset: " + ", ".join(
                                              f"{k} {v[0]:g}" for k, v in
                                              EVAL_DEPTH_RANGE.items() if k != "capture"))
    max_depth_eval: Optional[float] = opt(None, "metrics: ground truth above this is ignored "
                                          "(m); default per dataset: " + ", ".join(
                                              f"{k} {v[1]:g}" for k, v in
                                              EVAL_DEPTH_RANGE.items() if k != "capture"))
    pred_resize: str = opt("bilinear", "metrics: upsampling of predictions to the ground "
                           "truth's resolution: bilinear or nearest")
    clamp_pred: bool = opt(False, "metrics: clip predictions to [min_depth_eval, "
                           "max_depth_eval]")
    allow_partial: bool = opt(False, "metrics: tabulate a run with missing or unfinished "
                              "scenes (listed, left out) instead of an error")
    amp: str = opt("none", "inference autocast: none (float32), bf16 or fp16 "
                   "(models/precision.py; measured error in docs/training.md)")
    allow_tf32: bool = opt(False, "let cuDNN/matmuls use TF32 on Ampere+ GPUs (faster, not "
                           "the float32 numbers)")
    fold_bn: bool = opt(True, "fold batch norm into the convolutions for inference (same "
                        "numbers up to float rounding)")
    compile: bool = opt(False, "torch.compile the model's parts (GPU; compiling takes "
                        "minutes the first time)")
    cuda_graphs: bool = opt(False, "replay each frame's features and each window's decode "
                            "from CUDA graphs (GPU; models/cuda_graphs.py)")
    batch_sequences: int = opt(1, "sequences run in lock-step as one batch, each with its "
                               "own memory (docs/evaluation.md)")
    mode: str = opt("test", "accepted for the official command line; unused",
                    ignored="the script chooses the protocol: eval_hybrid.py (Joint), "
                    "eval_hybrid_seq.py (ESTM)")
    summary_freq: int = opt(10, "accepted for the official command line; unused",
                            ignored="evaluation writes no tensorboard summaries; it logs "
                            "each scene and writes metrics.{json,csv}")


@dataclass(frozen=True)
class DemoOptions:
    """demo.py (section ``demo``)."""

    NOTE: ClassVar[str] = "also overrides these defaults of `common` and `model` for the demo:"
    OVERRIDES: ClassVar[dict] = {
        "height": (128, "demo: network input height"),
        "width": (128, "demo: network input width"),
        "frame_interval": (5, "demo: use every n-th synthetic frame"),
        "resnet": (18, "demo: ResNet depth of the context encoder"),
        "ndepths": (8, "demo: number of depth planes"),
        "depth_min": (0.5, "demo: nearest depth plane (m)"),
        "depth_max": (6.0, "demo: farthest depth plane (m)"),
        "seed": (0, "demo: random seed (data and initial weights)"),
    }

    lr: float = opt(1.0e-3, "demo: learning rate (from scratch, batch 1)")
    lrepochs: str = opt("3:4", "demo: epochs at which the lr is divided, and by how much")
    camera_speed: float = opt(1.0, "synthetic camera's translation rate x (wider baselines)")
    warmup_iters: int = opt(20, "demo: linear lr warm-up iterations")
    init_cost_fusion: str = opt("difference", "demo: train's --init_cost_fusion")
    out: str = opt("./demo_output", "where the demo writes data, training, evaluations")
    quick: bool = opt(False, "a reduced, one-minute version (what the tests run)")
    steps: int = opt(0, "training steps (0: 500 on the CPU, 2000 on a GPU; 6 with --quick)")
    fuse: bool = opt(True, "demo: fuse a held-out room's ESTM depths (trained and untrained) "
                     "into meshes and report their F-score")
    sevenscenes: Optional[str] = opt(None, "a 7-Scenes sequence folder to evaluate too (default:"
                                     " ../shared/data/7scenes/redkitchen/seq-sample if there)")
    frames: int = opt(40, "demo: frames rendered per synthetic room (35 with --quick)")
    seq_len: int = opt(3, "demo: frames per training window (3 with --quick)")


@dataclass(frozen=True)
class PredictOptions:
    """predict.py (section ``predict``)."""

    NOTE: ClassVar[str] = "predict.py: depth (and a fused mesh) for your own posed capture"
    OVERRIDES: ClassVar[dict] = {
        "intrinsics": ("auto", "auto (the capture's own K) or fx,fy,cx,cy in pixels of the "
                       "native images (TUM without a freiburg name needs it)"),
    }

    input: Optional[list[str]] = opt(None, "the capture(s): a folder (images/ + poses.txt + "
                                     "K.txt), a COLMAP model, a TUM sequence, a 7-Scenes or "
                                     "exported ScanNet scan; several: OUT/<capture>/ each")
    output: str = opt("./outputs/predict", "where depth/, preview/, mesh.ply and "
                      "summary.json are written")
    format: str = opt("auto", "auto (detected from the folder), folder, colmap, tum, "
                      "7scenes or scannet")
    min_baseline: float = opt(0.0, "keyframes: keep a frame once the camera moved this far "
                              "(m) from the last kept one (0 and min_rotation 0: every "
                              "--frame_interval-th frame)")
    min_rotation: float = opt(0.0, "keyframes: ... or turned this many degrees")
    tum_max_dt: float = opt(0.02, "TUM: largest time difference (s) between a colour frame "
                            "and its depth map / pose")
    pose_scale: str = opt("check", "COLMAP: check (refuse a scale off the model's planes), "
                          "auto (rescale poses onto them) or S; outputs in capture units")
    loadckpt: Optional[str] = opt(None, "checkpoint to run (official or own, loaded "
                                  "strictly); without it the weights are random")
    mode: str = opt("estm", "estm (3 frames sliding by one, memory) or joint (5 frames)")
    seq_len: int = opt(5, "joint: frames per window")
    lwindow: int = opt(3, "estm: frames per sliding window")
    memory_size: int = opt(2, "estm: windows kept in the memory")
    batch_sequences: int = opt(1, "several --input: captures run in lock-step as one batch, "
                               "each with its own memory (eager backend)")
    save_images: bool = opt(True, "colour-mapped previews preview/<frame>.jpg")
    save_confidence: bool = opt(True, "confidence/<frame>.png (uint16, 65535 = probability 1)")
    save_clouds: bool = opt(False, "coloured clouds cloud/<frame>.ply and cloud.ply (merged "
                            "in --voxel_size cells; depths up to --fuse_max_depth)")
    save_video: bool = opt(False, "video.mp4: colour | depth (legend in m) | confidence")
    video_fps: float = opt(0.0, "video.mp4 frame rate (0: 30 / --frame_interval)")
    fuse: bool = opt(True, "fuse the predicted depths into a TSDF mesh (mesh.ply)")
    voxel_size: float = opt(0.04, "fusion: voxel edge (m)")
    fuse_max_depth: float = opt(3.0, "fusion: depths beyond this (m) are not fused")
    min_depth_eval: float = opt(EVAL_DEPTH_RANGE["capture"][0], "metrics with ground-truth "
                                "depth: valid ground truth from (m)")
    max_depth_eval: float = opt(EVAL_DEPTH_RANGE["capture"][1], "metrics with ground-truth "
                                "depth: valid ground truth up to (m)")
    overwrite: bool = opt(False, "recompute an output made with another configuration")
    stream: bool = opt(False, "follow a folder capture still being written: predict each "
                       "frame once the next one arrives, fuse it at once (docs/predict.md)")
    snapshot_every: int = opt(10, "--stream: rewrite mesh.ply every N predicted frames (0: at "
                              "the end only)")
    stream_timeout: float = opt(60.0, "--stream: stop after this many seconds without a new "
                                "frame (0: never; the end marker or Ctrl-C stop it)")
    stream_end_marker: str = opt("done", "--stream: the file in the capture folder that "
                                 "says the capture is complete")
    stream_poll: float = opt(0.05, "--stream: seconds between looks at the folder")
    backend: str = opt("eager", "eager (PyTorch) or onnxruntime (the graphs of --onnx)")
    onnx: Optional[str] = opt(None, "--backend onnxruntime: a folder written by export.py "
                              "(its model, input size and window replace the options')")


@dataclass(frozen=True)
class ExportOptions:
    """export.py (section ``export``)."""

    loadckpt: Optional[str] = opt(None, "checkpoint to export (without it: random weights)")
    output: str = opt("./outputs/export", "folder for the graphs and manifest.json")
    modes: str = opt("estm,joint", "windows to export: estm (--lwindow frames, 0..memory_size "
                     "views of memory), joint (--seq_len frames, 0..1 view)")
    seq_len: int = opt(5, "joint: frames per window")
    lwindow: int = opt(3, "estm: frames per sliding window")
    memory_size: int = opt(2, "estm: windows kept in the memory")
    torch_export: bool = opt(False, "also save the torch.export programs (.pt2; each holds "
                             "all the model's weights)")
    overwrite: bool = opt(False, "replace an existing export in --output")


@dataclass(frozen=True)
class BenchmarkOptions:
    """benchmark.py (section ``benchmark``)."""

    iters: int = opt(5, "timed repetitions of each measurement (after the warm-up ones)")
    warmup: int = opt(2, "untimed repetitions first (caches, allocator, oneDNN/cuDNN plans)")
    amp: str = opt("none", "autocast dtype for the timed passes: none, bf16 or fp16")
    threads: int = opt(0, "CPU threads for PyTorch (0: PyTorch's default)")
    cpu_time: bool = opt(False, "time with this process's CPU time instead of the wall clock "
                         "(busy machines; use --threads 1)")
    measure: str = opt("estm,joint,train", "what to time: any of estm, joint, train (empty: "
                       "none)")
    fast: bool = opt(True, "inference as the evaluation runs it (per-frame feature cache + "
                     "folded batch norm + fast layers) and training steps as ours (false: the "
                     "official per-window forward in the official layer order; training "
                     "steps under anomaly detection, as the official train_sample)")
    compile: bool = opt(False, "torch.compile the inference model and the trained one (see "
                        "eval's and train's --compile)")
    compile_mode: str = opt("default", "--compile: the trained model's torch.compile mode "
                            "(see train's --compile_mode)")
    compiled_parts: str = opt("all", "--compile, training: which of the model's parts to "
                              "compile, comma-separated (matchingFeature, semanticFeature, "
                              "CostRegNet, pre0, pre1, pre2) or all; to find a part whose "
                              "compiled code changes the losses")
    cuda_graphs: bool = opt(False, "replay the inference model from CUDA graphs (see eval's "
                            "--cuda_graphs)")
    profile: bool = opt(False, "also print where a window's time goes (ESTM, Joint: those "
                        "measured), per module (forward hooks), and with --measure train a "
                        "training step's, per operator (torch.profiler)")
    loader: bool = opt(False, "also time the training loader alone (decode, resize, stack) "
                       "in samples/s")
    loader_workers: int = opt(4, "--loader: data-loading worker processes")
    loader_samples: int = opt(40, "--loader: windows to load (after the first batch)")
    loader_data: Optional[str] = opt(None, "--loader: a ScanNet-layout dataset (default: a "
                                     "synthetic one rendered at 640x480 in a temporary folder)")
    frames: Optional[str] = opt(None, "a 7-Scenes sequence folder whose frames the ESTM/Joint "
                                "windows read (decode + resize included: end to end; default: "
                                "random images made in memory)")
    sequence: int = opt(0, "also run ESTM over a synthetic sequence of this many frames: "
                        "per-frame time and RSS after 100 and after all")
    out: Optional[str] = opt(None, "write the results as JSON to this file")
    compare: Optional[str] = opt(None, "a previous --out JSON: print each median's ratio "
                                 "(before / now)")
    alternate: int = opt(0, "rounds of the official path then the fast one (--fast ignored), "
                         "in one run: each round's ratio official / fast, their median and range")


# Section of configs/default.yaml -> its group, in the file's order.
GROUPS = {"common": CommonOptions, "model": ModelOptions, "train": TrainOptions,
          "eval": EvalOptions, "demo": DemoOptions, "predict": PredictOptions,
          "export": ExportOptions, "benchmark": BenchmarkOptions}
BASE_SECTIONS = ("common", "model")
# Official options that neither the official command lines pass nor anything here uses:
# refused, naming what to use instead.
REMOVED = {"train": {
    "testlist": "training reads --trainlist only; the test list is an option of "
                "eval_hybrid.py / eval_hybrid_seq.py (--testlist)",
    "eval_freq": "training runs no evaluation; evaluate its checkpoints with "
                 "eval_hybrid.py / eval_hybrid_seq.py"}}
def section_options(section: str) -> dict:
    """``{option: (default, help)}`` that section ``section`` lists: its overrides of
    ``common``/``model``, then its own fields."""
    cls = GROUPS[section]
    entries = dict(getattr(cls, "OVERRIDES", {}))
    for f in dataclasses.fields(cls):
        entries[f.name] = (f.default, f.metadata["help"])
    return entries


def from_mapping(cls, values: dict):
    """The group ``cls`` with the options ``values`` holds (e.g. a checkpoint's or a
    fixture's recorded config); other keys are left out, missing options default."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{key: value for key, value in values.items() if key in names})


def ignored_notes(section: str) -> dict:
    """``{option: note}`` of the options of ``section`` accepted only for the official
    command line."""
    return {f.name: f.metadata["ignored"] for f in dataclasses.fields(GROUPS[section])
            if f.metadata["ignored"]}

