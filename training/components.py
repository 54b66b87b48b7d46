"""What a training run is built from: its dataset, its model (frozen parts, SyncBatchNorm,
DDP), its precision (autocast dtype, GradScaler) and its random state."""

import logging
import os
import random

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from datasets.scannet import ScanNetTrainDataset
from models import precision
from models.cost_volume import init_pair_fusion
from models.depthnet import DepthNetHybrid, check_compile_mode
from utils import distributed as dist_utils
from utils.options import MIN_WINDOW_FRAMES, ModelOptions, TrainOptions

log = logging.getLogger("train")
DATASETS = ("scannet", "synthetic")


def check_args(opts: TrainOptions) -> None:
    """Options a training run needs, checked before any work."""
    if opts.dataset not in DATASETS:
        raise ValueError(f"--dataset must be one of {DATASETS}, got {opts.dataset!r}")
    precision.amp_dtype(opts.amp)
    check_compile_mode(opts.compile_mode)
    if not opts.datapath:
        raise ValueError("--datapath is required (the root of the training scans)")
    if opts.seq_len < MIN_WINDOW_FRAMES:
        raise ValueError(f"--seq_len must be at least {MIN_WINDOW_FRAMES}, "
                         f"got {opts.seq_len}")
    if opts.resume and opts.loadckpt:
        raise ValueError("--resume continues from --logdir; do not combine it with --loadckpt")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every generator's state as tensors and plain values (loadable with weights_only)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss),
                       "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        numpy_state = tuple(numpy_state[k] for k in ("kind", "keys", "pos", "has_gauss",
                                                     "cached_gaussian"))
    kind, keys, *rest = numpy_state  # a converted older checkpoint: the tuple, keys a tensor
    keys = keys.numpy() if torch.is_tensor(keys) else keys
    np.random.set_state((kind, keys.astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def build_dataset(args, reloadscan=None) -> ScanNetTrainDataset:
    """ScanNet, or a synthetic set in the ScanNet layout (exact per-scene intrinsics).

    ``args``: the training options (``common``, ``model`` and ``train`` groups, flat).
    """
    split, intrinsics = args.trainlist, args.intrinsics
    if args.dataset == "synthetic":
        split = os.path.join(args.datapath, "splits", "train_split.txt")
        intrinsics = "scene"
    return ScanNetTrainDataset(args.datapath, split, height=args.height, width=args.width,
                               n_frames=args.seq_len, frame_interval=args.frame_interval,
                               depth_min=args.depth_min, depth_max=args.depth_max,
                               reloadscan=args.reloadscan if reloadscan is None else reloadscan,
                               intrinsics=intrinsics)


def amp_dtype(opts: TrainOptions):
    """The autocast dtype: ``--amp``, or fp16 for the official apex ``--opt_level O1/O2/O3``
    (:func:`models.precision.training_amp_dtype`).

    NVIDIA apex is not used (its ``amp`` and DDP are deprecated upstream); its options map
    to native equivalents.
    """
    return precision.training_amp_dtype(opts.amp, opts.opt_level)


def grad_scaler(opts: TrainOptions, device: torch.device, dtype) -> torch.amp.GradScaler:
    """A GradScaler for fp16 (disabled otherwise).

    apex's ``--loss_scale N`` (a static scale) becomes a scale that starts at N and never
    grows; GradScaler still halves it and skips the step if gradients overflow.
    """
    enabled = dtype == torch.float16
    if opts.loss_scale in (None, "dynamic") or not enabled:
        return torch.amp.GradScaler(device.type, enabled=enabled)
    try:
        scale = float(opts.loss_scale)
    except ValueError:
        raise ValueError(f"--loss_scale must be a number or 'dynamic', got "
                         f"{opts.loss_scale!r}") from None
    return torch.amp.GradScaler(device.type, init_scale=scale, growth_interval=2 ** 31 - 1,
                                enabled=True)


def log_native_equivalents(opts: TrainOptions, dtype) -> None:
    """Say what the official apex options do here."""
    if opts.using_apex:
        log.info("--using_apex True: NVIDIA apex is not used; its native equivalents are: "
                 "torch.autocast %s%s, torch.nn.SyncBatchNorm (--sync_bn %s), PyTorch DDP",
                 dtype or "off (float32)",
                 " with a GradScaler" if dtype == torch.float16 else "", opts.sync_bn)
    if opts.loss_scale is not None:
        log.info("--loss_scale %s: GradScaler with %s", opts.loss_scale,
                 "a dynamic scale" if opts.loss_scale == "dynamic"
                 else "this initial scale, never grown")


def freeze(model: DepthNetHybrid, opts: TrainOptions) -> None:
    """Freeze the nets ``--fix_*`` name and the parameters no gradient can reach.

    The latter are frozen so that DDP need not search for unused parameters every step
    (and Adam leaves them alone, as it would any parameter without a gradient).
    """
    for flag, prefix in ((opts.fix_matchingFeature, "matchingFeature."),
                         (opts.fix_semanticFeature, "semanticFeature.")):
        if flag:
            for name, p in model.named_parameters():
                if name.startswith(prefix):
                    p.requires_grad_(False)
    never = model.parameters_without_gradient(opts.seq_len)
    for name, p in model.named_parameters():
        if name in never:
            p.requires_grad_(False)
    if never:
        log.info("frozen: %d parameter tensors that get no gradient with --seq_len %d and "
                 "--IF_EST_transformer %s: %s", len(never), opts.seq_len,
                 model.IF_EST_transformer, sorted({n.rsplit(".", 1)[0] for n in never}))


def build_model(model_opts: ModelOptions, opts: TrainOptions,
                env: dist_utils.DistEnv) -> torch.nn.Module:
    """The model to train on ``env.device``: built from ``model_opts``, its fast layers on
    (:meth:`models.depthnet.DepthNetHybrid.use_fast_layers`: the same numbers with less
    work), frozen where :func:`freeze` says, with SyncBatchNorm for ``--sync_bn``, its parts
    compiled for ``--compile``."""
    model = DepthNetHybrid.from_options(model_opts).use_fast_layers()
    init_pair_fusion(model.pre0[0], opts.init_cost_fusion)
    freeze(model, opts)
    model = model.to(env.device)
    if opts.sync_bn:
        if env.device.type != "cuda":
            raise ValueError(f"--sync_bn needs GPUs (torch.nn.SyncBatchNorm has no kernel for "
                             f"{env.device}); use --sync_bn False")
        # Same Parameter objects (the optimizer, built afterwards, sees the converted model).
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        log.info("batch norm: torch.nn.SyncBatchNorm across %d process(es)", env.world_size)
    if opts.compile:
        model.compile_parts(mode=opts.compile_mode)
    return model


def wrap_ddp(model: torch.nn.Module, env: dist_utils.DistEnv) -> torch.nn.Module:
    """DistributedDataParallel in a multi-process run (the model itself otherwise).

    Every parameter that requires a gradient gets one (``build_model`` froze the others;
    tests/test_model.py checks it), so DDP runs without ``find_unused_parameters``.
    """
    if not env.distributed:
        return model
    return DistributedDataParallel(
        model, device_ids=[env.device.index] if env.device.type == "cuda" else None,
        find_unused_parameters=False)
