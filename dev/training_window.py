"""The model and training window the diagnostic tools run (dev.compile_diff):
their command-line options, with the paper's configuration as
utils.options defines it, and their construction."""

from __future__ import annotations

import argparse

import torch

from datasets.synthetic.random_frames import CAMERAS, random_window
from models.depthnet import DepthNetHybrid
from utils.options import CommonOptions, ModelOptions


def add_arguments(parser: argparse.ArgumentParser, seed: int) -> None:
    """``--resnet --ndepths --height --width --camera --seed`` (``seed``: the default)."""
    model, common = ModelOptions(), CommonOptions()
    parser.add_argument("--resnet", type=int, default=model.resnet)
    parser.add_argument("--ndepths", type=int, default=model.ndepths)
    parser.add_argument("--height", type=int, default=common.height)
    parser.add_argument("--width", type=int, default=common.width)
    parser.add_argument("--camera", default="generic", choices=CAMERAS,
                        help="the window's camera path (datasets.synthetic.random_frames.CAMERAS); sideways puts "
                             "whole EST planes exactly on the frustum's boundary")
    parser.add_argument("--seed", type=int, default=seed)


def build(args: argparse.Namespace, device: torch.device) -> tuple:
    """``(model, window)``: a model of ``args`` initialised from ``--seed`` on ``device``
    and a five-frame :func:`datasets.synthetic.random_frames.random_window` on ``--camera``'s path."""
    torch.manual_seed(args.seed)
    model = DepthNetHybrid.from_options(ModelOptions(resnet=args.resnet,
                                                     ndepths=args.ndepths)).to(device)
    return model, random_window(5, args.height, args.width, device, args.camera)


def describe(args: argparse.Namespace) -> dict:
    """The options :func:`build` read, for a report."""
    return {k: getattr(args, k) for k in ("resnet", "ndepths", "height", "width", "camera",
                                          "seed")}
